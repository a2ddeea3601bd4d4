"""The accuracy guard on a Q/DQ graph (the jetson bundle's, the ONNX Runtime INT8 candidates'), on a model built
to break INT8 in one layer, with real images (Fashion-MNIST) and real ONNX Runtime quantization; its step
order as a pure function; the larger calibration set both guards try, and the cpu guard's step order."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import needs_fashion_mnist
from PIL import Image

from edgevision.data import open_source
from edgevision.models import load_model
from edgevision.models.loading import LoadedModel
from edgevision.pipeline.context import Context
from edgevision.pipeline.export import export_model
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.resolve import resolve
from edgevision.quantization.openvino import NNCFSettings
from edgevision.quantization.openvino_guard import (
    SCORE_BATCH,
    Trial,
    ladder,
    metric,
    metric_name,
    score,
    steps_after_preset,
    validation_items,
)
from edgevision.quantization.qdq_guard import exclusion_steps
from edgevision.quantization.sensitivity import quantized_nodes, with_float_inputs
from edgevision.runtimes import create_runner


class _OneLoudChannel(torch.nn.Module):
    """conv1's first output channel is multiplied by 1e4 before conv2: one per-tensor INT8 scale for conv2's
    input rounds the other channels to zero, so conv2 alone breaks INT8; conv1 and the head do not."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, stride=4, padding=1)
        self.register_buffer("gain", torch.tensor([1e4] + [1.0] * 7).view(1, 8, 1, 1))
        self.fc, self.num_classes = torch.nn.Linear(8 * 4 * 4, 10), 10
        with torch.no_grad():
            self.conv2.weight[:, 0] *= 1e-4  # the loud channel carries no more than the others in float

    def forward(self, x):
        x = torch.relu(self.conv1(x)) * self.gain
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


def loud_model() -> LoadedModel:
    """Its head is fitted to the labels of 512 training images by least squares: predictions with a margin, that
    INT8 noise alone does not flip (a random head predicts one class for everything)."""
    from edgevision.data.loader import preprocess_each

    torch.manual_seed(0)
    spec = load_model("convnext_mini", weights="random").spec
    spec = dataclasses.replace(spec, data_config={**spec.data_config, "input_size": [3, 16, 16]}, img_size=16)
    net, train = _OneLoudChannel().eval(), open_source("builtin:fashion-mnist:train")
    items, _ = preprocess_each(train, range(512), spec.data_config)
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate([x for _, x in items]))
        features = torch.relu(net.conv2(torch.relu(net.conv1(x)) * net.gain)).flatten(1)
        features = torch.cat([features, torch.ones(len(features), 1)], 1)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(train.labels[:512]).long(), 10).float()
        solution = torch.linalg.lstsq(features, onehot, driver="gelsd").solution
        net.fc.weight.copy_(solution[:-1].T)
        net.fc.bias.copy_(solution[-1])
    return LoadedModel(net, spec)


def recipe(max_drop):
    return resolve(preset_for("convnext"), None, {"benchmark_iters": 3, "calib_size": 32, "eval_limit": 200,
                                                  "max_drop": max_drop})


@needs_fashion_mnist
def test_the_guard_leaves_the_sensitive_conv_in_float_and_the_bundle_says_so(tmp_path):
    data, calib = open_source("builtin:fashion-mnist:test"), open_source("builtin:fashion-mnist:train")
    plain = export_model(loud_model(), data, recipe("none"), "jetson", "int8", tmp_path / "plain",
                         calib_source=calib, progress=False)
    assert plain.report.to_dict()["variants"][-1]["top1_drop"] > 20  # plain INT8 breaks: the model is built to
    result = export_model(loud_model(), data, recipe(3.0), "jetson", "int8", tmp_path / "guarded",
                          calib_source=calib, progress=False)
    guard = result.report.to_dict()["tensorrt"]["accuracy_guard"]
    assert guard["needed"] and guard["held"] and guard["ranking"]["top"][0]["node"] == "/conv2/Conv"
    # 4x the calibration images first (a loud channel is no range-estimation error: it does not hold), then
    # exclusion on the better graph's calibration set, stopping at the first that held
    steps = [(s["step"], s["calibration_images"]) for s in guard["path"]]
    assert steps[:2] == [("as quantized", 32), ("128 calibration images", 128)] and len(steps) == 3
    assert steps[2][0] == "1 most sensitive node(s) in float" and guard["path"][2]["seconds"] > 0
    assert guard["excluded_nodes"] == ["/conv2/Conv"]
    sim = result.report.to_dict()["variants"][-1]
    assert sim["top1_drop"] <= 3.0 and result.report.to_dict()["status"] == "ok"
    still_int8 = quantized_nodes(onnx.load(str(result.run_dir / "model.onnx")))
    assert "/conv2/Conv" not in still_int8 and "/conv1/Conv" in still_int8
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["tensorrt"]["engine_options"]["fp16_layers"] == ["/conv2/Conv"]
    assert "--layerPrecisions=/conv2/Conv:fp16" in (result.run_dir / "build_engine.sh").read_text()
    assert "/conv2/Conv" in (result.run_dir / "README.md").read_text()


@needs_fashion_mnist
def test_the_onnxruntime_int8_candidate_is_guarded_too(tmp_path):
    data, calib = open_source("builtin:fashion-mnist:test"), open_source("builtin:fashion-mnist:train")
    result = export_model(loud_model(), data, recipe(3.0), "onnx", "int8", tmp_path / "onnx", calib_source=calib,
                          progress=False)
    int8 = next(v for v in result.report.to_dict()["variants"] if v["name"] == "int8")
    guard = int8["quantization"]["accuracy_guard"]
    assert guard["needed"] and guard["held"] and "/conv2/Conv" in guard["excluded_nodes"]
    assert int8["top1_drop"] <= 3.0 and result.report.to_dict()["status"] == "ok"
    assert int8["quantization"]["excluded_nodes"] == guard["excluded_nodes"]


def test_with_float_inputs_gives_back_the_float_graph(tmp_path):
    from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq
    from edgevision.runtimes.onnxruntime import ORTRunner, export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()
    export_onnx(model, (3, 8, 8), tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(8)]
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", calib, PROFILES["tensorrt"])
    q = onnx.load(str(tmp_path / "q.onnx"))
    everything = with_float_inputs(q, quantized_nodes(q), onnx.load(str(tmp_path / "f.onnx")))
    assert not quantized_nodes(everything) and not any(n.op_type.endswith("QuantizeLinear") for n in everything.graph.node)
    onnx.save(everything, str(tmp_path / "back.onnx"))
    x = np.concatenate(calib)
    float_out = ORTRunner(tmp_path / "f.onnx")(x)
    back = ORTRunner(tmp_path / "back.onnx")(x)
    np.testing.assert_allclose(back, float_out, rtol=1e-5, atol=1e-5)
    rounded = with_float_inputs(q, quantized_nodes(q))  # no float graph: the INT8 weights dequantized
    onnx.save(rounded, str(tmp_path / "rounded.onnx"))
    error = np.abs(ORTRunner(tmp_path / "rounded.onnx")(x) - float_out).max()
    assert 0 < error < 0.05 * np.abs(float_out).max()


def test_with_float_inputs_follows_a_constant_the_quantizer_moved_across_a_transpose(tmp_path):
    """ConvNeXt's layer scale is 1x32x1x1 in the float graph and 1x1x1x32 in ONNX Runtime's Q/DQ graph (its
    pre-processing moves the Mul across a Transpose): the float graph's weight must be laid out as the quantized
    one, or the graph does not load (the guard's sensitivity ranking failed on every convnext this way)."""
    from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq
    from edgevision.runtimes.onnxruntime import ORTRunner, export_onnx

    loaded = load_model("convnext_mini", weights="random")
    export_onnx(loaded.model, loaded.spec.input_size, tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, *loaded.spec.input_size), dtype=np.float32)
             for i in range(8)]
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", calib, PROFILES["cpu"])
    q, f = onnx.load(str(tmp_path / "q.onnx")), onnx.load(str(tmp_path / "f.onnx"))
    onnx.save(with_float_inputs(q, quantized_nodes(q), f), str(tmp_path / "back.onnx"))
    x = np.concatenate(calib)
    # the logits themselves stay Q/DQ (a graph output, no node reads them): within one step of their scale
    step = float(next(onnx.numpy_helper.to_array(i) for i in q.graph.initializer if i.name == "logits_scale"))
    error = np.abs(ORTRunner(tmp_path / "back.onnx")(x) - ORTRunner(tmp_path / "f.onnx")(x)).max()
    assert error <= step


def test_exclusion_steps_double_up_to_half_then_keep_int8_to_weighted_ops():
    ranked = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    types = dict.fromkeys(ranked, "Conv") | {"c": "Add", "h": "LayerNormalization"}
    steps = exclusion_steps(ranked, types)
    assert [excluded for _, excluded in steps] == [["a"], ["a", "b"], ["a", "b", "c", "d"], ["c", "h"]]
    assert steps[-1][0] == "INT8 on Conv/Gemm/MatMul only"
    assert [e for _, e in exclusion_steps(["a"], {"a": "Conv"})] == [["a"]]


@needs_fashion_mnist
def test_more_calibration_is_four_times_the_set_a_superset_capped_and_none_when_the_data_has_no_more(
        tmp_path, fmnist_test_folder):
    train, folder = open_source("builtin:fashion-mnist:train"), open_source(str(fmnist_test_folder))  # 500 images
    ctx = guard_context(tmp_path, 8, train)
    first, more = ctx.calibration(), ctx.more_calibration()
    assert len(first) == 8 and len(more) == 32
    assert all(any(np.array_equal(x, y) for y in more) for x in first)  # the same seed draws deeper
    assert len(guard_context(tmp_path, 400, train).more_calibration()) == 1200  # MAX_GUARD_CALIBRATION
    assert len(guard_context(tmp_path, 200, folder).more_calibration()) == 500  # all the data has
    assert guard_context(tmp_path, 500, folder).more_calibration() is None


def guard_context(tmp_path, calib_size: int, source=None) -> Context:
    """A run context calibrating on `source` (default the Fashion-MNIST training split), as the guards see it."""
    source = source or open_source("builtin:fashion-mnist:train")
    recipe = resolve(preset_for("convnext"), None, {"calib_size": calib_size})
    return Context(load_model("convnext_mini", weights="random"), recipe, source, source, tmp_path, 1)


@needs_fashion_mnist
def test_cpu_guard_tries_the_settings_ladder_then_the_best_settings_so_far_on_more_images(tmp_path):
    ctx = guard_context(tmp_path, 300)
    q, calibration = ctx.settings(NNCFSettings), ctx.calibration()
    best = Trial(0.0, None, q, calibration)
    steps = []
    for name, settings, images in steps_after_preset(ctx, q, calibration, lambda: best):
        steps.append((name, settings, len(images)))
        if name == "transformer scheme":  # the best so far when the larger set is tried is what it reuses
            best = Trial(50.0, None, settings, calibration)
    assert [(n, s) for n, s, _ in steps[:-1]] == ladder(q) and all(k == 300 for *_, k in steps[:-1])
    assert steps[-1] == ("1200 calibration images", dataclasses.replace(q, model_type="transformer"), 1200)


@needs_fashion_mnist
def test_cpu_guard_tries_more_images_first_when_the_runs_set_is_small(tmp_path):
    ctx = guard_context(tmp_path, 8)
    q, calibration = ctx.settings(NNCFSettings), ctx.calibration()
    steps = [(n, s, len(i)) for n, s, i in steps_after_preset(ctx, q, calibration, lambda: None)]
    assert steps[0] == ("32 calibration images", q, 32)
    assert [(n, s) for n, s, _ in steps[1:]] == ladder(q) and all(k == 8 for *_, k in steps[1:])


def test_cpu_guard_scores_in_padded_batches_as_nncfs_one_item_metric_does():
    loaded = load_model("convnext_mini", weights="random")
    runner = create_runner("openvino", loaded.model, threads=2, input_size=loaded.spec.input_size)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, *loaded.spec.input_size), dtype=np.float32) for _ in range(SCORE_BATCH + 13)]
    # targets: the model's own answer for the first 30 items, a wrong one for the rest
    answers = [int(runner(x).argmax()) for x in xs]
    items = [(x, a if i < 30 else (a + 1) % 10) for i, (x, a) in enumerate(zip(xs, answers))]
    expected = metric(runner.compiled(1), items)
    assert expected == 30 / len(items) * 100
    assert score(runner, items) == expected
    assert runner._compiled[0] == SCORE_BATCH  # the padded last batch compiled nothing new


@needs_fashion_mnist
def test_guard_targets_without_labels_are_the_float_models_predictions_made_in_batches(tmp_path):
    unlabelled = dataclasses.replace(open_source("builtin:fashion-mnist:test"), labels=None)
    ctx = guard_context(tmp_path, 8, unlabelled)
    ctx.eval_source = unlabelled.subset(range(SCORE_BATCH + 13))
    reference = create_runner("openvino", ctx.loaded.model, threads=1, input_size=ctx.loaded.spec.input_size)
    batches = []

    def recording(x):
        batches.append(len(x))
        return reference(x)

    items = validation_items(ctx, lambda: recording, "float")
    assert metric_name(ctx) == "agreement" and len(items) == SCORE_BATCH + 13
    assert batches == [SCORE_BATCH, SCORE_BATCH]  # two padded calls, not one call per image
    assert [t for _, t in items] == [int(reference(x).argmax()) for x, _ in items]
    assert score(reference, items) == 100.0


@needs_fashion_mnist
@pytest.mark.parametrize("controlled, kept", [(10.0, "full bias correction"), (90.0, "NNCF accuracy control")])
def test_cpu_guard_keeps_accuracy_controls_model_only_when_it_beats_the_best_tried(tmp_path, controlled, kept):
    """NNCF returns a model even when it cannot hold the budget; measured worse than the best setting tried, it
    is not the one kept. Real NNCF accuracy control; the guard's measure of its result is set."""
    from edgevision.quantization.budget import Guard
    from edgevision.quantization.openvino_guard import _accuracy_control
    from edgevision.quantization.records import GuardSummary
    from edgevision.runtimes import openvino as ov_backend

    ctx = guard_context(tmp_path, 8)
    ctx.guard, ctx.eval_source = Guard(0.0, "asked"), open_source("builtin:fashion-mnist:test").subset(range(40))
    fp32 = ov_backend.convert(ctx.loaded.model, ctx.loaded.spec.input_size)
    items = validation_items(ctx, lambda: None, "openvino")
    best = Trial(60.0, "the best model tried", ctx.settings(NNCFSettings), ctx.calibration(), "full bias correction")
    started = GuardSummary("agreement", 0.0, len(items), 100.0, 60.0, needed=True)
    model, summary = _accuracy_control(ctx, fp32, items, best, started, lambda m: controlled)
    assert summary.kept == kept and summary.controlled_int8 == controlled
    assert summary.final_int8 == max(controlled, 60.0)
    assert (model == "the best model tried") == (controlled < 60.0)


def test_bundle_readme_says_the_guard_calibrated_on_more_images_only_when_it_did():
    from edgevision.pipeline.targets.jetson_readme import guard_line
    from edgevision.quantization.records import GuardStep, GuardSummary

    guard = GuardSummary("top1", 1.0, 300, 90.0, 87.0, needed=True, path=[GuardStep("as quantized", 87.0, 300, None)],
                         held=True, final_int8=89.5)
    assert "calibrated on 1200 images, it holds" in guard_line(dataclasses.replace(guard, calibration_images=1200))
    same = guard_line(dataclasses.replace(guard, calibration_images=300, excluded_nodes=["/conv2/Conv"]))
    assert "calibrated on" not in same and "1 node(s) left in float" in same and "`/conv2/Conv`" in same
    missed = guard_line(dataclasses.replace(guard, held=False, final_int8=87.0, calibration_images=300))
    assert "no step tried did better: it still misses the 1-point budget" in missed


@needs_fashion_mnist
def test_the_guards_of_every_int8_candidate_decode_the_evaluation_images_once(tmp_path, monkeypatch):
    from edgevision.data.loader import preprocess_each
    from edgevision.quantization import openvino_guard as cpu_guard

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1])
        return preprocess_each(*args, **kwargs)

    monkeypatch.setattr(cpu_guard, "preprocess_each", counted)
    data, calib = open_source("builtin:fashion-mnist:test"), open_source("builtin:fashion-mnist:train")
    result = export_model(loud_model(), data, recipe(100.0), "cpu", "int8", tmp_path / "cpu", calib_source=calib,
                          progress=False)
    guarded = {f"{v['name']}/{v['runtime']}" for v in result.report.to_dict()["variants"]
               if (v.get("quantization") or {}).keys() & {"accuracy_control", "accuracy_guard"}}
    assert {"int8/openvino", "int8/onnxruntime"} <= guarded
    assert len(calls) == 1 and len(calls[0]) == 200  # one decode of the 200 evaluation images served them all


@needs_fashion_mnist
def test_the_guards_check_on_the_sample_that_fits_their_memory_and_the_evaluation_uses_every_image(
        tmp_path, monkeypatch):
    from edgevision.data.loader import preprocess_each
    from edgevision.quantization import openvino_guard as cpu_guard

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0])
        return preprocess_each(*args, **kwargs)

    monkeypatch.setattr(cpu_guard, "preprocess_each", counted)
    monkeypatch.setattr(cpu_guard, "GUARD_MEMORY_BYTES", 50 * 4 * 3 * 16 * 16)  # 50 images of 3 x 16 x 16
    data, calib = open_source("builtin:fashion-mnist:test"), open_source("builtin:fashion-mnist:train")
    result = export_model(loud_model(), data, recipe(100.0), "cpu", "int8", tmp_path / "cpu", calib_source=calib,
                          progress=False)
    [checked] = calls
    assert len(checked) == 50 and np.bincount(checked.labels).tolist() == [5] * 10  # class-balanced
    guards = [v["quantization"].get("accuracy_control") or v["quantization"].get("accuracy_guard")
              for v in result.report.to_dict()["variants"] if v["name"].startswith("int8")]
    assert guards and all(g["images"] == 50 for g in guards)
    assert result.report.to_dict()["data"]["images"] == 200  # the evaluation pass: every image of the run's data


# ---- issue: the guard, sharp and cheap --------------------------------------------------------------------------


def _quantized_loud(tmp_path, profile="tensorrt"):
    """The loud model's float ONNX and its Q/DQ graph (calibrated on 32 training images), and 20 test images."""
    from edgevision.data.loader import preprocess_each
    from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq
    from edgevision.runtimes.onnxruntime import export_onnx

    loaded = loud_model()
    export_onnx(loaded.model, loaded.spec.input_size, tmp_path / "f.onnx", dynamic_batch=True)
    cfg = loaded.spec.data_config
    calib = [x for _, x in preprocess_each(open_source("builtin:fashion-mnist:train"), range(32), cfg)[0]]
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", calib, PROFILES[profile])
    test = open_source("builtin:fashion-mnist:test")
    images = [x for _, x in preprocess_each(test, range(20), cfg)[0]]
    return tmp_path / "f.onnx", tmp_path / "q.onnx", images


def _single_node_scores(tmp_path, profile):
    """{node: (top-1 agreement, mean KL)} with that node alone quantized, on 20 test images, and the KL ranking."""
    from edgevision.measure.evaluate import kl_per_image
    from edgevision.quantization.sensitivity import rank_by_sensitivity, rankable_nodes
    from edgevision.runtimes.onnxruntime import ORTRunner

    float_path, q_path, images = _quantized_loud(tmp_path, profile)
    x = np.concatenate(images)
    reference = ORTRunner(float_path)(x)

    def outputs(model):
        onnx.save(model, str(tmp_path / "m.onnx"))
        return ORTRunner(tmp_path / "m.onnx")(x)

    q, f = onnx.load(str(q_path)), onnx.load(str(float_path))
    ranked = rank_by_sensitivity(q, lambda m: float(kl_per_image(reference, outputs(m)).mean()), f)
    names = quantized_nodes(q)
    agreement = {n: float((outputs(with_float_inputs(q, [k for k in names if k != n], f)).argmax(1)
                           == reference.argmax(1)).mean()) for n in rankable_nodes(q)}
    return ranked, agreement


@needs_fashion_mnist
def test_fidelity_ranking_puts_the_broken_conv_first_on_20_images(tmp_path):
    ranked, _ = _single_node_scores(tmp_path, "tensorrt")
    assert [n for n, _ in ranked][0] == "/conv2/Conv" and len({v for _, v in ranked}) == len(ranked)


@needs_fashion_mnist
def test_fidelity_ranking_orders_nodes_that_top1_ties_on_20_images(tmp_path):
    """ONNX Runtime's own profile quantizes the loud gain's Mul too: it and the conv it feeds break INT8 alike,
    and each alone quantized leaves the same 1 of 20 answers: top-1 cannot order them, KL does, and puts the two
    broken nodes ahead of the two that are not."""
    ranked, agreement = _single_node_scores(tmp_path, "cpu")
    assert agreement["/Mul"] == agreement["/conv2/Conv"] < 0.5 <= min(agreement["/conv1/Conv"], agreement["/fc/Gemm"])
    kls = [v for _, v in ranked]
    assert len(set(kls)) == len(kls) and {n for n, _ in ranked[:2]} == {"/Mul", "/conv2/Conv"}


def test_ranked_nodes_are_compute_nodes_never_shape_arithmetic(tmp_path):
    """timm's same-padding convolutions (Conv2dSame) compute their padding from the input's Shape: Div, Sub,
    Cast, Pad on shapes read dequantized tensors too, and must not be ranked."""
    import timm

    from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq
    from edgevision.quantization.sensitivity import COMPUTE_OPS, rankable_nodes
    from edgevision.runtimes.onnxruntime import export_onnx

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).eval()
    export_onnx(net, (3, 64, 64), tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 64, 64)).astype(np.float32) for i in range(4)]
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", calib, PROFILES["cpu"])
    q = onnx.load(str(tmp_path / "q.onnx"))
    types = {n.name: n.op_type for n in q.graph.node}
    quantized, ranked = quantized_nodes(q), rankable_nodes(q)
    assert {"Shape", "Cast", "Div", "Sub"} <= {types[n] for n in quantized}  # they do read Q/DQ outputs
    assert set(ranked) < set(quantized) and {types[n] for n in ranked} <= COMPUTE_OPS
    assert not any(n.startswith("/conv_stem/") and types[n] != "Conv" for n in ranked)
    assert sum(types[n] == "Conv" for n in ranked) == sum(t == "Conv" for t in types.values())


def test_a_step_improves_only_beyond_the_noise_of_its_images():
    from edgevision.quantization.qdq_guard import improves

    rng = np.random.default_rng(0)
    best = rng.gamma(2.0, 0.05, 40)
    assert improves(best, best * 0.5)  # every image closer to the float model
    assert not improves(best, best * 1.1)  # further
    noisy = best + rng.normal(0, 0.05, 40)  # as far on average, image by image noise
    assert not improves(best, noisy - 0.001)


@needs_fashion_mnist
def test_the_ladder_stops_when_leaving_more_nodes_in_float_does_not_help(tmp_path):
    """A random-weight EfficientNet-Lite calibrated on 4 images loses a little in every layer: no node is the
    culprit, so after a step or two the exclusion ladder stops (instead of leaving up to half the graph in float),
    the format's fixes are tried, and the guard gives up and says what it tried."""
    from edgevision.data.builtin import fashion_mnist

    images, _ = fashion_mnist("test")
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for i in range(60):
        Image.fromarray(images[i]).save(flat / f"{i}.png")
    loaded = load_model("efficientnet_lite_mini", weights="random", seed=0, num_classes=10)
    strict = resolve(preset_for(loaded.spec.family), None, {"benchmark_iters": 3, "calib_size": 4, "max_drop": 0.0,
                                                            "guard_time": 600})
    result = export_model(loaded, open_source(str(flat)), strict, "onnx", "int8", tmp_path / "onnx",
                          calib_source=open_source("builtin:fashion-mnist:train"), progress=False)
    guard = next(v for v in result.report.to_dict()["variants"] if v["name"] == "int8")["quantization"]["accuracy_guard"]
    if not guard["needed"] or guard["held"]:
        pytest.skip("this machine's INT8 of it held a zero budget: no ladder to stop")
    steps = [s["step"] for s in guard["path"]]
    ladder = [s for s in steps if "most sensitive" in s or s == "INT8 on Conv/Gemm/MatMul only"]
    full_ladder = exclusion_steps([str(i) for i in range(guard["ranking"]["nodes"])], {})
    assert "beyond the noise" in guard["ladder_stopped"] and 1 <= len(ladder) < len(full_ladder) - 1
    assert steps[-1] == "percentile calibration" and guard["gave_up"].startswith("no step held the budget")
    assert all(s["kl"] >= 0 for s in guard["path"]) and guard["kept"] in steps


@needs_fashion_mnist
def test_the_guard_stops_at_its_time_budget_and_says_what_came_next(tmp_path):
    data, calib = open_source("builtin:fashion-mnist:test"), open_source("builtin:fashion-mnist:train")
    timed = resolve(preset_for("convnext"), None, {"benchmark_iters": 3, "calib_size": 32, "eval_limit": 200,
                                                   "max_drop": 3.0, "guard_time": 0})
    result = export_model(loud_model(), data, timed, "onnx", "int8", tmp_path / "onnx", calib_source=calib,
                          progress=False)
    guard = next(v for v in result.report.to_dict()["variants"] if v["name"] == "int8")["quantization"]["accuracy_guard"]
    assert guard["needed"] and not guard["held"] and [s["step"] for s in guard["path"]] == ["as quantized"]
    assert guard["stopped"].startswith("stopped at the guards' time budget (0 s")
    assert guard["stopped"].endswith("next it would have tried: 128 calibration images") and guard["seconds"] >= 0
    assert any("the accuracy guard stopped at the guards' time budget" in w for w in result.report.to_dict()["warnings"])
    assert result.report.to_dict()["status"] == "max_drop_not_met"


def qdq_parameters(path, suffixes=("_scale", "_zero_point")) -> dict[str, list]:
    """The quantization parameters of a Q/DQ graph (its initializers named with `suffixes`), by name."""
    return {i.name: onnx.numpy_helper.to_array(i).tolist() for i in onnx.load(str(path)).graph.initializer
            if i.name.endswith(suffixes)}


def test_a_graph_is_calibrated_once_per_run_and_its_ranges_quantize_as_a_fresh_calibration_does(tmp_path):
    """Every profile and guard step quantizing one float graph on one set of images reuses one calibration:
    ranges over every op type serve a profile of fewer, and give it the same scales as calibrating it anew."""
    from edgevision.quantization.onnxruntime import PROFILES, calibration_folder, quantize_qdq, quantize_qdq_formats
    from edgevision.runtimes.onnxruntime import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    export_onnx(model, (3, 8, 8), tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(8)]
    quantize_qdq_formats(tmp_path / "f.onnx", {tmp_path / "compute.onnx": PROFILES["cpu-compute"],
                                               tmp_path / "cpu.onnx": PROFILES["cpu"]}, calib)
    folder = calibration_folder(tmp_path / "f.onnx", np.concatenate(calib), "minmax")
    every_type, compute_types = folder / "all-op-types.json", folder / "Conv-Gemm-MatMul.json"
    assert every_type.is_file() and compute_types.is_file()
    written = every_type.stat().st_mtime_ns
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "again.onnx", calib, PROFILES["cpu-compute"], exclude_nodes=["x"])
    assert every_type.stat().st_mtime_ns == written  # read, not calibrated again

    assert qdq_parameters(tmp_path / "again.onnx") == qdq_parameters(tmp_path / "compute.onnx") != {}
    other = calibration_folder(tmp_path / "f.onnx", np.concatenate(calib[:4]), "minmax")
    assert other != folder != calibration_folder(tmp_path / "f.onnx", np.concatenate(calib), "percentile")


def test_a_graph_fused_from_another_is_quantized_from_its_sources_ranges_as_its_own_calibration_would(tmp_path):
    """The attention-fused float graph keeps the exported graph's tensors: its quantization reads the exported
    graph's ranges (no calibration pass of its own, which would have calibrated other tensors) and gives the scales
    its own calibration gives."""
    import shutil

    from conftest import tiny_vit

    from edgevision.quantization.onnxruntime import PROFILES, calibration_folder, quantize_qdq
    from edgevision.runtimes.onnxruntime import ORTRunner, export_onnx
    from edgevision.runtimes.ort_fusions import fuse_attention

    fp32 = export_onnx(tiny_vit(fused_attn=False), (3, 32, 32), tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(8)]
    images, compute = np.concatenate(calib), PROFILES["cpu-compute"]
    assert fuse_attention(fp32, tmp_path / "fused.onnx", calib[0]) == 2
    shutil.copy(tmp_path / "fused.onnx", tmp_path / "fused-alone.onnx")
    quantize_qdq(fp32, tmp_path / "exported-int8.onnx", calib, compute)  # the exported graph calibrated

    quantize_qdq(tmp_path / "fused.onnx", tmp_path / "seeded.onnx", calib, compute, ranges_of=fp32)
    quantize_qdq(tmp_path / "fused-alone.onnx", tmp_path / "alone.onnx", calib, compute)  # a calibration of its own

    def files(graph):
        return {p.name: p.read_bytes() for p in calibration_folder(graph, images, "minmax").iterdir()}

    assert files(tmp_path / "fused.onnx") == files(fp32)  # read from the exported graph's ranges
    assert files(tmp_path / "fused-alone.onnx") != files(fp32)  # its own: without the attention's matmul inputs

    seeded, alone = (qdq_parameters(tmp_path / name, ("_scale",)) for name in ("seeded.onnx", "alone.onnx"))
    assert seeded.keys() == alone.keys() and len(seeded) >= 8
    assert all(np.allclose(seeded[k], alone[k], rtol=1e-5, atol=0) for k in alone)
    x = np.random.default_rng(9).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(ORTRunner(tmp_path / "seeded.onnx")(x), ORTRunner(tmp_path / "alone.onnx")(x),
                               atol=1e-3)


def test_a_float_graph_is_pre_processed_once_per_process_until_it_is_written_again(tmp_path):
    """ONNX Runtime's pre-processing does not depend on the profile or the images: the second job on a graph
    reads the first one's, and a float graph written again gets its own."""
    from edgevision.quantization.onnxruntime import PROFILES, prepared_folder, quantize_qdq
    from edgevision.runtimes.onnxruntime import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    fp32 = export_onnx(model, (3, 8, 8), tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(4)]
    quantize_qdq(fp32, tmp_path / "a.onnx", calib, PROFILES["cpu-compute"])
    prepared = prepared_folder(fp32) / "prepared.onnx"
    written = prepared.stat().st_mtime_ns
    quantize_qdq(fp32, tmp_path / "b.onnx", calib[:2], PROFILES["cpu"])
    assert prepared.stat().st_mtime_ns == written  # read, not pre-processed again
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(tmp_path / "b.onnx")).graph.node}
    export_onnx(torch.nn.Sequential(*model[:2]), (3, 8, 8), fp32, dynamic_batch=True)
    assert prepared_folder(fp32) != prepared.parent
    quantize_qdq(fp32, tmp_path / "c.onnx", calib, PROFILES["cpu-compute"])
    assert {n.op_type for n in onnx.load(str(tmp_path / "c.onnx")).graph.node}.isdisjoint({"Gemm", "MatMul"})
    assert not prepared.exists()  # one graph kept: the last one
