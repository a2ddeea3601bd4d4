"""The parts of the Jetson path that need no TensorRT: trtexec arguments, the build script, the INT8 rules
checker (one graph per broken rule), the engine-mismatch refusal. Plus the TensorRT-marked engine test."""
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevision.errors import EdgevisionError
from edgevision.runtimes.tensorrt import (
    DeviceIdentity,
    EngineMismatch,
    EngineOptions,
    check_engine_compat,
    check_int8_rules,
    trtexec_args,
    write_build_files,
)
from edgevision.typed import to_data


# --- trtexec arguments ---------------------------------------------------------------------------------
def opts(**kw):
    return EngineOptions(input_name="input", input_shape=(3, 224, 224), **kw)


def test_trtexec_tensorrt10_int8_with_fp16_fallback():
    args = trtexec_args(opts(), 10)
    assert args[:3] == ["--onnx=model.onnx", "--saveEngine=model.engine", "--timingCacheFile=timing.cache"]
    assert "--int8" in args and "--fp16" in args
    assert not any(a.startswith(("--minShapes", "--useDLACore", "--memPoolSize")) for a in args)


def test_trtexec_tensorrt11_has_no_precision_flags():
    args = trtexec_args(opts(), 11, onnx="model.fp16.onnx")
    assert args[0] == "--onnx=model.fp16.onnx"
    assert not {"--int8", "--fp16", "--best", "--stronglyTyped"} & set(args)


def test_trtexec_fp32_bundle_asks_for_no_reduced_precision():
    assert not {"--int8", "--fp16"} & set(trtexec_args(opts(int8=False, fp16=False), 10))


def test_trtexec_dynamic_batch_dla_and_workspace():
    args = trtexec_args(opts(dynamic_batch=True, batch=8, max_batch=16, dla_core=1, workspace_mb=512), 10)
    assert "--minShapes=input:1x3x224x224" in args
    assert "--optShapes=input:8x3x224x224" in args
    assert "--maxShapes=input:16x3x224x224" in args
    assert "--useDLACore=1" in args and "--allowGPUFallback" in args
    assert "--memPoolSize=workspace:512" in args


def test_trtexec_refuses_tensorrt_9():
    with pytest.raises(EdgevisionError, match="TensorRT 9 is not supported"):
        trtexec_args(opts(), 9)


# --- the build script, run with a stand-in trtexec that records its arguments ------------------------------
FAKE_TRTEXEC = """#!/usr/bin/env bash
if [ "${1:-}" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_VERSION}] # trtexec --help"; exit 0; fi
echo "$*" >> "${FAKE_LOG}.calls"
for a in "$@"; do case "$a" in
  --saveEngine=*) printf '%s\\n' "$@" > "$FAKE_LOG"; echo engine > "${a#--saveEngine=}";;
  --loadEngine=*int8*) echo "[I] GPU Compute Time: min = 0.5 ms, max = 3 ms, mean = 1 ms, median = ${FAKE_INT8_MS:-1.0} ms, percentile(90%) = 2 ms";;
  --loadEngine=*fp16*) echo "[I] GPU Compute Time: min = 0.5 ms, max = 3 ms, mean = 1 ms, median = ${FAKE_FP16_MS:-2.0} ms, percentile(90%) = 2 ms";;
esac; done
"""


def _tiny_onnx(path):
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"], name="relu")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])])
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def bundle_dir(tmp_path):
    """A bundle directory whose path has spaces, single and double quotes and a dollar sign."""
    bundle = tmp_path / "my bundles" / "it's a \"jetson\" $HOME bundle"
    bundle.mkdir(parents=True)
    _tiny_onnx(bundle / "model.onnx")  # a real graph: AutoCast casts it where nvidia-modelopt is installed
    write_build_files(bundle, opts(dla_core=0), "edgevision test")
    tools = tmp_path / "tools"
    tools.mkdir()
    fake = tools / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    return bundle, tools, tmp_path / "trtexec-args.txt"


def run_script(bundle, tools, log, version, cwd, **env):
    environment = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log),
                   "FAKE_VERSION": version, **env}
    return subprocess.run([str(bundle / "build_engine.sh")], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=60)


def test_build_script_is_valid_bash(bundle_dir):
    bundle, _, _ = bundle_dir
    subprocess.run(["bash", "-n", str(bundle / "build_engine.sh")], check=True)


def test_build_script_tensorrt10_from_another_directory(bundle_dir, tmp_path):
    bundle, tools, log = bundle_dir
    done = run_script(bundle, tools, log, "100300", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    args = log.read_text().splitlines()
    assert args == trtexec_args(opts(dla_core=0), 10)
    assert (bundle / "model.engine").exists()  # written inside the bundle, whatever the caller's directory
    meta = json.loads((bundle / "model.engine.json").read_text())
    assert meta["built_by"] == "build_engine.sh" and "machine" in meta


def test_build_script_tensorrt11_drops_precision_flags(bundle_dir, tmp_path):
    bundle, tools, log = bundle_dir
    done = run_script(bundle, tools, log, "110400", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    args = log.read_text().splitlines()
    assert "--int8" not in args and "--fp16" not in args
    assert args[0] in ("--onnx=model.onnx", "--onnx=model.fp16.onnx")
    if args[0] == "--onnx=model.onnx":  # no ModelOpt here: the script says what that costs
        assert "FP32" in done.stderr


@pytest.fixture
def deciding_bundle(tmp_path):
    """An INT8 bundle that carries its float graph: the device builds both engines and keeps the faster."""
    bundle = tmp_path / "bundle with space"
    bundle.mkdir()
    for name in ("model.onnx", "model.float.onnx"):
        _tiny_onnx(bundle / name)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "trtexec").write_text(FAKE_TRTEXEC)
    (tools / "trtexec").chmod(0o755)
    return bundle, tools, tmp_path / "trtexec-args.txt"


def write_deciding(bundle, **kw):
    write_build_files(bundle, opts(float_onnx="model.float.onnx", fp32_layers=("/norm/Pow",), **kw), "t")


@pytest.mark.parametrize("int8_ms,fp16_ms,kept", [("0.8", "1.3", "int8"), ("1.7", "1.2", "fp16")])
def test_the_device_builds_both_engines_and_keeps_the_faster(deciding_bundle, tmp_path, int8_ms, fp16_ms, kept):
    bundle, tools, log = deciding_bundle
    write_deciding(bundle)
    done = run_script(bundle, tools, log, "100300", cwd=tmp_path, FAKE_INT8_MS=int8_ms, FAKE_FP16_MS=fp16_ms)
    assert done.returncode == 0, done.stderr
    calls = Path(f"{log}.calls").read_text().splitlines()
    builds = [c for c in calls if "--saveEngine=" in c]
    assert "--onnx=model.onnx --saveEngine=model.int8.engine" in builds[0] and "--int8 --fp16" in builds[0]
    assert "--onnx=model.float.onnx --saveEngine=model.fp16.engine" in builds[1] and "--int8" not in builds[1]
    assert "--layerPrecisions=/norm/Pow:fp32" in builds[1]  # the FP16 pre-flight holds for both engines
    timings = [c.split()[0] for c in calls if "--loadEngine=" in c]
    assert timings == ["--loadEngine=model.int8.engine", "--loadEngine=model.fp16.engine"] * 3  # interleaved
    assert (bundle / "model.engine").exists() and not list(bundle.glob("model.*.engine"))
    decision = json.loads((bundle / "model.engine.json").read_text())["decision"]
    assert decision == {"precision": kept, "decided_by": "timed here",
                        "median_ms": {"int8": float(int8_ms), "fp16": float(fp16_ms)},
                        "rounds_ms": {"int8": [float(int8_ms)] * 3, "fp16": [float(fp16_ms)] * 3}}
    assert f"keeping {kept}" in done.stdout


def test_the_precision_pins_one_engine_and_a_missed_budget_means_fp16(deciding_bundle, tmp_path):
    bundle, tools, log = deciding_bundle
    write_deciding(bundle)
    done = run_script(bundle, tools, log, "100300", cwd=tmp_path, PRECISION="int8")
    assert done.returncode == 0, done.stderr
    assert "--saveEngine=model.int8.engine" in log.read_text().splitlines()
    assert not any("--loadEngine" in c for c in Path(f"{log}.calls").read_text().splitlines())
    assert json.loads((bundle / "model.engine.json").read_text())["decision"] == {"precision": "int8",
                                                                                   "decided_by": "asked"}
    wrong = subprocess.run([str(bundle / "build_engine.sh"), "--precision", "fp32"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "this bundle builds int8 fp16 auto" in wrong.stderr
    write_deciding(bundle, int8_vouched=False)
    done = run_script(bundle, tools, log, "100300", cwd=tmp_path)
    assert done.returncode == 0 and "missed the accuracy budget" in done.stderr
    assert json.loads((bundle / "model.engine.json").read_text())["decision"]["precision"] == "fp16"


def test_resolve_precision_is_what_the_script_does():
    from edgevision.runtimes.tensorrt import resolve_precision

    deciding = opts(float_onnx="model.float.onnx")
    assert resolve_precision(None, deciding) == "auto" and resolve_precision("fp16", deciding) == "fp16"
    assert resolve_precision(None, opts(float_onnx="model.float.onnx", int8_vouched=False)) == "fp16"
    assert resolve_precision(None, opts()) == "int8" and resolve_precision(None, opts(int8=False)) == "fp16"
    with pytest.raises(EdgevisionError, match="this bundle builds int8;"):
        resolve_precision("auto", opts())


def test_build_script_trt_major_override_and_missing_trtexec(bundle_dir, tmp_path):
    bundle, tools, log = bundle_dir
    done = run_script(bundle, tools, log, "garbage", cwd=tmp_path, TRT_MAJOR="10")
    assert done.returncode == 0 and "--int8" in log.read_text().splitlines()
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    missing = subprocess.run([str(bundle / "build_engine.sh")], env=env, capture_output=True, text=True)
    if not Path("/usr/src/tensorrt/bin/trtexec").exists():
        assert missing.returncode == 2 and "trtexec not found" in missing.stderr


# --- INT8 rules: a valid graph, then one graph per broken rule ---------------------------------------------
def qdq_graph(*, opset=17, zp_type=TensorProto.INT8, zp_value=0, drop_zp=False, weight_axis=0,
              per_tensor_weight=False, consumer="Conv", residual=False, scale_input=False, matmul=False,
              quantized_output=False):
    """x -> Q -> DQ -> Conv|MatMul (weight through DQ) -> [Add with a float tensor] -> y."""
    inits, nodes = [], []
    zp_np = np.array(zp_value, dtype=np.uint8 if zp_type == TensorProto.UINT8 else np.int8)
    inits += [numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
              numpy_helper.from_array(zp_np, "x_zp")]
    q_inputs = ["x", "x_scale"] + ([] if drop_zp else ["x_zp"])
    if scale_input:
        q_inputs[1] = "scale_in"
    nodes += [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="x_q"),
              helper.make_node("DequantizeLinear", ["xq"] + q_inputs[1:], ["xd"], name="x_dq")]
    if matmul:
        w = np.random.default_rng(0).integers(-127, 127, (8, 4)).astype(np.int8)  # K x N
        channels = w.shape[weight_axis]
    else:
        w = np.random.default_rng(0).integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)
        channels = w.shape[weight_axis]
    w_scale = np.array(0.01, np.float32) if per_tensor_weight else np.full(channels, 0.01, np.float32)
    w_zp = np.array(0, np.int8) if per_tensor_weight else np.zeros(channels, np.int8)
    inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_scale, "w_scale"),
              numpy_helper.from_array(w_zp, "w_zp")]
    nodes.append(helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["wd"], name="w_dq",
                                  axis=weight_axis))
    if consumer == "Conv":
        nodes.append(helper.make_node("MatMul" if matmul else "Conv", ["xd", "wd"], ["y0"], name="op"))
    else:
        nodes.append(helper.make_node(consumer, ["xd"], ["y0"], name="op", **({"axis": -1} if consumer == "Softmax" else {})))
    out = "y0"
    if residual:
        nodes.append(helper.make_node("Relu", ["x"], ["skip"], name="skip"))
        nodes.append(helper.make_node("Add", ["xd", "skip"], ["y"], name="residual"))
        out = "y"
    if quantized_output:
        nodes += [helper.make_node("QuantizeLinear", [out, "x_scale", "x_zp"], ["yq"], name="y_q"),
                  helper.make_node("DequantizeLinear", ["yq", "x_scale", "x_zp"], ["yd"], name="y_dq")]
        out = "yd"
    x_shape = [1, 3, 8, 8] if not matmul else [1, 8]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if scale_input:
        inputs.append(helper.make_tensor_value_info("scale_in", TensorProto.FLOAT, []))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def rules(model):
    return {v.rule for v in check_int8_rules(model).violations}


def test_valid_qdq_graphs_pass():
    for model in (qdq_graph(), qdq_graph(matmul=True, weight_axis=1)):
        report = check_int8_rules(model)
        assert report.passed, report.violations
        assert report.quantize_ops == 1 and report.dequantize_ops == 2 and report.int8_weights == 1


def test_the_head_output_is_produced_in_float(tmp_path):
    """ONNX Runtime puts Q/DQ on a Gemm's output; the TensorRT profile gives the logits back in float."""
    import torch

    from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq
    from edgevision.runtimes.onnxruntime import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    export_onnx(model, (3, 8, 8), tmp_path / "f.onnx", dynamic_batch=True)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(4)]
    quantize_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", calib, PROFILES["tensorrt"])
    import onnx

    q = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n for n in q.graph.node for o in n.output}
    assert producers["logits"].op_type == "Gemm"
    assert check_int8_rules(q).passed and check_int8_rules(q).int8_weights == 2


@pytest.mark.parametrize("kwargs,rule", [
    ({"opset": 13}, "opset"),
    ({"zp_type": TensorProto.UINT8}, "zero-point"),
    ({"zp_value": 3}, "zero-point"),
    ({"drop_zp": True}, "zero-point"),
    ({"scale_input": True}, "constant-scale"),
    ({"weight_axis": 1}, "weight-axis"),
    ({"matmul": True, "weight_axis": 0}, "weight-axis"),
    ({"per_tensor_weight": True}, "weight-axis"),
    ({"consumer": "LayerNormalization"}, "int8-consumer"),
    ({"consumer": "Softmax"}, "int8-consumer"),
    ({"consumer": "Erf"}, "int8-consumer"),
    ({"residual": True}, "residual-add"),
    ({"quantized_output": True}, "float-output"),
])
def test_each_broken_rule_is_reported(kwargs, rule):
    found = rules(qdq_graph(**kwargs))
    assert rule in found, found
    assert found <= {rule, "weight-axis", "int8-consumer"} or rule == "opset"


def fused_graph(*, branch_op="Conv", norm_after_conv=False, quantize_branch=False):
    """x -> Q/DQ -> Conv -> (branch_op) -> y0; skip = Q/DQ(x); y = Add(y0 * layer_scale, skip): the residual
    placement TensorRT fuses (and Model Optimizer writes). norm_after_conv: Q/DQ on a Conv output that feeds a
    LayerNorm (through a Transpose), the Conv->LayerNorm placement."""
    c = lambda v, name: numpy_helper.from_array(np.asarray(v, np.float32), name)
    inits = [c(0.02, "s"), numpy_helper.from_array(np.array(0, np.int8), "zp"), c(np.ones((1, 3, 1, 1)), "gamma"),
             numpy_helper.from_array(np.ones((3, 3, 1, 1), np.int8), "w"), c(np.full(3, 0.01), "w_s"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w_zp"), c(np.ones(3), "ln_scale")]
    q = lambda src, dst: [helper.make_node("QuantizeLinear", [src, "s", "zp"], [dst + "q"], name=dst + "_q"),
                          helper.make_node("DequantizeLinear", [dst + "q", "s", "zp"], [dst], name=dst + "_dq")]
    nodes = [*q("x", "xd"), helper.make_node("DequantizeLinear", ["w", "w_s", "w_zp"], ["wd"], name="w_dq", axis=0),
             helper.make_node(branch_op, ["xd", "wd"] if branch_op == "Conv" else ["xd"], ["y0"], name="op"),
             helper.make_node("Mul", ["y0", "gamma"], ["y1"], name="layer_scale")]
    if quantize_branch:  # the branch's output quantized, the skip input float
        nodes += [*q("y1", "y1d"), helper.make_node("Relu", ["x"], ["skip"], name="skip"),
                  helper.make_node("Add", ["y1d", "skip"], ["y"], name="residual")]
    else:
        nodes.append(helper.make_node("Add", ["y1", "xd"], ["y"], name="residual"))
    out = "y"
    if norm_after_conv:
        nodes += [helper.make_node("Transpose", ["y0"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]), *q("t", "td"),
                  helper.make_node("LayerNormalization", ["td", "ln_scale"], ["n"], name="norm", axis=-1)]
        out = "n"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_quantized_skip_input_passes_where_the_add_fuses_into_a_conv():
    assert rules(fused_graph()) == set()
    assert rules(fused_graph(quantize_branch=True)) == set()  # the Conv writes INT8 for the Add to read
    assert rules(fused_graph(branch_op="Sigmoid")) == {"residual-add", "int8-consumer"}  # nothing to fuse into


def test_a_conv_output_quantized_for_a_layernorm_passes():
    assert rules(fused_graph(norm_after_conv=True)) == set()
    assert "int8-consumer" in rules(qdq_graph(consumer="LayerNormalization"))  # a LayerNorm on the raw input


# --- engines built elsewhere are refused ------------------------------------------------------------------
ORIN = DeviceIdentity("10.3.0", "NVIDIA Jetson AGX Orin Developer Kit", "# R36 (release), REVISION: 3.0", "aarch64")


def test_engine_from_the_same_device_is_accepted(tmp_path):
    check_engine_compat(ORIN, replace(ORIN))
    check_engine_compat(ORIN, replace(ORIN, l4t=None))  # unknown here: nothing to compare
    meta = tmp_path / "model.engine.json"  # as build_engine.sh records it, with its decision beside
    meta.write_text(json.dumps({**to_data(ORIN), "built_by": "build_engine.sh", "decision": {"precision": "int8"}}))
    check_engine_compat(DeviceIdentity.of_engine(meta), ORIN)


@pytest.mark.parametrize("key,value,what", [
    ("tensorrt", "10.7.0", "TensorRT"), ("gpu", "NVIDIA Jetson Orin Nano", "GPU"),
    ("l4t", "# R35 (release), REVISION: 4.1", "L4T release"), ("machine", "x86_64", "CPU architecture"),
])
def test_engine_mismatch_is_refused_with_the_fix(key, value, what):
    with pytest.raises(EngineMismatch) as err:
        check_engine_compat(ORIN, replace(ORIN, **{key: value}), "model.engine")
    message = str(err.value)
    assert f"built with {what}" in message and "rebuild it on this device" in message
    assert err.value.exit_code == 3


# --- needs TensorRT: build and run an engine from a real bundle --------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_builds_and_matches_the_simulation(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT Python API not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from edgevision.data import open_source
    from edgevision.data.loader import preprocess_each
    from edgevision.models import load_model
    from edgevision.pipeline.export import export_model
    from edgevision.pipeline.presets import preset_for
    from edgevision.pipeline.resolve import resolve
    from edgevision.runtimes import create_runner
    from edgevision.runtimes.tensorrt import TensorRTRunner, build_engine

    loaded = load_model("convnext_mini", weights="random")
    recipe = resolve(preset_for("convnext"), None, {"calib_size": 13, "benchmark_iters": 3})
    result = export_model(loaded, open_source("builtin:photos"), recipe, "jetson", "int8", tmp_path / "b",
                          progress=False)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    engine = build_engine(result.run_dir, EngineOptions(**manifest["tensorrt"]["engine_options"]))
    images = [x for _, x in preprocess_each(open_source("builtin:photos"), range(8), loaded.spec.data_config)[0]]
    simulation = create_runner("tensorrt-sim", result.run_dir / "model.onnx")
    trt_runner = TensorRTRunner(engine)
    for x in images:  # the engine computes what the Q/DQ graph it was built from computes, within INT8 rounding
        got, want = trt_runner(x)[0], simulation(x)[0]
        assert got.shape == (loaded.spec.num_classes,)
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        assert cosine > 0.98, cosine


def test_fp32_layers_are_precision_constraints_for_tensorrt_10_only_with_fp16():
    opts = EngineOptions(input_name="input", input_shape=(3, 32, 32), fp32_layers=("/norm/Pow", "/a/b.1/Mul"))
    args10 = trtexec_args(opts, 10)
    assert args10[-2:] == ["--precisionConstraints=obey", "--layerPrecisions=/norm/Pow:fp32,/a/b.1/Mul:fp32"]
    assert not any("layerPrecisions" in a for a in trtexec_args(opts, 11))  # strongly typed: AutoCast excludes
    no_fp16 = EngineOptions(input_name="input", input_shape=(3, 32, 32), fp16=False, fp32_layers=("/norm/Pow",))
    assert not any("layerPrecisions" in a for a in trtexec_args(no_fp16, 10))  # FP32 everywhere already
