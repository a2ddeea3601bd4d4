"""The Python API, one function per CLI command with the same options as typed arguments.

Each takes what the command takes: a model by name (or a LoadedModel, or an exported artifact file), data
by spec (or an ImageSource), and returns what the command prints, as data. The CLI parses, calls one of
these, and prints.

    import edgevision
    result = edgevision.compress("convnext_t", int8=True, data="builtin:photos", target="cpu")
    print(result.report.selected)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgevision.compression.distill import STUDENT_FILE, DistillConfig, DistillResult, distill
from edgevision.data.open import default_eval_spec, open_source
from edgevision.data.sources import ImageSource, align_classes, sample
from edgevision.deploy import bundle_lib, select_model
from edgevision.errors import EdgevisionError, OutputExistsError
from edgevision.measure.bench import BenchResult, available_cores, model_runner
from edgevision.measure.bench import benchmark as benchmark_runner
from edgevision.measure.cpu_profile import CpuProfile, cpu_profile
from edgevision.measure.describe import ModelDescription, describe_model
from edgevision.measure.engine_choice import build_chosen_engine
from edgevision.measure.evaluate import EvalResult, evaluate_model
from edgevision.measure.layers import Int8Comparison, LayerReport, profile_layers, profile_pair
from edgevision.models.loading import LoadedModel, ModelSpec, load_model, random_weights_warning
from edgevision.models.zoo import ZooRow, zoo_table
from edgevision.pipeline import export as ex
from edgevision.pipeline.artifacts import artifact_runtime, check_runtime, float_counterpart, load_artifact
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.resolve import check_target, resolve
from edgevision.pipeline.run import CompressResult, compress_model
from edgevision.pipeline.sweep import SweepResult
from edgevision.pipeline.sweep import sweep as run_sweep
from edgevision.reports import compare as cmp
from edgevision.reports.recommend import Recommendation
from edgevision.reports.recommend import recommend as recommend_from_runs
from edgevision.runtimes import tensorrt as trt_backend
from edgevision.runtimes.pytorch import torch_threads
from edgevision.training.loop import TrainConfig
from edgevision.training.supervised import TrainResult
from edgevision.training.supervised import train as train_loaded
from edgevision.typed import flattened, omitted

Log = Callable[[str], None]


@dataclass
class Evaluation:
    """`evaluate`'s answer: the model, the runtime it ran in, and its top-1/top-5 on the data (keys in place)."""

    model: ModelSpec
    runtime: str
    result: EvalResult = flattened()


@dataclass
class Benchmark:
    """`benchmark`'s answer: the model, its latency and throughput (keys in place), and with `layers` where the
    time went."""

    model: ModelDescription
    result: BenchResult = flattened()
    layers: LayerReport | None = omitted()


RUNS_DIR = Path("runs")
EXPORTS_DIR = Path("exports")


def _quiet(message: str) -> None:
    pass


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def source_of(data: str | ImageSource | None, default_split: str) -> ImageSource | None:
    """An ImageSource as given, or opened from its spec (builtin datasets default to `default_split`)."""
    if data is None or isinstance(data, ImageSource):
        return data
    return open_source(data, default_split=default_split)


def model_of(model: str | LoadedModel | None, *, weights: str | None = None, checkpoint: str | Path | None = None,
             num_classes: int | None = None, img_size: int | None = None, model_kwargs: dict | None = None,
             seed: int | None = None, log: Log = _quiet) -> LoadedModel:
    """A LoadedModel as given, or loaded as the CLI's model options say."""
    if isinstance(model, LoadedModel):
        return model
    return load_model(model, weights=weights, checkpoint=checkpoint, num_classes=num_classes, img_size=img_size,
                      model_kwargs=model_kwargs or None, seed=seed, log=log)


def open_model(model: str | Path | LoadedModel | None, runtime: str | None = None, **options: Any
               ) -> tuple[LoadedModel, str]:
    """(model, runtime): an exported artifact file (model.onnx, model_int8.xml, model.engine) with the
    manifest beside it, in its own runtime; or a model as `model_of` loads it (runtime default pytorch)."""
    own = None if isinstance(model, LoadedModel) else artifact_runtime(model)
    if own is not None:
        return load_artifact(model), check_runtime(model, own, runtime)
    return model_of(model, **options), runtime or "pytorch"


def device(*, threads: int | None = None, refresh: bool = False) -> CpuProfile:
    """`edgevision device`: this CPU's INT8 features and measured GEMM roofline per runtime, cached."""
    return cpu_profile(threads, refresh=refresh)


def list_models() -> tuple[ZooRow, ...]:
    """The model aliases: timm name, params and GMACs at the default input size, published top-1."""
    return zoo_table()


def evaluate(model: str | Path | LoadedModel | None, data: str | ImageSource, *, runtime: str | None = None,
             limit: int | None = None, seed: int = 0, batch_size: int = 64, threads: int | None = None,
             workers: int = 0, progress: bool = True, log: Log = _quiet, **model_options: Any) -> Evaluation:
    """Top-1/top-5 of a model (or an artifact) on data, with the model's own preprocessing."""
    source = source_of(data, "test")
    loaded, runtime = open_model(model, runtime, log=log, **model_options)
    warning = random_weights_warning(loaded.spec)
    if warning:
        log(f"warning: {warning}")
    source = align_classes(source, loaded.spec.classes)
    for msg in source.notes:
        log(msg)
    result = evaluate_model(loaded, source, runtime=runtime, limit=limit, seed=seed, batch_size=batch_size,
                            threads=threads, workers=workers, progress=progress)
    return Evaluation(loaded.spec, runtime, result)


def benchmark(model: str | Path | LoadedModel | None, *, runtime: str | None = None, threads: int | None = None,
              batch: int = 1, throughput_batch: int | None = 32, warmup: int = 10, iters: int = 50,
              min_seconds: float = 0.0, layers: bool = False, float_model: str | Path | None = None,
              weights: str | None = None, checkpoint: str | Path | None = None, log: Log = _quiet,
              **model_options: Any) -> Benchmark:
    """Latency at `batch` and throughput at `throughput_batch`. Weights do not change speed: without a
    checkpoint the model gets random weights unless `weights` says otherwise. `layers`: also each layer's time
    from the runtime's profiler, grouped by kind, with the INT8 GEMM layers' share of this CPU's roofline; for an
    INT8 artifact, also its float artifact's (`float_model`, else model_fp32 beside it), per operator type."""
    weights = weights or (None if checkpoint else "random")
    loaded, runtime = open_model(model, runtime, weights=weights, checkpoint=checkpoint, log=log, **model_options)
    threads = threads or available_cores()
    runner = model_runner(loaded, runtime, threads)
    # the profile first, so that a runtime without a profiler fails before the timing; it runs an instrumented
    # copy of the model, released before the timed calls
    profiled = _layer_profiles(model, loaded, runner, threads, float_model, batch) if layers else None
    result = Benchmark(describe_model(loaded), benchmark_runner(
        runner, loaded.spec.input_size, batch=batch, warmup=warmup, iters=iters, min_seconds=min_seconds,
        throughput_batch=throughput_batch or None))
    if profiled is not None:
        profile, against = profiled
        result.layers = profile.report(cpu_profile(threads).int8_gops(runtime))
        result.layers.int8_vs_float = against.report() if against else None
    return result


def _layer_profiles(model, loaded: LoadedModel, runner, threads: int, float_model, batch: int):
    """(the model's layer profile, its INT8-against-float comparison when it is an INT8 artifact with a float one)."""
    counterpart = float_counterpart(model, float_model) if isinstance(model, (str, Path)) else None
    if counterpart is None:
        return profile_layers(runner, loaded.spec.input_size, batch=batch), None
    float_runner = model_runner(load_artifact(counterpart), runner.runtime, threads)
    float_profile, profile = profile_pair(float_runner, runner, loaded.spec.input_size, batch=batch)
    return profile, Int8Comparison(str(counterpart), float_profile, profile)


def compress(
    model: str | LoadedModel | None = None,
    *,
    int8: bool | None = None,
    target: str | None = None,
    data: str | ImageSource = "builtin:photos",
    calib_data: str | ImageSource | None = None,
    calib_size: int | None = None,
    prune: float | None = None,
    importance: str | None = None,
    finetune_data: str | ImageSource | None = None,
    finetune_epochs: int | None = None,
    finetune_images: int | None = None,
    max_drop: float | str | None = None,
    guard_time: float | None = None,
    limit: int | None = None,
    seed: int | None = None,
    recipe: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    threads: int | None = None,
    iters: int | None = None,
    runtime: str | None = None,
    progress: bool = True,
    log: Log = _quiet,
    **model_options: Any,
) -> CompressResult:
    """Quantize (and optionally prune) a model for a target, check it against the float model on the same data,
    time every candidate side by side and select the fastest within the accuracy budget: `edgevision compress`.
    The recipe is the family preset <- `recipe` file <- these arguments. `max_drop`: points, "none" (no
    guard), or None (the default budget, 1 point; off with random weights). `guard_time`: seconds the accuracy
    guards may take (None: as long as the run's unguarded work). `runtime` pins one runtime."""
    if target is not None:
        check_target(target)
    loaded = model_of(model, seed=seed, log=log, **model_options)  # a seed fixes a random model's weights too
    resolved = resolve(preset_for(loaded.spec.family), recipe, {
        "target": target, "int8": int8, "calib_size": calib_size, "seed": seed, "max_drop": max_drop,
        "guard_time": guard_time, "eval_limit": limit, "threads": threads, "benchmark_iters": iters, "runtime": runtime,
        "prune": {"ratio": prune, "importance": importance, "finetune_epochs": finetune_epochs,
                  "finetune_images": finetune_images}})
    out = Path(out) if out else RUNS_DIR / f"{loaded.spec.name}-{resolved.target}-{_stamp()}"
    return compress_model(loaded, source_of(data, "test"), resolved, out, calib_source=source_of(calib_data, "train"),
                          finetune_source=source_of(finetune_data, "train"), force=force, progress=progress, log=log)


def prune(
    model: str | LoadedModel | None = None,
    ratio: float = 0.5,
    *,
    importance: str | None = None,
    data: str | ImageSource | None = None,
    eval_data: str | ImageSource | None = None,
    finetune_epochs: int | None = None,
    finetune_images: int | None = None,
    int8: bool = False,
    limit: int | None = None,
    out: str | Path | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: bool = True,
    log: Log = _quiet,
    **model_options: Any,
) -> CompressResult:
    """Structured pruning with a distilled recovery fine-tune on `data` (none without it), checked against the
    unpruned model on `eval_data` (default: the test split of builtin `data`, else builtin:photos)."""
    loaded = model_of(model, log=log, **model_options)
    if data is None and finetune_epochs:
        log("no --data: the pruned model is not fine-tuned")
    recipe = resolve(preset_for(loaded.spec.family), None, {
        "target": "cpu", "int8": int8, "eval_limit": limit, "threads": threads,
        "prune": {"ratio": ratio, "importance": importance, "finetune_epochs": finetune_epochs if data else 0,
                  "finetune_images": finetune_images}})
    finetune_source = source_of(data, "train")
    spec = data if isinstance(data, str) else None
    eval_source = source_of(eval_data or default_eval_spec(spec) or "builtin:photos", "test")
    out = Path(out) if out else RUNS_DIR / f"{loaded.spec.name}-prune{ratio:g}-{_stamp()}"
    return compress_model(loaded, eval_source, recipe, out, calib_source=finetune_source,
                          finetune_source=finetune_source, force=force, progress=progress, log=log)


def export(
    source: str | Path | LoadedModel | None = None,
    *,
    target: str = "jetson",
    precision: str = "int8",
    out: str | Path | None = None,
    force: bool = False,
    engine_flags: ex.EngineFlags | None = None,
    data: str | None = None,
    calib_data: str | None = None,
    calib_size: int | None = None,
    limit: int | None = None,
    recipe: str | Path | None = None,
    threads: int | None = None,
    iters: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    log: Log = _quiet,
    **model_options: Any,
) -> CompressResult:
    """The deployable artifact for a target: from a compress run directory (default: the latest under runs/),
    a distill run directory (its student), or a model; checked against the float model on the same data."""
    check_target(target)
    overrides = {"calib_size": calib_size, "eval_limit": limit, "threads": threads, "benchmark_iters": iters}
    if source is None and checkpoint is None:
        source = str(ex.latest_run())
        log(f"exporting the latest compress run: {source}")
    if isinstance(source, (str, Path)) and checkpoint is None and (Path(source) / STUDENT_FILE).is_file():
        source, checkpoint = None, Path(source)  # a distill run: export its student
    if isinstance(source, (str, Path)) and Path(source).is_dir() and not ex.is_run_dir(source):
        raise EdgevisionError(f"{source} is a directory but not a compress run (no manifest.json)",
                              "give a run directory made by `edgevision compress` or `distill`, or a model name")
    if isinstance(source, (str, Path)) and ex.is_run_dir(source):
        return ex.export_run(ex.open_run(source), target, precision, Path(out) if out else None,
                             engine_flags=engine_flags,
                             data=data, calib_data=calib_data, overrides=overrides, force=force, progress=progress,
                             log=log)
    loaded = model_of(source, checkpoint=checkpoint, log=log, **model_options)
    resolved = resolve(preset_for(loaded.spec.family), recipe, overrides)
    out = Path(out) if out else EXPORTS_DIR / f"{loaded.spec.name}-{target}-{_stamp()}"
    return ex.export_model(loaded, source_of(data or "builtin:photos", "test"), resolved, target, precision, out,
                           calib_source=source_of(calib_data, "train"), engine_flags=engine_flags, force=force,
                           progress=progress, log=log)


def deploy_check(bundle: str | Path, *, threads: int | None = None, rounds: int = 10, max_drop: float | None = None,
                 log: Log = _quiet) -> bundle_lib.Decision:
    """A CPU deploy bundle's own selection (its select_model.py) on this machine: every candidate checked against
    the float model's logits on the bundle's sample, those within the budget timed side by side, the fastest
    kept. Writes decision.json and the pick (model.onnx or model.xml) into the bundle."""
    try:
        return select_model.run_selection(Path(bundle), threads, rounds, max_drop, log=log)
    except bundle_lib.BundleError as e:
        raise EdgevisionError(str(e)) from None


def build_engine(bundle: str | Path, *, force: bool = False, precision: str | None = None, log: Log = _quiet) -> Path:
    """Build a jetson bundle's TensorRT engine with the TensorRT Python API (on the device that runs it): by
    default INT8 and FP16 where the bundle lets the device decide, timed, the faster kept; `precision` pins one."""
    bundle = Path(bundle)
    opts = trt_backend.bundle_engine_options(bundle)
    if (bundle / opts.engine).exists() and not force:
        raise OutputExistsError(f"{bundle / opts.engine} already exists", "pass --force to rebuild it")
    return build_chosen_engine(bundle, opts, precision, log=log)


def train_model(model: str | LoadedModel | None, data: str | ImageSource, out: str | Path,
                config: TrainConfig | None = None, *, eval_data: str | ImageSource | None = None,
                threads: int | None = None, resume: bool = True, force: bool = False, device: str | None = None,
                progress: bool = True, save_every_s: float = 60.0, log: Log = _quiet,
                **model_options: Any) -> tuple[LoadedModel, ImageSource, TrainResult]:
    """`edgevision train`: the data's class count sizes a new classifier, and `config.seed` fixes a random
    model's initial weights (the loop is edgevision.training)."""
    cfg = config or TrainConfig()
    with torch_threads(threads):
        source = source_of(data, "train")
        num_classes = model_options.pop("num_classes", None) or source.num_classes
        loaded = model_of(model, num_classes=num_classes, seed=cfg.seed, log=log, **model_options)
        for msg in source.notes:
            log(msg)
        result = train_loaded(loaded, source, out, cfg, eval_source=source_of(eval_data, "test"), resume=resume,
                              force=force, device=device, progress=progress, save_every_s=save_every_s, log=log)
    return loaded, source, result


def distill_models(teacher: str | LoadedModel | None, student: str | LoadedModel | None, data: str | ImageSource,
                   out: str | Path | None = None, config: DistillConfig | None = None, *,
                   teacher_options: dict[str, Any] | None = None, student_options: dict[str, Any] | None = None,
                   eval_data: str | ImageSource | None = None, eval_limit: int | None = None,
                   limit: int | None = None, threads: int | None = None, log: Log = _quiet,
                   **distill_options: Any) -> DistillResult:
    """`edgevision distill`: loads both models as the options say (the student seeded by `config.seed`), draws
    the --limit subset, evaluates on the test split of builtin `data` by default; the run is edgevision.distill."""
    cfg = config or DistillConfig()
    teacher_options, student_options = dict(teacher_options or {}), dict(student_options or {})
    if (teacher is None and teacher_options.get("checkpoint") is None
            or student is None and student_options.get("checkpoint") is None):
        raise EdgevisionError("distill needs a teacher and a student",
                              "e.g. edgevision distill --teacher vit_l --student vit_s --data DIR")
    with torch_threads(threads):
        source = sample(source_of(data, "train"), limit, cfg.seed)
        spec = data if isinstance(data, str) else None
        eval_source = source_of(eval_data or default_eval_spec(spec), "test")
        t = model_of(teacher, log=log, **teacher_options)
        student_options["num_classes"] = student_options.get("num_classes") or t.spec.num_classes
        s = model_of(student, seed=cfg.seed, log=log, **student_options)
        warning = random_weights_warning(t.spec, "teacher")
        if warning:
            log(f"warning: {warning} (the student learns noise: use it for speed checks only)")
        for msg in source.notes:
            log(msg)
        return distill(t, s, source, out, cfg, eval_source=eval_source, eval_limit=eval_limit, threads=threads,
                       log=log, **distill_options)


def sweep(models: list[str], ratios: list[float], targets: list[str], out: str | Path | None = None, *,
          log: Log = _quiet, **options: Any) -> tuple[SweepResult, cmp.Comparison, dict[str, str]]:
    """`edgevision sweep`: every (model, prune ratio, target) cell, then the comparison of all of them
    (compare.png, compare.html, compare.md in the sweep directory)."""
    out = Path(out) if out else RUNS_DIR / f"sweep-{'-'.join(models)}"
    result = run_sweep(models, ratios, targets, out, log=log, **options)
    comparison = cmp.load_comparison([out])
    written = cmp.write_outputs(comparison, out / "compare.png", out / "compare.html", out / "compare.md")
    return result, comparison, written


def compare(runs: list[str | Path], *, plot: str | Path | None = None, html: str | Path | None = None,
            markdown: str | Path | None = None, allow_mixed: bool = False) -> tuple[cmp.Comparison, dict[str, str]]:
    """`edgevision compare`: the rows of every run (each model's Pareto frontier and the selected variants
    marked) with their caveats, and the files written."""
    comparison = cmp.load_comparison(runs, allow_mixed=allow_mixed)
    return comparison, cmp.write_outputs(comparison, plot, html, markdown)


def recommend(runs: list[str | Path] | None = None, *, target: str = "cpu", max_latency_ms: float,
              max_drop: float = 1.0, max_size_mb: float | None = None) -> Recommendation:
    """`edgevision recommend`: which measured variant meets the budgets, and the checklist behind it."""
    return recommend_from_runs(runs or [RUNS_DIR], target, max_latency_ms, max_drop, max_size_mb)
