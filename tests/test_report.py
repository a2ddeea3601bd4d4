"""The run report and the recipe as types: report.json round-trips through them, reports written before the types
still load (in compare too), the JSON Schema in the docs is the types' own, and wrong data is a one-line error."""
import json
import shutil
from pathlib import Path

import pytest

from edgevision.errors import EdgevisionError
from edgevision.pipeline.recipe import Recipe, RecipeError, defaults
from edgevision.pipeline.report import Precision, Role, RunReport, report_schema
from edgevision.pipeline.resolve import resolve
from edgevision.pipeline.targets.jetson import TensorRTSettings
from edgevision.pipeline.targets.sections import NNCFSettings, QDQSettings
from edgevision.reports.compare import load_comparison

DATA = Path(__file__).resolve().parent / "data"
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
OLD_REPORTS = ["report_v1_cpu_pruned.json", "report_v1_jetson.json"]  # written before the types, kept as they were


def test_the_documented_schema_is_the_report_types_schema():
    documented = json.loads(SCHEMA.read_text())
    assert documented == report_schema(), (
        "docs/report.schema.json is stale: python -c 'import json; from edgevision.pipeline.report import "
        "report_schema; print(json.dumps(report_schema(), indent=2))' > docs/report.schema.json")


@pytest.mark.parametrize("name", OLD_REPORTS)
def test_a_report_written_before_the_types_loads_with_precision_and_roles(name):
    data = json.loads((DATA / name).read_text())
    report = RunReport.from_dict(data)
    assert report.schema_version == 1 and report.model.name == data["model"]["name"]
    for row, record in zip(data["variants"], report.variants):
        assert record.key == f"{row['name']}/{row['runtime']}" and record.role is Role(row["role"])
        assert record.is_int8 == row["name"].startswith("int8")  # old reports said it by the name only
    assert report.selection.selected == (report.selected.key if report.selected else None)
    again = report.to_dict()  # written back: the old keys as they were, plus schema 2's
    assert {k: v for k, v in again.items() if k != "schema_version"} == {
        **data, "benchmark": {"not_timed": None, **data["benchmark"]}, "variants": [{**row, "key": rec.key, "precision": rec.precision.value}
                             for row, rec in zip(data["variants"], report.variants)]}


def test_a_target_section_stays_a_top_level_key_read_by_its_target():
    data = json.loads((DATA / "report_v1_jetson.json").read_text())
    report = RunReport.from_dict(data)
    assert set(report.sections) == {"tensorrt"} and report.sections["tensorrt"] == data["tensorrt"]
    assert report.to_dict()["tensorrt"] == data["tensorrt"] and "sections" not in report.to_dict()


def test_old_reports_still_load_in_compare(tmp_path):
    for name in OLD_REPORTS:
        run = tmp_path / name.removesuffix(".json")
        run.mkdir()
        shutil.copy(DATA / name, run / "report.json")
    comparison = load_comparison([tmp_path], allow_mixed=True)
    variants = {(r.model, r.variant, r.runtime) for r in comparison.rows}
    assert ("convnext_mini", "pruned 50% + int8", "openvino") in variants  # the pruned run's label, by role
    assert {r.target for r in comparison.rows} == {"cpu", "jetson"}


def test_the_oldest_reports_without_role_or_target_still_load():
    data = json.loads((DATA / "report_v1_cpu_pruned.json").read_text())
    del data["target"]
    for row in data["variants"]:
        del row["role"]
    report = RunReport.from_dict(data)
    assert report.target == "cpu" and [v.role for v in report.variants] == [
        Role.REFERENCE, Role.PRUNED, Role.CANDIDATE, Role.CANDIDATE]
    assert [v.precision for v in report.variants][-1] is Precision.INT8


def test_a_report_of_the_wrong_shape_is_a_one_line_error_naming_the_key():
    data = json.loads((DATA / "report_v1_cpu_pruned.json").read_text())
    data["data"]["images"] = "many"
    with pytest.raises(EdgevisionError, match=r"'data.images' must be int, got 'many'"):
        RunReport.from_dict(data)
    with pytest.raises(EdgevisionError, match="not an edgevision run report"):
        RunReport.from_dict({"model": {}})


def test_the_recipe_round_trips_and_its_sections_are_typed():
    recipe = resolve({}, None, {"target": "jetson", "tensorrt": {"batch": 4}, "qdq": {"exclude_nodes": ["/a"]}})
    assert recipe.section(TensorRTSettings).batch == 4 and recipe.section(QDQSettings).exclude_nodes == ["/a"]
    assert recipe.section(NNCFSettings).ignored_scope.names == []
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert list(defaults())[:3] == ["target", "runtime", "int8"]  # recipe.yaml reads in the types' order


def test_a_recipe_value_outside_a_registry_is_named_with_what_is_allowed():
    with pytest.raises(RecipeError, match=r"'tensorrt.qdq_engine' must be one of .*got 'tvm'"):
        resolve({}, None, {"tensorrt": {"qdq_engine": "tvm"}})
    with pytest.raises(RecipeError, match=r"unknown key 'sections'"):
        resolve({}, None, {"sections": {"qdq": {"exclude_nodes": []}}})


def test_a_quantization_record_writes_the_keys_its_run_set_and_no_others():
    from edgevision.quantization.records import GuardStep, GuardSummary, QDQRecord, TensorRTGraphRecord
    from edgevision.typed import to_data

    record = QDQRecord("cpu", "uint8", "int8 per-channel", "minmax", 32, 10, 12, "onnxruntime default", [])
    assert "engine" not in to_data(record) and "accuracy_guard" not in to_data(record)
    record.format = "u8s8"
    record.accuracy_guard = GuardSummary("top1", 1.0, 50, 90.0, 89.5, needed=False,
                                         path=[GuardStep("as quantized", 89.5, 32, None, excluded=[], kl=0.01)])
    data = to_data(record)
    assert data["format"] == "u8s8" and data["accuracy_guard"]["path"][0] == {
        "step": "as quantized", "int8": 89.5, "calibration_images": 32, "seconds": None, "excluded": [], "kl": 0.01}
    assert "held" not in data["accuracy_guard"]  # set only when the guard had work to do
    # the jetson target's record: the Q/DQ keys in place, beside its own
    jetson = to_data(TensorRTGraphRecord(True, "int8", record))
    assert jetson["simulated"] is True and jetson["profile"] == "cpu" and "qdq" not in jetson
    assert to_data(TensorRTGraphRecord(False, "fp16")) == {"simulated": False, "engine_precision": "fp16"}


def test_the_quantization_child_reads_back_the_job_it_was_given():
    from edgevision.quantization.onnxruntime import PROFILES, JobOutput, QuantizeJob
    from edgevision.typed import from_data, to_data

    job = QuantizeJob("edgevision", "f.onnx", "minmax", ["/a"], [JobOutput("q.onnx", ["/b"], PROFILES["tensorrt"])])
    back = from_data(QuantizeJob, json.loads(json.dumps(to_data(job))))
    assert back.outputs[0].nodes == ["/b"] and back.exclude == ["/a"]
    assert back.outputs[0].profile.quantize_kwargs() == PROFILES["tensorrt"].quantize_kwargs()


def test_an_api_answer_is_its_commands_json():
    """Evaluation keeps the result's keys in place and leaves its logits out."""
    import numpy as np

    from edgevision.api import Evaluation
    from edgevision.measure.evaluate import EvalResult
    from edgevision.models import load_model
    from edgevision.typed import to_data

    spec = load_model("convnext_mini", weights="random").spec
    answer = Evaluation(spec, "pytorch", EvalResult("builtin:photos", 13, 0, None, None, np.zeros((13, 10)), None))
    data = to_data(answer)
    assert list(data)[:4] == ["model", "runtime", "data", "images"] and "logits" not in data
    assert data["model"]["family"] == "convnext" and json.loads(json.dumps(data)) == data
