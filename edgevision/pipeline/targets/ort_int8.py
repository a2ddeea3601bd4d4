"""The ONNX Runtime INT8 candidate that the cpu and onnx targets share (it registers no target)."""
from __future__ import annotations

from functools import partial

from edgevision.pipeline.context import Context, Variant, size_mb
from edgevision.pipeline.report import Precision
from edgevision.pipeline.targets.qdq_guard import Fix, calibration_fixes, guard_qdq
from edgevision.pipeline.targets.sections import QDQSettings
from edgevision.runtimes import create_runner
from edgevision.runtimes import onnxruntime as ort_backend


def add_int8_variants(ctx: Context, fp32_path, formats: list[str]) -> None:
    """Quantize a float ONNX for ONNX Runtime's CPU kernels in each format (u8s8, u8s8-rr, s8s8; one child process
    for all), hold each to the accuracy budget (pipeline/targets/qdq_guard.py), and add them as candidates: the
    first is `int8` (model_int8.onnx), the others `int8-FORMAT`."""
    qdq = ctx.recipe.section(QDQSettings)
    names = ["int8" if i == 0 else f"int8-{fmt}" for i, fmt in enumerate(formats)]
    paths = [ctx.workdir / f"model_{name.replace('-', '_')}.onnx" for name in names]
    profiles = [ort_backend.PROFILES[ort_backend.CPU_FORMATS[fmt]] for fmt in formats]
    infos = ort_backend.quantize_qdq_formats(fp32_path, dict(zip(paths, profiles)), ctx.calibration(),
                                             qdq.calibration_method, qdq.exclude_nodes)
    for name, fmt, path, info in zip(names, formats, paths, infos):
        _add_guarded(ctx, fp32_path, name, fmt, path, info, tuple(formats))


def _add_guarded(ctx: Context, fp32_path, name: str, fmt: str, path, info: dict, built: tuple[str, ...]) -> None:
    """Hold one quantized format to the budget and add it as a candidate. `built`: the formats this run builds as
    candidates of their own."""
    qdq = ctx.recipe.section(QDQSettings)
    quantize = partial(_quantize, profile=ort_backend.PROFILES[ort_backend.CPU_FORMATS[fmt]])
    if ctx.guard.max_drop is not None:
        fixes = [*format_fixes(ctx, fmt, built), *calibration_fixes(quantize, qdq.calibration_method)]
        info["accuracy_guard"] = guard_qdq(ctx, quantize, fp32_path, path, fixes)
        info["excluded_nodes"] = info["accuracy_guard"].get("excluded_nodes", info["excluded_nodes"])
    ctx.variants.append(Variant(name, "onnxruntime", create_runner("onnxruntime", path, threads=ctx.threads),
                                precision=Precision.INT8, files=[path], size_mb=size_mb([path]), quantization={**info, "format": fmt}))


def format_fixes(ctx: Context, fmt: str, built: tuple[str, ...]) -> list[Fix]:
    """7-bit weights for u8 x s8 where its 16-bit sums saturate (x86 without VNNI or AMX): a loss spread over every
    layer that leaving nodes in float cannot mend. Not when 7-bit weights are a candidate of their own."""
    profile = ctx.cpu_profile
    if fmt != "u8s8" or "u8s8-rr" in built or profile is None or not profile.saturates_u8s8:
        return []
    rr = ort_backend.PROFILES[ort_backend.CPU_FORMATS["u8s8-rr"]]
    return [Fix("7-bit weights (reduce_range)", partial(_quantize, profile=rr))]


def _quantize(fp32_path, out_path, calibration, method, exclude, *, profile) -> dict:
    return ort_backend.quantize_qdq(fp32_path, out_path, calibration, profile, method, exclude)
