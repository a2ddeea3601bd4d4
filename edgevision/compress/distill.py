"""Knowledge distillation: a student learns a teacher's softened outputs (and the labels).

loss = alpha * KL(softmax(t / T) || softmax(s / T)) * T^2 + (1 - alpha) * CE(s, labels)
       [+ feature_weight * MSE(norm(P(student features)), norm(teacher features))]
The T^2 keeps the gradient scale of the soft term independent of T (Hinton et al.). P is a learned linear
projection from the student's pooled features to the teacher's, present only when feature distillation is
on and the widths differ; it is trained with the student and dropped afterwards.

A big teacher (ViT-L) costs more than the student it teaches, so its outputs are cached per sample and
augmentation view (TeacherCache): epoch e trains on view e % views, every sample's crop and flip in a view
come from its own seed (data/loader.TransformedDataset), so the teacher's answer for (view, sample) is the
same every time it is asked and is computed once, in memory-mapped files shared by the processes of a node
and by later runs with the same teacher, data and augmentation.

Pruning recovery uses `distillation_loss` (the unpruned model teaching the pruned one, no cache).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevision.data.sources import ImageSource, align_classes
from edgevision.errors import EdgevisionError, ModelError, OutputExistsError
from edgevision.models.loading import LoadedModel
from edgevision.training import TrainConfig

STUDENT_FILE = "student.pt"
REPORT_FILE = "report.json"
LATENCY_RUNTIMES = ("openvino", "pytorch", "onnxruntime", "none")


# --- the loss ---------------------------------------------------------------------------------------
def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float,
            label_smoothing: float = 0.0):
    """alpha * KL at temperature T (x T^2) + (1 - alpha) * cross-entropy; alpha 1 needs no labels."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t
    if alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1 - alpha) * hard


def feature_loss(student_features, teacher_features):
    """MSE between layer-normalised features: the scales of two networks' features need not agree."""
    import torch.nn.functional as F

    s, t = student_features.float(), teacher_features.float()
    return F.mse_loss(F.layer_norm(s, s.shape[-1:]), F.layer_norm(t, t.shape[-1:]))


def distillation_loss(teacher, temperature: float = 2.0, alpha: float = 0.7,
                      label_smoothing: float = 0.0) -> Callable:
    """A `loss_fn(logits, labels, images)` for training.train: the teacher runs on the student's images."""
    import torch

    teacher.eval()

    def loss_fn(logits, labels, images):
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        with torch.no_grad():
            target = teacher(images).float()
        return kd_loss(logits, target, labels, temperature, alpha, label_smoothing)

    return loss_fn


# --- settings and result ----------------------------------------------------------------------------
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
class DistillResult:
    out: str
    checkpoint: str
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the teacher cache ------------------------------------------------------------------------------
def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_digest(model) -> str:
    """sha256 of the model's tensors: the teacher's identity, whatever file (or none) it came from."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def source_digest(source: ImageSource) -> str:
    """Which images, in which order, with which labels (a class-balanced subset is its own dataset)."""
    h = hashlib.sha256(f"{source.spec}|{len(source)}".encode())
    if source.labels is not None:
        h.update(np.ascontiguousarray(source.labels, dtype=np.int64).tobytes())
    indices = getattr(source, "indices", None)
    if indices is not None:
        h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()


class TeacherCache:
    """Teacher logits (and pooled features) per (view, sample) in memory-mapped .npy files, float16.

    One folder per key (teacher weights, data, preprocessing, augmentation, and the seed when there is
    augmentation): `filled[v, i]` says whether row i of view v is there. Rows are written before their
    flag, to the page cache the processes of a node share, so a killed run keeps what it computed. Several
    nodes keep one cache each (the folder gets a node suffix): concurrent writers over a network filesystem
    could clobber each other's pages.
    """

    def __init__(self, folder: Path, views: int, size: int, classes: int, feature_dim: int | None):
        self.folder, self.views, self.size = folder, views, size
        self.classes, self.feature_dim = classes, feature_dim

    @classmethod
    def open(cls, root: Path, key: dict[str, Any], views: int, size: int, classes: int,
             feature_dim: int | None, env) -> "TeacherCache":
        from edgevision.distributed import barrier

        folder = Path(root) / fingerprint(key)
        if env.nodes > 1:
            folder = folder.with_name(f"{folder.name}-node{env.node}")
        cache = cls(folder, views, size, classes, feature_dim)
        if env.local_rank == 0:
            cache._create(key)
        barrier(env)
        cache._map()
        return cache

    def _files(self):
        names = ["filled", "logits"] + (["features"] if self.feature_dim else [])
        return {n: self.folder / f"{n}.npy" for n in names}

    def _create(self, key: dict[str, Any]) -> None:
        files = self._files()
        if all(p.exists() for p in files.values()):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        shapes = {"filled": ((self.views, self.size), np.uint8),
                  "logits": ((self.views, self.size, self.classes), np.float16),
                  "features": ((self.views, self.size, self.feature_dim or 0), np.float16)}
        for name, path in files.items():
            shape, dtype = shapes[name]
            tmp = path.with_name(f".{path.name}.tmp")
            np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape).flush()  # sparse, zeros
            tmp.replace(path)
        (self.folder / "key.json").write_text(json.dumps(key, indent=2, default=str) + "\n")

    def _map(self) -> None:
        self.arrays = {n: np.load(p, mmap_mode="r+") for n, p in self._files().items()}

    def lookup(self, view: int, indices: np.ndarray) -> np.ndarray:
        """Which of `indices` are cached for `view` (bool array)."""
        return self.arrays["filled"][view, indices].astype(bool)

    def read(self, view: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        feats = self.arrays["features"][view, indices] if self.feature_dim else None
        return self.arrays["logits"][view, indices], feats

    def write(self, view: int, indices: np.ndarray, logits: np.ndarray, features: np.ndarray | None) -> None:
        self.arrays["logits"][view, indices] = logits
        if self.feature_dim:
            self.arrays["features"][view, indices] = features
        self.arrays["filled"][view, indices] = 1  # after the rows: a flag never promises a missing row

    def flush(self) -> None:
        for a in self.arrays.values():
            a.flush()

    def complete(self, view: int) -> bool:
        return bool(self.arrays["filled"][view].all())

    def filled_fraction(self) -> float:
        return float(self.arrays["filled"].mean())


def default_cache_root() -> Path:
    from edgevision.models.trained import cache_dir

    return cache_dir() / "teacher-outputs"


# --- the modules --------------------------------------------------------------------------------------
def pooled_and_logits(model, images):
    """(pooled features, logits) of any timm classifier: one trunk pass, the head applied twice (cheap)."""
    trunk = model.forward_features(images)
    return model.forward_head(trunk, pre_logits=True), model.forward_head(trunk)


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


class TeacherTargets:
    """The teacher's logits (and features) for a batch: from the cache where present, else computed."""

    def __init__(self, teacher, cache: TeacherCache | None, with_features: bool):
        self.teacher, self.cache, self.with_features = teacher, cache, with_features
        self.view = 0
        self.computed = self.reused = 0

    def _run(self, images):
        import torch

        with torch.no_grad():
            if self.with_features:
                pooled, logits = pooled_and_logits(self.teacher, images)
                return logits.float(), pooled.float()
            return self.teacher(images).float(), None

    def __call__(self, indices, images, device):
        """`images` may be None when the cache holds the whole view (the loader then skips the teacher's)."""
        import torch

        if self.cache is None:
            self.computed += len(images)
            return self._run(images)
        idx = indices.numpy()
        have = self.cache.lookup(self.view, idx)
        if not have.all():
            if images is None:  # flags only ever go from 0 to 1, so a complete view stays complete
                raise RuntimeError("teacher cache lost rows of a view it held whole")
            missing = np.flatnonzero(~have)
            logits, feats = self._run(images[torch.from_numpy(missing).to(images.device)])
            self.cache.write(self.view, idx[missing], logits.cpu().numpy().astype(np.float16),
                             None if feats is None else feats.cpu().numpy().astype(np.float16))
            self.computed += len(missing)
        self.reused += int(have.sum())
        logits, feats = self.cache.read(self.view, idx)
        return _tensor(logits, device), _tensor(feats, device)


def _tensor(array, device):
    import torch

    return None if array is None else torch.from_numpy(np.asarray(array, dtype=np.float32)).to(device)


# --- the run ------------------------------------------------------------------------------------------
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
    from edgevision.distributed import all_sum, setup, teardown
    from edgevision.training import check_training_inputs, evaluate_during_training, fit, state_path, transform_for

    cfg = config or DistillConfig()
    cfg.check()
    if latency_runtime not in LATENCY_RUNTIMES:
        raise EdgevisionError(f"unknown latency runtime '{latency_runtime}'", f"use {', '.join(LATENCY_RUNTIMES)}")
    out = Path(out) if out is not None else default_out(teacher, student)
    checkpoint = out / STUDENT_FILE
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
    check_training_inputs(student, source, checkpoint, cfg, force=True, needs_labels=cfg.alpha < 1.0)
    env, dev = setup(device)

    tmodel, smodel = teacher.model, student.model
    for p in tmodel.parameters():
        p.requires_grad_(False)
    tmodel.to(dev).eval()
    with_features = cfg.feature_weight > 0
    projection = None
    if with_features:
        import torch

        s_dim, t_dim = smodel.num_features, tmodel.num_features
        projection = torch.nn.Linear(s_dim, t_dim) if s_dim != t_dim else torch.nn.Identity()
    module = _student_module(smodel, projection)

    # One set of random draws feeds both preprocessings, so the teacher sees the crop the student sees.
    same_view = teacher.spec.data_config == student.spec.data_config
    transforms = [transform_for(student.spec.data_config, cfg.augment)]
    if not same_view:
        transforms.append(transform_for(teacher.spec.data_config, cfg.augment))
    from edgevision.data.loader import TransformedDataset

    # Without augmentation the transforms draw nothing random: no per-sample seeding (it costs per image).
    dataset = TransformedDataset(source, transforms, seed=cfg.seed if cfg.augment != "none" else None)
    views = cfg.view_count
    teacher_digest = weights_digest(tmodel)  # the teacher's identity, for the cache and the resume state
    cache = None
    if teacher_cache:
        root = default_cache_root() if teacher_cache is True else Path(teacher_cache)
        # everything the teacher's answer for (view, sample) depends on
        cache_key = {"teacher": {k: teacher.spec.to_dict()[k] for k in ("timm_name", "model_kwargs", "num_classes")},
                     "teacher_weights": teacher_digest, "data": source_digest(source),
                     "preprocessing": teacher.spec.data_config, "augment": cfg.augment,
                     # without augmentation every seed sees the same images: its cache serves them all
                     "seed": cfg.seed if cfg.augment != "none" else None,
                     "views": views, "features": with_features}
        cache = TeacherCache.open(root, cache_key, views, len(source), tmodel.num_classes,
                                  tmodel.num_features if with_features else None, env)
    targets = TeacherTargets(tmodel, cache, with_features)

    def view_for_epoch(epoch: int) -> int:
        targets.view = epoch % views
        # a view the cache holds whole needs no teacher images: the loader prepares the student's alone
        dataset.transforms = transforms if cache is None or not cache.complete(targets.view) else transforms[:1]
        return targets.view

    def objective(net, batch):
        images = batch.images.to(dev, non_blocking=True)
        if same_view:
            teacher_images = images
        else:
            teacher_images = batch.views[1].to(dev, non_blocking=True) if len(batch.views) > 1 else None
        t_logits, t_feats = targets(batch.indices, teacher_images, dev)
        s_logits, s_feats = net(images)
        loss = kd_loss(s_logits.float(), t_logits, batch.labels.to(dev), cfg.temperature, cfg.alpha,
                       cfg.label_smoothing)
        if with_features:
            loss = loss + cfg.feature_weight * feature_loss(s_feats, t_feats)
        return loss

    def evaluate(model: LoadedModel, where):
        return evaluate_during_training(model, eval_source, where, progress, eval_limit, cfg.seed)

    def evaluate_epoch(_module) -> dict[str, Any]:
        return {"eval_top1": evaluate(student, dev).top1} if eval_source is not None else {}

    log(f"distilling {teacher.spec.name} ({_params_m(tmodel):.1f} M params) into {student.spec.name} "
        f"({_params_m(smodel):.2f} M) on {source.spec}: {len(source)} images, {cfg.epochs} epochs, "
        f"{views} view(s)" + (f", {env.world_size} processes" if env.active else "")
        + (f"; teacher cache {cache.folder} ({cache.filled_fraction():.0%} filled)" if cache else ""))
    key = {"teacher": teacher.spec.to_dict(), "teacher_weights": teacher_digest,
           "student": {k: student.spec.to_dict()[k] for k in ("timm_name", "model_kwargs", "num_classes", "weights")},
           "data": source_digest(source), "config": cfg.to_dict(), "world_size": env.world_size}
    loop = fit(module, dataset, cfg, key=key, state_file=state_path(checkpoint), objective=objective, env=env,
               dev=dev, resume=resume, progress=progress, save_every_s=save_every_s, log=log,
               end_of_epoch=evaluate_epoch, view_seed_for_epoch=view_for_epoch)
    if cache is not None:
        cache.flush()
    computed, reused = all_sum([float(targets.computed), float(targets.reused)], env, dev)
    result = DistillResult(out=str(out), checkpoint=str(checkpoint))
    if env.is_main:
        smodel.eval().cpu()
        tmodel.cpu()
        report = {
            "kind": "distill", "status": "ok", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "teacher": {**_describe(teacher), "weights_sha256": teacher_digest},  # which teacher, exactly
            "data": {"train": source.spec, "train_images": len(source)},
            "config": cfg.to_dict(), "processes": env.world_size, "device": str(dev),
            "history": loop.history, "train_time_s": loop.train_time_s, "resumed_from": loop.resumed_from,
            # images through the loss per second, this invocation, all processes: teacher cost included
            "throughput_images_s": loop.throughput_images_s,
            "teacher_cache": None if cache is None else {
                "folder": str(cache.folder), "views": views, "computed": int(computed), "reused": int(reused),
                "filled": round(cache.filled_fraction(), 4)},
        }
        from edgevision.models.checkpoint import spec_meta, write_checkpoint

        write_checkpoint(checkpoint, smodel.state_dict(), {
            **spec_meta(student.spec, source.classes),
            "training": {"data": source.spec, "images": len(source), "config": cfg.to_dict(),
                         "history": loop.history, "train_time_s": loop.train_time_s,
                         "initial_weights": student.spec.weights, "processes": env.world_size,
                         "distilled_from": report["teacher"]},
        })
        from edgevision.models.loading import load_model

        trained = load_model(checkpoint=checkpoint)  # what compress and export will load
        report["student"] = {**_describe(trained), "checkpoint": STUDENT_FILE, "initial_weights": student.spec.weights}
        if eval_source is not None:
            student_eval = evaluate(trained, "cpu")
            report["data"].update({"eval": student_eval.data, "eval_images": student_eval.images})
            report["teacher"]["top1"] = evaluate(teacher, "cpu").top1
            report["student"]["top1"] = student_eval.top1
            report["top1_gap"] = round(report["teacher"]["top1"] - report["student"]["top1"], 2)
        if latency_runtime != "none":
            report["latency"] = measure_latency(teacher, trained, latency_runtime, threads)
        from edgevision.report import write_json

        tmp = out / f".{REPORT_FILE}.tmp"
        write_json(tmp, report)
        tmp.replace(out / REPORT_FILE)  # written last: its presence means the run finished
        state_path(checkpoint).unlink(missing_ok=True)
        result.report = report
    teardown(env)
    return result


def _check_pair(teacher: LoadedModel, student: LoadedModel) -> None:
    t, s = teacher.model.num_classes, student.model.num_classes
    if t != s:
        raise ModelError(f"the teacher has {t} outputs and the student {s}",
                         f"build the student with --num-classes {t} (or use a teacher trained on this data)")
    if teacher.spec.classes and student.spec.classes and teacher.spec.classes != student.spec.classes:
        raise ModelError("the teacher and the student name their classes differently",
                         "start the student from random or pretrained weights, or a checkpoint of this data")


def _params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def _describe(loaded: LoadedModel) -> dict[str, Any]:
    from edgevision.models.zoo import count_gmacs

    spec = loaded.spec
    return {"name": spec.name, "timm_name": spec.timm_name, "weights": spec.weights, "checkpoint": spec.checkpoint,
            "input_size": list(spec.input_size), "params_m": round(_params_m(loaded.model), 3),
            "gmacs": round(count_gmacs(loaded.model, spec.input_size), 4)}


def measure_latency(teacher: LoadedModel, student: LoadedModel, runtime: str, threads: int | None,
                    iters: int = 60) -> dict[str, Any]:
    """Batch-1 latency of teacher and student in `runtime`, side by side (bench.compare_latency)."""
    from edgevision.backends import create_runner
    from edgevision.bench import available_cores, compare_latency

    threads = threads or available_cores()
    runners = {name: create_runner(runtime, m.model, threads=threads, input_size=m.spec.input_size)
               for name, m in (("teacher", teacher), ("student", student))}
    shapes = {"teacher": teacher.spec.input_size, "student": student.spec.input_size}
    result = compare_latency(runners, shapes, iters=iters)
    t, s = result["teacher"].latency_ms_p50, result["student"].latency_ms_p50
    return {"runtime": runtime, "threads": threads, "batch": 1, "cpu": result["student"].cpu,
            "teacher_p50_ms": round(t, 3), "student_p50_ms": round(s, 3),
            "speedup": round(t / s, 2) if s > 0 else math.inf}
