"""README.md of a Jetson bundle: what is in it, how to build and check the engine, what was measured."""
from __future__ import annotations

import shlex

from edgevision.pipeline.report import RunReport
from edgevision.pipeline.targets.tensorrt_section import TensorRTSection
from edgevision.quantization.records import GuardSummary
from edgevision.runtimes.fp16_preflight import Fp16Report


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f} %"


def bundle_readme(report: RunReport, trt: TensorRTSection, spec) -> str:
    """`trt`: the jetson target's section of the report."""
    opts = trt.engine_options
    dc = spec.data_config
    ref, onnx_variant = report.reference, report.candidates()[0]
    shape = "x".join(str(d) for d in (("N" if opts.dynamic_batch else opts.batch), *spec.input_size))
    batch = (f"dynamic, 1 to {opts.max_batch} (optimised for {opts.batch})" if opts.dynamic_batch
             else f"static {opts.batch}")
    rules = trt.rules_check
    rules_line = ("not applicable (no INT8)" if rules is None else
                  "passed" if rules.passed else f"FAILED: {'; '.join(rules.violations[:5])}")
    accuracy_name = "top-1" if report.data.labelled else "agreement with PyTorch FP32"

    def metric(v):
        return _pct(v.top1 if report.data.labelled else v.agreement)

    lines = [
        f"# {spec.name} for Jetson (TensorRT), {trt.precision.upper()}",
        "",
        f"Made by `edgevision` from `{spec.timm_name}` ({report.weights}). TensorRT engines are built on the "
        "device that runs them: an engine is tied to its TensorRT version, GPU and L4T release.",
        "",
        "## Files",
        "- `model.onnx`: " + (f"symmetric INT8 Q/DQ (zero point 0, per-channel weight scales) written by the "
                              f"{trt.qdq_engine or 'edgevision'} Q/DQ engine"
                              if trt.precision == "int8" else "float32 graph")
        + f", opset 17, input `{opts.input_name}` {shape}, batch {batch}",
        *([f"- `{opts.float_onnx}`: the float graph, built as an FP16 engine to time against the INT8 one"]
          if opts.float_onnx else []),
        "- `build_engine.sh`: runs `trtexec` with the right flags for TensorRT 10 or 11 (detected)",
        "- `device_identity.py`: records what the engine was built on (`model.engine.json`), run by the script",
        "- `manifest.json`: input, preprocessing, classes, accuracy, tool versions, sha256 of every file",
        "- `report.json`: the full measurement report; `recipe.yaml`: the settings used",
        "",
        *_build_lines(trt),
        "## Preprocessing",
        f"RGB, resize ({dc.get('interpolation')}) so that a center crop of {dc.get('crop_pct')} gives "
        f"{spec.input_size[1]}x{spec.input_size[2]}, scale to [0, 1], normalise with mean {list(dc.get('mean', []))} and "
        f"std {list(dc.get('std', []))}, NCHW float32.",
        "",
        "## Accuracy, measured before shipping",
        f"On {report.data.spec} ({report.data.images} images), {accuracy_name}:",
        "",
        "| model | runtime | " + accuracy_name + " |",
        "|---|---|---|",
        f"| PyTorch FP32 | pytorch | {metric(ref)} |",
        f"| model.onnx | {onnx_variant.runtime} | {metric(onnx_variant)} |",
        "",
        ("The INT8 number is **simulated**: ONNX Runtime executing the same Q/DQ graph on a CPU. TensorRT fuses "
         "and rounds differently; check it on the device with `edgevision evaluate model.engine`."
         if trt.precision == "int8" else
         "TensorRT runs this float graph in " + trt.precision.upper() + "; check it on the device."),
        "",
        f"TensorRT INT8 rules check: {rules_line}.",
        "",
        _fp16_line(trt.fp16_preflight),
        "",
        guard_line(trt.accuracy_guard),
        "",
    ]
    return "\n".join(lines)


def _fp16_line(preflight: Fp16Report | None) -> str:
    """What the FP16 pre-flight found, in one sentence."""
    if preflight is None:
        return "FP16 pre-flight: not run (the engine's float layers run in FP32)."
    kept = preflight.keep_fp32
    found = (f"{len(kept)} node(s) overflow or lose accuracy in FP16 and are kept in FP32 by build_engine.sh: "
             + ", ".join(f"`{n}`" for n in kept)) if kept else "no node overflows or loses accuracy in FP16"
    return (f"FP16 pre-flight (the float graph in FP16 vs FP32 on {preflight.images} calibration images, "
            f"{preflight.nodes_checked} nodes): {found}.")


def guard_line(guard: GuardSummary | None) -> str:
    """What the accuracy guard on the Q/DQ graph did, in one sentence."""
    if guard is None:
        return "Accuracy guard: off (no budget: --max-drop none, or random weights)."
    if not guard.needed:
        return (f"Accuracy guard: the Q/DQ graph held the {guard.max_drop:g}-point budget as the engine wrote it "
                f"({guard.metric} {guard.plain_int8:.2f} vs float {guard.float:.2f}).")
    kept, images = guard.excluded_nodes or [], guard.calibration_images
    more_images = images is not None and images != guard.path[0].calibration_images
    changes = ([f"calibrated on {images} images"] if more_images else []) + (
        [f"{len(kept)} node(s) left in float (FP16 in build_engine.sh: " + ", ".join(f"`{n}`" for n in kept[:10])
         + f"{', ...' if len(kept) > 10 else ''})"] if kept else [])
    return (f"Accuracy guard: the Q/DQ graph lost {guard.float - guard.plain_int8:.2f} points of "
            f"{guard.metric}; " + (f"{' and '.join(changes)}, it " if changes else "no step tried did better: it ")
            + ("holds" if guard.held else "still misses") + f" the {guard.max_drop:g}-point budget "
            f"({guard.final_int8:.2f}).")


def _build_lines(trt: TensorRTSection) -> list[str]:
    """The README's "Build the engine on the device" section."""
    return [
        "## Build the engine on the device",
        *(["By default (`--precision auto`) the script builds the INT8 engine and the float graph's FP16 engine, "
           "times both with trtexec (three interleaved rounds, median GPU compute time) and keeps the faster as "
           "`model.engine`; `model.engine.json` records which and the timings. `./build_engine.sh --precision int8` "
           "(or `fp16`) builds one. " + ("" if trt.engine_options.int8_vouched else
                                        "The INT8 graph missed the accuracy budget here, so auto builds FP16 only."),
           ""] if trt.engine_options.float_onnx else []),
        "JetPack 6 (TensorRT 10):",
        "```",
        "./build_engine.sh",
        "# = trtexec " + " ".join(shlex.quote(a) for a in trt.trtexec["10"]),
        "```",
        "TensorRT 11 (no precision flags; FP16 outside Q/DQ comes from an FP16-cast ONNX that the script makes "
        "with ModelOpt AutoCast when `nvidia-modelopt` is installed):",
        "```",
        "TRT_MAJOR=11 ./build_engine.sh",
        "```",
        "Or, with the TensorRT Python package: `edgevision build-engine .` (writes the same files). Then:",
        "```",
        "trtexec --loadEngine=model.engine               # latency on the device",
        "edgevision benchmark model.engine",
        "edgevision evaluate model.engine --data DATA    # accuracy in TensorRT",
        "```",
        "",
    ]
