"""Runtimes behind one interface, registered by name: the one place that knows what each runtime is.

A Runner maps a float32 NCHW batch (numpy) to logits (numpy). Evaluation and benchmarking only talk to
Runners, so PyTorch, OpenVINO, ONNX Runtime and TensorRT are measured the same way. Each runtime module
imports its library lazily and registers a factory here; asking for a runtime that is not installed fails
with the package to install, never a silent fallback.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.runtimes.layers import LayerTime
from edgevision.typed import omitted


@dataclass
class RunnerInfo:
    """How a runner runs its model: recorded beside every measurement (a report's `runner`)."""

    runtime: str
    version: str | None = omitted()
    device: str | None = omitted()  # CPU, or the GPU's name
    threads: int | None = omitted()
    precision: str | None = omitted()  # fp32, f32, bf16, ...: what the runtime computes float layers in
    artifact: str | None = omitted()  # the file it runs


class Runner(ABC):
    runtime: str = "?"

    @abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 N x C x H x W -> float32 N x num_classes logits."""

    def info(self) -> RunnerInfo:
        """Runtime name, version, threads, precision: recorded beside every measurement."""
        return RunnerInfo(self.runtime)

    def layer_times(self, x: np.ndarray, rounds: int = 10) -> list[LayerTime]:
        """Each layer's median time over `rounds` calls on `x`, from the runtime's own profiler."""
        raise EdgevisionError(f"{self.runtime} reports no per-layer times here",
                              "profile an OpenVINO (.xml) or ONNX Runtime (.onnx) model, or pass --runtime openvino")


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    module: str  # where the factory lives; imported on first use so that no runtime loads unasked
    suffixes: tuple[str, ...] = ()  # artifact files that run in this runtime
    runs_torch_models: bool = True  # can take a torch.nn.Module (converting or exporting it itself)
    # A simulation runs another device's graph on this CPU: its accuracy means something, its latency nothing.
    simulates: str | None = None
    description: str = ""
    short: str = ""  # for narrow tables and plot labels

    @property
    def timed(self) -> bool:
        return self.simulates is None


RUNTIMES: dict[str, RuntimeInfo] = {r.name: r for r in [
    RuntimeInfo("pytorch", "edgevision.runtimes.pytorch", description="PyTorch eager FP32, the reference", short="PT"),
    RuntimeInfo("openvino", "edgevision.runtimes.openvino", (".xml",), description="OpenVINO on the CPU", short="OV"),
    RuntimeInfo("onnxruntime", "edgevision.runtimes.onnxruntime", (".onnx",),
                description="ONNX Runtime, CPU execution provider", short="ORT"),
    RuntimeInfo("tensorrt", "edgevision.runtimes.tensorrt", (".engine", ".plan"), runs_torch_models=False,
                description="a TensorRT engine on an NVIDIA GPU", short="TRT"),
    RuntimeInfo("tensorrt-sim", "edgevision.runtimes.onnxruntime", runs_torch_models=False, simulates="tensorrt",
                description="the Q/DQ graph TensorRT will build, run by ONNX Runtime on this CPU: accuracy only",
                short="TRT-sim"),
]}
_FACTORIES: dict[str, Callable[..., Runner]] = {}


def register_runner(name: str):
    def wrap(factory: Callable[..., Runner]):
        _FACTORIES[name] = factory
        return factory
    return wrap


def available_runtimes() -> list[str]:
    return sorted(RUNTIMES)


def runtime_info(name: str) -> RuntimeInfo:
    if name not in RUNTIMES:
        raise EdgevisionError(f"unknown runtime '{name}'", f"choose one of {', '.join(available_runtimes())}")
    return RUNTIMES[name]


def runtime_of_artifact(path: str | Path) -> str | None:
    """The runtime an artifact file (model.onnx, model_int8.xml, model.engine) runs in, or None."""
    suffix = Path(path).suffix.lower()
    return next((r.name for r in RUNTIMES.values() if suffix in r.suffixes), None)


def torch_runtimes() -> list[str]:
    """Runtimes that can run a PyTorch model on this machine's CPU (for latency of a torch model)."""
    return [r.name for r in RUNTIMES.values() if r.runs_torch_models]


def create_runner(runtime: str, artifact: Any, **options: Any) -> Runner:
    info = runtime_info(runtime)
    if runtime not in _FACTORIES:
        importlib.import_module(info.module)
    return _FACTORIES[runtime](artifact, **options)
