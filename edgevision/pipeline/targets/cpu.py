"""The cpu target: the fastest CPU model within the accuracy budget, chosen by measuring on this CPU.

Candidates: OpenVINO IR in FP32 (the float fallback) and NNCF INT8, and ONNX Runtime static INT8 in the
activation format(s) the CPU profile ranks first (pipeline/selection.py picks among them after they are all
evaluated and timed side by side). `--runtime openvino|onnxruntime` (recipe `runtime`) pins one runtime.
`export --target cpu` makes the deploy bundle instead (pipeline/targets/cpu_bundle.py): every candidate in every
format, for the device to pick among by measuring itself.
"""
from __future__ import annotations

import shutil
from dataclasses import replace

from edgevision.pipeline.context import Context, GraphInput, Variant, size_mb
from edgevision.pipeline.report import Precision
from edgevision.pipeline.stages import Stage
from edgevision.pipeline.targets.cpu_bundle import DEPLOY, CpuBundle, DeploySettings
from edgevision.pipeline.targets.ort_int8 import add_int8_variants, add_latency_aware_variant, fold_layer_scales
from edgevision.pipeline.targets.registry import Target, register_target
from edgevision.pipeline.targets.sections import QDQ, QUANTIZATION
from edgevision.quantization.onnxruntime import CPU_FORMATS
from edgevision.quantization.quantize import OpenVINOLatencyAwareRequest, OpenVINORequest, quantize
from edgevision.runtimes import create_runner
from edgevision.runtimes import onnxruntime as ort_backend
from edgevision.runtimes import openvino as ov_backend


def _openvino_fp32(ctx: Context):
    return ctx.float_graph("openvino", lambda: ov_backend.convert(ctx.model, ctx.loaded.spec.input_size))


class OpenVINOFloat(Stage):
    name = "OpenVINO FP32"
    runtime = "openvino"

    def run(self, ctx: Context) -> None:
        ov_model = _openvino_fp32(ctx)
        files = ov_backend.save(ov_model, ctx.workdir / "model_fp32.xml")
        ctx.graph_input = GraphInput(ov_model.input(0).get_any_name(), [1, *ctx.loaded.spec.input_size])
        ctx.variants.append(Variant("fp32", "openvino", create_runner("openvino", ov_model, threads=ctx.threads),
                                    files=files, size_mb=size_mb(files)))


class OpenVINOInt8(Stage):
    """NNCF post-training INT8 on the OpenVINO model, held to the accuracy budget by the guard
    (quantization/openvino_guard.py: other settings in order, then NNCF's accuracy control)."""

    name = "OpenVINO INT8"
    int8_only = True
    runtime = "openvino"

    def run(self, ctx: Context) -> None:
        [done] = quantize(ctx, OpenVINORequest(_openvino_fp32(ctx)))
        int8, info = done.model, done.record
        files = ov_backend.save(int8, ctx.workdir / "model_int8.xml")
        runner = create_runner("openvino", int8, threads=ctx.threads)
        info.int8_layers_executed = runner.int8_layers()
        ctx.variants.append(Variant("int8", "openvino", runner, precision=Precision.INT8, files=files,
                                    size_mb=size_mb(files), quantization=info))
        if ov_backend.native_bf16():  # the same IR, its float layers in bf16: measured 0-12% faster on Zen 4
            ctx.variants.append(Variant("int8-bf16", "openvino",
                                        create_runner("openvino", int8, threads=ctx.threads, precision="bf16"),
                                        precision=Precision.INT8, files=files, size_mb=size_mb(files),
                                        quantization=replace(info, inference_precision="bf16")))
        _add_openvino_mixed(ctx, int8)


def _add_openvino_mixed(ctx: Context, int8) -> None:
    """NNCF INT8 only on the classes of compute layer where the INT8 model measured faster than the float one on
    this CPU (quantization/placement.py): `int8-mixed/openvino` (model_int8_mixed.xml), when some classes won and
    some lost."""
    for done in quantize(ctx, OpenVINOLatencyAwareRequest(_openvino_fp32(ctx), int8)):
        files = ov_backend.save(done.model, ctx.workdir / "model_int8_mixed.xml")
        runner = create_runner("openvino", done.model, threads=ctx.threads)
        done.record.int8_layers_executed = runner.int8_layers()
        ctx.variants.append(Variant("int8-mixed", "openvino", runner, precision=Precision.INT8, files=files,
                                    size_mb=size_mb(files), quantization=done.record))


class OnnxRuntimeInt8(Stage):
    """ONNX Runtime static INT8 in each activation format the CPU profile says can win here; for a deploy bundle,
    every format (the device decides) and the float ONNX beside them."""

    name = "ONNX Runtime INT8"
    int8_only = True
    runtime = "onnxruntime"

    def run(self, ctx: Context) -> None:
        bundle = ctx.recipe.section(DeploySettings).bundle
        if bundle:
            formats = list(CPU_FORMATS)
        else:
            formats = ctx.cpu_profile.onnxruntime_formats() if ctx.cpu_profile else ["u8s8"]
        scratch = ctx.workdir / ".onnx-fp32"
        scratch.mkdir(exist_ok=True)
        fp32 = ort_backend.export_onnx(ctx.model, ctx.loaded.spec.input_size, scratch / "model.onnx",
                                       dynamic_batch=True)
        fold_layer_scales(ctx, fp32)
        add_int8_variants(ctx, fp32, formats)
        add_latency_aware_variant(ctx, fp32)
        if bundle:
            kept = fp32.rename(ctx.workdir / "model_fp32.onnx")
            ctx.variants.append(Variant("fp32", "onnxruntime", create_runner("onnxruntime", kept, threads=ctx.threads),
                                        files=[kept], size_mb=size_mb([kept])))
        shutil.rmtree(scratch)


register_target(Target(
    name="cpu", description="the fastest of OpenVINO (FP32, NNCF INT8) and ONNX Runtime INT8 on this CPU",
    stages=(OpenVINOFloat, OpenVINOInt8, OnnxRuntimeInt8, CpuBundle), timed_runtimes=("openvino", "onnxruntime"),
    recipe_sections=(QUANTIZATION, QDQ, DEPLOY),
    # an export is the deploy bundle: every candidate, measured here, and the scripts that pick on the device
    precision_settings=lambda precision: {"deploy": {"bundle": True}},
    next_step="next: copy it to the device, then there: pip install -r requirements.txt && python select_model.py",
    max_drop_hint="(even after the accuracy guard's steps, listed per candidate in report.json: raise --max-drop, "
                  "or calibrate on more images with --calib-size)",
))
