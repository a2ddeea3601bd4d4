"""NVIDIA Model Optimizer (`nvidia-modelopt`) as a Q/DQ engine for TensorRT: its ONNX INT8 quantization places
Q/DQ the way TensorRT fuses it (attention matmuls quantized for TensorRT's INT8 MHA, LayerNorm, Softmax and
GELU left in float, residual adds quantized where TensorRT fuses the add into the Conv/MatMul before it, Conv
outputs that feed a LayerNorm quantized).
One change: where the INT8 copy of a tensor also reaches an op TensorRT runs in float (on ViT, the residual
stream quantized for the next fused Add also feeds the LayerNorm), that op reads the float tensor again, as
the TensorRT rules check asks.

Optional (`pip install -e ".[jetson]"`): Model Optimizer's own `[onnx]` extra pins onnx and pulls
onnxruntime-gpu, which would replace the CPU onnxruntime, so the jetson extra lists the packages its ONNX
quantization imports instead; calibration runs on ONNX Runtime's CPU provider.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.quantization.engine_names import MODELOPT_ENGINE
from edgevision.quantization.onnxruntime import JobOutput, QuantizeJob, float_fanout, last_line, run_quantize_job
from edgevision.quantization.records import QDQRecord
from edgevision.runtimes.onnxruntime import count_ops
from edgevision.runtimes.tensorrt import float_readers

# the recipe's qdq.calibration_method -> Model Optimizer's name; it has no percentile calibration
CALIBRATION = {"minmax": "max", "entropy": "entropy"}
INSTALL = 'pip install -e ".[jetson]"'


class ModelOptMissing(EdgevisionError):
    """nvidia-modelopt is not installed."""


def modelopt_version() -> str | None:
    try:
        return importlib.metadata.version("nvidia-modelopt")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_modelopt(calibrate_method: str = "minmax") -> str:
    """Model Optimizer's version, or a one-line error naming the install command or the method to use."""
    version = modelopt_version()
    if version is None:
        raise ModelOptMissing("--qdq-engine modelopt needs NVIDIA Model Optimizer, which is not installed",
                              f"{INSTALL}, or use --qdq-engine edgevision")
    if calibrate_method not in CALIBRATION:
        raise EdgevisionError(f"Model Optimizer has no {calibrate_method} calibration",
                              f"set qdq.calibration_method to {' or '.join(CALIBRATION)}")
    return version


def quantize_qdq(fp32_path: Path, out_path: Path, calibration: Sequence[np.ndarray], calibrate_method: str = "minmax",
                 exclude_nodes: Sequence[str] = ()) -> QDQRecord:
    """INT8 Q/DQ ONNX by Model Optimizer (in a child process, quantization/worker.py); returns what was done."""
    import onnx

    version = check_modelopt(calibrate_method)
    job = QuantizeJob(MODELOPT_ENGINE, str(Path(fp32_path).resolve()), CALIBRATION[calibrate_method],
                      list(exclude_nodes), [JobOutput(str(Path(out_path).resolve()))])
    done = run_quantize_job(job, calibration)
    if done.returncode != 0:
        raise EdgevisionError(f"Model Optimizer quantization failed: {last_line(done.stderr)}",
                              "exclude the failing node with qdq.exclude_nodes, or use --qdq-engine edgevision")
    model = onnx.load(str(out_path))
    readers = float_readers(model)
    if readers:  # e.g. a ViT LayerNorm reading the residual stream through the INT8 that feeds the next Add
        float_fanout(model, {n.name for n in model.graph.node} - readers)
        onnx.save(model, str(out_path))
    ops = count_ops(model)
    return QDQRecord("modelopt", "int8", "int8 per-channel", calibrate_method, len(calibration),
                     ops.get("QuantizeLinear", 0), ops.get("DequantizeLinear", 0), "modelopt default",
                     list(exclude_nodes), engine=MODELOPT_ENGINE, modelopt_version=version,
                     float_inputs_restored=sorted(readers))
