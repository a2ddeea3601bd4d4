"""`edgevision train`: train or fine-tune a model on labelled data and write an edgevision checkpoint.

The loop itself is training/loop.py; pruning recovery (compression/recovery.py) runs `train` with a distillation
loss in place of label-smoothed cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgevision.data.loader import DataConfig, TransformedDataset, eval_transform, train_transform
from edgevision.data.sources import ImageSource
from edgevision.errors import EdgevisionError, OutputExistsError
from edgevision.measure.evaluate import evaluate_model
from edgevision.models.checkpoint import spec_meta, write_checkpoint
from edgevision.models.loading import LoadedModel
from edgevision.models.zoo import ModelKwargs
from edgevision.training.distributed import setup, teardown
from edgevision.training.freeze import check_schedule
from edgevision.training.loop import EpochRecord, LoopHooks, TrainConfig, fit, state_path
from edgevision.typed import to_data

AUGMENTS = ("light", "none")


@dataclass
class TrainResult:
    checkpoint: str
    epochs: int
    train_time_s: float
    resumed_from: dict[str, int] | None
    history: list[EpochRecord] = field(default_factory=list)
    skipped_images: int = 0


@dataclass(frozen=True)
class TrainResumeKey:
    """What must match for a saved state to be continued rather than started over."""

    model: str  # timm name
    model_kwargs: ModelKwargs
    num_classes: int
    data: str
    data_size: int
    config: TrainConfig
    world_size: int


def _resume_key(loaded: LoadedModel, source: ImageSource, cfg: TrainConfig, world_size: int) -> TrainResumeKey:
    spec = loaded.spec
    return TrainResumeKey(spec.timm_name, spec.model_kwargs, spec.num_classes, source.spec, len(source), cfg,
                          world_size)


def check_training_inputs(loaded: LoadedModel, source: ImageSource, out: Path, cfg: TrainConfig, force: bool,
                          needs_labels: bool = True) -> None:
    """The one-line refusals shared by train and distill, before any work starts."""
    if cfg.augment not in AUGMENTS:
        raise EdgevisionError(f"unknown augmentation '{cfg.augment}'", f"use one of {', '.join(AUGMENTS)}")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", "pass --force to overwrite it, or choose another --out")
    if not out.parent.exists():
        raise EdgevisionError(f"output folder {out.parent} does not exist", "create it first")
    if needs_labels and source.labels is None:
        raise EdgevisionError(f"{source.spec} has no labels", "training needs an ImageFolder, a labels CSV "
                              "or a labelled built-in dataset")
    if source.num_classes and source.num_classes > loaded.model.num_classes:
        raise EdgevisionError(f"{source.spec} has {source.num_classes} classes but the model has "
                              f"{loaded.model.num_classes} outputs", f"pass --num-classes {source.num_classes}")
    check_schedule(loaded.model, cfg.freeze, cfg.epochs)


def transform_for(data_config: DataConfig, augment: str):
    # Short from-scratch runs learn faster without augmentation (measured on Fashion-MNIST, see README).
    return (train_transform if augment == "light" else eval_transform)(data_config)


def evaluate_during_training(loaded: LoadedModel, source: ImageSource, dev, progress: bool,
                             limit: int | None = None, seed: int = 0):
    """Top-1 of the model being trained, on the device it trains on (rank 0, at an epoch's end; the loop
    puts it back in train mode)."""
    return evaluate_model(loaded, source, limit=limit, seed=seed, batch_size=256, progress=progress,
                          device=str(dev))


def train(
    loaded: LoadedModel,
    source: ImageSource,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    eval_source: ImageSource | None = None,
    resume: bool = True,
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    save_every_s: float = 60.0,
    loss_fn: Callable | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> TrainResult:
    """Train `loaded.model` on `source` and write an edgevision checkpoint to `out`.

    `loss_fn(logits, labels, images)` replaces label-smoothed cross-entropy (used by pruning recovery).
    Under torchrun every process runs this; rank 0 logs and writes (training/distributed.py).
    """
    import torch  # heavy: imported when training starts

    cfg = config or TrainConfig()
    out = Path(out)
    check_training_inputs(loaded, source, out, cfg, force)
    env, dev = setup(device)
    spec = loaded.spec
    log(f"training {spec.name} ({spec.timm_name}, weights {spec.weights}) on {source.spec}: "
        f"{len(source)} images, {spec.num_classes} classes" + (f", {env.world_size} processes" if env.active else ""))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, labels, images: criterion(logits, labels))

    def objective(net, batch) -> Any:
        images = batch.images.to(dev, non_blocking=True)
        return loss_fn(net(images).float(), batch.labels.to(dev, non_blocking=True), images)

    def evaluate_epoch(_module) -> float | None:  # _module is loaded.model, the model being trained
        if eval_source is None:
            return None
        return evaluate_during_training(loaded, eval_source, dev, progress).top1

    dataset = TransformedDataset(source, transform_for(spec.data_config, cfg.augment))
    loop = fit(loaded.model, dataset, cfg, key=_resume_key(loaded, source, cfg, env.world_size),
               state_file=state_path(out), hooks=LoopHooks(objective, end_of_epoch=evaluate_epoch), env=env,
               dev=dev, resume=resume, progress=progress, save_every_s=save_every_s, log=log)
    model = loaded.model.eval().cpu()
    if env.is_main:
        write_checkpoint(out, model.state_dict(), {
            **spec_meta(spec, source.classes),
            "training": {"data": source.spec, "images": len(source), "config": to_data(cfg),
                         "history": to_data(loop.history), "train_time_s": loop.train_time_s,
                         "initial_weights": spec.weights, "processes": env.world_size},
        })
        state_path(out).unlink(missing_ok=True)
    teardown(env)
    return TrainResult(checkpoint=str(out), epochs=cfg.epochs, train_time_s=loop.train_time_s,
                       resumed_from=loop.resumed_from, history=loop.history, skipped_images=loop.skipped_images)
