"""ONNX: export from PyTorch, static INT8 quantization with ONNX Runtime (QDQ), and a CPU runner.

Two Q/DQ profiles, because the two consumers want different things:
- `tensorrt`: symmetric INT8 everywhere (zero point 0), per-channel weight scales, Q/DQ only on the inputs
  of Conv, Gemm and weight MatMuls; LayerNorm, Softmax, GELU, residual adds and the attention matmuls stay
  unquantized, so TensorRT runs them in FP16. ONNX Runtime runs this graph too, which is how its accuracy
  is checked on machines without TensorRT ("simulated").
- `cpu`: ONNX Runtime's own CPU kernels, unsigned activations with signed per-channel weights (signed
  activations made convnext_tiny slower than FP32 on a 2-core AVX-512 Xeon: 62 ms vs 41 ms, unsigned 31 ms).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.runtimes import Runner, register_runner
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


@dataclass
class QDQProfile:
    name: str
    activation_type: str  # "int8" (symmetric, zero point 0) or "uint8" (asymmetric)
    op_types: tuple[str, ...] | None  # None: ONNX Runtime's default set
    weight_matmuls_only: bool  # leave activation x activation MatMuls (attention) in float
    extra_options: dict[str, Any] | None = None
    reduce_range: bool = False  # 7-bit weights: u8 x s8 pairs cannot saturate x86's 16-bit sums without VNNI

    def quantize_kwargs(self) -> dict[str, Any]:
        from onnxruntime.quantization import QuantFormat, QuantType

        symmetric = self.activation_type == "int8"
        return {
            "quant_format": QuantFormat.QDQ,
            "per_channel": True,
            "activation_type": QuantType.QInt8 if symmetric else QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "reduce_range": self.reduce_range,
            "op_types_to_quantize": list(self.op_types) if self.op_types else None,
            "extra_options": {"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                              **(self.extra_options or {})},
        }


PROFILES = {
    # TensorRT: biases stay float (TensorRT has no INT32 dequantize; it fuses the bias itself).
    "tensorrt": QDQProfile("tensorrt", "int8", ("Conv", "Gemm", "MatMul"), weight_matmuls_only=True,
                           extra_options={"QuantizeBias": False}),
    "cpu": QDQProfile("cpu", "uint8", None, weight_matmuls_only=False),
    # x86 without VNNI adds pairs of u8 x s8 products in 16 bits (vpmaddubsw), which saturate; 7-bit weights
    # cannot (ONNX Runtime's quantization docs recommend them there)
    "cpu-rr": QDQProfile("cpu-rr", "uint8", None, weight_matmuls_only=False, reduce_range=True),
    # signed activations: faster GEMMs on some CPUs, but whole models can be slower (unfused s8 operators)
    "cpu-s8s8": QDQProfile("cpu-s8s8", "int8", None, weight_matmuls_only=False),
}
# activations x weights -> profile name; u8s8-rr: u8s8 with 7-bit weights
CPU_FORMATS = {"u8s8": "cpu", "u8s8-rr": "cpu-rr", "s8s8": "cpu-s8s8"}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # the recipe's qdq.calibration_method


def quantize_qdq(fp32_path: Path, out_path: Path, calibration: Sequence[np.ndarray], profile: QDQProfile,
                 calibrate_method: str = "minmax", exclude_nodes: Sequence[str] = ()) -> dict[str, Any]:
    """Static INT8 quantization of an ONNX file with ONNX Runtime; returns what was done, for the report."""
    return quantize_qdq_formats(fp32_path, {out_path: profile}, calibration, calibrate_method, exclude_nodes)[0]


def quantize_qdq_formats(fp32_path: Path, outputs: dict[Path, QDQProfile], calibration: Sequence[np.ndarray],
                         calibrate_method: str = "minmax", exclude_nodes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """quantize_qdq for several profiles of one float graph, in order: one child process pre-processes the graph
    once for all of them (its start, imports and ONNX Runtime's pre-processing took about a third of each).

    ONNX Runtime's tools write scratch files into the working directory (when symbolic shape inference gives
    up) and configure the root logger, so they run in a child process (runtimes/qdq_worker.py).
    """
    import onnx

    fp32_path = Path(fp32_path).resolve()
    graph = onnx.load(str(fp32_path), load_external_data=False)
    outputs = {Path(out).resolve(): profile for out, profile in outputs.items()}
    job = {"engine": "onnxruntime", "fp32": str(fp32_path), "method": calibrate_method, "exclude": list(exclude_nodes),
           "outputs": [{"out": str(out), "nodes": _nodes_to_quantize(graph, profile), "profile": asdict(profile)}
                       for out, profile in outputs.items()]}
    done = run_quantize_job(job, calibration)
    if done.returncode != 0:
        raise EdgevisionError(f"ONNX Runtime quantization failed: {last_line(done.stderr)}",
                              "exclude the failing node with qdq.exclude_nodes, or use --target cpu (OpenVINO)")
    return [_finish_qdq(out, profile, entry["nodes"], calibration, calibrate_method, exclude_nodes)
            for (out, profile), entry in zip(outputs.items(), job["outputs"])]


def _finish_qdq(out_path: Path, profile: QDQProfile, nodes, calibration, calibrate_method: str,
                exclude_nodes: Sequence[str]) -> dict[str, Any]:
    """The TensorRT profile's float fan-out fix, and what was done, for the report."""
    import onnx

    if profile.weight_matmuls_only:
        quantized = onnx.load(str(out_path))
        float_fanout(quantized, set(nodes or ()) - set(exclude_nodes))
        onnx.save(quantized, str(out_path))
    ops = count_ops(onnx.load(str(out_path)))
    return {"profile": profile.name, "activations": profile.activation_type, "weights": "int8 per-channel",
            "calibration_method": calibrate_method, "calibration_images": len(calibration),
            "quantize_linear_ops": ops.get("QuantizeLinear", 0),
            "dequantize_linear_ops": ops.get("DequantizeLinear", 0),
            "quantized_op_types": list(profile.op_types) if profile.op_types else "onnxruntime default",
            "excluded_nodes": list(exclude_nodes)}


def run_quantize_job(job: dict[str, Any], calibration: Sequence[np.ndarray]) -> subprocess.CompletedProcess:
    """Run one job of runtimes/qdq_worker.py in a child process inside a scratch folder: the caller's working
    directory, logging and stdout stay as they were."""
    with tempfile.TemporaryDirectory(prefix="edgevision-qdq-") as scratch:
        job = {**job, "calibration": str(Path(scratch) / "calibration.npy")}
        np.save(job["calibration"], np.concatenate([np.asarray(x, dtype=np.float32) for x in calibration]))
        (Path(scratch) / "job.json").write_text(json.dumps(job), encoding="utf-8")
        return subprocess.run([sys.executable, "-m", "edgevision.runtimes.qdq_worker", "job.json"],
                              cwd=scratch, capture_output=True, text=True)


def last_line(stderr: str) -> str:
    """The last line a failed child wrote (its exception), shortened for a one-line error."""
    return (stderr.strip().splitlines() or ["no output"])[-1][:300]


def _nodes_to_quantize(model, profile: QDQProfile) -> list[str] | None:
    """With weight_matmuls_only: the Conv/Gemm nodes and the MatMuls that have a constant (weight) input."""
    if not profile.weight_matmuls_only:
        return None
    constants = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in profile.op_types
            and (n.op_type != "MatMul" or any(i in constants for i in n.input))]


def float_fanout(model, quantized_nodes: set[str]) -> int:
    """Give the unquantized consumers of a quantized activation the float tensor back.

    ONNX Runtime replaces a tensor by its Q/DQ for every consumer, so a Conv output that feeds both the next
    Conv and a residual Add (or a LayerNorm) reaches the Add/LayerNorm through INT8 too. TensorRT wants Q/DQ
    only on the inputs of the weighted ops; everything else reads the higher-precision tensor.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    rewired = 0
    for node in model.graph.node:
        if node.name in quantized_nodes or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":  # an activation, not a constant weight
                node.input[i] = q.input[0]
                rewired += 1
    # ONNX Runtime also quantizes a Gemm's output; when that is the graph output (the logits), produce the
    # output in float again: the head's result should not be rounded to INT8.
    for out in model.graph.output:
        dq = producers.get(out.name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        source = producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if source is None:
            continue
        tensor = q.input[0]
        for node in model.graph.node:
            if node is not q:
                for i, name in enumerate(node.input):
                    if name == tensor:
                        node.input[i] = out.name
        dq.output[0] = f"{out.name}_unused_dequantized"
        source.output[list(source.output).index(tensor)] = out.name
        rewired += 1
    drop_unused_qdq(model)
    return rewired


def drop_unused_qdq(model) -> None:
    """Remove Q/DQ pairs left without consumers (and their scales), so the graph holds no dead INT8 ops."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


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

    def info(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "version": self.ort.__version__, "device": "CPU",
                "threads": self.threads or os.cpu_count(), "precision": self.precision, "artifact": self.path.name}

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
