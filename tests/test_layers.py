"""Per-layer profiles: the work of a layer from its shapes, the grouping against the roofline, and real
OpenVINO and ONNX Runtime profiles of an INT8 convnext_mini whose MACs add up to the model's own count."""
from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from edgevision import api
from edgevision.cli.app import app
from edgevision.errors import EdgevisionError
from edgevision.measure.layers import LayerProfile, float_op, int8_payoff, profile_layers
from edgevision.models import load_model
from edgevision.models.zoo import count_gmacs
from edgevision.runtimes import create_runner
from edgevision.runtimes.layers import (
    ATTENTION,
    DEPTHWISE,
    GEMM,
    OTHER,
    LayerTime,
    attention_work,
    conv_work,
    matmul_work,
)
from edgevision.typed import to_data


def test_conv_work_counts_each_output_times_its_receptive_field():
    # ONNX layout O x I/g x kH x kW: a 3x3 conv from 16 to 32 channels on an 8x8 output
    assert conv_work((1, 32, 8, 8), (32, 16, 3, 3), 1) == (GEMM, 32 * 8 * 8 * 16 * 9)
    # depthwise 7x7 in ONNX layout, and in OpenVINO's grouped G x O/g x I/g x kH x kW
    assert conv_work((1, 96, 16, 16), (96, 1, 7, 7), 1) == (DEPTHWISE, 96 * 16 * 16 * 49)
    assert conv_work((1, 96, 16, 16), (96, 1, 1, 7, 7), 2) == (DEPTHWISE, 96 * 16 * 16 * 49)


def test_matmul_work_reads_k_from_a_plain_or_transposed_activation():
    assert matmul_work((1, 197, 768), (1, 197, 3072)) == (GEMM, 197 * 3072 * 768)
    assert matmul_work((768, 197), (197, 3072)) == (GEMM, 197 * 3072 * 768)  # A transposed: K x M
    assert matmul_work((64, 2, 4, 32), (64, 2, 4, 4)) == (GEMM, 64 * 2 * 4 * 4 * 32)  # attention q @ k^T
    assert matmul_work((49, 49), (49, 64)) == (GEMM, 49 * 64 * 49)  # M == K: not mistaken for a transpose


def recorded() -> LayerProfile:
    """A recorded profile: two INT8 GEMMs (2 GMACs in 4 ms), one float GEMM, a depthwise conv, other work."""
    return LayerProfile("openvino", 10, [
        LayerTime("fc1", "FullyConnected:brgemm_avx512_i8", GEMM, True, 1_500_000_000, 3.0),
        LayerTime("fc2", "FullyConnected:brgemm_avx512_i8", GEMM, True, 500_000_000, 1.0),
        LayerTime("head", "FullyConnected:brgemm_avx512_f32", GEMM, False, 10_000_000, 0.5),
        LayerTime("dw", "GroupConvolution:brgconv_avx512_dw_I8", DEPTHWISE, True, 5_000_000, 1.5),
        LayerTime("norm", "MVN:jit_avx512_f32", OTHER, False, 0, 2.0),
    ])


def test_groups_sum_time_and_work_per_kind_and_precision_most_time_first():
    groups = recorded().groups()
    assert [(g.kind, g.int8) for g in groups] == [(GEMM, True), (OTHER, False), (DEPTHWISE, True),
                                                        (GEMM, False)]
    gemm = groups[0]
    assert (gemm.layers, gemm.ms, gemm.gmacs) == (2, 4.0, 2.0)
    assert gemm.gops == 1000.0  # 2 x 2e9 operations in 4 ms
    assert gemm.time_share == 0.5  # 4 of 8 ms
    assert sum(g.time_share for g in groups) == pytest.approx(1.0)


def test_int8_gemm_share_is_against_the_roofline_and_absent_without_one():
    profile = recorded()
    assert profile.int8_gemm_share(1250.0) == 0.8
    assert profile.int8_gemm_share(None) is None
    report = profile.report(1250.0)
    assert report.int8_gemm.roofline_share == 0.8 and report.int8_gemm.roofline_gops == 1250.0
    assert [layer.name for layer in report.slowest] == ["fc1", "norm", "dw", "fc2", "head"]
    floats = LayerProfile("onnxruntime", 10, [layer for layer in profile.layers if not layer.int8])
    assert floats.int8_gemm_share(1250.0) is None


def test_operators_sum_time_per_operator_and_precision_without_the_kernel():
    profile = recorded()
    profile.layers.append(LayerTime("fc3", "FullyConnected:brgemm_avx512_f32", GEMM, False, 10_000_000, 0.25))
    rows = {(r.op, r.int8): r for r in profile.operators()}
    assert rows[("FullyConnected", True)].layers == 2 and rows[("FullyConnected", True)].ms == 4.0
    assert rows[("FullyConnected", False)].layers == 2 and rows[("FullyConnected", False)].ms == 0.75
    assert [r.op for r in profile.operators()][:2] == ["FullyConnected", "MVN"]
    assert sum(r.time_share for r in profile.operators()) == pytest.approx(1.0, abs=0.002)
    assert to_data(profile.report())["operators"] == [dataclasses.asdict(o) for o in profile.operators()]


@pytest.fixture(scope="module")
def int8_artifacts(tmp_path_factory):
    """A compress run of convnext_mini (random weights, 32 px): OpenVINO and ONNX Runtime INT8 artifacts."""
    out = tmp_path_factory.mktemp("layers") / "run"
    api.compress("convnext_mini", weights="random", int8=True, data="builtin:photos", calib_size=8,
                 iters=5, out=out, progress=False)
    return out


@pytest.mark.parametrize("artifact, runtime", [("model_int8.xml", "openvino"), ("model_int8.onnx", "onnxruntime")])
def test_real_profile_finds_every_mac_of_the_model_in_int8_gemms(int8_artifacts, artifact, runtime):
    loaded = load_model("convnext_mini", weights="random")
    expected = count_gmacs(loaded.model, loaded.spec.input_size)  # torch's own count of the float model
    profile = profile_layers(create_runner(runtime, int8_artifacts / artifact, threads=2), loaded.spec.input_size,
                             rounds=3)
    counted = sum(layer.macs for layer in profile.layers if layer.kind in (GEMM, DEPTHWISE)) / 1e9
    assert counted == pytest.approx(expected, rel=0.01)
    kinds = {(layer.kind, layer.int8) for layer in profile.layers}
    assert (GEMM, True) in kinds and (DEPTHWISE, True) in kinds  # the stem, pointwise MLPs and 7x7 dw in INT8
    assert all(layer.ms >= 0 for layer in profile.layers) and profile.total_ms > 0
    share = profile.int8_gemm_share(1000.0)
    assert share is not None and share > 0


def test_float_onnx_profile_has_no_int8_layers(tmp_path):
    from edgevision.runtimes.onnxruntime import export_onnx

    loaded = load_model("convnext_mini", weights="random")
    path = export_onnx(loaded.model, loaded.spec.input_size, tmp_path / "model.onnx")
    profile = profile_layers(create_runner("onnxruntime", path, threads=2), loaded.spec.input_size, rounds=2)
    assert profile.layers and not any(layer.int8 for layer in profile.layers)
    assert profile.int8_gemm_share(1000.0) is None


def test_pytorch_has_no_layer_profiler():
    loaded = load_model("convnext_mini", weights="random")
    runner = create_runner("pytorch", loaded.model, threads=1)
    with pytest.raises(EdgevisionError, match="no per-layer times"):
        profile_layers(runner, loaded.spec.input_size, rounds=1)


def test_cli_benchmark_layers_json_and_table(int8_artifacts):
    cli = CliRunner()
    done = cli.invoke(app, ["benchmark", str(int8_artifacts / "model_int8.xml"), "--layers", "--iters", "3",
                            "--warmup", "1", "--throughput-batch", "0", "--threads", "2", "--json"])
    assert done.exit_code == 0, done.output
    layers = json.loads(done.stdout)["layers"]
    assert layers["runtime"] == "openvino" and layers["int8_gemm"]["layers"] > 0
    assert layers["int8_gemm"]["roofline_gops"] > 0  # this machine's profile, measured or cached
    assert 0 < layers["int8_gemm"]["roofline_share"]
    assert any(op["int8"] for op in layers["operators"])  # the INT8 convolutions, summed as one operator
    text = cli.invoke(app, ["benchmark", str(int8_artifacts / "model_int8.onnx"), "--layers", "--iters", "3",
                            "--warmup", "1", "--throughput-batch", "0", "--threads", "2"])
    assert text.exit_code == 0, text.output
    assert "slowest layers" in text.stdout and "QLinearConv" in text.stdout
    assert "operators that took the most time" in text.stdout
    assert "INT8 GEMMs:" in text.stdout and "of this CPU's INT8 GEMM roofline in onnxruntime" in text.stdout
    assert "INT8 against float" not in text.stdout  # a compress run keeps no float ONNX to compare with


def test_int8_payoff_joins_each_int8_operator_with_the_float_one_it_replaces():
    float_profile = LayerProfile("onnxruntime", 10, [
        LayerTime("c1", "Conv", GEMM, False, 10, 4.0), LayerTime("dw", "Conv", DEPTHWISE, False, 1, 1.0),
        LayerTime("add", "Add", OTHER, False, 0, 0.5)])
    int8_profile = LayerProfile("onnxruntime", 10, [
        LayerTime("c1", "QLinearConv", GEMM, True, 10, 1.5), LayerTime("dw", "QLinearConv", DEPTHWISE, True, 1, 1.8),
        LayerTime("add", "Add", OTHER, False, 0, 0.5), LayerTime("q", "QuantizeLinear", OTHER, True, 0, 0.4),
        LayerTime("dq", "DequantizeLinear", OTHER, True, 0, 0.3)])
    rows = {(r.op, r.kind): r for r in int8_payoff(float_profile, int8_profile)}
    assert (rows[("Conv", GEMM)].saved_ms, rows[("Conv", GEMM)].paid) == (2.5, True)
    assert (rows[("Conv", DEPTHWISE)].saved_ms, rows[("Conv", DEPTHWISE)].paid) == (-0.8, False)  # AVX2's dw
    assert rows[("quantize/dequantize", OTHER)].float_ms == 0.0 and rows[("quantize/dequantize", OTHER)].verdict == "cost"
    assert rows[("quantize/dequantize", OTHER)].int8_ms == pytest.approx(0.7)
    assert [r.op for r in int8_payoff(float_profile, int8_profile)][0] == "Conv"  # most time saved or lost first
    assert sum(r.float_ms for r in rows.values()) == pytest.approx(float_profile.total_ms)
    assert sum(r.int8_ms for r in rows.values()) == pytest.approx(int8_profile.total_ms)
    assert rows[("Add", OTHER)].verdict == "even" and rows[("Conv", GEMM)].verdict == "paid"
    fused = LayerProfile("onnxruntime", 10, [LayerTime("g", "BiasGelu", OTHER, False, 0, 2.0)])
    split = LayerProfile("onnxruntime", 10, [LayerTime("e", "Erf", OTHER, False, 0, 1.0)])
    assert [(r.op, r.verdict) for r in int8_payoff(fused, split)] == [("BiasGelu", "float only"), ("Erf", "INT8 only")]
    assert [float_op(op) for op in ("QGemm", "MatMulInteger", "QLinearMatMul", "Convolution:brgconv_avx2_I8",
                                    "FakeQuantize", "FullyConnectedQuantizedLegacy:jit_gemm_i8")] == [
        "Gemm", "MatMul", "MatMul", "Convolution", "quantize/dequantize", "FullyConnected"]


def test_cli_benchmark_layers_says_per_operator_whether_int8_paid_against_the_float_artifact(int8_artifacts):
    cli = CliRunner()
    done = cli.invoke(app, ["benchmark", str(int8_artifacts / "model_int8.xml"), "--layers", "--iters", "3",
                            "--warmup", "1", "--throughput-batch", "0", "--threads", "2", "--json"])
    assert done.exit_code == 0, done.output
    against = json.loads(done.stdout)["layers"]["int8_vs_float"]
    assert against["float_artifact"].endswith("model_fp32.xml")  # found beside the INT8 artifact
    rows = against["operators"]
    assert sum(r["float_ms"] for r in rows) == pytest.approx(against["float_total_ms"], abs=0.01)
    assert all(r["paid"] == (r["verdict"] == "paid") and (r["verdict"] != "paid" or r["int8_ms"] < r["float_ms"])
               for r in rows)
    assert not any(r["op"].startswith("FullyConnectedQuantized") for r in rows)  # joined with its float op
    text = cli.invoke(app, ["benchmark", str(int8_artifacts / "model_int8.xml"), "--layers", "--iters", "3",
                            "--warmup", "1", "--throughput-batch", "0", "--threads", "2"])
    assert "INT8 against float in openvino, per operator type" in text.stdout and "saved ms" in text.stdout
    wrong = cli.invoke(app, ["benchmark", str(int8_artifacts / "model_int8.xml"), "--layers", "--float",
                             str(int8_artifacts / "model_int8.onnx"), "--iters", "1", "--throughput-batch", "0"])
    assert wrong.exit_code == 2 and "does not run in openvino" in wrong.output


def test_cli_benchmark_layers_in_pytorch_is_a_one_line_error():
    done = CliRunner().invoke(app, ["benchmark", "convnext_mini", "--layers", "--iters", "1", "--warmup", "0",
                                    "--throughput-batch", "0"])
    assert done.exit_code == 2
    assert done.output.count("\n") == 1 and "error: pytorch reports no per-layer times" in done.output


def test_profile_at_a_batch_the_openvino_graph_cannot_take_is_a_one_line_error():
    loaded = load_model("swin_mini", weights="random")  # timm's Swin bakes batch 1 into its window reshapes
    runner = create_runner("openvino", loaded.model, threads=2, input_size=loaded.spec.input_size)
    assert profile_layers(runner, loaded.spec.input_size, rounds=1).layers
    with pytest.raises(EdgevisionError, match="runs only at batch 1 in OpenVINO, not 2"):
        profile_layers(runner, loaded.spec.input_size, batch=2, rounds=1)


def test_attention_work_counts_scores_and_output():
    # 12 heads, 197 queries and keys, 64 dims: Q @ K^T and softmax(.) @ V, 197 x 197 x 64 MACs per head each
    assert attention_work((1, 12, 197, 64), (1, 12, 197, 64), (1, 12, 197, 64)) == 12 * 197 * 197 * 64 * 2


def test_openvino_counts_the_attention_it_fuses_as_attention_work():
    """vit_mini: OpenVINO fuses each block's attention into one Subgraph; its MACs come from the source model's
    ScaledDotProductAttention (torch's own count leaves SDPA out on the CPU, so the blocks' shapes give it)."""
    loaded = load_model("vit_mini", weights="random")
    model = loaded.model
    runner = create_runner("openvino", model, threads=2, input_size=loaded.spec.input_size)
    profile = profile_layers(runner, loaded.spec.input_size, rounds=2)
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    expected = len(model.blocks) * 2 * tokens * tokens * model.embed_dim  # all heads: L x L x D, twice
    attention = [layer for layer in profile.layers if layer.kind == ATTENTION]
    assert len(attention) == len(model.blocks)
    assert sum(layer.macs for layer in attention) == expected
    gemm = sum(layer.macs for layer in profile.layers if layer.kind in (GEMM, DEPTHWISE)) / 1e9
    assert gemm == pytest.approx(count_gmacs(model, loaded.spec.input_size), rel=0.01)  # nothing counted twice
    assert ATTENTION in {g.kind for g in profile.groups()}


def test_openvino_finds_every_mac_of_swin_in_gemm_and_attention_layers():
    """swin_mini: its window attention (with a mask, decomposed before fusion) is counted from the source
    model's MatMuls; with the GEMMs it adds up to torch's own count, which includes it."""
    loaded = load_model("swin_mini", weights="random")
    runner = create_runner("openvino", loaded.model, threads=2, input_size=loaded.spec.input_size)
    profile = profile_layers(runner, loaded.spec.input_size, rounds=2)
    assert any(layer.kind == ATTENTION and layer.macs for layer in profile.layers)
    counted = sum(layer.macs for layer in profile.layers if layer.kind != OTHER) / 1e9
    assert counted == pytest.approx(count_gmacs(loaded.model, loaded.spec.input_size), rel=0.01)
