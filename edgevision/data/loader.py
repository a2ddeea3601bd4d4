"""Batches for training and evaluation, with the model's own preprocessing (timm data config)."""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from edgevision.data.sources import ImageSource, balanced_indices  # noqa: F401 - re-exported
from edgevision.errors import DataError


class DataConfig(TypedDict, total=False):
    """timm's data config: the keys that define a model's preprocessing (recorded in every spec and manifest;
    timm's own dicts carry more, which pass through)."""

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str


DATA_CONFIG_KEYS = tuple(DataConfig.__annotations__)


def eval_transform(data_config: DataConfig):
    """The inference preprocessing timm defines for the model: resize, centre crop, normalise."""
    from timm.data import create_transform

    return create_transform(**_timm_args(data_config), is_training=False)


def train_transform(data_config: DataConfig):
    """Light augmentation (random resized crop 80-100%, horizontal flip), then the same normalisation."""
    from timm.data import create_transform

    args = _timm_args(data_config)
    args.pop("crop_pct", None)
    args.pop("crop_mode", None)
    return create_transform(**args, is_training=True, scale=(0.8, 1.0), hflip=0.5, color_jitter=None)


def _timm_args(cfg: DataConfig) -> dict[str, Any]:
    return {k: tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k] for k in DATA_CONFIG_KEYS if k in cfg}


def preprocess_each(source: ImageSource, indices, data_config: DataConfig) -> tuple[list[tuple[int, np.ndarray]], int]:
    """(index, batch-1 float32 array) for each image of `indices` that decodes, with the model's evaluation
    preprocessing, and the number that failed to decode (skipped, as in evaluation)."""
    transform = eval_transform(data_config)
    items, failed = [], 0
    for i in indices:
        try:
            items.append((int(i), transform(source.load(int(i))).unsqueeze(0).numpy()))
        except Exception:  # noqa: BLE001 - unreadable images are counted, not fatal
            failed += 1
    return items, failed


class TransformedDataset:
    """torch Dataset over an ImageSource: (views, label, index); an image that fails to decode yields None.

    `transforms` give one view each (a student's and a teacher's preprocessing, say). With `seed` set, every
    (view seed, sample) pair draws its random augmentation from its own generator: the same sample under
    the same view seed gets the same crop and flip in every view, in every epoch and after a resume, which
    is what lets a teacher's outputs be cached per sample and view (compression/distill.py). Without it the
    transforms draw from the process's random state, as usual.
    """

    def __init__(self, source: ImageSource, transforms, seed: int | None = None):
        self.source = source
        self.all_transforms = list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]
        self.transforms = self.all_transforms
        self.seed, self.view_seed = seed, 0

    def set_view_seed(self, view_seed: int) -> None:
        self.view_seed = view_seed

    def use_transforms(self, count: int | None) -> None:
        """Prepare only the first `count` views (None: all), e.g. when a cache already holds the teacher's."""
        self.transforms = self.all_transforms if count is None else self.all_transforms[:count]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            img = self.source.load(index)
        except Exception:  # noqa: BLE001 - unreadable files are counted, not fatal
            return None
        label = int(self.source.labels[index]) if self.source.labels is not None else -1
        if self.seed is None:
            views = [t(img) for t in self.transforms]
        else:
            sample_seed = int(np.random.SeedSequence([self.seed, self.view_seed, int(index)]).generate_state(1)[0])
            views = []
            for t in self.transforms:
                with _seeded(sample_seed):
                    views.append(t(img))
        return views, label, int(index)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed Python's and torch's CPU generators (timm and torchvision transforms draw from both), then restore.

    Only the CPU generator: torch.manual_seed also seeds every accelerator backend, which costs ~90 us a call
    and made seeding dearer than decoding and transforming a small image."""
    import torch

    state, torch_state = random.getstate(), torch.get_rng_state()
    random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(state)
        torch.set_rng_state(torch_state)


@dataclass
class Batch:
    images: Any  # float tensor N x C x H x W: the first view
    labels: Any  # int64 tensor N (-1 when unlabelled)
    skipped: int = 0
    indices: Any = None  # int64 tensor N: positions in the source
    views: list = field(default_factory=list)  # every view, images first


def collate(items) -> Batch:
    import torch

    good = [it for it in items if it is not None]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.int64), skipped=len(items),
                     indices=torch.empty(0, dtype=torch.int64))
    views = [torch.stack([it[0][v] for it in good]) for v in range(len(good[0][0]))]
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    indices = torch.tensor([it[2] for it in good], dtype=torch.int64)
    return Batch(views[0], labels, skipped=len(items) - len(good), indices=indices, views=views)


def make_loader(dataset: TransformedDataset, batch_size: int, *, sampler=None, workers: int = 0):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      collate_fn=collate, persistent_workers=False)


@dataclass
class SkipCounter:
    """Counts images that failed to decode; fails when none was usable."""

    seen: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        self.seen += len(batch.labels) + batch.skipped
        self.skipped += batch.skipped

    def check(self, source: ImageSource) -> None:
        if self.seen and self.skipped == self.seen:
            raise DataError(f"no usable image in {source.spec}: all {self.seen} files failed to decode",
                            "check the files are images")
