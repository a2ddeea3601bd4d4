"""OpenVINO: conversion from PyTorch and a CPU runner (NNCF quantization is edgevision/quantization/openvino.py).

Facts this module relies on (measured with benchmarks/int8_speed.py on the project's CPUs): a static input
shape ran ~20% faster than a dynamic one. OpenVINO's default inference precision is bf16 wherever the CPU has
it natively, and whether that pays depends on the CPU: on one Xeon with AVX512-BF16 it ran 1.3-2x slower than
f32, on a Zen 4 EPYC (AVX512-BF16) and an AMX Xeon faster. So the runner asks for f32 unless told otherwise,
and the cpu target times INT8 with bf16 for its float layers as a candidate of its own where the CPU has bf16
(`native_bf16`); INT8 layers run in INT8 either way.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.runtimes import Runner, RunnerInfo, register_runner
from edgevision.runtimes.layers import ATTENTION, OTHER, LayerTime, attention_work, conv_work, matmul_work

if TYPE_CHECKING:
    from openvino import Node  # openvino loads when a runner is made


class ConversionError(EdgevisionError):
    """A model OpenVINO cannot convert; the message names the operator."""


def convert(model, input_size: tuple[int, int, int], batch: int = 1):
    """torch.nn.Module -> ov.Model with a static input shape (batch, C, H, W)."""
    import openvino as ov
    import torch

    example = torch.zeros(batch, *input_size)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # OpenVINO's PyTorch frontend traces with torch.jit, which torch marks deprecated, and which warns about
            # timm's shape-dependent Python branches (constant at this static shape; the run's evaluation checks
            # the converted model against PyTorch): neither is the user's to act on
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            return ov.convert_model(model.eval(), example_input=example, input=[(batch, *input_size)])
    except Exception as e:  # noqa: BLE001 - OpenVINO raises several types; all mean "cannot convert"
        text = str(e)
        ops = sorted(set(re.findall(r"aten::[A-Za-z0-9_.]+", text)))
        what = f"operator {', '.join(ops)}" if ops else text.strip().splitlines()[-1][:200]
        raise ConversionError(f"OpenVINO cannot convert this model: {what}",
                              "replace that operation in the model, or choose another model") from None


def reshape(ov_model, batch: int):
    """A copy of a static-shape model for another batch size (evaluation runs batches, latency batch 1)."""
    model = ov_model.clone()
    shape = list(_shape(model.input(0)))
    shape[0] = batch
    model.reshape({model.input(0): shape})
    return model


def save(ov_model, path: Path) -> list[Path]:
    """Write IR (.xml + .bin) without fp16 weight compression; returns the files written."""
    import openvino as ov

    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return [path, path.with_suffix(".bin")]


def load(path: Path):
    import openvino as ov

    return ov.Core().read_model(str(path))


def count_ops(ov_model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ov_model.get_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively here (AVX512-BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINORunner(Runner):
    runtime = "openvino"

    def __init__(self, model, threads: int | None = None, precision: str = "f32"):
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        self.model = load(Path(model)) if isinstance(model, (str, Path)) else model
        self.config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = str(threads)
        self.threads, self.precision = threads, precision
        self._compiled: tuple[int, Any] | None = None  # (batch, compiled model): one at a time, see compiled()
        self._batch_one_only = False

    def compiled(self, batch: int = 1):
        """The model compiled for this batch size (static shapes run faster than dynamic ones).

        Only one compiled model is kept: executors of other batch sizes left alive in the process
        slowed batch-1 latency by up to 45% (measured: convnext_t INT8 29.6 vs 20.1 ms in benchmark_app).
        """
        if self._compiled is None or self._compiled[0] != batch:
            self._compiled = None  # release the old executor before compiling the new one
            self._compiled = (batch, self.core.compile_model(self._model_for(batch), "CPU", self.config))
        return self._compiled[1]

    def _model_for(self, batch: int):
        """The model, reshaped when its static batch is another."""
        if _shape(self.model.input(0))[0] == batch:
            return self.model
        return reshape(self.model, batch)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) > 1 and not self._batch_one_only:
            try:
                return np.asarray(self.compiled(len(batch))(batch)[0])
            except RuntimeError:
                # Some traced graphs (timm's Swin window partitioning) bake batch 1 into Reshape
                # constants and cannot be reshaped: run them one image at a time instead.
                self._batch_one_only = True
        compiled = self.compiled(1)
        return np.concatenate([np.asarray(compiled(batch[i:i + 1])[0]) for i in range(len(batch))])

    def int8_layers(self) -> int:
        """Layers the CPU plugin actually executes in INT8 (its runtime graph, not the IR)."""
        return sum(_runs_int8(op) for op in self.compiled(1).get_runtime_model().get_ops())

    def layer_times(self, x: np.ndarray, rounds: int = 10) -> list[LayerTime]:
        """Per-layer medians from the CPU plugin's performance counters (PERF_COUNT), with each layer's shapes
        read from the runtime graph: the layers as the plugin fused and ran them, in their kernels' precision."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._compiled = None  # one executor at a time (see compiled())
        try:
            model = self._model_for(len(x))
        except RuntimeError:  # batch 1 baked into the graph, as in __call__
            raise EdgevisionError(f"this model runs only at batch 1 in OpenVINO, not {len(x)}",
                                  "profile its layers at batch 1") from None
        compiled = self.core.compile_model(model, "CPU", {**self.config, "PERF_COUNT": True})
        nodes = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}
        source = {op.get_friendly_name(): op for op in model.get_ops()}
        request = compiled.create_infer_request()
        request.infer([x])  # warm-up: first calls pay for allocation
        times: dict[str, list[float]] = {}
        kernels: dict[str, tuple[str, str]] = {}
        for _ in range(rounds):
            request.infer([x])
            for record in request.get_profiling_info():
                if record.status == record.Status.EXECUTED and record.node_name in nodes:
                    times.setdefault(record.node_name, []).append(record.real_time.total_seconds() * 1e3)
                    kernels[record.node_name] = (record.node_type, record.exec_type)
        return [_ov_layer(nodes[name], *kernels[name], float(np.median(ms)), source) for name, ms in times.items()]

    def info(self) -> RunnerInfo:
        return RunnerInfo(self.runtime, self.ov.get_version(), "CPU", self.threads, self.precision)


def _runs_int8(node) -> bool:
    """Whether a runtime-graph node executes in INT8."""
    info = node.get_rt_info()
    return "runtimePrecision" in info and info["runtimePrecision"].astype(str).lower() in ("i8", "u8")


def _ov_layer(node, layer_type: str, kernel: str, ms: float, source: dict[str, Node]) -> LayerTime:
    """One runtime-graph node as a LayerTime. The plugin names its layer types (Convolution, GroupConvolution
    with G x O/g x I/g x kH x kW weights, FullyConnected and its quantized variants, MatMul); any other layer
    that holds matrix multiplies of the `source` model (attention fused into a Subgraph) is attention."""
    shapes = [_shape(i) for i in node.inputs()]
    out = _shape(node.output(0))
    kind, macs = OTHER, 0
    if layer_type == "Convolution":
        kind, macs = conv_work(out, shapes[1], 1)
    elif layer_type == "GroupConvolution":
        kind, macs = conv_work(out, shapes[1], 2)
    elif layer_type.startswith("FullyConnected") or layer_type == "MatMul":
        kind, macs = matmul_work(shapes[0], out)
    else:
        info = node.get_rt_info()
        originals = info["originalLayersNames"].astype(str).split(",") if "originalLayersNames" in info else []
        macs = sum(_matmul_macs(source[name]) for name in originals if name in source)
        kind = ATTENTION if macs else OTHER
    return LayerTime(node.get_friendly_name(), f"{layer_type}:{kernel}", kind, _runs_int8(node), macs, ms)


def _shape(port) -> tuple[int, ...]:
    return tuple(port.get_partial_shape().to_shape())


def _matmul_macs(op) -> int:
    """MACs of a source-model op the plugin fused away: a MatMul or a ScaledDotProductAttention; else 0.
    (Ops the plugin's own passes created are not in the source model and are not counted.)"""
    if op.get_type_name() == "MatMul":
        return matmul_work(_shape(op.input(0)), _shape(op.output(0)))[1]
    if op.get_type_name() == "ScaledDotProductAttention":
        return attention_work(*(_shape(op.input(i)) for i in range(3)))
    return 0


@register_runner("openvino")
def make_openvino_runner(model, threads: int | None = None, precision: str = "f32",
                         input_size: tuple[int, int, int] | None = None, **_: Any) -> OpenVINORunner:
    """An IR path, an ov.Model, or a torch module (converted at `input_size`)."""
    if not isinstance(model, (str, Path)) and not hasattr(model, "input"):
        if input_size is None:
            raise EdgevisionError("the OpenVINO runner needs input_size to convert a PyTorch model")
        model = convert(model, input_size)
    return OpenVINORunner(model, threads=threads, precision=precision)
