"""`edgevision compress --int8`: real NNCF + OpenVINO on small models and real data."""
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import needs_fashion_mnist
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.data import open_source
from edgevision.errors import DataError, EdgevisionError, OutputExistsError
from edgevision.measure.evaluate import evaluate_runners
from edgevision.models import load_model
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.recipe import RecipeError
from edgevision.pipeline.resolve import load_recipe_file, resolve
from edgevision.pipeline.run import compress_model as compress
from edgevision.runtimes import Runner
from edgevision.runtimes.openvino import native_bf16

pytestmark = needs_fashion_mnist
FAST = {"benchmark_iters": 5, "calib_size": 64}


def recipe_for(loaded, **overrides):
    return resolve(preset_for(loaded.spec.family), None, {**FAST, **overrides})


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, trained_checkpoint):
    """One real compress run of a trained convnext_mini on 300 Fashion-MNIST test images."""
    loaded = load_model(checkpoint=trained_checkpoint)
    out = tmp_path_factory.mktemp("runs") / "convnext-int8"
    result = compress(loaded, open_source("builtin:fashion-mnist:test"), recipe_for(loaded, eval_limit=300), out,
                      calib_source=open_source("builtin:fashion-mnist:train"), progress=False)
    return result


def test_run_directory_holds_ir_recipe_manifest_and_report(int8_run):
    run = int8_run.run_dir
    names = {p.name for p in run.iterdir()}
    assert {"model_fp32.xml", "model_fp32.bin", "model_int8.xml", "model_int8.bin", "recipe.yaml",
            "manifest.json", "report.json"} <= names
    assert not any(n.startswith(".") for n in names)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 3, 32, 32]
    assert manifest["preprocessing"]["crop_pct"] == 1.0
    assert {"torch", "timm", "openvino", "nncf"} <= set(manifest["versions"])
    import hashlib

    digest = hashlib.sha256((run / "model_int8.bin").read_bytes()).hexdigest()
    assert manifest["files"]["model_int8.bin"]["sha256"] == digest
    assert yaml.safe_load((run / "recipe.yaml").read_text())["calib_size"] == 64


def test_report_has_the_promised_fields(int8_run):
    report = json.loads((int8_run.run_dir / "report.json").read_text())
    assert report == json.loads(json.dumps(int8_run.report.to_dict()))
    assert report["model"]["name"] == "convnext_mini" and report["weights"].startswith("checkpoint:")
    assert report["data"] == {"spec": "builtin:fashion-mnist:test", "images": 300, "skipped": 0, "labelled": True}
    assert report["calibration"]["images"] == 64 and report["calibration"]["data"] == "builtin:fashion-mnist:train"
    by_name = {(v["name"], v["runtime"]): v for v in report["variants"]}
    onnxruntime = {k for k in by_name if k[1] == "onnxruntime"}  # ONNX Runtime INT8 in the profile's formats
    bf16 = {("int8-bf16", "openvino")} if native_bf16() else set()  # where the CPU computes bf16 natively
    mixed = {("int8-mixed", "openvino")}  # when INT8 won some classes of layer here and lost others (placement.py)
    assert set(by_name) - onnxruntime - mixed == {("fp32", "pytorch"), ("fp32", "openvino"), ("int8", "openvino")} | bf16
    assert ("int8", "onnxruntime") in onnxruntime and all(name.startswith("int8") for name, _ in onnxruntime)
    # a trained model: the default accuracy guard (1 point) holds, and the selected variant is within it
    assert report["guard"] == {"max_drop": 1.0, "source": "default"} and report["status"] == "ok"
    selected = next(v for v in report["variants"] if v["selected"])
    assert f"{selected['name']}/{selected['runtime']}" == report["selection"]["selected"]
    assert selected["top1_drop"] <= 1.0 and selected["role"] == "candidate"
    for v in report["variants"]:
        for key in ("name", "runtime", "role", "top1", "top1_drop", "agreement", "kl", "latency_ms_p50",
                    "latency_ms_p90", "speedup", "size_mb", "artifact", "selected"):
            assert key in v, key
    ref, ov32, int8 = by_name["fp32", "pytorch"], by_name["fp32", "openvino"], by_name["int8", "openvino"]
    assert ref["speedup"] == 1.0 and ref["top1_drop"] == 0.0 and ref["agreement"] == 100.0
    assert ov32["agreement"] == 100.0 and ov32["kl"] < 1e-6  # the same float model in another runtime
    assert int8["top1"] > 50 and int8["agreement"] > 90  # a trained model survives INT8
    assert int8["size_mb"] < 0.5 * ov32["size_mb"]  # int8 weights
    assert int8["artifact"] == "model_int8.xml"


def test_the_ir_really_is_int8(int8_run):
    import openvino as ov

    from edgevision.runtimes.openvino import OpenVINORunner, count_ops

    core = ov.Core()
    fp32 = core.read_model(str(int8_run.run_dir / "model_fp32.xml"))
    int8 = core.read_model(str(int8_run.run_dir / "model_int8.xml"))
    assert count_ops(fp32).get("FakeQuantize", 0) == 0
    n_fq = count_ops(int8).get("FakeQuantize", 0)
    assert n_fq >= 10
    info = next(v for v in int8_run.report.to_dict()["variants"] if v["name"] == "int8")["quantization"]
    assert info["fake_quantize_ops"] == n_fq
    # and the CPU plugin executes layers in INT8, not just carries fake-quantize nodes
    assert OpenVINORunner(int8).int8_layers() > 10 and OpenVINORunner(fp32).int8_layers() == 0
    assert info["int8_layers_executed"] > 10


class Recorder(Runner):
    def __init__(self):
        self.seen = []

    def __call__(self, batch):
        self.seen.append(batch.copy())
        return np.zeros((len(batch), 10), np.float32)


def test_float_and_int8_are_evaluated_on_identical_tensors(image_folder):
    a, b = Recorder(), Recorder()
    cfg = load_model("convnext_mini", num_classes=2).spec.data_config
    evaluate_runners({"fp32": a, "int8": b}, open_source(str(image_folder)), cfg, batch_size=4, progress=False)
    assert len(a.seen) == 2 and all(np.array_equal(x, y) for x, y in zip(a.seen, b.seen))


def test_accuracy_budget_returns_layers_to_float_and_reports_them(tmp_path, fmnist_test_folder):
    """Random weights make INT8 flip many argmaxes; an explicit 2-point agreement budget makes the guard try the
    other settings, then NNCF's accuracy control. Through the CLI with --json: NNCF's log stays off stdout."""
    images = tmp_path / "unlabelled"
    images.mkdir()
    for p in sorted(fmnist_test_folder.glob("*/*.png"))[::5]:  # 100 unlabelled images
        (images / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    done = subprocess.run([sys.executable, "-m", "edgevision", "compress", "convnext_mini", "--weights", "random",
                           "--num-classes", "10", "--seed", "0", "--max-drop", "2", "--runtime", "openvino",
                           "--data", str(images), "--calib-size", "64", "--iters", "5", "--out", str(tmp_path / "run"),
                           "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 3), done.stderr
    report = json.loads(done.stdout)  # stdout holds the JSON alone, NNCF's INFO lines went to stderr
    assert "INFO:nncf" not in done.stdout
    int8 = next(v for v in report["variants"] if v["name"] == "int8")
    control = int8["quantization"]["accuracy_control"]
    assert control["metric"] == "agreement" and control["needed"] is True
    assert control["float"] - control["plain_int8"] > 2.0
    steps = [s["step"] for s in control["path"]]
    assert steps[0] == "preset" and len(steps) >= 2  # the other settings were tried, in order, and timed
    assert all(s["seconds"] is not None for s in control["path"][1:])
    if steps[-1] == "NNCF accuracy control":
        assert int8["quantization"]["layers_returned_to_float"]  # named, not just counted
    assert control["float"] - control["final_int8"] <= 2.0
    # the report measures the returned model again, against PyTorch FP32 on the same images: still in budget
    assert report["guard"] == {"max_drop": 2.0, "source": "asked"}
    assert report["status"] == "ok" and done.returncode == 0


def test_no_overwrite_without_force_and_force_replaces(int8_run, trained_checkpoint, tmp_path):
    loaded = load_model(checkpoint=trained_checkpoint)
    before = sorted(p.name for p in int8_run.run_dir.iterdir())
    with pytest.raises(OutputExistsError):
        compress(loaded, open_source("builtin:photos"), recipe_for(loaded), int8_run.run_dir, progress=False)
    assert sorted(p.name for p in int8_run.run_dir.iterdir()) == before
    run = tmp_path / "run"
    shutil.copytree(int8_run.run_dir, run)
    replaced = compress(loaded, open_source("builtin:photos"), recipe_for(loaded, int8=False), run, force=True,
                        progress=False)
    assert not (run / "model_int8.xml").exists() and (run / "model_fp32.xml").exists()  # the new run, whole
    assert json.loads((run / "report.json").read_text())["data"]["spec"] == "builtin:photos"
    assert replaced.report.to_dict()["variants"][-1]["name"] == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial or old directory left beside it


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_nothing_half_written_after_failure_or_ctrl_c(tmp_path, monkeypatch, failure):
    from edgevision.pipeline.targets import cpu

    def boom(self, ctx):
        (ctx.workdir / "model_int8.xml").write_text("half")
        raise failure("stopped")

    monkeypatch.setattr(cpu.OpenVINOInt8, "run", boom)
    loaded = load_model("convnext_mini", num_classes=10)
    out = tmp_path / "run"
    with pytest.raises(failure):
        compress(loaded, open_source("builtin:photos"), recipe_for(loaded), out, progress=False)
    assert list(tmp_path.iterdir()) == []  # no run dir, no temporary dir


def test_fewer_calibration_images_warn_and_use_all(tmp_path):
    loaded = load_model("convnext_mini", num_classes=10)
    result = compress(loaded, open_source("builtin:photos"), recipe_for(loaded, calib_size=300), tmp_path / "r",
                      progress=False)
    assert result.report.to_dict()["calibration"]["images"] == len(open_source("builtin:photos"))
    assert any("asked for 300 calibration images" in w for w in result.report.to_dict()["warnings"])
    assert result.report.to_dict()["data"]["labelled"] is False
    assert all(v["top1"] is None for v in result.report.to_dict()["variants"])  # no labels: fidelity only


def test_no_usable_calibration_image_is_an_error(tmp_path):
    from conftest import broken_image_bytes

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0.jpg").write_bytes(broken_image_bytes())
    loaded = load_model("convnext_mini", num_classes=10)
    with pytest.raises(DataError, match="no usable calibration image"):
        compress(loaded, open_source("builtin:photos"), recipe_for(loaded), tmp_path / "r",
                 calib_source=open_source(str(bad)), progress=False)
    assert not (tmp_path / "r").exists()


def test_model_openvino_cannot_convert_names_the_operator(tmp_path):
    from edgevision.models.loading import LoadedModel

    class Zeta(torch.nn.Module):
        num_classes = 10

        def forward(self, x):
            return torch.special.zeta(x.mean((2, 3)), x.mean((2, 3)) + 2).repeat(1, 4)[:, :10]

    spec = load_model("convnext_mini", num_classes=10).spec
    with pytest.raises(EdgevisionError, match="aten::special_zeta"):
        compress(LoadedModel(Zeta(), spec), open_source("builtin:photos"), recipe_for_spec(), tmp_path / "r",
                 progress=False)


def recipe_for_spec():
    return resolve(preset_for("convnext"), None, FAST)


# --- recipes ----------------------------------------------------------------------------------------
def test_recipe_flags_override_file_override_preset(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("calib_size: 100\nquantization:\n  preset: mixed\n  model_type: transformer\n")
    r = resolve(preset_for("vit"), path, {"calib_size": 50, "max_drop": None}).to_dict()
    assert r["calib_size"] == 50  # flag wins
    assert r["quantization"]["preset"] == "mixed"  # file wins over preset
    assert r["quantization"]["bias_correction"] == "fast"  # default kept
    assert r["max_drop"] is None


@pytest.mark.parametrize("text,message", [
    ("calib_sise: 100\n", "unknown key 'calib_sise'"),
    ("quantization:\n  smoothquant: 0.5\n", "unknown key 'quantization.smoothquant'"),
    ("quantization:\n  preset: fast\n", "'quantization.preset' must be one of performance, mixed"),
    ("calib_size: lots\n", "'calib_size' must be int"),
    ("int8: 1\n", "'int8' must be bool"),
    ("target: tpu\n", "unknown target 'tpu'; choose one of cpu, onnx, jetson"),
    ("tensorrt:\n  dla_core: yes\n", "'tensorrt.dla_core' must be int or null"),
    ("quantization:\n  ignored_scope:\n    names: [1, 2]\n", "must be a list of strings"),
    ("- a\n- b\n", "must be a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_recipe_validation_names_the_problem(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        load_recipe_file(path)


def test_shipped_recipes_are_valid_and_match_the_presets():
    root = Path(__file__).resolve().parent.parent / "recipes"
    for family in ("convnext", "swin", "vit", "maxvit"):
        recipe = load_recipe_file(root / f"cpu-{family}.yaml")
        for key in ("preset", "model_type", "smooth_quant_alpha"):
            assert recipe["quantization"][key] == preset_for(family)["quantization"][key], (family, key)
        for key, value in preset_for(family).get("prune", {}).items():
            assert recipe["prune"][key] == value, (family, key)


# --- CLI ---------------------------------------------------------------------------------------------
def test_cli_compress_json_and_exit_codes(tmp_path, trained_checkpoint):
    runner = CliRunner()
    out = tmp_path / "run with 'quotes' and spaces"
    args = ["compress", "--checkpoint", str(trained_checkpoint), "--int8", "--data", "builtin:fashion-mnist",
            "--calib-data", "builtin:fashion-mnist", "--limit", "100", "--calib-size", "32", "--iters", "5",
            "--recipe", str(Path(__file__).resolve().parent.parent / "recipes" / "cpu-convnext.yaml"),
            "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run_dir"] == str(out) and (out / "report.json").exists()
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["calib_size"] == 32 and saved["eval_limit"] == 100  # flags override the recipe's 300
    assert report["calibration"]["images"] == 32
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["compress", "convnext_mini", "--target", "tpu"])
    assert bad.exit_code == 2 and bad.output.strip() == "error: unknown target 'tpu'; choose one of cpu, onnx, jetson"


def test_cli_exit_code_3_when_the_budget_cannot_be_met(tmp_path, budget_not_met):
    """The budget decision is NNCF's to make; here the result says it failed, and the CLI must exit 3."""
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["compress", "convnext_mini", "--int8", "--runtime", "openvino", "--calib-size",
                                      "8", "--iters", "2", "--out", str(out)])
    assert result.exit_code == 3
    assert "report written to" in result.output and (out / "report.json").exists()


def test_openvino_runner_runs_graphs_that_cannot_change_batch():
    """timm's Swin traces batch 1 into its window reshapes; the runner must still take a batch of 3."""
    from edgevision.runtimes.openvino import OpenVINORunner, convert

    loaded = load_model("swin_mini", num_classes=10)
    runner = OpenVINORunner(convert(loaded.model, loaded.spec.input_size))
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(x)).numpy()
    assert np.allclose(runner(x), expected, atol=1e-4)


@pytest.mark.parametrize("name", ["convnext_mini", "swin_mini"])
def test_openvino_conversion_does_not_show_torchs_tracing_warnings(name):
    """OpenVINO converts through torch.jit.trace, which torch marks deprecated and which warns about timm's
    shape-dependent branches (Swin's padding checks): the user cannot act on either."""
    from edgevision.runtimes.openvino import convert

    loaded = load_model(name, num_classes=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(loaded.model, loaded.spec.input_size)
    assert not [w for w in caught if "torch.jit" in str(w.message) or w.category is torch.jit.TracerWarning]
