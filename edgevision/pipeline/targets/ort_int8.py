"""The ONNX Runtime INT8 candidate that the cpu and onnx targets share (it registers no target)."""
from __future__ import annotations

from functools import partial

from edgevision.pipeline.context import Context, Variant, size_mb
from edgevision.pipeline.targets.qdq_guard import guard_qdq
from edgevision.runtimes import create_runner
from edgevision.runtimes import onnxruntime as ort_backend


def add_int8_variant(ctx: Context, fp32_path, name: str, fmt: str = "u8s8") -> None:
    """Quantize a float ONNX for ONNX Runtime's CPU kernels in one activation format (u8s8 or s8s8), held to the
    accuracy budget (the most sensitive nodes back to float: pipeline/targets/qdq_guard.py), and add it as a
    candidate: model_NAME.onnx."""
    qdq = ctx.recipe["qdq"]
    path = ctx.workdir / f"model_{name.replace('-', '_')}.onnx"
    profile = ort_backend.PROFILES[ort_backend.CPU_FORMATS[fmt]]
    quantize = partial(_quantize, profile=profile)
    info = quantize(fp32_path, path, ctx.calibration(), qdq["calibration_method"], qdq["exclude_nodes"])
    if ctx.guard.max_drop is not None:
        info["accuracy_guard"] = guard_qdq(ctx, quantize, fp32_path, path)
        info["excluded_nodes"] = info["accuracy_guard"].get("excluded_nodes", info["excluded_nodes"])
    ctx.variants.append(Variant(name, "onnxruntime", create_runner("onnxruntime", path, threads=ctx.threads),
                                files=[path], size_mb=size_mb([path]), quantization={**info, "format": fmt}))


def _quantize(fp32_path, out_path, calibration, method, exclude, *, profile) -> dict:
    return ort_backend.quantize_qdq(fp32_path, out_path, calibration, profile, method, exclude)
