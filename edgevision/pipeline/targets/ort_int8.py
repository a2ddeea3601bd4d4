"""The ONNX Runtime INT8 candidates that the cpu and onnx targets share, and the layer-scale fold of the float graph
they are quantized from (it registers no target)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevision.pipeline.context import Context, Variant, size_mb
from edgevision.pipeline.report import Precision
from edgevision.quantization.quantize import LatencyAwareRequest, OnnxRuntimeRequest, quantize
from edgevision.runtimes import create_runner, ort_fusions


def add_int8_variants(ctx: Context, fp32_path: Path, formats: list[str]) -> None:
    """Quantize a float ONNX for ONNX Runtime's CPU kernels in each format (u8s8, u8s8-rr, s8s8), each held to the
    accuracy budget, and add them as candidates: the first is `int8` (model_int8.onnx), the others `int8-FORMAT`."""
    names = ["int8" if i == 0 else f"int8-{fmt}" for i, fmt in enumerate(formats)]
    outputs = {fmt: ctx.workdir / f"model_{name.replace('-', '_')}.onnx" for fmt, name in zip(formats, names)}
    saturates = bool(ctx.cpu_profile and ctx.cpu_profile.saturates_u8s8)
    for name, done in zip(names, quantize(ctx, OnnxRuntimeRequest(fp32_path, outputs, saturates))):
        ctx.variants.append(Variant(name, "onnxruntime", create_runner("onnxruntime", done.model, threads=ctx.threads),
                                    precision=Precision.INT8, files=[done.model], size_mb=size_mb([done.model]),
                                    quantization=done.record))


def add_latency_aware_variant(ctx: Context, fp32_path: Path) -> None:
    """INT8 only on the classes of compute layer that measured faster in INT8 on this CPU
    (quantization/placement.py), held to the accuracy budget: `int8-mixed` (model_int8_mixed.onnx)."""
    out = ctx.workdir / "model_int8_mixed.onnx"
    saturates = bool(ctx.cpu_profile and ctx.cpu_profile.saturates_u8s8)
    for done in quantize(ctx, LatencyAwareRequest(fp32_path, out, saturates)):
        ctx.variants.append(Variant("int8-mixed", "onnxruntime",
                                    create_runner("onnxruntime", done.model, threads=ctx.threads),
                                    precision=Precision.INT8, files=[done.model], size_mb=size_mb([done.model]),
                                    quantization=done.record))


def fold_layer_scales(ctx: Context, fp32_path: Path) -> None:
    """The exported float graph's layer scales folded, in place, into the MatMuls before them
    (runtimes/ort_fusions): the same arithmetic, one elementwise pass fewer per block, for every ONNX Runtime
    candidate quantized from it."""
    folded_path = fp32_path.with_name(f".folded-{fp32_path.name}")
    check = np.random.default_rng(0).standard_normal((1, *ctx.loaded.spec.input_size), dtype=np.float32)
    folded = ort_fusions.fold_layer_scales(fp32_path, folded_path, check)
    if folded:
        folded_path.replace(fp32_path)
        ctx.log(f"ONNX Runtime: {folded} layer scales folded into the MatMul weights before them")
