"""The onnx target: ONNX FP32 and ONNX Runtime static INT8 (Q/DQ) for its CPU kernels, timed in ONNX Runtime."""
from __future__ import annotations

from edgevision.pipeline.context import Context, GraphInput, Variant, size_mb
from edgevision.pipeline.stages import Stage
from edgevision.pipeline.targets.ort_int8 import add_int8_variants, add_latency_aware_variant, fold_layer_scales
from edgevision.pipeline.targets.registry import Target, register_target
from edgevision.pipeline.targets.sections import QDQ
from edgevision.runtimes import create_runner
from edgevision.runtimes import onnxruntime as ort_backend


def onnx_fp32(ctx: Context):
    """The float ONNX of the current model (dynamic batch), exported once per run, its layer scales folded."""
    def export():
        path = ort_backend.export_onnx(ctx.model, ctx.loaded.spec.input_size, ctx.workdir / "model_fp32.onnx",
                                       dynamic_batch=True)
        fold_layer_scales(ctx, path)
        return path

    return ctx.float_graph("onnxruntime", export)


class OnnxFloat(Stage):
    name = "ONNX FP32"
    runtime = "onnxruntime"

    def run(self, ctx: Context) -> None:
        path = onnx_fp32(ctx)
        ctx.graph_input = GraphInput(ort_backend.INPUT_NAME, [1, *ctx.loaded.spec.input_size])
        ctx.variants.append(Variant("fp32", "onnxruntime", create_runner("onnxruntime", path, threads=ctx.threads),
                                    files=[path], size_mb=size_mb([path])))


class OnnxInt8(Stage):
    """ONNX Runtime static INT8 for its CPU kernels: unsigned activations, signed per-channel weights."""

    name = "ONNX Runtime INT8"
    int8_only = True
    runtime = "onnxruntime"

    def run(self, ctx: Context) -> None:
        add_int8_variants(ctx, onnx_fp32(ctx), ["u8s8"])
        add_latency_aware_variant(ctx, onnx_fp32(ctx))


register_target(Target(
    name="onnx", description="ONNX (FP32 and ONNX Runtime Q/DQ INT8), timed in ONNX Runtime",
    stages=(OnnxFloat, OnnxInt8), timed_runtimes=("onnxruntime",), recipe_sections=(QDQ,),
    max_drop_hint="(even with its most sensitive nodes left in float: keep more with qdq.exclude_nodes, or try "
                  "--target cpu, whose OpenVINO candidate has NNCF's accuracy control)",
))
