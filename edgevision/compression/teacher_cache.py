"""The teacher's outputs per (augmentation view, sample), computed once and kept in memory-mapped files.

A big teacher (ViT-L) costs more than the student it teaches. Epoch e trains on view e % views, and every
sample's crop and flip in a view come from its own seed (data/loader.TransformedDataset), so the teacher's
answer for (view, sample) is the same every time it is asked: it is computed once, in files shared by the
processes of a node and by later runs with the same teacher, data and augmentation.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.data.sources import ImageSource
from edgevision.io import atomic_write, atomic_write_text, cache_dir
from edgevision.training.distributed import barrier
from edgevision.typed import JSONObject, to_data


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
    def open(cls, root: Path, key: object, views: int, size: int, classes: int,
             feature_dim: int | None, env) -> "TeacherCache":
        """The cache of the answers `key` (a dataclass of everything they depend on) names, made if new."""
        key = to_data(key)
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

    def _create(self, key: JSONObject) -> None:
        files = self._files()
        if all(p.exists() for p in files.values()):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        shapes = {"filled": ((self.views, self.size), np.uint8),
                  "logits": ((self.views, self.size, self.classes), np.float16),
                  "features": ((self.views, self.size, self.feature_dim or 0), np.float16)}
        for name, path in files.items():
            shape, dtype = shapes[name]
            atomic_write(path, lambda tmp: np.lib.format.open_memmap(  # sparse, zeros
                tmp, mode="w+", dtype=dtype, shape=shape).flush())
        atomic_write_text(self.folder / "key.json", json.dumps(key, indent=2, default=str) + "\n")

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
    return cache_dir() / "teacher-outputs"


def pooled_and_logits(model, images):
    """(pooled features, logits) of any timm classifier: one trunk pass, the head applied twice (cheap)."""
    trunk = model.forward_features(images)
    return model.forward_head(trunk, pre_logits=True), model.forward_head(trunk)


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
