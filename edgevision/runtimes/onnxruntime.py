"""ONNX: export from PyTorch, and a CPU runner (with per-layer times from its profiler). Quantizing an ONNX graph
is edgevision/quantization/onnxruntime.py."""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.runtimes import Runner, RunnerInfo, register_runner
from edgevision.runtimes.layers import OTHER, LayerTime, conv_work, matmul_work

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 17


class ExportError(EdgevisionError):
    """A model torch.onnx cannot export; the message names the operator when it can."""


def export_onnx(model, input_size: tuple[int, int, int], path: Path, *, dynamic_batch: bool = False,
                batch: int = 1, opset: int = OPSET) -> Path:
    """torch.nn.Module -> ONNX file. The TorchScript exporter at opset 17 exports all four families with a dynamic
    batch (ONNX Runtime matched torch to ~1e-6); the dynamo exporter failed on ConvNeXt at batch 1."""
    import torch

    example = torch.zeros(batch, *input_size)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow in timm
            torch.onnx.export(model.eval(), example, str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; all mean "cannot export"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.onnx cannot export this model: {first}",
                          "replace that operation in the model, or use --target cpu (OpenVINO)") from None
    return Path(path)


def pin_batch(path: Path, batch: int) -> None:
    """Make the batch axis of a dynamic-batch ONNX static (TensorRT then folds the shape arithmetic)."""
    import onnx

    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, str(path))


def count_ops(model) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


class ORTRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, runtime: str = "onnxruntime"):
        import onnxruntime as ort

        self.ort, self.path, self.threads, self.runtime = ort, Path(path), threads, runtime
        self.session = ort.InferenceSession(str(path), self._options(), providers=["CPUExecutionProvider"])
        self.precision = "int8 (QDQ)" if _has_qdq(path) else "fp32"
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def _options(self):
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Its threads spin within a run but not after it: left spinning, they took the cores from whatever ran
        # next in the process (OpenVINO, PyTorch, another session), which ran 2-3x slower side by side.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        return options

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n, size = len(batch), self.static_batch
        if size is None or size == n:
            return self.session.run(None, {self.input_name: batch})[0]
        # A static-batch model runs in chunks of its batch; the last chunk is padded with zeros.
        outputs = []
        for start in range(0, n, size):
            chunk = batch[start:start + size]
            if len(chunk) < size:
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
            outputs.append(self.session.run(None, {self.input_name: chunk})[0])
        return np.concatenate(outputs)[:n]

    def info(self) -> RunnerInfo:
        return RunnerInfo(self.runtime, self.ort.__version__, "CPU", self.threads or os.cpu_count(), self.precision,
                          self.path.name)

    def layer_times(self, x: np.ndarray, rounds: int = 10) -> list[LayerTime]:
        """Per-node medians from ONNX Runtime's session profiler, in a second session of the same options that
        also writes its optimized graph: the profile names the fused nodes that ran (QLinearConv, QGemm, ...)
        but omits the weights a kernel pre-packed, so each node's weight shape is read from that graph."""
        import onnx

        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.static_batch and len(x) != self.static_batch:
            x = np.resize(x, (self.static_batch, *x.shape[1:]))
        with tempfile.TemporaryDirectory(prefix="edgevision-ort-profile-") as tmp:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "profile")
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = self.ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            session.run(None, {self.input_name: x})  # warm-up, dropped below
            for _ in range(rounds):
                session.run(None, {self.input_name: x})
            events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
            graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        nodes = {node.name: node for node in graph.node}
        constants = {init.name: tuple(init.dims) for init in graph.initializer}
        runs: dict[str, list[dict]] = {}
        for event in events:  # a node's kernel runs are named NODE_kernel_time
            name = event.get("name", "")
            node = name.removesuffix("_kernel_time")
            if event.get("cat") == "Node" and node != name and node in nodes:
                runs.setdefault(node, []).append(event)
        return [_ort_layer(nodes[name], constants, calls[1:] or calls) for name, calls in runs.items()]


# where a convolution's weight is among a node's inputs; matrix multiplies take their activation A first
_CONV_WEIGHT = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3, "NhwcFusedConv": 1}
_MATMULS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "QGemm", "QLinearMatMul", "MatMulInteger",
            "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def _ort_layer(node, constants: dict[str, tuple[int, ...]], calls: list[dict]) -> LayerTime:
    """One profiled node as a LayerTime: its median of `calls` (profiler events, microseconds), its work from the
    shapes it ran (the weight's from the optimized graph), INT8 when it is one of the quantized kernels."""
    args = calls[0]["args"]
    out = next(iter(args["output_type_shape"][0].values()))
    inputs = [next(iter(shape.values())) for shape in args["input_type_shape"]]
    op, kind, macs = node.op_type, OTHER, 0
    if op in _CONV_WEIGHT:
        index = _CONV_WEIGHT[op]
        weight = constants.get(node.input[index]) if index < len(node.input) else None
        if weight is None and len(inputs) == len(node.input):  # a float weight computed in the graph (Q/DQ)
            weight = tuple(inputs[index])
        if weight:
            kind, macs = conv_work(out, weight, 1)
    elif op in _MATMULS and inputs:
        kind, macs = matmul_work(inputs[0], out)
    int8 = op.startswith(("QLinear", "QGemm", "DynamicQuantize")) or "Integer" in op
    ms = float(np.median([event["dur"] for event in calls])) / 1000.0
    return LayerTime(node.name, op, kind, int8, macs, ms)


def _has_qdq(path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


@register_runner("onnxruntime")
def make_ort_runner(model, threads: int | None = None, input_size: tuple[int, int, int] | None = None,
                    **_: Any) -> ORTRunner:
    """An ONNX path, or a torch module (exported at `input_size` with a dynamic batch to a temporary file)."""
    if isinstance(model, (str, Path)):
        return ORTRunner(Path(model), threads=threads)

    if input_size is None:
        raise EdgevisionError("the ONNX Runtime runner needs input_size to export a PyTorch model")
    with tempfile.TemporaryDirectory(prefix="edgevision-onnx-") as tmp:
        path = export_onnx(model, input_size, Path(tmp) / "model.onnx", dynamic_batch=True)
        return ORTRunner(path, threads=threads)  # the session holds the graph; the file can go


@register_runner("tensorrt-sim")
def make_tensorrt_simulation(model, threads: int | None = None, **_: Any) -> ORTRunner:
    """The Q/DQ ONNX a TensorRT engine will be built from, run by ONNX Runtime: its accuracy, not its speed."""
    if not isinstance(model, (str, Path)):
        raise EdgevisionError("the TensorRT simulation runs a Q/DQ ONNX file, not a PyTorch model",
                              "export it with `edgevision export --target jetson` first")
    return ORTRunner(Path(model), threads=threads, runtime="tensorrt-sim")
