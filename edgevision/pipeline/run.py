"""`edgevision compress`: load -> [torch-level stages] -> target stages -> evaluate -> benchmark -> report.

Stages share one typed context (pipeline/context.py). Evaluation, benchmarking and the report are the same
for every target: all variants are evaluated in one pass over the same tensors and timed side by side. A
new target is a new module in pipeline/targets/, not a copy of this file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgevision.data.sources import ImageSource, align_classes, sample
from edgevision.io import atomic_write_text, staged_directory, write_json
from edgevision.measure.bench import BenchResult, available_cores, compare_latency
from edgevision.measure.cpu_profile import cpu_profile
from edgevision.measure.evaluate import EvalResult, evaluate_runners, fidelity
from edgevision.models.checkpoint import spec_meta, write_checkpoint
from edgevision.models.loading import LoadedModel, random_weights_warning
from edgevision.pipeline.context import Context, GraphInput, Role, Variant
from edgevision.pipeline.manifest import write_manifest
from edgevision.pipeline.recipe import Recipe
from edgevision.pipeline.report import BenchmarkInfo, DataInfo, ModelInfo, RunReport, VariantRecord
from edgevision.pipeline.selection import accuracy_guard, held_on_guard_sample_only, int8_no_faster, select
from edgevision.pipeline.stages import FloatReference, PruneAndRecover, Stage
from edgevision.pipeline.status import MAX_DROP_NOT_MET, run_status
from edgevision.pipeline.targets import get_target
from edgevision.quantization.budget import GuardClock
from edgevision.typed import to_data

# untimed calls of each variant before compress's timed rounds (evaluation has just run each one in batches)
BENCHMARK_WARMUP = 3


@dataclass
class CompressResult:
    run_dir: Path
    report: RunReport

    @property
    def budget_met(self) -> bool:
        return self.report.status != MAX_DROP_NOT_MET

    @property
    def selected(self) -> VariantRecord | None:
        """The variant to deploy: the fastest measured within the accuracy budget."""
        return self.report.selected


def build_stages(recipe: Recipe) -> list[Stage]:
    torch_level: list[Stage] = [PruneAndRecover()] if recipe.prune.ratio else []
    pinned = recipe.runtime
    target_stages = [cls() for cls in get_target(recipe.target).stages if (recipe.int8 or not cls.int8_only)
                     and (pinned is None or cls.runtime in (None, pinned)) and cls.applies(recipe)]
    return [FloatReference(), *torch_level, *target_stages]


@dataclass
class Measurements:
    evals: dict[str, EvalResult]
    bench: dict[str, BenchResult]
    timings: dict[str, float]


def _timed(timings: dict[str, float], name: str, work: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    result = work()
    timings[name] = round(time.perf_counter() - t0, 2)
    return result


def _measure(ctx: Context, stages: list[Stage]) -> Measurements:
    timings: dict[str, float] = {}
    for stage in stages:
        ctx.log(f"stage: {stage.name}")
        _timed(timings, stage.name, lambda: stage.run(ctx))
    ctx.guard_memo.clear()  # a 224-pixel evaluation set decoded whole is GBs: not held through evaluation
    runners = {v.key: v.runner for v in ctx.variants}
    ctx.log(f"evaluating {len(runners)} variants on {ctx.eval_source.spec}")
    evals = _timed(timings, "evaluation", lambda: evaluate_runners(
        runners, ctx.eval_source, ctx.loaded.spec.data_config, progress=ctx.progress))
    timed = {v.key: v.runner for v in ctx.variants if v.is_timed}
    ctx.log(f"timing {len(timed)} variants side by side ({ctx.threads} threads, batch 1)")
    bench = _timed(timings, "benchmark", lambda: compare_latency(
        timed, ctx.loaded.spec.input_size, iters=ctx.recipe.benchmark_iters, warmup=BENCHMARK_WARMUP))
    return Measurements(evals, bench, timings)


def _variant_record(v: Variant, m: Measurements, ref: Variant) -> VariantRecord:
    ref_eval, ref_bench = m.evals[ref.key], m.bench[ref.key]
    ev, b = m.evals[v.key], m.bench.get(v.key)
    fid = fidelity(ref_eval.logits, ev.logits)
    return VariantRecord(
        v.name, v.runtime, v.role, v.precision, top1=ev.top1,
        top1_drop=None if ev.top1 is None else ref_eval.top1 - ev.top1, top5=ev.top5,
        agreement=fid["agreement"], kl=fid["kl"], cosine=fid["cosine"],
        latency_ms_p50=b and b.latency_ms_p50, latency_ms_p90=b and b.latency_ms_p90,
        latency_ms_p99=b and b.latency_ms_p99, speedup=b and ref_bench.latency_ms_p50 / b.latency_ms_p50,
        size_mb=v.size_mb, artifact=str(v.files[0].name) if v.files else None, runner=v.runner.info(),
        quantization=to_data(v.quantization))


def _report(ctx: Context, m: Measurements) -> RunReport:
    ref = next(v for v in ctx.variants if v.role is Role.REFERENCE)
    ref_eval, ref_bench = m.evals[ref.key], m.bench[ref.key]
    spec = ctx.loaded.spec
    not_timed = [v.key for v in ctx.variants if not v.is_timed]
    report = RunReport(
        model=ModelInfo(spec.name, spec.timm_name, spec.family, list(spec.input_size), spec.num_classes),
        data=DataInfo(ctx.eval_source.spec, ref_eval.images, ref_eval.skipped, ref_eval.top1 is not None),
        variants=[_variant_record(v, m, ref) for v in ctx.variants],
        target=ctx.recipe.target,
        weights=spec.weights if spec.weights != "checkpoint" else f"checkpoint:{spec.checkpoint}",
        calibration=ctx.calibration_info, max_drop=ctx.guard.max_drop, guard=ctx.guard,
        benchmark=BenchmarkInfo(ctx.threads, 1, ref_bench.iterations, ref_bench.cpu,
                                "side by side, interleaved rounds, medians",
                                ctx.cpu_profile.to_dict() if ctx.cpu_profile else None, not_timed or None),
        pruning=ctx.pruning, warnings=ctx.warnings, timings_s=m.timings, sections=ctx.report_sections)
    _select(ctx, report)
    report.status = run_status(report)
    return report


def _select(ctx: Context, report: RunReport) -> None:
    """Name the variant to deploy (pipeline/selection.py), and say so when INT8 does not pay on this CPU."""
    report.selection = select(report.variants, ctx.guard.max_drop, guard=not ctx.guard.speed_only)
    for row in report.variants:
        row.selected = report.selection.selected == row.key
    for line in held_on_guard_sample_only(report.variants, report.selection.max_drop, report.data.images):
        ctx.warn(line)
    for int8, fp32 in int8_no_faster(report.variants) if ctx.recipe.int8 else []:
        reason = ctx.cpu_profile.int8_conclusion(int8.runtime) if ctx.cpu_profile else None
        why = f" ({reason})" if reason else ""
        ctx.warn(f"INT8 is no faster than FP32 here: {int8.runtime} INT8 {int8.latency_ms_p50:.2f} ms vs "
                 f"{fp32.runtime} FP32 {fp32.latency_ms_p50:.2f} ms{why}; the INT8 artifacts are written "
                 "anyway (VNNI or AMX CPUs run them faster)")


def run_pipeline(ctx: Context) -> RunReport:
    """Run the stages, evaluate and benchmark every variant, and return the report (files in ctx.workdir)."""
    stages = build_stages(ctx.recipe)
    report = _report(ctx, _measure(ctx, stages))
    for stage in stages:
        stage.finish(ctx, report)
    return report


def _run_warnings(ctx: Context, calibrated_apart: bool) -> None:
    warning = random_weights_warning(ctx.loaded.spec)
    if warning:
        ctx.warn(warning)
    if not calibrated_apart and ctx.recipe.int8:
        ctx.warn("calibrated on the evaluation data (give --calib-data to keep them apart)")


def _write_run_files(ctx: Context, report: RunReport, save_model: bool) -> None:
    workdir, spec, recipe = ctx.workdir, ctx.loaded.spec, ctx.recipe
    if save_model:
        write_checkpoint(workdir / "model.safetensors", ctx.loaded.model.state_dict(), spec_meta(spec))
    atomic_write_text(workdir / "recipe.yaml", recipe.dump())
    write_json(workdir / "report.json", report.to_dict())
    graph = ctx.graph_input or GraphInput(None, [1, *spec.input_size])
    write_manifest(workdir, {
        "model": spec.to_dict(),
        "input": {"name": graph.name, "shape": graph.shape, "dtype": "float32", "layout": "NCHW"},
        "preprocessing": spec.data_config,
        "classes": spec.classes,
        "data": {"evaluation": ctx.eval_source.spec, "evaluation_images": report.data.images,
                 "calibration": to_data(report.calibration)},
        "accuracy": [{"name": v.name, "runtime": v.runtime, "role": v.role.value, "top1": v.top1,
                      "top1_drop": v.top1_drop, "agreement": v.agreement, "simulated": v.simulated}
                     for v in report.variants],
        **report.sections,
        "runner_options": runner_options(report),
        "recipe": recipe.to_dict(),
        **ctx.manifest_sections,
    })


def runner_options(report: RunReport) -> dict[str, dict[str, str]]:
    """{artifact: runner settings} for a selected variant that runs its artifact in other than the default way
    (OpenVINO INT8 with its float layers in bf16), so that evaluate, benchmark and deployment run it as checked."""
    selected = report.selected
    precision = ((selected and selected.quantization) or {}).get("inference_precision")
    if not precision or not selected.artifact:
        return {}
    return {Path(selected.artifact).name: {"precision": precision}}


def compress_model(
    loaded: LoadedModel,
    eval_source: ImageSource,
    recipe: Recipe,
    out: Path,
    *,
    calib_source: ImageSource | None = None,
    finetune_source: ImageSource | None = None,
    force: bool = False,
    progress: bool = True,
    save_model: bool = True,
    origin_weights: str | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> CompressResult:
    """The whole compress job into a run directory that appears only when complete.

    `origin_weights`: what the model's weights were when they came from an earlier run's checkpoint (an export
    of a random-weight run keeps the guard off, as its run had).

    With `save_model`, the float PyTorch model that the artifacts were made from (the pruned one after
    pruning) goes in as model.safetensors (an edgevision checkpoint, structure as data), so that
    `edgevision export RUN_DIR` rebuilds exactly this model whatever its weights came from.
    """
    eval_source = sample(align_classes(eval_source, loaded.spec.classes), recipe.eval_limit, recipe.seed)
    out = Path(out)
    with staged_directory(out, force=force) as workdir:
        threads = recipe.threads or available_cores()
        ctx = Context(loaded=loaded, recipe=recipe, eval_source=eval_source,
                      calib_source=calib_source or eval_source, workdir=workdir, threads=threads, log=log,
                      progress=progress, finetune_source=finetune_source,
                      cpu_profile=cpu_profile(threads, measure=bool(get_target(recipe.target).timed_runtimes)),
                      guard=accuracy_guard(recipe.max_drop, origin_weights or loaded.spec.weights),
                      guard_clock=GuardClock(recipe.guard_time))
        _run_warnings(ctx, calibrated_apart=calib_source is not None)
        report = run_pipeline(ctx)
        report.run_dir = str(out)
        _write_run_files(ctx, report, save_model)
    return CompressResult(out, report)
