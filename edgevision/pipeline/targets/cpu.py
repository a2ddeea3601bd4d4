"""The cpu target: OpenVINO IR, FP32 and NNCF post-training INT8, timed in OpenVINO on this CPU."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.data.loader import preprocess_each
from edgevision.pipeline.context import Context, GraphInput, Variant, size_mb
from edgevision.pipeline.stages import Stage
from edgevision.pipeline.targets.registry import RecipeSection, Target, register_target
from edgevision.runtimes import create_runner
from edgevision.runtimes import openvino as ov_backend

QUANTIZATION = RecipeSection(
    "quantization",
    schema={
        "preset": ((str,), ("performance", "mixed")),
        "model_type": ((str, type(None)), ("transformer", None)),
        "smooth_quant_alpha": ((int, float, type(None)), None),
        "bias_correction": ((str,), ("fast", "full", "off")),
        "ignored_scope": {"names": ((list,), None), "patterns": ((list,), None), "types": ((list,), None)},
    },
    defaults={"preset": "performance", "model_type": None, "smooth_quant_alpha": None, "bias_correction": "fast",
              "ignored_scope": {"names": [], "patterns": [], "types": []}},
)


def _openvino_fp32(ctx: Context):
    return ctx.float_graph("openvino", lambda: ov_backend.convert(ctx.model, ctx.loaded.spec.input_size))


class OpenVINOFloat(Stage):
    name = "OpenVINO FP32"

    def run(self, ctx: Context) -> None:
        ov_model = _openvino_fp32(ctx)
        files = ov_backend.save(ov_model, ctx.workdir / "model_fp32.xml")
        ctx.graph_input = GraphInput(ov_model.input(0).get_any_name(), [1, *ctx.loaded.spec.input_size])
        ctx.variants.append(Variant("fp32", "openvino", create_runner("openvino", ov_model, threads=ctx.threads),
                                    files=files, size_mb=size_mb(files)))


def quantization_settings(q: dict[str, Any]) -> ov_backend.QuantizationSettings:
    scope = q["ignored_scope"]
    return ov_backend.QuantizationSettings(
        preset=q["preset"], model_type=q["model_type"], smooth_quant_alpha=q["smooth_quant_alpha"],
        bias_correction=q["bias_correction"], ignored_names=tuple(scope["names"]),
        ignored_patterns=tuple(scope["patterns"]), ignored_types=tuple(scope["types"]))


class OpenVINOInt8(Stage):
    """NNCF post-training INT8 on the OpenVINO model; with max_drop, NNCF's accuracy control returns the
    most sensitive layers to float until the drop (top-1 with labels, else agreement) is within budget."""

    name = "OpenVINO INT8"
    int8_only = True

    def run(self, ctx: Context) -> None:
        q = ctx.recipe["quantization"]
        settings = quantization_settings(q)
        fp32 = _openvino_fp32(ctx)
        calibration = ctx.calibration()
        ctx.log(f"quantizing with {len(calibration)} calibration images ({q['preset']}, "
                f"model_type {q['model_type']})")
        int8 = ov_backend.quantize(fp32, calibration, settings)
        quantized = ov_backend.fake_quantized_layers(int8)
        info: dict[str, Any] = {"settings": q, "fake_quantize_ops": ov_backend.count_ops(int8).get("FakeQuantize", 0),
                                "layers_returned_to_float": []}
        if ctx.recipe["max_drop"] is not None:
            int8, info["accuracy_control"] = _within_budget(ctx, fp32, int8, calibration, settings)
            info["layers_returned_to_float"] = sorted(set(quantized) - set(ov_backend.fake_quantized_layers(int8)))
            info["fake_quantize_ops"] = ov_backend.count_ops(int8).get("FakeQuantize", 0)
        files = ov_backend.save(int8, ctx.workdir / "model_int8.xml")
        runner = create_runner("openvino", int8, threads=ctx.threads)
        info["int8_layers_executed"] = runner.int8_layers()
        ctx.variants.append(Variant("int8", "openvino", runner, files=files, size_mb=size_mb(files),
                                    quantization=info))


def _validation_items(ctx: Context, reference) -> list[tuple[np.ndarray, int]]:
    """Each item carries its own target (the label, or the float model's prediction without labels): NNCF
    calls the metric on subsets of the items, so positions cannot be relied on."""
    src = ctx.eval_source
    decoded, _ = preprocess_each(src, range(len(src)), ctx.loaded.spec.data_config)
    if src.labels is not None:
        return [(x, int(src.labels[i])) for i, x in decoded]
    return [(x, int(reference(x).argmax())) for _, x in decoded]


def _metric(compiled, data) -> float:
    return float(np.mean([int(np.asarray(compiled(x)[0]).argmax()) == target for x, target in data]) * 100)


def _within_budget(ctx: Context, fp32, int8, calibration, settings):
    """Measure plain INT8 on the evaluation data; if it loses more than max_drop, run accuracy control."""
    max_drop = float(ctx.recipe["max_drop"])
    metric_name = "top1" if ctx.eval_source.labels is not None else "agreement"
    reference = create_runner("openvino", fp32, threads=ctx.threads)
    items = _validation_items(ctx, reference)
    float_metric = _metric(reference.compiled(1), items)
    plain = _metric(create_runner("openvino", int8, threads=ctx.threads).compiled(1), items)
    summary = {"metric": metric_name, "max_drop": max_drop, "float": float_metric, "plain_int8": plain}
    if float_metric - plain <= max_drop:
        summary["needed"] = False
        return int8, summary
    ctx.log(f"plain INT8 loses {float_metric - plain:.2f} points of {metric_name} (budget {max_drop}): "
            "running NNCF accuracy control")
    controlled = ov_backend.quantize_with_accuracy_control(fp32, calibration, items, _metric, max_drop, settings)
    summary.update(needed=True, controlled_int8=_metric(
        create_runner("openvino", controlled, threads=ctx.threads).compiled(1), items))
    return controlled, summary


def _reusable_ir(run_recipe: dict[str, Any], recipe: dict[str, Any]) -> tuple[str, ...]:
    """A cpu run's IR is the cpu export: copied as compress checked it."""
    if run_recipe["target"] != "cpu":
        return ()
    stem = "model_int8" if recipe["int8"] else "model_fp32"
    return (f"{stem}.xml", f"{stem}.bin")


register_target(Target(
    name="cpu", description="OpenVINO IR (FP32 and NNCF INT8), timed in OpenVINO",
    stages=(OpenVINOFloat, OpenVINOInt8), timed_runtimes=("openvino",), recipe_sections=(QUANTIZATION,),
    reusable_files=_reusable_ir, max_drop_hint="even with NNCF's accuracy control",
))
