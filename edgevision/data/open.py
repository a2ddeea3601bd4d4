"""Open a data source named by the user: an ImageFolder, a labels CSV, an unlabelled folder, or `builtin:NAME`."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgevision.data.builtin import BUILTIN_PREFIX, BUILTINS
from edgevision.data.images import IMAGE_EXTENSIONS, is_image_file
from edgevision.data.sources import FileSource, ImageSource
from edgevision.errors import DataError


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
    return ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)


def _open_builtin(spec: str, default_split: str) -> ImageSource:
    name, _, split = spec[len(BUILTIN_PREFIX):].partition(":")
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset '{name}'", f"available: {_builtin_names()}")
    dataset = BUILTINS[name]
    if not dataset.splits:
        if split:
            raise DataError(f"{BUILTIN_PREFIX}{name} has no splits", f"use {BUILTIN_PREFIX}{name}")
        return dataset.open(None)
    return dataset.open(split or default_split)


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


def default_eval_spec(train_spec: str | None) -> str | None:
    """Where to evaluate a model trained on `train_spec` when no evaluation data is given: the test split of a
    builtin dataset named without a split (builtin:fashion-mnist -> its test split), else nothing."""
    if train_spec and train_spec.startswith(BUILTIN_PREFIX) and train_spec.count(":") == 1:
        return train_spec
    return None
