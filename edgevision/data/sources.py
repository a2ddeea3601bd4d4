"""Image sources: indexable RGB PIL images and, when labelled, integer labels (data/open.py opens them).

Decoding happens lazily; files that fail to decode are skipped at load time and counted by the loader
(see loader.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgevision.data.images import load_image
from edgevision.errors import DataError


@dataclass
class ImageSource:
    """An indexable set of images. `labels` is None for unlabelled data."""

    spec: str  # how the user named it, recorded in reports so runs can be compared
    kind: str  # imagefolder | csv | folder | builtin
    labels: np.ndarray | None
    classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # e.g. files ignored while scanning

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"{self.spec}[{index}]"

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else None

    def subset(self, indices) -> "SubsetSource":
        return SubsetSource(self, np.asarray(indices, dtype=np.int64))


@dataclass
class FileSource(ImageSource):
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Image.Image:
        return load_image(self.files[index])

    def describe(self, index: int) -> str:
        return str(self.files[index])


@dataclass
class ArraySource(ImageSource):
    """Images held in memory as uint8 arrays (N x H x W greyscale or N x H x W x 3)."""

    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")


class SubsetSource(ImageSource):
    def __init__(self, base: ImageSource, indices: np.ndarray):
        labels = base.labels[indices] if base.labels is not None else None
        super().__init__(spec=base.spec, kind=base.kind, labels=labels, classes=base.classes,
                         notes=list(base.notes))
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Image.Image:
        return self.base.load(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.base.describe(int(self.indices[index]))

    @property
    def num_classes(self) -> int | None:
        return self.base.num_classes


def sample(source: ImageSource, size: int | None, seed: int = 0) -> ImageSource:
    """A seeded, class-balanced subset of `size` images (the whole source when size is None or larger)."""
    if size is None or size >= len(source):
        return source
    return source.subset(balanced_indices(len(source), size, source.labels, seed))


def align_classes(source: ImageSource, model_classes: list[str] | None) -> ImageSource:
    """Express the data's labels in the model's class order.

    An ImageFolder sorts classes by name while the model may have been trained on another order: the same
    names in another order are re-indexed; different names are an error (comparing them means nothing).
    """
    if model_classes is None or source.classes is None or list(source.classes) == list(model_classes):
        return source
    if sorted(source.classes) != sorted(model_classes):
        only_data = sorted(set(source.classes) - set(model_classes))[:3]
        only_model = sorted(set(model_classes) - set(source.classes))[:3]
        raise DataError(f"the classes of {source.spec} differ from the model's (data only: {only_data}, "
                        f"model only: {only_model})", "use data with the model's class names")
    index = {name: i for i, name in enumerate(model_classes)}
    remap = np.array([index[name] for name in source.classes], dtype=np.int64)
    aligned = source.subset(np.arange(len(source)))
    aligned.labels, aligned.classes = remap[source.labels], list(model_classes)
    aligned.notes = aligned.notes + [f"re-indexed the classes of {source.spec} to the model's class order"]
    return aligned


def balanced_indices(n: int, size: int, labels: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """`size` indices out of `n`, drawn with a seed; class-balanced (round robin) when labelled.

    Used for calibration sets and evaluation subsets, so the same seed gives the same images.
    """
    rng = np.random.default_rng(seed)
    size = min(size, n)
    if labels is None:
        return np.sort(rng.permutation(n)[:size])
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked, depth = [], 0
    while len(picked) < size:
        for members in per_class:
            if depth < len(members) and len(picked) < size:
                picked.append(members[depth])
        depth += 1
    return np.sort(np.array(picked, dtype=np.int64))
