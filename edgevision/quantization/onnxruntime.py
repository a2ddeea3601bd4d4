"""Static INT8 Q/DQ quantization of an ONNX graph with ONNX Runtime's tools, in a child process.

Two kinds of profile, because the consumers want different things:
- `tensorrt`: symmetric INT8 everywhere (zero point 0), per-channel weight scales, Q/DQ only on the inputs
  of Conv, Gemm and weight MatMuls; LayerNorm, Softmax, GELU, residual adds and the attention matmuls stay
  unquantized, so TensorRT runs them in FP16. ONNX Runtime runs this graph too, which is how its accuracy
  is checked on machines without TensorRT ("simulated").
- `cpu` (and its formats): ONNX Runtime's own CPU kernels, unsigned activations with signed per-channel weights
  (signed activations made convnext_tiny slower than FP32 on a 2-core AVX-512 Xeon: 62 ms vs 41 ms, unsigned
  31 ms).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.quantization.child import process_scratch, quantize_child
from edgevision.quantization.engine_names import EDGEVISION_ENGINE
from edgevision.quantization.records import QDQRecord
from edgevision.runtimes.onnxruntime import count_ops
from edgevision.runtimes.ort_fusions import drop_unused_qdq
from edgevision.typed import allowed, to_data


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


COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
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
    # the latency-aware placement's start (quantization/placement.py): the compute layers alone, MatMul/Gemm
    # outputs in float (MatMulIntegerToFloat), the rest a float graph that keeps its fusions
    "cpu-compute": QDQProfile("cpu-compute", "uint8", COMPUTE_OPS, weight_matmuls_only=False,
                              extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]}),
    "cpu-compute-rr": QDQProfile("cpu-compute-rr", "uint8", COMPUTE_OPS, weight_matmuls_only=False,
                                 extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
                                 reduce_range=True),
}
# activations x weights -> profile name; u8s8-rr: u8s8 with 7-bit weights
CPU_FORMATS = {"u8s8": "cpu", "u8s8-rr": "cpu-rr", "s8s8": "cpu-s8s8"}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # the recipe's qdq.calibration_method


@dataclass
class QDQSettings:
    """The recipe's `qdq` section: how a float ONNX graph is calibrated (every Q/DQ path: the cpu target's ONNX
    Runtime candidates, onnx, jetson with either engine)."""

    calibration_method: str = allowed(CALIBRATION_METHODS, "minmax")
    exclude_nodes: list[str] = field(default_factory=list)  # nodes kept in float


@dataclass
class JobOutput:
    out: str  # the Q/DQ graph to write
    nodes: list[str] | None = None  # the nodes to quantize (None: every node of the profile's op types)
    profile: QDQProfile | None = None  # ONNX Runtime's (Model Optimizer has its own placement)


@dataclass
class QuantizeJob:
    """What quantization/worker.py is asked to do, as its job.json."""

    engine: str  # engine_names: EDGEVISION_ENGINE (ONNX Runtime) or MODELOPT_ENGINE
    fp32: str
    method: str  # the calibration method, as the engine names it
    exclude: list[str]
    outputs: list[JobOutput]
    calibration: str = ""  # the .npy of calibration images (N x C x H x W), set by run_quantize_job
    # a folder of calibration ranges of this float graph on these images (calibration_folder), set by
    # run_quantize_job: every format, placement and guard step of a run calibrates the graph once
    calibration_cache: str = ""
    # where the pre-processed float graph is kept (prepared_folder), set by run_quantize_job: the jobs on one
    # float graph pre-process it once
    prepared_cache: str = ""


def quantize_qdq(fp32_path: Path, out_path: Path, calibration: Sequence[np.ndarray], profile: QDQProfile,
                 calibrate_method: str = "minmax", exclude_nodes: Sequence[str] = (),
                 ranges_of: Path | None = None) -> QDQRecord:
    """Static INT8 quantization of an ONNX file with ONNX Runtime; returns what was done, for the report."""
    return quantize_qdq_formats(fp32_path, {out_path: profile}, calibration, calibrate_method, exclude_nodes,
                                ranges_of)[0]


def quantize_qdq_formats(fp32_path: Path, outputs: dict[Path, QDQProfile], calibration: Sequence[np.ndarray],
                         calibrate_method: str = "minmax", exclude_nodes: Sequence[str] = (),
                         ranges_of: Path | None = None) -> list[QDQRecord]:
    """quantize_qdq for several profiles of one float graph, in order: one child process pre-processes the graph
    once for all of them (its start, imports and ONNX Runtime's pre-processing took about a third of each).
    `ranges_of`: the float graph this one was fused from (runtimes/ort_fusions.fuse_attention), whose calibration
    ranges on the same images serve it where this process has them (seed_calibration).

    ONNX Runtime's tools write scratch files into the working directory (when symbolic shape inference gives
    up) and configure the root logger, so they run in a child process (quantization/worker.py).
    """
    import onnx

    fp32_path = Path(fp32_path).resolve()
    graph = onnx.load(str(fp32_path), load_external_data=False)
    outputs = {Path(out).resolve(): profile for out, profile in outputs.items()}
    job = QuantizeJob(EDGEVISION_ENGINE, str(fp32_path), calibrate_method, list(exclude_nodes),
                      [JobOutput(str(out), _nodes_to_quantize(graph, profile), profile)
                       for out, profile in outputs.items()])
    done = run_quantize_job(job, calibration, ranges_of)
    if done.returncode != 0:
        raise EdgevisionError(f"ONNX Runtime quantization failed: {last_line(done.stderr)}",
                              "exclude the failing node with qdq.exclude_nodes, or use --target cpu (OpenVINO)")
    return [_finish_qdq(out, profile, entry.nodes, calibration, calibrate_method, exclude_nodes)
            for (out, profile), entry in zip(outputs.items(), job.outputs)]


def _finish_qdq(out_path: Path, profile: QDQProfile, nodes, calibration, calibrate_method: str,
                exclude_nodes: Sequence[str]) -> QDQRecord:
    """The TensorRT profile's float fan-out fix, and what was done, for the report."""
    import onnx

    if profile.weight_matmuls_only:
        quantized = onnx.load(str(out_path))
        float_fanout(quantized, set(nodes or ()) - set(exclude_nodes))
        onnx.save(quantized, str(out_path))
    ops = count_ops(onnx.load(str(out_path)))
    return QDQRecord(profile.name, profile.activation_type, "int8 per-channel", calibrate_method, len(calibration),
                     ops.get("QuantizeLinear", 0), ops.get("DequantizeLinear", 0),
                     list(profile.op_types) if profile.op_types else "onnxruntime default", list(exclude_nodes))


def run_quantize_job(job: QuantizeJob, calibration: Sequence[np.ndarray],
                     ranges_of: Path | None = None) -> subprocess.CompletedProcess:
    """Run one job of quantization/worker.py in this process's quantization child (quantization/child.py),
    inside a scratch folder: the caller's working directory, logging and stdout stay as they were."""
    images = np.concatenate([np.asarray(x, dtype=np.float32) for x in calibration])
    cache = calibration_folder(Path(job.fp32), images, job.method)
    if ranges_of is not None:
        seed_calibration(cache, calibration_folder(ranges_of, images, job.method))
    with tempfile.TemporaryDirectory(prefix="edgevision-qdq-") as scratch:
        job = replace(job, calibration=str(Path(scratch) / "calibration.npy"), calibration_cache=str(cache),
                      prepared_cache=str(prepared_folder(Path(job.fp32))))
        np.save(job.calibration, images)
        (Path(scratch) / "job.json").write_text(json.dumps(to_data(job)), encoding="utf-8")
        return quantize_child(job.engine).run(Path(scratch) / "job.json")


def calibration_folder(fp32_path: Path, images: np.ndarray, method: str) -> Path:
    """Where the calibration ranges of this float graph (path, size and time written) on these images by
    `method` are kept for the rest of this process. Ranges are per tensor and do not depend on the format,
    the nodes left out or 7-bit weights, so each guard step and candidate after the first skips calibration
    (a calibration pass over 64 images at 224 px was most of a quantization)."""
    key = _graph_key(fp32_path)
    key.update(f"|{method}|".encode())
    key.update(np.ascontiguousarray(images).tobytes())
    return process_scratch() / "calibration" / key.hexdigest()[:16]


def seed_calibration(cache: Path, source: Path) -> None:
    """A graph fused from another (runtimes/ort_fusions.fuse_attention) keeps its source's tensors by name, with
    the same values (the Split it adds gives q, k and v its input's scale): the source's ranges (`source`, its
    calibration folder) become the fused graph's (`cache`) when that has none yet, and its calibration pass is
    skipped (ViT-B's fused graph on an AVX2 CPU: 26.5 s to quantize on 32 images with its own calibration, 11.6 s
    with the exported graph's; on 64, 32.0 and 12.2 s; the scales the same to 5e-7 of their value). Later
    calibrations of the fused graph are written to its own folder only."""
    if source != cache and source.is_dir() and not cache.exists():
        shutil.copytree(source, cache)


def prepared_folder(fp32_path: Path) -> Path:
    """Where ONNX Runtime's pre-processing of this float graph (path, size and time written) is kept in this
    process until another graph is pre-processed: it does not depend on the profile, the nodes left out or the
    images, so every job after the first on this graph skips it (6 s of each job for a 224 px ViT-B)."""
    return process_scratch() / "prepared" / _graph_key(fp32_path).hexdigest()[:16]


def _graph_key(fp32_path: Path):
    """A hash that changes when the file at `fp32_path` is written again."""
    stat = Path(fp32_path).stat()
    return hashlib.sha256(f"{Path(fp32_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())


def last_line(stderr: str) -> str:
    """The last line of a failed job's error (its exception), shortened for a one-line error."""
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
