"""Real datasets that install offline, addressed as `builtin:NAME[:SPLIT]`, registered in BUILTINS."""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgevision.data.sources import ArraySource, FileSource, ImageSource
from edgevision.errors import DataError

BUILTIN_PREFIX = "builtin:"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N int64) of Fashion-MNIST's train or test split."""
    if split not in _FASHION_FILES:
        raise DataError(f"fashion-mnist has no split '{split}'", "use builtin:fashion-mnist:train or :test")
    root = Path(os.environ.get("EDGEVISION_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    images_file, labels_file = (root / f for f in _FASHION_FILES[split])
    if not images_file.is_file() or not labels_file.is_file():
        raise DataError(
            f"Fashion-MNIST is not installed (looked in {root})",
            "install it with `apt-get install dataset-fashion-mnist`",
        )
    images, labels = _read_idx(images_file), _read_idx(labels_file)
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def photo_files() -> list[Path]:
    """Real colour photos shipped inside installed wheels (scikit-image, scikit-learn, matplotlib).

    Only files present on disk: some skimage.data names are fetched at run time and fail offline.
    """
    files: list[Path] = []
    try:
        import skimage.data

        root = Path(skimage.data.__file__).parent
        names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png"]
        files += [root / n for n in names if (root / n).is_file()]
    except ImportError:
        pass
    try:
        import sklearn.datasets

        root = Path(sklearn.datasets.__file__).parent / "images"
        files += sorted(root.glob("*.jpg"))
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        files.append(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    except (ImportError, OSError, ValueError):
        pass
    return [f for f in files if f.is_file()]


def open_fashion_mnist(split: str | None) -> ImageSource:
    images, labels = fashion_mnist(split)
    return ArraySource(spec=f"{BUILTIN_PREFIX}fashion-mnist:{split}", kind="builtin", labels=labels,
                       classes=list(FASHION_MNIST_CLASSES), images=images)


def open_photos(split: str | None) -> ImageSource:
    files = photo_files()
    if not files:
        raise DataError("no built-in photos found",
                        "install scikit-image, scikit-learn or matplotlib (edgevision's install does)")
    return FileSource(spec=f"{BUILTIN_PREFIX}photos", kind="builtin", labels=None, files=files)


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    splits: tuple[str, ...]  # empty: the dataset has no splits
    open: Callable[[str | None], ImageSource]


BUILTINS: dict[str, BuiltinDataset] = {d.name: d for d in [
    BuiltinDataset("fashion-mnist", "Fashion-MNIST, 28x28 greyscale clothing, 10 classes; splits train (60k) and "
                   "test (10k)", ("train", "test"), open_fashion_mnist),
    BuiltinDataset("photos", "real colour photos shipped inside installed wheels, unlabelled (calibration, "
                   "agreement)", (), open_photos),
]}
