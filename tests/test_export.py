"""`edgevision export`: real ONNX export, ONNX Runtime quantization and OpenVINO on small models and real data."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import needs_fashion_mnist
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.data import open_source
from edgevision.data.loader import preprocess_each
from edgevision.errors import EdgevisionError
from edgevision.io import sha256
from edgevision.models import load_model
from edgevision.pipeline.export import EngineFlags, export_model, export_run, latest_run, open_run
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.resolve import resolve
from edgevision.pipeline.run import compress_model as compress
from edgevision.runtimes import create_runner
from edgevision.runtimes.tensorrt import check_int8_rules

FAST = {"benchmark_iters": 3, "calib_size": 32}
runner = CliRunner()


def recipe_for(family, **overrides):
    return resolve(preset_for(family), None, {**FAST, **overrides})


@pytest.mark.parametrize("name", ["convnext_mini", "swin_mini", "vit_mini", "maxvit_mini"])
def test_jetson_bundle_for_each_family_passes_the_tensorrt_rules(tmp_path, name):
    loaded = load_model(name, weights="random")
    result = export_model(loaded, open_source("builtin:photos"), recipe_for(loaded.spec.family), "jetson", "int8",
                          tmp_path / "bundle", progress=False)
    bundle = result.run_dir
    assert {"model.onnx", "build_engine.sh", "README.md", "manifest.json", "report.json", "recipe.yaml"} <= \
        {p.name for p in bundle.iterdir()}
    assert not (bundle / "model.safetensors").exists()  # the device gets what it builds from, nothing more
    model = onnx.load(str(bundle / "model.onnx"))
    assert check_int8_rules(model).passed
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    consumed = {name for n in model.graph.node for name in n.input}
    assert all(n.output[0] in consumed for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # static batch 1 by default
    report = result.report.to_dict()
    assert report["status"] == "ok" and report["tensorrt"]["rules_check"]["passed"]
    sim = report["variants"][-1]
    assert sim["runtime"] == "tensorrt-sim" and sim["latency_ms_p50"] is None and sim["quantization"]["simulated"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["input"] == {"name": "input", "shape": [1, *loaded.spec.input_size], "dtype": "float32",
                                 "layout": "NCHW"}
    assert manifest["preprocessing"]["mean"] and manifest["tensorrt"]["engine_options"]["int8"]
    for file, entry in manifest["files"].items():
        assert sha256(bundle / file) == entry["sha256"]


@needs_fashion_mnist
def test_simulated_int8_stays_close_to_float_on_a_trained_model(tmp_path, trained_checkpoint):
    loaded = load_model(checkpoint=trained_checkpoint)
    result = export_model(loaded, open_source("builtin:fashion-mnist:test"), recipe_for("convnext", eval_limit=300),
                          "jetson", "int8", tmp_path / "b", calib_source=open_source("builtin:fashion-mnist:train"),
                          progress=False)
    float_v, sim = result.report.to_dict()["variants"]
    assert float_v["top1"] > 50  # a trained model, so the drop means something
    assert abs(sim["top1_drop"]) <= 2.0 and sim["agreement"] >= 95
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["classes"][0] == "T-shirt/top"
    assert [a["simulated"] for a in manifest["accuracy"]] == [False, True]
    readme = (result.run_dir / "README.md").read_text()
    assert f"{sim['top1']:.2f} %" in readme and "simulated" in readme


def test_dynamic_and_static_batches(tmp_path):
    loaded = load_model("convnext_mini", weights="random")
    dynamic = export_model(loaded, open_source("builtin:photos"), recipe_for("convnext"), "jetson", "int8",
                           tmp_path / "d", engine_flags=EngineFlags(batch=4, dynamic_batch=True, max_batch=8),
                           progress=False)
    dim = onnx.load(str(dynamic.run_dir / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value
    assert "--maxShapes=input:8x3x32x32" in dynamic.report.to_dict()["tensorrt"]["trtexec"]["10"]
    static = export_model(loaded, open_source("builtin:photos"), recipe_for("convnext"), "jetson", "int8",
                          tmp_path / "s", engine_flags=EngineFlags(batch=4), progress=False)
    assert onnx.load(str(static.run_dir / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    # 13 photos through a batch-4 model: chunks, the last one padded, same predictions as dynamic
    assert static.report.to_dict()["data"]["images"] == 13
    assert static.report.to_dict()["variants"][1]["agreement"] == pytest.approx(dynamic.report.to_dict()["variants"][1]["agreement"])
    with pytest.raises(EdgevisionError, match="between 1 and --max-batch"):
        export_model(loaded, open_source("builtin:photos"), recipe_for("convnext"), "jetson", "int8",
                     tmp_path / "x", engine_flags=EngineFlags(batch=64, max_batch=32), progress=False)


def test_fp16_and_fp32_bundles_are_float_graphs(tmp_path):
    loaded = load_model("vit_mini", weights="random")
    result = export_model(loaded, open_source("builtin:photos"), recipe_for("vit"), "jetson", "fp16", tmp_path / "h",
                          progress=False)
    model = onnx.load(str(result.run_dir / "model.onnx"))
    assert "QuantizeLinear" not in {n.op_type for n in model.graph.node}
    args = result.report.to_dict()["tensorrt"]["trtexec"]["10"]
    assert "--fp16" in args and "--int8" not in args
    assert result.report.to_dict()["variants"][1]["agreement"] == 100.0  # the float graph agrees with PyTorch
    with pytest.raises(EdgevisionError, match="fp16 is for --target jetson"):
        export_model(loaded, open_source("builtin:photos"), recipe_for("vit"), "onnx", "fp16", tmp_path / "x")


def test_onnx_target_uses_unsigned_activations_and_is_timed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ONNX Runtime's tools write scratch files into the working directory
    before = set(Path(tmp_path).iterdir())
    loaded = load_model("swin_mini", weights="random")
    result = export_model(loaded, open_source("builtin:photos"), recipe_for("convnext"), "onnx", "int8",
                          tmp_path / "o", progress=False)
    names = [(v["name"], v["runtime"]) for v in result.report.to_dict()["variants"]]
    # then int8-mixed, when INT8 measured faster in some class of layer on this CPU (placement.py)
    assert names[:3] == [("fp32", "pytorch"), ("fp32", "onnxruntime"), ("int8", "onnxruntime")]
    assert names[3:] in ([], [("int8-mixed", "onnxruntime")])
    assert all(v["latency_ms_p50"] > 0 for v in result.report.to_dict()["variants"])
    model = onnx.load(str(result.run_dir / "model_int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    activation_zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zps and all(z.data_type == onnx.TensorProto.UINT8 for z in activation_zps)
    assert result.report.to_dict()["variants"][2]["quantization"]["activations"] == "uint8"
    assert set(Path(tmp_path).iterdir()) - before == {tmp_path / "o"}  # nothing left beside the output


# --- from a compress run, through the CLI -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """A compress run (cpu target) in runs/ of a scratch working directory, as a user would have it."""
    cwd = tmp_path_factory.mktemp("work")
    loaded = load_model("convnext_mini", weights="random")
    compress(loaded, open_source("builtin:photos"), recipe_for("convnext"), cwd / "runs" / "convnext_mini-cpu-1",
             progress=False)
    return cwd


def test_export_without_argument_takes_the_latest_run_and_quoted_paths_work(cpu_run, tmp_path, monkeypatch):
    monkeypatch.chdir(cpu_run)
    out = tmp_path / "bundles with space" / "it's \"q\""
    done = runner.invoke(app, ["export", "--target", "jetson", "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    assert "exporting the latest compress run: runs/convnext_mini-cpu-1" in done.stderr
    report = json.loads(done.stdout)
    assert report["tensorrt"]["rules_check"]["passed"]
    # the generated script builds from its own quoted directory with a stand-in trtexec
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "trtexec").write_text('#!/usr/bin/env bash\n[ "$1" = --help ] && echo "[TensorRT v100300]" && exit 0\n'
                                   'printf "%s\\n" "$@" > "$LOG"\n'
                                   'for a in "$@"; do case "$a" in --saveEngine=*) : > "${a#*=}";; esac; done\n')
    (tools / "trtexec").chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "LOG": str(tmp_path / "args")}
    subprocess.run([str(out / "build_engine.sh"), "--precision", "int8"], env=env, check=True, capture_output=True,
                   cwd=tmp_path)
    assert "--onnx=model.onnx" in (tmp_path / "args").read_text().splitlines()
    assert (out / "model.engine").exists() and (out / "model.float.onnx").exists()
    # the bundle's artifact evaluates through its own manifest to the number the report gave
    again = runner.invoke(app, ["evaluate", str(out / "model.onnx"), "--data", "builtin:photos", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runtime"] == "onnxruntime"


def test_export_reuses_the_run_model_and_data(cpu_run, tmp_path):
    run = open_run(cpu_run / "runs" / "convnext_mini-cpu-1")
    result = export_run(run, "onnx", "int8", tmp_path / "onnx", progress=False)
    assert result.report.to_dict()["data"]["spec"] == run.report.to_dict()["data"]["spec"]
    assert result.report.to_dict()["calibration"]["images"] == run.report.to_dict()["calibration"]["images"]
    # the same float model: the export's ONNX FP32 gives the run's OpenVINO FP32 logits on the run's images
    cfg = run.manifest["preprocessing"]
    images = np.concatenate([x for _, x in preprocess_each(open_source(run.eval_spec), range(8), cfg)[0]])
    onnx_logits = create_runner("onnxruntime", result.run_dir / "model_fp32.onnx")(images)
    ir_logits = create_runner("openvino", run.run_dir / "model_fp32.xml")(images)
    np.testing.assert_allclose(onnx_logits, ir_logits, atol=1e-3)
    cpu = export_run(run, "cpu", "int8", tmp_path / "cpu", overrides={"calib_size": None})  # as the CLI passes
    # the cpu export is the deploy bundle: the run's candidates and more, measured again on the run's data
    bundle = json.loads((cpu.run_dir / "manifest.json").read_text())["deploy"]
    keys = {c["key"] for c in bundle["candidates"]}
    # built from this run's own profiles: in either, or neither
    measured_here = {"int8-mixed/onnxruntime", "int8-mixed/openvino"}
    assert {f"{v['name']}/{v['runtime']}" for v in run.report.to_dict()["variants"]
            if v["role"] == "candidate"} - measured_here <= keys
    assert {"fp32/onnxruntime", "int8-u8s8-rr/onnxruntime", "int8-s8s8/onnxruntime"} <= keys
    assert cpu.report.to_dict()["data"]["spec"] == run.report.to_dict()["data"]["spec"] and (cpu.run_dir / "select_model.py").is_file()


def test_export_errors_are_one_line(cpu_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["export"], "no compress run found in runs/"),
        (["export", str(cpu_run / "runs" / "convnext_mini-cpu-1"), "--target", "cpu", "--precision", "fp16"],
         "--precision fp16 is for --target jetson"),
        (["export", str(cpu_run / "runs" / "convnext_mini-cpu-1"), "--target", "tpu"], "unknown target 'tpu'"),
        (["export", str(tmp_path)], "is a directory but not a compress run"),
    ]
    for args, message in cases:
        done = runner.invoke(app, args)
        assert done.exit_code == 2 and message in done.output and "Traceback" not in done.output, (args, done.output)
        assert len(done.output.strip().splitlines()) == 1
    out = cpu_run / "runs" / "convnext_mini-cpu-1" / "export-jetson"
    out.mkdir(exist_ok=True)
    exists = runner.invoke(app, ["export", str(cpu_run / "runs" / "convnext_mini-cpu-1")])
    assert exists.exit_code == 2 and "--force" in exists.output


def test_build_engine_without_tensorrt_names_the_extra(tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    loaded = load_model("convnext_mini", weights="random")
    bundle = export_model(loaded, open_source("builtin:photos"), recipe_for("convnext"), "jetson", "int8",
                          tmp_path / "b", progress=False).run_dir
    done = runner.invoke(app, ["build-engine", str(bundle)])
    assert done.exit_code == 2
    assert 'pip install "edgevision[tensorrt]"' in done.output and "build_engine.sh" in done.output
    assert not (bundle / "model.engine").exists()


def test_export_exits_3_like_compress_when_the_runs_budget_is_not_met(cpu_run, tmp_path, budget_not_met):
    """An export inherits the run's --max-drop; a failed budget must not exit 0."""
    done = runner.invoke(app, ["export", str(cpu_run / "runs" / "convnext_mini-cpu-1"), "--target", "onnx",
                               "--out", str(tmp_path / "onnx")])
    assert done.exit_code == 3 and "--max-drop" in done.output and "most sensitive nodes left in float" in done.output
    assert (tmp_path / "onnx" / "report.json").exists()


def test_latest_run_ignores_exports(cpu_run):
    assert latest_run(cpu_run / "runs").name == "convnext_mini-cpu-1"


@needs_fashion_mnist
def test_benchmark_and_evaluate_pytorch_models_in_other_runtimes(trained_checkpoint):
    """The same float model evaluated in each runtime gives the same top-1 (within one image of 64)."""
    def top1(rt):
        done = runner.invoke(app, ["evaluate", "--checkpoint", str(trained_checkpoint), "--runtime", rt, "--data",
                                   "builtin:fashion-mnist", "--limit", "64", "--json"])
        assert done.exit_code == 0, done.output
        report = json.loads(done.stdout)
        assert report["runtime"] == rt and report["images"] == 64
        return report["top1"]

    reference = top1("pytorch")
    assert reference > 50  # a trained model: agreement across runtimes is not by chance
    for rt in ("openvino", "onnxruntime"):
        done = runner.invoke(app, ["benchmark", "convnext_mini", "--runtime", rt, "--iters", "2",
                                   "--throughput-batch", "0", "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["runner"]["runtime"] == rt
        assert abs(top1(rt) - reference) <= 100 / 64


class _PowLayerNorm(torch.nn.Module):
    """A LayerNorm written out by hand, as some exports decompose it: its Pow of activations near 1000 passes
    FP16's 65504."""

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5)


class _LoudNet(torch.nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.conv, self.scale = torch.nn.Conv2d(3, 16, 3, padding=1), scale
        self.norm, self.fc = _PowLayerNorm(), torch.nn.Linear(16, 10)
        self.num_classes = 10

    def forward(self, x):
        x = self.norm((self.conv(x) * self.scale).permute(0, 2, 3, 1))
        return self.fc(x.mean((1, 2)))


@pytest.mark.parametrize("scale,overflows", [(1.0, False), (3000.0, True)])
def test_fp16_preflight_names_the_node_that_overflows_and_not_its_consumers(tmp_path, scale, overflows):
    from edgevision.runtimes.fp16_preflight import fp16_preflight
    from edgevision.runtimes.onnxruntime import export_onnx

    torch.manual_seed(0)
    path = export_onnx(_LoudNet(scale).eval(), (3, 16, 16), tmp_path / "m.onnx")
    images = [np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32) for i in range(4)]
    found = fp16_preflight(path, images)
    assert found.nodes_checked > 10 and found.images == 4
    assert found.keep_fp32 == (["/norm/Pow"] if overflows else [])  # the ReduceMean after it is not named


def test_jetson_bundle_keeps_the_fp16_overflow_in_fp32(tmp_path):
    """The bundle carries the pre-flight's decision: manifest and report name the node, build_engine.sh
    keeps it in FP32 (TensorRT 10 flags; AutoCast's exclusion for TensorRT 11)."""
    import dataclasses

    from edgevision.models.loading import LoadedModel

    torch.manual_seed(0)
    spec = load_model("convnext_mini", weights="random").spec
    loaded = LoadedModel(_LoudNet(3000.0).eval(), dataclasses.replace(spec, data_config={
        **spec.data_config, "input_size": [3, 16, 16]}, img_size=16))
    result = export_model(loaded, open_source("builtin:photos"), recipe_for("convnext"), "jetson", "int8",
                          tmp_path / "bundle", progress=False)
    bundle = result.run_dir
    preflight = json.loads((bundle / "manifest.json").read_text())["tensorrt"]["fp16_preflight"]
    assert preflight["keep_fp32"] == ["/norm/Pow"] and preflight["overflow"] == ["/norm/Pow"]
    script = (bundle / "build_engine.sh").read_text()
    assert "--precisionConstraints=obey --layerPrecisions=/norm/Pow:fp32" in script
    assert "--nodes_to_exclude '^/norm/Pow$'" in script
    assert any("overflow or lose accuracy in FP16 (/norm/Pow)" in w for w in result.report.to_dict()["warnings"])
