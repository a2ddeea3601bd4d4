"""The CPU deploy bundle: the device's choice on recorded measurements, checksums, the budget rule, the manifest
types, the device's preprocessing against timm's, and end to end: a bundle of a trained Fashion-MNIST model
whose select_model.py and predict.py run in a virtual environment without torch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from typer.testing import CliRunner

from edgevision.cli import app
from edgevision.data.loader import eval_transform
from edgevision.deploy import bundle_lib as lib
from edgevision.pipeline.targets.cpu_bundle import preprocessing

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
runner = CliRunner()


# ---- the choice, on measurements recorded on other machines -------------------------------------------------


def recorded(kind: str) -> list[dict]:
    """The per-model candidate speedups benchmarks/cpu_selection.py recorded on an AVX2, VNNI or AMX CPU."""
    return json.loads((RESULTS / f"cpu_selection_{kind}.json").read_text())["rows"]


def results_from(row: dict, drops: dict[str, float] | None = None) -> list[lib.CandidateResult]:
    eager = row["pytorch_fp32_ms"]
    return [lib.CandidateResult(key, key.split("/")[1], "int8" if key.startswith("int8") else "fp32", "out",
                                drop=(drops or {}).get(key, 0.0), agreement=100.0, latency_ms_p50=eager / speedup)
            for key, speedup in row["speedups"].items()]


@pytest.mark.parametrize("kind", ["avx2", "vnni", "amx"])
def test_choice_on_recorded_machines_is_their_fastest(kind):
    for row in recorded(kind):
        results = results_from(row)
        picked, _ = lib.choose(results, 1.0)
        assert picked == max(row["speedups"], key=row["speedups"].get), (kind, row["model"])
        assert [r.status for r in results].count("picked") == 1


def test_winner_differs_between_recorded_cpus():
    """Why the device decides: the same model's fastest candidate is not the same on AVX2 and AMX."""
    avx2 = {r["model"]: lib.choose(results_from(r), 1.0)[0] for r in recorded("avx2")}
    amx = {r["model"]: lib.choose(results_from(r), 1.0)[0] for r in recorded("amx")}
    assert any(avx2[m] != amx[m] for m in avx2.keys() & amx.keys())


def test_budget_rule_keeps_out_what_loses_too_much_and_says_why():
    row = recorded("avx2")[0]
    fastest = max(row["speedups"], key=row["speedups"].get)
    results = results_from(row, {fastest: 1.5})
    picked, rule = lib.choose(results, 1.0)
    assert picked != fastest and "within the accuracy budget (1 points)" in rule
    out = next(r for r in results if r.key == fastest)
    assert out.status == "out" and "loses 1.50 points" in out.reason
    assert lib.choose(results_from(row, {fastest: 1.5}), None)[0] == fastest  # no budget: speed alone


def test_no_candidate_within_budget_picks_none():
    results = results_from(recorded("vnni")[0], {k: 3.0 for k in recorded("vnni")[0]["speedups"]})
    assert lib.choose(results, 1.0)[0] is None
    assert all(r.status == "out" for r in results)


def test_a_reason_already_given_is_never_picked():
    results = results_from(recorded("amx")[0])
    fastest = min(results, key=lambda r: r.latency_ms_p50)
    fastest.reason = "model_int8.onnx fails its checksum (changed after export)"
    assert lib.choose(results, 1.0)[0] != fastest.key


# ---- checksums, manifest types ---------------------------------------------------------------------------------


def test_checksum_problem_names_the_changed_or_missing_file(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"weights")
    files = {"a.onnx": lib.sha256(tmp_path / "a.onnx")}
    assert lib.checksum_problem(tmp_path, files) is None
    (tmp_path / "a.onnx").write_bytes(b"weightz")
    assert lib.checksum_problem(tmp_path, files) == "a.onnx fails its checksum (changed after export)"
    assert lib.checksum_problem(tmp_path, {"b.bin": "0"}) == "b.bin is missing"


def minimal_manifest() -> lib.BundleManifest:
    host = lib.HostMeasurement(90.0, 0.2, 99.0, 1.5, 2.0, True)
    return lib.BundleManifest(
        lib.MANIFEST_VERSION, "convnext_mini", lib.Preprocessing([3, 32, 32]), ["a", "b"], 1.0, "top1",
        lib.Sample("sample.npz", "00", 10, True, "builtin:fashion-mnist"),
        [lib.Candidate("int8/onnxruntime", "onnxruntime", "int8", {"m.onnx": "00"}, {}, "u8s8", host)],
        lib.HostInfo("AMD EPYC", ["avx2"], "avx2", 2, "int8/onnxruntime"))


def test_manifest_round_trips_through_json():
    manifest = minimal_manifest()
    again = lib.from_dict(lib.BundleManifest, json.loads(json.dumps(lib.to_dict(manifest))))
    assert again == manifest and isinstance(again.candidates[0].host, lib.HostMeasurement)


def test_manifest_with_unknown_or_missing_key_is_a_one_line_error():
    data = lib.to_dict(minimal_manifest())
    data["candidates"][0]["speed"] = 1
    with pytest.raises(lib.BundleError, match="unknown key 'speed' in Candidate"):
        lib.from_dict(lib.BundleManifest, data)
    data = lib.to_dict(minimal_manifest())
    del data["sample"]["sha256"]
    with pytest.raises(lib.BundleError, match="Sample lacks 'sha256'"):
        lib.from_dict(lib.BundleManifest, data)


# ---- one preprocessing, two implementations ---------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "crop_mode": "center"},
    {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
     "crop_pct": 1.0, "crop_mode": "center"},
    {"input_size": [3, 96, 96], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
     "crop_pct": 0.9, "crop_mode": "squash"},
])
@pytest.mark.parametrize("size,seed", [((512, 512), 0), ((400, 300), 1), ((300, 451), 0), ((28, 28), 1)])
def test_device_preprocessing_matches_timms_transform(config, size, seed):
    image = photo(size, seed)
    host = eval_transform(config)(image).numpy()
    prep = preprocessing(config)
    device = lib.normalize(lib.resize_crop(image, prep)[None], prep)[0]
    assert device.shape == host.shape
    assert np.abs(device - host).max() < 1e-5


# ---- end to end: a bundle of a trained model, checked in a venv without torch ----------------------------------


def device_python() -> Path:
    """The device's Python: a venv with only numpy, Pillow, onnxruntime and openvino (.ci/run makes it)."""
    path = Path(os.environ.get("EDGEVISION_DEVICE_PYTHON", ROOT / ".venv-device" / "bin" / "python"))
    if not path.is_file():
        pytest.skip(f"no device venv at {path}: python3 -m venv .venv-device && .venv-device/bin/pip install "
                    "numpy pillow onnxruntime openvino")
    return path


@pytest.fixture(scope="module")
def bundle(trained_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "cpu"
    done = runner.invoke(app, ["export", "--checkpoint", str(trained_checkpoint), "--target", "cpu", "--out", str(out),
                               "--data", "builtin:fashion-mnist", "--limit", "200", "--calib-data",
                               "builtin:fashion-mnist", "--calib-size", "64", "--iters", "10", "--json"])
    assert done.exit_code == 0, done.output
    return out


def run_device(python: Path, bundle: Path, script: str, *args: str, block: str = "") -> subprocess.CompletedProcess:
    """A bundle script in the device venv, from inside the bundle (as on the device); `block`: a runtime hidden."""
    pre = f"import sys; sys.modules[{block!r}] = None; " if block else ""
    code = f"{pre}import runpy, sys; sys.argv = [{script!r}, *sys.argv[1:]]; runpy.run_path({script!r}, run_name='__main__')"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-c", code, *args], cwd=bundle, capture_output=True, text=True, env=env,
                          timeout=600)


def test_bundle_holds_every_candidate_sample_and_scripts(bundle):
    manifest = lib.load_manifest(bundle)
    keys = {c.key for c in manifest.candidates}
    # int8-mixed is there when INT8 measured faster in some class of layer on this CPU (placement.py)
    assert keys - {"int8-mixed/onnxruntime", "int8-mixed/openvino"} == {"fp32/openvino", "int8/openvino", "int8/onnxruntime", "int8-u8s8-rr/onnxruntime",
                    "int8-s8s8/onnxruntime", "fp32/onnxruntime"} | ({"int8-bf16/openvino"} & keys)
    assert manifest.metric == "top1" and manifest.max_drop == 1.0 and manifest.classes[0] == "T-shirt/top"
    assert manifest.sample.images == 100 and manifest.host.selected in keys
    assert all(lib.checksum_problem(bundle, c.files) is None for c in manifest.candidates)
    with np.load(bundle / "sample.npz") as sample:
        assert sample["images"].dtype == np.uint8 and sample["images"].shape == (100, 32, 32, 3)
        assert sample["logits"].shape == (100, 10) and set(sample["labels"]) == set(range(10))
    added = sum((bundle / f).stat().st_size for f in ("sample.npz", "select_model.py", "predict.py", "bundle_lib.py",
                                                       "requirements.txt", "README.md"))
    assert added < 20e6


def test_selector_and_predict_run_without_torch(bundle, tmp_path):
    python = device_python()
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    device = shutil.copytree(bundle, tmp_path / "device")
    done = run_device(python, device, "select_model.py", "--rounds", "3", "--json")
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    picked = next(c for c in decision["candidates"] if c["status"] == "picked")
    assert picked["key"] == decision["picked"] and picked["drop"] <= 1.0 and picked["latency_ms_p50"] > 0
    assert decision["device"]["runtimes"]["onnxruntime"] and decision["host"]["selected"]
    assert all((device / f).is_file() for f in decision["files"])  # the pick under its fixed name, loadable:
    image = tmp_path / "shirt.png"
    photo((60, 80)).save(image)
    predicted = run_device(python, device, "predict.py", str(image), "--top", "3", "--json")
    assert predicted.returncode == 0, predicted.stderr
    top = json.loads(predicted.stdout)[str(image)]
    probabilities = [t["probability"] for t in top]
    assert len(top) == 3 and top[0]["class"] in lib.load_manifest(device).classes
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_selector_refuses_altered_weights_by_checksum(bundle, tmp_path):
    python = device_python()
    device = shutil.copytree(bundle, tmp_path / "device")
    weights = device / "model_int8.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    done = run_device(python, device, "select_model.py", "--rounds", "2", "--json")
    row = next(c for c in json.loads(done.stdout)["candidates"] if c["key"] == "int8/openvino")
    assert row["status"] == "out" and row["reason"] == "model_int8.bin fails its checksum (changed after export)"
    assert json.loads(done.stdout)["picked"] != "int8/openvino"


def test_selector_refuses_a_graph_that_loses_accuracy(bundle, tmp_path):
    """A graph changed after export with its checksum updated: only the accuracy check can catch it."""
    import onnx
    from onnx import numpy_helper

    python = device_python()
    device = shutil.copytree(bundle, tmp_path / "device")
    path = device / "model_fp32.onnx"
    model = onnx.load(str(path))
    head = max(model.graph.initializer, key=lambda t: (t.dims[:1] == [10], len(t.dims) == 2))  # the classifier
    weight = numpy_helper.to_array(head)
    head.CopyFrom(numpy_helper.from_array(np.roll(weight, 3, axis=0), head.name))  # classes swapped
    onnx.save(model, str(path))
    manifest = json.loads((device / "manifest.json").read_text())
    for cand in manifest["deploy"]["candidates"]:
        if "model_fp32.onnx" in cand["files"]:
            cand["files"]["model_fp32.onnx"] = lib.sha256(path)
    (device / "manifest.json").write_text(json.dumps(manifest))
    done = run_device(python, device, "select_model.py", "--rounds", "2", "--json")
    row = next(c for c in json.loads(done.stdout)["candidates"] if c["key"] == "fp32/onnxruntime")
    assert row["status"] == "out" and row["reason"].startswith("loses ") and row["drop"] > 1.0


def test_selector_skips_a_missing_runtime_with_a_reason(bundle, tmp_path):
    python = device_python()
    device = shutil.copytree(bundle, tmp_path / "device")
    done = run_device(python, device, "select_model.py", "--rounds", "2", "--json", block="openvino")
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    assert decision["device"]["runtimes"]["openvino"] is None
    for row in decision["candidates"]:
        if row["runtime"] == "openvino":
            assert row["status"] == "out" and row["reason"].startswith("openvino is not installed")
    assert decision["picked"].endswith("/onnxruntime")


def test_deploy_check_and_compare_read_the_devices_decision(bundle, tmp_path):
    device = shutil.copytree(bundle, tmp_path / "device")
    done = runner.invoke(app, ["deploy-check", str(device), "--rounds", "2", "--json"])
    assert done.exit_code == 0, done.output
    decision = json.loads(done.stdout)
    assert (device / "decision.json").is_file() and decision["picked"]
    compared = runner.invoke(app, ["compare", str(device), "--json"])
    assert compared.exit_code == 0, compared.output
    rows = json.loads(compared.stdout)["rows"]
    assert {r["variant"] + "/" + r["runtime"] for r in rows if r["selected"]} == {decision["picked"]}
    assert all(r["data"].endswith("(bundle sample)") for r in rows)
    strict = runner.invoke(app, ["deploy-check", str(device), "--max-drop", "0", "--rounds", "2"])
    if strict.exit_code == 3:  # nothing held a zero budget here: exit 3 with the reason, as compress
        assert "no candidate holds the accuracy budget" in strict.output
    else:
        assert strict.exit_code == 0, strict.output


def test_deploy_check_of_a_folder_that_is_no_bundle_is_one_line(tmp_path):
    done = runner.invoke(app, ["deploy-check", str(tmp_path)])
    assert done.exit_code == 2 and "manifest.json not found" in done.output
    assert len(done.output.strip().splitlines()) == 1


# ---- the device's CPU as /proc/cpuinfo tells it -----------------------------------------------------------------

AVX2_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd aes crc32 atomics asimddp i8mm bf16\n"


def test_cpu_flags_by_architecture_and_under_emulation():
    assert lib.cpu_flags(AVX2_CPUINFO, "x86_64") == ("AMD EPYC 7B13", ["avx2"])
    assert lib.cpu_flags(ARM_CPUINFO, "aarch64")[1] == ["asimddp", "i8mm", "bf16"]
    # qemu-user shows the x86 host's /proc/cpuinfo to an aarch64 process: those flags are not its CPU's
    cpu, features = lib.cpu_flags(AVX2_CPUINFO, "aarch64")
    assert features == [] and cpu.startswith("aarch64 CPU under emulation")
