"""The jetson target: a bundle for TensorRT on the device (Q/DQ ONNX, build_engine.sh, README, manifest).

No engine is built here (TensorRT builds on the device); the Q/DQ model runs in ONNX Runtime instead
(runtime `tensorrt-sim`), and that accuracy is reported as simulated, never timed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgevision._version import __version__
from edgevision.io import atomic_write_text
from edgevision.pipeline.context import Context, GraphInput, Variant, size_mb
from edgevision.pipeline.recipe import Recipe, RecipeError, RecipeSection
from edgevision.pipeline.report import Precision, RunReport
from edgevision.pipeline.stages import Stage
from edgevision.pipeline.targets.jetson_readme import bundle_readme
from edgevision.pipeline.targets.registry import Target, register_target
from edgevision.pipeline.targets.sections import QDQ, QDQSettings
from edgevision.pipeline.targets.tensorrt_section import REPORT_SECTION, TensorRTSection
from edgevision.quantization.engines import DEFAULT_QDQ_ENGINE, QDQ_ENGINES
from edgevision.quantization.quantize import TensorRTRequest, quantize
from edgevision.quantization.records import QDQRecord, TensorRTGraphRecord
from edgevision.runtimes import create_runner
from edgevision.runtimes import onnxruntime as ort_backend
from edgevision.runtimes import tensorrt as trt_backend
from edgevision.runtimes.fp16_preflight import Fp16Report, fp16_preflight
from edgevision.typed import allowed, to_data

RULES_FAILED = "tensorrt_rules_failed"
FLOAT_ONNX = "model.float.onnx"  # an INT8 bundle's float graph: build_engine.sh's FP16 engine



@dataclass
class TensorRTSettings:
    """How the Jetson builds its engine, and which Q/DQ engine quantizes the graph."""

    fp16: bool = True
    batch: int = 1
    dynamic_batch: bool = False
    max_batch: int = 32
    dla_core: int | None = None
    workspace_mb: int | None = None
    qdq_engine: str = allowed(tuple(QDQ_ENGINES), DEFAULT_QDQ_ENGINE)


TENSORRT = RecipeSection("tensorrt", TensorRTSettings)


def check_recipe(recipe: Recipe, chosen: bool) -> None:
    trt = recipe.section(TensorRTSettings)
    if not 1 <= trt.batch <= trt.max_batch:
        raise RecipeError(f"--batch {trt.batch} (tensorrt.batch) must be between 1 and --max-batch "
                          f"{trt.max_batch} (tensorrt.max_batch)")
    if chosen and recipe.int8:  # a missing extra: said before any work
        QDQ_ENGINES[trt.qdq_engine].check(recipe.section(QDQSettings).calibration_method)


class TensorRTBundle(Stage):
    """model.onnx (symmetric INT8 Q/DQ where TensorRT fuses it, or float for --precision fp16/fp32), with the
    float graph beside an INT8 one (model.float.onnx, for the FP16 engine the device times against INT8),
    build_engine.sh, README.md."""

    name = "TensorRT bundle"

    def run(self, ctx: Context) -> None:
        cfg, int8, spec = ctx.recipe.section(TensorRTSettings), ctx.recipe.int8, ctx.loaded.spec
        model_path, qdq = self._write_onnx(ctx)
        float_onnx, preflight = _float_graph(ctx, model_path)
        guard = qdq.accuracy_guard if qdq else None
        for path in (model_path, float_onnx):
            if path is not None and not cfg.dynamic_batch:
                ort_backend.pin_batch(path, cfg.batch)
        rules = trt_backend.check_int8_rules_of(model_path) if int8 else None
        opts = trt_backend.EngineOptions(
            input_name=ort_backend.INPUT_NAME, input_shape=spec.input_size, int8=int8, fp16=cfg.fp16,
            batch=cfg.batch, dynamic_batch=cfg.dynamic_batch, max_batch=cfg.max_batch,
            dla_core=cfg.dla_core, workspace_mb=cfg.workspace_mb,
            fp32_layers=tuple(preflight.keep_fp32) if preflight else (),
            fp16_layers=tuple((guard and guard.excluded_nodes) or ()),
            float_onnx=float_onnx.name if float_onnx else None,
            int8_vouched=guard.held is not False if guard else True)
        scripts = trt_backend.write_build_files(ctx.workdir, opts, f"edgevision {__version__}")
        precision = Precision.INT8 if int8 else (Precision.FP16 if cfg.fp16 else Precision.FP32)
        ctx.graph_input = GraphInput(ort_backend.INPUT_NAME,
                                     ["batch" if cfg.dynamic_batch else cfg.batch, *spec.input_size])
        ctx.report_sections[REPORT_SECTION] = to_data(TensorRTSection(
            precision.value, cfg.qdq_engine if int8 else None, opts,
            {"10": trt_backend.trtexec_args(opts, 10), "11": trt_backend.trtexec_args(opts, 11)},
            rules.summary() if rules else None, preflight, guard))
        if rules is not None and not rules.passed:
            ctx.warn(f"model.onnx breaks {len(rules.violations)} TensorRT INT8 rule(s): {rules.violations[0]}")
        # an INT8 graph runs here as a simulation of the engine; a float graph is plain ONNX Runtime
        runtime = "tensorrt-sim" if int8 else "onnxruntime"
        ctx.variants.append(Variant(
            "int8" if int8 else "fp32", runtime, create_runner(runtime, model_path, threads=ctx.threads),
            precision=Precision.INT8 if int8 else Precision.FP32,
            files=[model_path, *([float_onnx] if float_onnx else []), *scripts], size_mb=size_mb([model_path]),
            timed=False,
            quantization=TensorRTGraphRecord(int8, precision.value, qdq, preflight)))

    @staticmethod
    def _write_onnx(ctx: Context) -> tuple[Path, QDQRecord | None]:
        """Exported with a dynamic batch axis (Swin's traced reshapes would otherwise bake in the batch), then
        quantized by the recipe's Q/DQ engine (tensorrt.qdq_engine) when INT8 is asked for, from the float graph
        written as FLOAT_ONNX."""
        model_path = ctx.workdir / "model.onnx"
        if not ctx.recipe.int8:
            ort_backend.export_onnx(ctx.model, ctx.loaded.spec.input_size, model_path, dynamic_batch=True)
            return model_path, None
        float_path = ctx.workdir / FLOAT_ONNX
        ort_backend.export_onnx(ctx.model, ctx.loaded.spec.input_size, float_path, dynamic_batch=True)
        engine = ctx.recipe.section(TensorRTSettings).qdq_engine
        [done] = quantize(ctx, TensorRTRequest(float_path, model_path, engine))
        return model_path, done.record

    def finish(self, ctx: Context, report: RunReport) -> None:
        atomic_write_text(ctx.workdir / "README.md", bundle_readme(report, TensorRTSection.of(report), ctx.loaded.spec))


def _float_graph(ctx: Context, model_path: Path) -> tuple[Path | None, Fp16Report | None]:
    """The float graph an INT8 bundle ships (FLOAT_ONNX: the FP16 engine the device times against the INT8 one;
    none without FP16), and the FP16 pre-flight of the float graph when the engine runs float layers in FP16."""
    int8, fp16 = ctx.recipe.int8, ctx.recipe.section(TensorRTSettings).fp16
    float_graph = ctx.workdir / FLOAT_ONNX if int8 else model_path
    preflight = _fp16_check(ctx, float_graph) if fp16 else None
    if int8 and not fp16:
        float_graph.unlink()
    return (float_graph if int8 and fp16 else None), preflight


def _fp16_check(ctx: Context, float_path: Path) -> Fp16Report:
    """The FP16 pre-flight of the float graph, for an engine that runs its float layers in FP16 (runtimes/
    fp16_preflight.py): the nodes to keep in FP32 go into build_engine.sh's precision flags."""
    found = fp16_preflight(float_path, ctx.calibration())
    if found.keep_fp32:
        ctx.warn(f"{len(found.keep_fp32)} node(s) overflow or lose accuracy in FP16 ({', '.join(found.keep_fp32[:3])}"
                 f"{', ...' if len(found.keep_fp32) > 3 else ''}): build_engine.sh keeps them in FP32")
    return found


def _rules_check(report: RunReport) -> trt_backend.RulesSummary | None:
    section = TensorRTSection.of(report)
    return section.rules_check if section else None


def _rules_status(report: RunReport) -> str | None:
    rules = _rules_check(report)
    return RULES_FAILED if rules is not None and not rules.passed else None


def _summary(report: RunReport) -> tuple[str, ...]:
    rules = _rules_check(report)
    if rules is None:
        return ()
    return ("TensorRT INT8 rules: " + ("passed" if rules.passed else f"{len(rules.violations)} violation(s)"),)


register_target(Target(
    name="jetson", description="a Q/DQ ONNX bundle for TensorRT, with build_engine.sh (built on the device)",
    stages=(TensorRTBundle,), timed_runtimes=(), recipe_sections=(QDQ, TENSORRT),
    precisions=("int8", "fp16", "fp32"),
    # int8 with FP16 fallback for the layers outside Q/DQ, or a plain FP16 engine
    precision_settings=lambda precision: {"tensorrt": {"fp16": precision != "fp32"}},
    max_drop_hint="(even with the most sensitive nodes left in float: keep more with qdq.exclude_nodes, or try "
                  "--qdq-engine)",
    next_step="next: copy it to the Jetson and run ./build_engine.sh there",
    untimed_reason="no latency is measured for jetson here: TensorRT builds and runs on the device",
    check_report=_rules_status, summary_lines=_summary, check_recipe=check_recipe, engine_flags_section=TENSORRT.name,
    status_messages={RULES_FAILED: "model.onnx breaks TensorRT's INT8 rules (see report.json); written to {run_dir}"},
))
