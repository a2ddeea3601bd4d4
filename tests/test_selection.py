"""Choosing by measurement: the CPU profile's reading of instruction sets (recorded machines), the selection
rule (recorded variant rows), the --runtime pin, and one real run whose selected artifact is checked."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgevision.measure.cpu_profile import INT8_FEATURES, CpuProfile, host_flags, int8_features, int8_tier
from edgevision.pipeline.recipe import RecipeError
from edgevision.pipeline.report import DataInfo, ModelInfo, RunReport, VariantRecord
from edgevision.pipeline.resolve import resolve
from edgevision.pipeline.run import build_stages, runner_options
from edgevision.pipeline.selection import held_on_guard_sample_only, int8_no_faster, select
from edgevision.runtimes.openvino import native_bf16

# /proc/cpuinfo flags (the INT8-relevant part and some neighbours) of machines this project has met or targets
AVX2_EPYC = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni".split()
VNNI_XEON = AVX2_EPYC + "avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16".split()
AMX_XEON = VNNI_XEON + "avx_vnni amx_bf16 amx_tile amx_int8".split()
ARM_NEOVERSE = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve i8mm bf16".split()


def profile(flags, **gops):
    return CpuProfile("test cpu", "x86_64", 2, int8_features(flags), {},
                      {k.replace("_", " ").replace("ov ", "openvino ").replace("ort ", "onnxruntime "): v
                       for k, v in gops.items()})


@pytest.mark.parametrize("flags,tier", [(AVX2_EPYC, "avx2"), (VNNI_XEON, "vnni"), (AMX_XEON, "amx"),
                                        (ARM_NEOVERSE, "dotprod"), ("fpu sse sse2".split(), "none")])
def test_instruction_set_tiers_of_recorded_machines(flags, tier):
    assert int8_tier(int8_features(flags)) == tier


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads Linux's /proc/cpuinfo")
def test_host_flags_keep_every_int8_flag_the_kernel_reports():
    # archspec's named microarchitecture drops flags it does not know for that name (a KVM Xeon with AMX read
    # as an icelake, without amx_int8): the profile must see what the kernel reports
    kernel = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            kernel |= set(line.split(":", 1)[1].split())
    assert kernel & set(INT8_FEATURES) <= host_flags()


def test_avx2_profile_says_openvino_int8_does_not_pay_and_why():
    """Measured on a 2-core AMD EPYC (Zen 3), AVX2, no VNNI: OpenVINO INT8 166 vs FP32 168 GOP/s."""
    p = profile(AVX2_EPYC, ov_fp32=168, ov_int8=166, ort_fp32=184, ort_int8_u8s8=212, ort_int8_s8s8=323)
    lines = p.conclusions()
    assert lines[0] == ("INT8 in OpenVINO is no faster than FP32 on this CPU (0.99x on a GEMM): AVX2 only, "
                        "no VNNI or AMX")
    # s8 x s8 won this GEMM, but every model ran slower in it than in u8 x s8 on x86: not built; without VNNI
    # u8 x s8 saturates, so its 7-bit-weight form (u8s8-rr) is built
    assert p.onnxruntime_formats() == ["u8s8", "u8s8-rr"]
    assert profile(AVX2_EPYC, ort_int8_u8s8=128, ort_int8_s8s8=81).onnxruntime_formats() == ["u8s8", "u8s8-rr"]


def test_vnni_profile_says_int8_pays_and_close_formats_are_both_tried():
    p = profile(VNNI_XEON, ov_fp32=330, ov_int8=850, ort_fp32=320, ort_int8_u8s8=700, ort_int8_s8s8=690)
    assert "runs 2.58x FP32" in p.conclusions()[0] and "(VNNI)" in p.conclusions()[0]
    assert p.onnxruntime_formats() == ["u8s8"]  # x86: s8 x s8 whole models lost to u8 x s8 whatever the GEMM


def test_arm_builds_signed_activations_where_their_gemm_is_not_clearly_slower():
    def arm(**gops):
        return replace(profile(ARM_NEOVERSE, **gops), arch="aarch64")

    assert arm(ort_int8_u8s8=300, ort_int8_s8s8=290).onnxruntime_formats() == ["u8s8", "s8s8"]
    assert arm(ort_int8_u8s8=300, ort_int8_s8s8=200).onnxruntime_formats() == ["u8s8"]


def test_bf16_features_are_recorded_and_named_in_the_conclusions():
    assert "bf16 in hardware (avx512_bf16)" in profile(VNNI_XEON).conclusions()[-1]
    assert profile(AMX_XEON).features[-2:] == ["avx512_bf16", "amx_bf16"]
    assert not any("bf16" in line for line in profile(AVX2_EPYC).conclusions())
    assert not any("bf16" in line for line in profile(ARM_NEOVERSE).conclusions())  # ARM's bf16: not OpenVINO's


def test_unmeasured_profile_falls_back_to_unsigned_activations():
    assert profile(ARM_NEOVERSE).onnxruntime_formats() == ["u8s8"]


@pytest.mark.parametrize("flags,saturates", [(AVX2_EPYC, True), ("fpu sse sse2".split(), True),
                                             (VNNI_XEON, False), (AMX_XEON, False)])
def test_seven_bit_weights_are_built_only_where_u8s8_saturates(flags, saturates):
    assert profile(flags).saturates_u8s8 is saturates
    assert ("u8s8-rr" in profile(flags).onnxruntime_formats()) is saturates
    arm = CpuProfile("arm cpu", "aarch64", 2, int8_features(ARM_NEOVERSE), {})
    assert not arm.saturates_u8s8 and "u8s8-rr" not in arm.onnxruntime_formats()


def row(name, runtime, p50, drop, role="candidate", **more):
    return VariantRecord.from_dict({"name": name, "runtime": runtime, "role": role, "latency_ms_p50": p50,
                                    "top1_drop": drop, "agreement": 100.0 - (drop or 0.0), **more})


ROWS = [row("fp32", "pytorch", 60.0, 0.0, role="reference"), row("fp32", "openvino", 45.0, 0.0),
        row("int8", "openvino", 48.0, 0.3), row("int8", "onnxruntime", 39.0, 1.4)]


def test_selection_is_the_fastest_within_the_budget():
    picked = select(ROWS, max_drop=1.0)
    assert picked.selected == "fp32/openvino"  # ORT INT8 is fastest but loses 1.4 points; OV INT8 is slower
    assert {c.key: c.within_budget for c in picked.candidates} == {
        "fp32/openvino": True, "int8/openvino": True, "int8/onnxruntime": False}
    assert select(ROWS, max_drop=2.0).selected == "int8/onnxruntime"
    assert picked.rule.endswith("budget (1 point)") and select(ROWS, max_drop=0.5).rule.endswith("(0.5 points)")


def test_selection_without_guard_is_by_speed_and_says_so():
    picked = select(ROWS, max_drop=1.0, guard=False)
    assert picked.selected == "int8/onnxruntime" and "accuracy guard off" in picked.rule
    assert picked.max_drop is None


def test_a_candidate_that_held_only_on_the_guards_sample_is_named_and_not_selected():
    def guarded(name, runtime, p50, drop, record, images, plain):
        return row(name, runtime, p50, drop, quantization={record: {"images": images, "float": 90.0, "plain_int8": plain}})

    rows = [row("fp32", "pytorch", 60.0, 0.0, role="reference"), row("fp32", "openvino", 45.0, 0.0),
            guarded("int8", "openvino", 20.0, 1.4, "accuracy_control", 1783, 89.5),  # held on the sample only
            guarded("int8", "onnxruntime", 25.0, 1.6, "accuracy_guard", 5000, 89.6),  # the guard saw every image
            guarded("int8-bf16", "openvino", 22.0, 0.8, "accuracy_control", 1783, 89.5)]  # holds on both
    rows[2].quantization["accuracy_control"]["final_int8"] = 89.2  # a step after the preset held
    lines = held_on_guard_sample_only(rows, 1.0, 5000)
    assert lines == ["int8/openvino held the accuracy budget on the guard's sample of 1783 images (0.80 points) "
                     "but loses 1.40 on all 5000 evaluation images: not selected"]
    assert select(rows, 1.0).selected == "int8-bf16/openvino"
    assert held_on_guard_sample_only(rows, None, 5000) == []


def test_untimed_and_reference_variants_are_never_selected():
    rows = [row("fp32", "pytorch", 1.0, 0.0, role="reference"), row("int8", "tensorrt-sim", None, 0.1)]
    assert select(rows, max_drop=1.0).selected is None


def test_int8_no_faster_is_told_apart_from_noise():
    # OpenVINO INT8 (48 ms) is slower than OpenVINO FP32 (45 ms): said, though ONNX Runtime INT8 (39 ms) wins
    assert [(a.runtime, b.runtime) for a, b in int8_no_faster(ROWS)] == [("openvino", "openvino")]
    slow = [row("fp32", "openvino", 45.0, 0.0), row("int8", "openvino", 44.5, 0.1)]  # within 3%: no faster
    assert [(a.name, b.name) for a, b in int8_no_faster(slow)] == [("int8", "fp32")]
    fast = [row("fp32", "openvino", 45.0, 0.0), row("int8", "openvino", 30.0, 0.1)]
    assert int8_no_faster(fast) == []


def test_runtime_pin_keeps_only_that_runtimes_stages():
    names = [s.name for s in build_stages(resolve({}, None, {"runtime": "openvino"}))]
    assert names == ["float reference", "OpenVINO FP32", "OpenVINO INT8"]
    names = [s.name for s in build_stages(resolve({}, None, {"runtime": "onnxruntime"}))]
    assert names == ["float reference", "ONNX Runtime INT8"]
    with pytest.raises(RecipeError, match="--runtime tensorrt is not a runtime of --target cpu"):
        resolve({}, None, {"runtime": "tensorrt"})


def test_compress_selects_a_real_loadable_artifact_that_is_the_fastest_measured(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "edgevision", "compress", "convnext_mini", "--weights", "random",
                           "--int8", "--calib-size", "8", "--iters", "20", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is the JSON alone
    selection = report["selection"]
    assert "accuracy guard off" in selection["rule"]  # random weights
    candidates = {c["key"]: c["latency_ms_p50"] for c in selection["candidates"]}
    assert {"fp32/openvino", "int8/openvino", "int8/onnxruntime"} <= set(candidates)
    assert candidates[selection["selected"]] == min(candidates.values())
    chosen = next(v for v in report["variants"] if v["selected"])
    assert (out / chosen["artifact"]).is_file()
    evaluated = subprocess.run([sys.executable, "-m", "edgevision", "evaluate", str(out / chosen["artifact"]),
                                "--data", "builtin:photos", "--json"], capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["runtime"] == chosen["runtime"]
    assert report["benchmark"]["cpu_profile"]["gemm_gops"]  # the machine it was chosen on, with its roofline
    # OpenVINO INT8 with bf16 for its float layers is a candidate exactly where the CPU has bf16; when chosen,
    # the manifest tells evaluate, benchmark and deployment to run the IR that way
    assert ("int8-bf16/openvino" in candidates) == native_bf16()
    manifest = json.loads((out / "manifest.json").read_text())
    bf16 = chosen["name"] == "int8-bf16"
    assert manifest["runner_options"] == ({"model_int8.xml": {"precision": "bf16"}} if bf16 else {})


def test_runner_options_name_the_selected_artifacts_precision():
    for selected, expected in ((1, {"model_int8.xml": {"precision": "bf16"}}), (0, {})):
        rows = [row("int8", "openvino", 30.0, 0.1, artifact="model_int8.xml", quantization={},
                    selected=selected == 0),
                row("int8-bf16", "openvino", 27.0, 0.1, artifact="model_int8.xml",
                    quantization={"inference_precision": "bf16"}, selected=selected == 1)]
        report = RunReport(ModelInfo("m"), DataInfo("d", 1), rows)
        assert runner_options(report) == expected


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_an_artifact_runs_with_the_runner_options_of_its_manifest(tmp_path):
    from edgevision.measure import benchmark_model
    from edgevision.models import load_model
    from edgevision.pipeline.artifacts import load_artifact
    from edgevision.pipeline.manifest import write_manifest
    from edgevision.runtimes import openvino as ov_backend

    loaded = load_model("convnext_mini", weights="random")
    ov_backend.save(ov_backend.convert(loaded.model, loaded.spec.input_size), tmp_path / "model_int8.xml")
    write_manifest(tmp_path, {"model": loaded.spec.to_dict(), "runner_options": {"model_int8.xml": {"precision": "bf16"}}})
    artifact = load_artifact(tmp_path / "model_int8.xml")
    assert artifact.runner_options == {"precision": "bf16"}
    result = benchmark_model(artifact, runtime="openvino", iters=2, warmup=1, throughput_batch=None)
    assert result.runner.precision == "bf16"
