"""Knowledge distillation: a student learns a teacher's softened outputs (and the labels).

The loss is training/losses.kd_loss (plus feature_loss through a learned projection P from the student's pooled
features to the teacher's, present only when feature distillation is on and the widths differ; it trains with
the student and is dropped afterwards). The teacher's outputs are cached per sample and augmentation view
(compression/teacher_cache.py). `distill` prepares a run, hands it to the training loop, and writes the report.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from edgevision.compression.teacher_cache import (
    TeacherCache,
    TeacherTargets,
    default_cache_root,
    pooled_and_logits,
    source_digest,
    weights_digest,
)
from edgevision.data.loader import DataConfig, TransformedDataset
from edgevision.data.sources import ImageSource, align_classes
from edgevision.errors import EdgevisionError, ModelError, OutputExistsError
from edgevision.io import write_json
from edgevision.measure.bench import available_cores, compare_latency
from edgevision.measure.describe import describe_model, params_m
from edgevision.models.checkpoint import spec_meta, write_checkpoint
from edgevision.models.loading import LoadedModel, ModelSpec, load_model
from edgevision.models.zoo import ModelKwargs
from edgevision.runtimes import create_runner, torch_runtimes
from edgevision.training.distributed import DistEnv, all_sum, setup, teardown
from edgevision.training.loop import EpochRecord, LoopHooks, LoopResult, TrainConfig, fit, state_path
from edgevision.training.losses import feature_loss, kd_loss
from edgevision.training.supervised import check_training_inputs, evaluate_during_training, transform_for
from edgevision.typed import omitted, to_data

STUDENT_FILE = "student.pt"
REPORT_FILE = "report.json"


def latency_runtimes() -> list[str]:
    """Where teacher and student latency can be measured: the runtimes that take a torch model, or none."""
    return [*torch_runtimes(), "none"]


@dataclass
class DistillConfig(TrainConfig):
    """TrainConfig plus the distillation terms. label_smoothing applies to the label term only."""

    alpha: float = 0.7  # weight of the teacher's soft targets; 1 = labels unused (unlabelled data works)
    temperature: float = 2.0
    feature_weight: float = 0.0  # > 0 adds feature distillation through a learned projection
    views: int = 4  # augmentation views cached per sample; 1 when augment is none
    label_smoothing: float = 0.0

    def check(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise EdgevisionError(f"--alpha {self.alpha} is outside [0, 1]", "e.g. --alpha 0.7")
        if self.temperature <= 0:
            raise EdgevisionError(f"--temperature {self.temperature} must be positive", "e.g. --temperature 2")
        if self.feature_weight < 0:
            raise EdgevisionError(f"--feature-weight {self.feature_weight} is negative", "use 0 to turn it off")
        if self.views < 1 or self.grad_accum < 1:
            raise EdgevisionError("--views and --grad-accum must be at least 1", "e.g. --views 4 --grad-accum 1")

    @property
    def view_count(self) -> int:
        return 1 if self.augment == "none" else self.views  # without augmentation every view is the same


@dataclass
class DistilledModel:
    """The teacher or the student, as the distillation report names it."""

    name: str
    timm_name: str
    weights: str
    checkpoint: str | None
    params_m: float | None
    gmacs: float | None
    input_size: list[int]
    weights_sha256: str | None = omitted()  # the teacher's tensors: which teacher, exactly
    initial_weights: str | None = omitted()  # the student's before distillation
    top1: float | None = omitted()  # with evaluation data

    @classmethod
    def of(cls, loaded: LoadedModel, **extra) -> DistilledModel:
        info, spec = describe_model(loaded), loaded.spec
        return cls(spec.name, spec.timm_name, spec.weights, spec.checkpoint, info.params_m, info.gmacs,
                   list(spec.input_size), **extra)


@dataclass
class DistillData:
    train: str
    train_images: int
    eval: str | None = omitted()
    eval_images: int | None = omitted()


@dataclass
class CacheUse:
    """What the teacher cache served this run."""

    folder: str
    views: int
    computed: int
    reused: int
    filled: float  # share of the cache filled after the run


@dataclass
class LatencyComparison:
    """Teacher and student at batch 1 in one runtime, timed side by side."""

    runtime: str
    threads: int
    batch: int
    cpu: str
    teacher_p50_ms: float
    student_p50_ms: float
    speedup: float


@dataclass
class DistillReport:
    """A distill run's report.json."""

    kind: str
    status: str
    created: str
    teacher: DistilledModel
    data: DistillData
    config: DistillConfig
    processes: int
    device: str
    history: list[EpochRecord]
    train_time_s: float
    resumed_from: dict[str, int] | None
    throughput_images_s: float | None  # images through the loss per second, this invocation, all processes
    teacher_cache: CacheUse | None
    student: DistilledModel | None = omitted()
    top1_gap: float | None = omitted()  # teacher minus student, with evaluation data
    latency: LatencyComparison | None = omitted()


@dataclass(frozen=True)
class ModelIdentity:
    timm_name: str
    model_kwargs: ModelKwargs
    num_classes: int
    weights: str | None = omitted()


@dataclass(frozen=True)
class TeacherAnswersKey:
    """Everything the teacher's answer for (view, sample) depends on: the teacher cache's identity."""

    teacher: ModelIdentity
    teacher_weights: str
    data: str
    preprocessing: DataConfig
    augment: str
    seed: int | None  # None without augmentation: every seed sees the same images, one cache serves them all
    views: int
    features: bool


@dataclass(frozen=True)
class DistillResumeKey:
    """What must match for a saved distillation state to be continued rather than started over."""

    teacher: ModelSpec
    teacher_weights: str
    student: ModelIdentity
    data: str
    config: DistillConfig
    world_size: int


@dataclass
class DistillResult:
    out: str
    checkpoint: str
    report: DistillReport | None = None  # on the main process


def _student_module(student, projection):
    import torch

    class StudentWithProjection(torch.nn.Module):
        """What DistributedDataParallel wraps: the student, and the projection that trains with it."""

        def __init__(self):
            super().__init__()
            self.student, self.projection = student, projection

        def forward(self, images):
            if self.projection is None:
                return self.student(images), None
            pooled, logits = pooled_and_logits(self.student, images)
            return logits, self.projection(pooled)

    return StudentWithProjection()


class _DistillRun:
    """What one distillation needs between the loop's steps: the data, the teacher's targets, the student."""

    def __init__(self, teacher: LoadedModel, student: LoadedModel, source: ImageSource, cfg: DistillConfig,
                 cache: TeacherCache | None, dev):
        self.teacher, self.student, self.source, self.cfg, self.dev = teacher, student, source, cfg, dev
        self.with_features = cfg.feature_weight > 0
        self.module = _student_module(student.model, _projection(teacher.model, student.model) if
                                      self.with_features else None)
        # One set of random draws feeds both preprocessings, so the teacher sees the crop the student sees.
        self.same_view = teacher.spec.data_config == student.spec.data_config
        transforms = [transform_for(student.spec.data_config, cfg.augment)]
        if not self.same_view:
            transforms.append(transform_for(teacher.spec.data_config, cfg.augment))
        # Without augmentation the transforms draw nothing random: no per-sample seeding (it costs per image).
        self.dataset = TransformedDataset(source, transforms, seed=cfg.seed if cfg.augment != "none" else None)
        self.cache = cache
        self.targets = TeacherTargets(teacher.model, cache, self.with_features)

    def view_for_epoch(self, epoch: int) -> int:
        self.targets.view = epoch % self.cfg.view_count
        # a view the cache holds whole needs no teacher images: the loader prepares the student's alone
        whole = self.cache is not None and self.cache.complete(self.targets.view)
        self.dataset.use_transforms(1 if whole else None)
        return self.targets.view

    def objective(self, net, batch):
        dev, cfg = self.dev, self.cfg
        images = batch.images.to(dev, non_blocking=True)
        if self.same_view:
            teacher_images = images
        else:
            teacher_images = batch.views[1].to(dev, non_blocking=True) if len(batch.views) > 1 else None
        t_logits, t_feats = self.targets(batch.indices, teacher_images, dev)
        s_logits, s_feats = net(images)
        loss = kd_loss(s_logits.float(), t_logits, batch.labels.to(dev), cfg.temperature, cfg.alpha,
                       cfg.label_smoothing)
        if self.with_features:
            loss = loss + cfg.feature_weight * feature_loss(s_feats, t_feats)
        return loss


def _projection(teacher_model, student_model):
    import torch  # heavy: only for feature distillation

    s_dim, t_dim = student_model.num_features, teacher_model.num_features
    return torch.nn.Linear(s_dim, t_dim) if s_dim != t_dim else torch.nn.Identity()


def _open_cache(teacher: LoadedModel, source: ImageSource, cfg: DistillConfig, teacher_cache, digest: str,
                env: DistEnv) -> TeacherCache | None:
    if not teacher_cache:
        return None
    root = default_cache_root() if teacher_cache is True else Path(teacher_cache)
    with_features, spec = cfg.feature_weight > 0, teacher.spec
    key = TeacherAnswersKey(ModelIdentity(spec.timm_name, spec.model_kwargs, spec.num_classes), digest,
                            source_digest(source), spec.data_config, cfg.augment,
                            cfg.seed if cfg.augment != "none" else None, cfg.view_count, with_features)
    tmodel = teacher.model
    return TeacherCache.open(root, key, cfg.view_count, len(source), tmodel.num_classes,
                             tmodel.num_features if with_features else None, env)


def _check_inputs(teacher: LoadedModel, student: LoadedModel, source: ImageSource, out: Path, cfg: DistillConfig,
                  latency_runtime: str, force: bool) -> ImageSource:
    """The refusals before any work; returns the data with its labels in the teacher's class order."""
    cfg.check()
    if latency_runtime not in latency_runtimes():
        raise EdgevisionError(f"unknown latency runtime '{latency_runtime}'", f"use {', '.join(latency_runtimes())}")
    if (out / REPORT_FILE).exists() and not force:
        raise OutputExistsError(f"{out} already holds a finished distillation",
                                "pass --force to overwrite it, or choose another --out")
    _check_pair(teacher, student)
    if teacher.spec.classes:
        source = align_classes(source, teacher.spec.classes)
    if source.labels is None and cfg.alpha < 1.0:
        raise EdgevisionError(f"{source.spec} has no labels, and --alpha {cfg.alpha} weighs the label loss",
                              "pass --alpha 1 to learn from the teacher alone, or use labelled data")
    out.mkdir(parents=True, exist_ok=True)
    check_training_inputs(student, source, out / STUDENT_FILE, cfg, force=True, needs_labels=cfg.alpha < 1.0)
    return source


def default_out(teacher: LoadedModel, student: LoadedModel) -> Path:
    return Path("runs") / f"distill-{teacher.spec.name}-to-{student.spec.name}".replace("/", "_")


def distill(
    teacher: LoadedModel,
    student: LoadedModel,
    source: ImageSource,
    out: str | Path | None = None,
    config: DistillConfig | None = None,
    *,
    eval_source: ImageSource | None = None,
    eval_limit: int | None = None,
    teacher_cache: str | Path | None | bool = True,
    latency_runtime: str = "openvino",
    threads: int | None = None,
    resume: bool = True,
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    save_every_s: float = 60.0,
    log: Callable[[str], None] = lambda msg: None,
) -> DistillResult:
    """Distill `teacher` into `student` on `source`; write OUT/student.pt (an edgevision checkpoint that
    compress, export and evaluate take) and OUT/report.json (teacher and student accuracy, latency).

    teacher_cache: True (the default folder under the edgevision cache), a folder, or False (the teacher
    runs on every batch). Under torchrun every process calls this; rank 0 logs, evaluates and writes.
    """
    cfg = config or DistillConfig()
    out = Path(out) if out is not None else default_out(teacher, student)
    source = _check_inputs(teacher, student, source, out, cfg, latency_runtime, force)
    env, dev = setup(device)
    for p in teacher.model.parameters():
        p.requires_grad_(False)
    teacher.model.to(dev).eval()
    digest = weights_digest(teacher.model)  # the teacher's identity, for the cache and the resume state
    run = _DistillRun(teacher, student, source, cfg, _open_cache(teacher, source, cfg, teacher_cache, digest, env),
                      dev)
    log(_start_line(run, env))

    def evaluate_epoch(_module) -> float | None:
        if eval_source is None:
            return None
        return evaluate_during_training(student, eval_source, dev, progress, eval_limit, cfg.seed).top1

    s = student.spec
    key = DistillResumeKey(teacher.spec, digest, ModelIdentity(s.timm_name, s.model_kwargs, s.num_classes, s.weights),
                           source_digest(source), cfg, env.world_size)
    checkpoint = out / STUDENT_FILE
    loop = fit(run.module, run.dataset, cfg, key=key, state_file=state_path(checkpoint),
               hooks=LoopHooks(run.objective, evaluate_epoch, run.view_for_epoch), env=env, dev=dev, resume=resume,
               progress=progress, save_every_s=save_every_s, log=log)
    if run.cache is not None:
        run.cache.flush()
    counts = all_sum([float(run.targets.computed), float(run.targets.reused)], env, dev)
    result = DistillResult(out=str(out), checkpoint=str(checkpoint))
    if env.is_main:
        report = _report(run, loop, digest, counts, env, dev)
        trained = _write_student(run, checkpoint, report)
        _measure(report, run, trained, eval_source, eval_limit, latency_runtime, threads, progress)
        write_json(out / REPORT_FILE, report)  # written last: its presence means the run finished
        state_path(checkpoint).unlink(missing_ok=True)
        result.report = report
    teardown(env)
    return result


def _start_line(run: _DistillRun, env: DistEnv) -> str:
    teacher, student, cache = run.teacher, run.student, run.cache
    return (f"distilling {teacher.spec.name} ({params_m(teacher.model):.1f} M params) into {student.spec.name} "
            f"({params_m(student.model):.2f} M) on {run.source.spec}: {len(run.source)} images, {run.cfg.epochs} "
            f"epochs, {run.cfg.view_count} view(s)" + (f", {env.world_size} processes" if env.active else "")
            + (f"; teacher cache {cache.folder} ({cache.filled_fraction():.0%} filled)" if cache else ""))


def _report(run: _DistillRun, loop: LoopResult, digest: str, counts: list[float], env: DistEnv, dev) -> DistillReport:
    run.student.model.eval().cpu()
    run.teacher.model.cpu()
    cache = run.cache
    return DistillReport(
        "distill", "ok", time.strftime("%Y-%m-%dT%H:%M:%S%z"), DistilledModel.of(run.teacher, weights_sha256=digest),
        DistillData(run.source.spec, len(run.source)), run.cfg, env.world_size, str(dev), loop.history,
        loop.train_time_s, loop.resumed_from, loop.throughput_images_s,
        None if cache is None else CacheUse(str(cache.folder), run.cfg.view_count, int(counts[0]), int(counts[1]),
                                            round(cache.filled_fraction(), 4)))


def _write_student(run: _DistillRun, checkpoint: Path, report: DistillReport) -> LoadedModel:
    """The student as an edgevision checkpoint, read back as compress and export will load it."""
    source, student = run.source, run.student
    write_checkpoint(checkpoint, student.model.state_dict(), {
        **spec_meta(student.spec, source.classes),
        "training": {"data": source.spec, "images": len(source), "config": to_data(run.cfg),
                     "history": to_data(report.history), "train_time_s": report.train_time_s,
                     "initial_weights": student.spec.weights, "processes": report.processes,
                     "distilled_from": to_data(report.teacher)},
    })
    trained = load_model(checkpoint=checkpoint)
    report.student = replace(DistilledModel.of(trained, initial_weights=student.spec.weights), checkpoint=STUDENT_FILE)
    return trained


def _measure(report: DistillReport, run: _DistillRun, trained: LoadedModel, eval_source, eval_limit,
             latency_runtime: str, threads: int | None, progress: bool) -> None:
    """Teacher and student top-1 on the same data, and their latency side by side, into the report."""
    if eval_source is not None:
        def top1(model):
            return evaluate_during_training(model, eval_source, "cpu", progress, eval_limit, run.cfg.seed)

        student_eval = top1(trained)
        report.data.eval, report.data.eval_images = student_eval.data, student_eval.images
        report.teacher.top1, report.student.top1 = top1(run.teacher).top1, student_eval.top1
        report.top1_gap = round(report.teacher.top1 - report.student.top1, 2)
    if latency_runtime != "none":
        report.latency = measure_latency(run.teacher, trained, latency_runtime, threads)


def _check_pair(teacher: LoadedModel, student: LoadedModel) -> None:
    t, s = teacher.model.num_classes, student.model.num_classes
    if t != s:
        raise ModelError(f"the teacher has {t} outputs and the student {s}",
                         f"build the student with --num-classes {t} (or use a teacher trained on this data)")
    if teacher.spec.classes and student.spec.classes and teacher.spec.classes != student.spec.classes:
        raise ModelError("the teacher and the student name their classes differently",
                         "start the student from random or pretrained weights, or a checkpoint of this data")


def measure_latency(teacher: LoadedModel, student: LoadedModel, runtime: str, threads: int | None,
                    iters: int = 60) -> LatencyComparison:
    """Batch-1 latency of teacher and student in `runtime`, side by side (bench.compare_latency)."""
    threads = threads or available_cores()
    runners = {name: create_runner(runtime, m.model, threads=threads, input_size=m.spec.input_size)
               for name, m in (("teacher", teacher), ("student", student))}
    shapes = {"teacher": teacher.spec.input_size, "student": student.spec.input_size}
    result = compare_latency(runners, shapes, iters=iters)
    t, s = result["teacher"].latency_ms_p50, result["student"].latency_ms_p50
    return LatencyComparison(runtime, threads, 1, result["student"].cpu, round(t, 3), round(s, 3),
                             round(t / s, 2) if s > 0 else math.inf)
