"""Weight sources, registered by name: what `--weights NAME` means.

`pretrained` (timm's weights from the Hugging Face cache) and `random` are registered by models/loading.py;
`fashion-mnist` (edgevision's own float models, trained on first use) by training/fashion_mnist.py, from the
layer that owns the training loop. A new source is one module calling `register_weight_source`.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

from edgevision.errors import ModelError
from edgevision.models.zoo import ModelKwargs


@dataclass(frozen=True)
class WeightRequest:
    """What the user asked for, as `load_model` received it."""

    name: str
    num_classes: int | None = None
    img_size: int | None = None
    model_kwargs: ModelKwargs = field(default_factory=dict)
    log: Callable[[str], None] = lambda message: None
    seed: int | None = None  # fixes a random model's initial weights


@dataclass(frozen=True)
class WeightSource:
    name: str
    help: str
    load: Callable[[WeightRequest], Any]  # -> LoadedModel


WEIGHT_SOURCES: dict[str, WeightSource] = {}


def register_weight_source(source: WeightSource) -> WeightSource:
    WEIGHT_SOURCES[source.name] = source
    return source


def weight_source(name: str) -> WeightSource:
    if name not in WEIGHT_SOURCES:
        raise ModelError(f"unknown --weights '{name}'",
                         f"use {', '.join(sorted(WEIGHT_SOURCES))}, or --checkpoint PATH")
    return WEIGHT_SOURCES[name]


def may_download(timeout: float = 3.0) -> bool:
    """Whether weights missing from the Hugging Face cache may be fetched: HF_HUB_OFFLINE unset and the hub
    reachable within `timeout` (checked first, so that offline fails at once instead of after retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
