"""Runtimes behind one interface, registered by name.

A Runner maps a float32 NCHW batch (numpy) to logits (numpy). Evaluation and benchmarking only talk to
Runners, so PyTorch, OpenVINO, ONNX Runtime and TensorRT are measured the same way. Each backend module
imports its runtime lazily and registers a factory here; asking for a runtime that is not installed
fails with the package to install, never a silent fallback.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from edgevision.errors import EdgevisionError


class Runner(ABC):
    runtime: str = "?"

    @abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x C x H x W -> float32 N x num_classes logits."""

    def info(self) -> dict[str, Any]:
        """Runtime name, version, threads, precision: recorded beside every measurement."""
        return {"runtime": self.runtime}


_FACTORIES: dict[str, Callable[..., Runner]] = {}
# Where each runtime's factory lives; imported on first use so that no runtime loads unasked.
_MODULES = {"pytorch": "edgevision.backends.pytorch", "openvino": "edgevision.backends.openvino",
            "onnxruntime": "edgevision.backends.onnxruntime", "tensorrt": "edgevision.backends.tensorrt"}


def register_runner(name: str):
    def wrap(factory: Callable[..., Runner]):
        _FACTORIES[name] = factory
        return factory
    return wrap


def available_runtimes() -> list[str]:
    return sorted(_MODULES)


def create_runner(runtime: str, artifact: Any, **options: Any) -> Runner:
    if runtime not in _MODULES:
        raise EdgevisionError(f"unknown runtime '{runtime}'", f"choose one of {', '.join(available_runtimes())}")
    if runtime not in _FACTORIES:
        importlib.import_module(_MODULES[runtime])
    return _FACTORIES[runtime](artifact, **options)
