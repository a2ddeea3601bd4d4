"""The `fashion-mnist` weight source: float models trained by edgevision on builtin:fashion-mnist.

`--weights fashion-mnist` resolves, in order, to `$EDGEVISION_CACHE/fashion-mnist/ALIAS.pt` (default cache
~/.cache/edgevision: trained here before), to the weights shipped with edgevision (shipped/, see SHIPPED: made
by this recipe with the command recorded there, checked by sha256 before use), or trains it with the settings
below and caches it. A cached file that records other settings (trained before a recipe changed, or put there by
hand) is used with a warning, not retrained. benchmarks/train_fashion_mnist.py trains with the same settings and
records test top-1 and training time. It registers itself into models/weights.py from this layer, because it
needs the training loop.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from edgevision.data.open import open_source
from edgevision.errors import ModelError
from edgevision.io import cache_dir, sha256
from edgevision.models.loading import LoadedModel, load_checkpoint_file, load_model
from edgevision.models.weights import WeightRequest, WeightSource, register_weight_source
from edgevision.training.loop import TrainConfig
from edgevision.training.supervised import train

FASHION_MNIST_TRAIN = "builtin:fashion-mnist:train"
FASHION_MNIST_TEST = "builtin:fashion-mnist:test"
# No augmentation: in 2-epoch trials on 20k images it raised ViT test top-1 from 73.9% to 79.7%.
FASHION_MNIST_DEFAULTS = {"augment": "none", "lr": 2e-3, "batch_size": 128}
FASHION_MNIST_EPOCHS = {"convnext_mini": 4, "swin_mini": 6, "maxvit_mini": 6, "vit_mini": 8,
                         "vit_teacher_mini": 16, "mobilenetv3_mini": 6,
                         "efficientnet_lite_mini": 6}
# The teacher (6x vit_mini) at lr 2e-3 over 10 epochs: train loss rose from 0.99 to 1.07 in epoch 4, test
# top-1 stuck near 78%; half the rate trains it steadily. 8 epochs reached 89.75%, below what convnext_mini
# reaches alone in 6 (90.2-90.6), so it had little to teach it; 16 epochs reach 90.42%.
FASHION_MNIST_LR = {"vit_teacher_mini": 1e-3}


SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"  # package data: SHIPPED.json and its weight files


def shipped_checkpoint(alias: str, log: Callable[[str], None] = lambda m: None) -> Path | None:
    """The weights shipped with edgevision for `alias` (SHIPPED.json: file, sha256, the command that made them),
    or None when none are shipped or the file does not match its sha256 (then it is trained as before)."""
    index = SHIPPED_DIR / "SHIPPED.json"
    entry = json.loads(index.read_text(encoding="utf-8")).get(alias) if index.is_file() else None
    if entry is None:
        return None
    path = SHIPPED_DIR / entry["file"]
    if not path.is_file() or sha256(path) != entry["sha256"]:
        log(f"warning: the shipped {path.name} is missing or does not match its sha256: training {alias} instead")
        return None
    return path


def fashion_mnist_settings(alias: str) -> dict:
    """TrainConfig fields `--weights fashion-mnist` trains `alias` with (benchmarks use the same)."""
    return {**FASHION_MNIST_DEFAULTS, "lr": FASHION_MNIST_LR.get(alias, FASHION_MNIST_DEFAULTS["lr"]),
            "epochs": FASHION_MNIST_EPOCHS[alias]}


def recipe_differences(meta: dict | None, alias: str) -> dict[str, tuple[Any, Any]]:
    """The recipe settings a checkpoint's meta does not record: {field: (its value, the recipe's)}."""
    recorded = ((meta or {}).get("training") or {}).get("config") or {}
    return {field: (recorded.get(field), want) for field, want in fashion_mnist_settings(alias).items()
            if recorded.get(field) != want}


def off_recipe_warning(path: Path, meta: dict | None, alias: str) -> str | None:
    """The warning for a cached file trained with settings other than the recipe's, or None."""
    differences = recipe_differences(meta, alias)
    if not differences:
        return None
    return (f"warning: {path} was trained with "
            + ", ".join(f"{field} {had} where the recipe says {want}" for field, (had, want) in differences.items())
            + "; delete it to train it again with the recipe")


def fashion_mnist_checkpoint(alias: str, log: Callable[[str], None] = lambda m: None,
                             progress: bool = True) -> Path:
    """Path of the cached Fashion-MNIST model for `alias`, training it first if it is not cached yet."""
    if alias not in FASHION_MNIST_EPOCHS:
        raise ModelError(f"no Fashion-MNIST recipe for '{alias}'",
                         f"--weights fashion-mnist works with {', '.join(FASHION_MNIST_EPOCHS)}")
    path = cache_dir() / "fashion-mnist" / f"{alias}.pt"
    if path.exists():  # the caller checks its recipe (off_recipe_warning) on the meta it reads anyway
        return path
    shipped = shipped_checkpoint(alias, log)
    if shipped is not None:
        return shipped
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{alias} has not been trained on Fashion-MNIST on this machine yet: training it once "
        f"({FASHION_MNIST_EPOCHS[alias]} epochs), cached at {path}")
    source = open_source(FASHION_MNIST_TRAIN)
    config = TrainConfig(**fashion_mnist_settings(alias))
    train(load_model(alias, weights="random", num_classes=source.num_classes), source, path, config,
          progress=progress, log=log)
    return path


def _load(request: WeightRequest) -> LoadedModel:
    path = fashion_mnist_checkpoint(request.name, log=request.log)

    def warn_off_recipe(meta):
        warning = off_recipe_warning(path, meta, request.name)
        if warning:
            request.log(warning)

    return load_checkpoint_file(request, path, check_meta=warn_off_recipe)


register_weight_source(WeightSource("fashion-mnist", "edgevision's float model for a *_mini alias trained on "
                                    "builtin:fashion-mnist: shipped (convnext_mini), else trained on first use and "
                                    "cached", _load))
