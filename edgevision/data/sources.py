"""Where images come from: an ImageFolder, a labels CSV, an unlabelled folder, or `builtin:NAME`.

Every source gives indexable RGB PIL images and, when labelled, integer labels. Decoding happens
lazily; files that fail to decode are skipped at load time and counted by the loader (see loader.py).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgevision.data import builtin
from edgevision.data.images import IMAGE_EXTENSIONS, is_image_file, load_image
from edgevision.errors import DataError

BUILTIN_PREFIX = "builtin:"


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


def open_source(spec: str, default_split: str = "test") -> ImageSource:
    """Open a data source named by the user. `default_split` applies to builtin datasets with splits."""
    if spec.startswith(BUILTIN_PREFIX):
        return _open_builtin(spec, default_split)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data path not found: {spec}",
                        f"give an image folder, a labels CSV, or one of {_builtin_names()}")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _open_csv(path, spec)
        raise DataError(f"{spec} is a file but not a .csv", "give a folder of images or a labels CSV")
    return _open_folder(path, spec)


def _builtin_names() -> str:
    return ", ".join(BUILTIN_PREFIX + n for n in builtin.BUILTINS)


def _open_builtin(spec: str, default_split: str) -> ImageSource:
    name, _, split = spec[len(BUILTIN_PREFIX):].partition(":")
    if name == "fashion-mnist":
        split = split or default_split
        images, labels = builtin.fashion_mnist(split)
        return ArraySource(spec=f"{BUILTIN_PREFIX}{name}:{split}", kind="builtin", labels=labels,
                           classes=list(builtin.FASHION_MNIST_CLASSES), images=images)
    if name == "photos":
        if split:
            raise DataError("builtin:photos has no splits", "use builtin:photos")
        files = builtin.photo_files()
        if not files:
            raise DataError("no built-in photos found",
                            "install scikit-image, scikit-learn or matplotlib (edgevision's install does)")
        return FileSource(spec=spec, kind="builtin", labels=None, files=files)
    raise DataError(f"unknown built-in dataset '{name}'", f"available: {_builtin_names()}")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def _open_folder(path: Path, spec: str) -> ImageSource:
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [(d.name, _image_files(d)) for d in class_dirs]
    per_class = [(name, files) for name, files in per_class if files]
    top_level = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
    if per_class:  # ImageFolder: one subfolder per class
        files, labels = [], []
        for label, (_, class_files) in enumerate(per_class):
            files += class_files
            labels += [label] * len(class_files)
        notes = [f"ignored {len(top_level)} images outside class folders"] if top_level else []
        return FileSource(spec=spec, kind="imagefolder", labels=np.array(labels, dtype=np.int64),
                          classes=[name for name, _ in per_class], notes=notes, files=files)
    if top_level:
        return FileSource(spec=spec, kind="folder", labels=None, files=top_level)
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    raise DataError(f"no images in {spec}", f"expected image files ({exts}) or class subfolders of them")


def _open_csv(path: Path, spec: str) -> ImageSource:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read labels CSV {spec}: {e}") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["file", "label"]:
        raise DataError(f"labels CSV {spec} must start with the header 'file,label'",
                        "paths relative to the CSV, integer class indices")
    files, labels, missing = [], [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise DataError(f"{spec} line {line_no}: expected 'file,label', got {','.join(row)!r}")
        name, label = row[0].strip(), row[1].strip()
        try:
            value = int(label)
        except ValueError:
            raise DataError(f"{spec} line {line_no}: label {label!r} is not an integer class index",
                            "labels must be integers 0..N-1") from None
        if value < 0:
            raise DataError(f"{spec} line {line_no}: label {value} is negative", "labels must be 0..N-1")
        file = (path.parent / name).resolve()
        if not file.is_file():
            missing.append(name)
        files.append(file)
        labels.append(value)
    if missing:
        shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        raise DataError(f"labels CSV {spec} names {len(missing)} missing files: {shown}",
                        "paths are relative to the CSV's folder")
    if not files:
        raise DataError(f"labels CSV {spec} lists no images")
    return FileSource(spec=spec, kind="csv", labels=np.array(labels, dtype=np.int64), files=files)
