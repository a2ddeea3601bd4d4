"""NVIDIA Model Optimizer as the jetson target's second Q/DQ engine (--qdq-engine modelopt): real Model
Optimizer calibrating on ONNX Runtime's CPU provider, on small models; skipped where the jetson extra is absent."""
import json

import onnx
import pytest
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.data import open_source
from edgevision.models import load_model
from edgevision.pipeline.export import export_model
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.resolve import resolve
from edgevision.quantization import modelopt as modelopt_qdq
from edgevision.runtimes.tensorrt import check_int8_rules

needs_modelopt = pytest.mark.skipif(modelopt_qdq.modelopt_version() is None,
                                    reason='nvidia-modelopt is not installed (pip install -e ".[jetson]")')
runner = CliRunner()


def modelopt_recipe(family, **qdq):
    recipe = resolve(preset_for(family), None, {"benchmark_iters": 3, "calib_size": 16, "eval_limit": 40,
                                                "tensorrt": {"qdq_engine": "modelopt"}, "qdq": qdq})
    return recipe


@needs_modelopt
@pytest.mark.parametrize("name", ["convnext_mini", "vit_mini"])
def test_modelopt_bundle_passes_the_tensorrt_rules_and_records_the_engine(tmp_path, name):
    loaded = load_model(name, weights="random")
    result = export_model(loaded, open_source("builtin:photos"), modelopt_recipe(loaded.spec.family), "jetson",
                          "int8", tmp_path / "bundle", progress=False)
    model = onnx.load(str(result.run_dir / "model.onnx"))
    report = check_int8_rules(model)
    assert report.passed, report.violations[:3]
    assert report.int8_weights > 0 and model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["tensorrt"]["qdq_engine"] == "modelopt"
    sim = result.report.to_dict()["variants"][-1]
    assert sim["runtime"] == "tensorrt-sim" and sim["quantization"]["engine"] == "modelopt"
    assert sim["quantization"]["modelopt_version"] == modelopt_qdq.modelopt_version()
    assert sim["agreement"] is not None  # the Q/DQ graph ran in ONNX Runtime on the photos


@needs_modelopt
def test_modelopt_keeps_excluded_nodes_in_float(tmp_path):
    loaded = load_model("convnext_mini", weights="random")
    plain = export_model(loaded, open_source("builtin:photos"), modelopt_recipe("convnext"), "jetson", "int8",
                         tmp_path / "plain", progress=False)
    graph = onnx.load(str(plain.run_dir / "model.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    conv = next(n for n in graph.node if n.op_type == "Conv" and producers[n.input[0]].op_type == "DequantizeLinear")
    kept = export_model(loaded, open_source("builtin:photos"), modelopt_recipe("convnext", exclude_nodes=[conv.name]),
                        "jetson", "int8", tmp_path / "kept", progress=False)
    graph = onnx.load(str(kept.run_dir / "model.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == conv.name)
    source = producers.get(node.input[0])  # the graph input, or a float op
    assert source is None or source.op_type != "DequantizeLinear"
    assert kept.report.to_dict()["variants"][-1]["quantization"]["excluded_nodes"] == [conv.name]


def test_missing_modelopt_is_a_one_line_error_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(modelopt_qdq, "modelopt_version", lambda: None)
    done = runner.invoke(app, ["export", "convnext_mini", "--weights", "random", "--target", "jetson",
                               "--qdq-engine", "modelopt", "--out", str(tmp_path / "b")])
    assert done.exit_code == 2, done.output
    assert 'pip install -e ".[jetson]"' in done.output and "Traceback" not in done.output
    assert not (tmp_path / "b").exists()  # refused before any work


def test_unknown_qdq_engine_is_refused(tmp_path):
    done = runner.invoke(app, ["export", "convnext_mini", "--weights", "random", "--target", "jetson",
                               "--qdq-engine", "tensorflow", "--out", str(tmp_path / "b")])
    assert done.exit_code == 2 and "edgevision" in done.output and "modelopt" in done.output, done.output


@needs_modelopt
def test_modelopt_has_no_percentile_calibration():
    with pytest.raises(Exception, match="no percentile calibration"):
        modelopt_qdq.check_modelopt("percentile")
