"""Pruning recovery: a short fine-tune of the pruned model, distilled from the unpruned one.

It sits above both pruning (compression/prune.py) and training (training/): the training loop of
`edgevision train` with the distillation loss of training/losses.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgevision.compression.prune import PruneError
from edgevision.data.sources import ImageSource, sample
from edgevision.models.loading import LoadedModel
from edgevision.training.loop import TrainConfig
from edgevision.training.losses import distillation_loss
from edgevision.training.supervised import train


@dataclass
class RecoverySettings:
    epochs: int = 1
    images: int | None = None  # a seeded class-balanced subset of the data, or all of it
    lr: float = 1e-3
    batch_size: int = 128
    temperature: float = 2.0
    alpha: float = 0.7  # weight of the distillation term; the rest is cross-entropy on the labels
    seed: int = 0


@dataclass
class PruningRecord:
    """What pruning (and its recovery) did to a run's model: the report's `pruning`."""

    ratio: float
    importance: str
    groups: int
    params_before: int
    params_after: int
    gmacs_before: float
    gmacs_after: float
    prune_s: float
    recovery: RecoveryRecord | None = None


@dataclass
class RecoveryRecord:
    """What a recovery fine-tune did, for the report."""

    data: str
    images: int
    epochs: int
    lr: float
    temperature: float
    alpha: float
    time_s: float
    final_loss: float | None


def recover(pruned: LoadedModel, teacher, source: ImageSource, out: Path, settings: RecoverySettings, *,
            progress: bool = True, log: Callable[[str], None] = lambda msg: None,
            force: bool = True) -> RecoveryRecord:
    """Fine-tune `pruned` in place, taught by `teacher` (the unpruned torch module); its checkpoint goes to
    `out`. Returns what was done, for the report."""
    if source.labels is None:
        raise PruneError(f"recovery needs labelled data; {source.spec} has no labels",
                         "give --finetune-data with labels, or --finetune-epochs 0")
    source = sample(source, settings.images, settings.seed)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, weight_decay=0.05,
                         label_smoothing=0.0, seed=settings.seed, workers=0, augment="none")
    result = train(pruned, source, out, config, force=force, progress=progress, save_every_s=1e9,
                   loss_fn=distillation_loss(teacher, settings.temperature, settings.alpha), log=log)
    pruned.model.eval()
    return RecoveryRecord(source.spec, len(source), settings.epochs, settings.lr, settings.temperature, settings.alpha,
                          result.train_time_s, result.history[-1].train_loss if result.history else None)
