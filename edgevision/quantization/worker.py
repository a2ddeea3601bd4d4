"""Child process for static INT8 Q/DQ quantization, by ONNX Runtime or by NVIDIA Model Optimizer.

Both libraries write scratch files into the working directory, configure the root logger and print progress,
so they run in a child process inside a scratch folder: the caller's working directory, logging and stdout
stay as they were (`--json` keeps stdout for the JSON); onnxruntime.run_quantize_job starts it. It reads
job.json from its working directory: the engine, the float model, the output path, the calibration images
(.npy, N x C x H x W), the calibration method and the node lists (and the ONNX Runtime profile).
"""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np

from edgevision.quantization.engine_names import EDGEVISION_ENGINE, MODELOPT_ENGINE
from edgevision.quantization.onnxruntime import JobOutput, QuantizeJob
from edgevision.typed import from_data


def prepare(src: str, dst: str) -> None:
    """ONNX Runtime's recommended pre-processing (shape inference + graph cleanup) before quantizing.

    Its symbolic shape inference gives up on Swin and MaxViT window reshapes; ONNX's own shape inference
    is enough for quantization there.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, dst)
    except Exception:  # noqa: BLE001 - "Incomplete symbolic shape inference"
        quant_pre_process(src, dst, skip_symbolic_shape=True)


def quantize_onnxruntime(job: QuantizeJob, images: np.ndarray) -> None:
    """Each of job.outputs from one pre-processed copy of the float graph."""
    import onnx

    prepared = str(Path("prepared.onnx").resolve())
    prepare(job.fp32, prepared)
    input_name = onnx.load(prepared, load_external_data=False).graph.input[0].name
    for output in job.outputs:
        _quantize_static(prepared, input_name, job, output, images)


def _quantize_static(prepared: str, input_name: str, job: QuantizeJob, output: JobOutput, images: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, quantize_static

    profile = output.profile

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(images)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {input_name: np.ascontiguousarray(item[None], dtype=np.float32)}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[job.method]
    quantize_static(prepared, output.out, Reader(), calibrate_method=method, nodes_to_quantize=output.nodes,
                    nodes_to_exclude=job.exclude or None, **profile.quantize_kwargs(),
                    **_cached_calibration(job, profile.op_types))


def _cached_calibration(job: QuantizeJob, op_types: tuple[str, ...] | None) -> dict[str, str]:
    """quantize_static's calibration cache for this job's graph and images (ONNX Runtime 1.32 and later):
    written on the first call, read on the next. ONNX Runtime calibrates the tensors of the op types it is asked
    to quantize, so ranges over its default set (every op type it knows) serve any profile, and ranges over a
    profile's own op types serve only that set."""
    from onnxruntime.quantization import quantize_static

    if not job.calibration_cache or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    folder = Path(job.calibration_cache)
    every_type = folder / "all-op-types.json"
    if op_types is None or every_type.exists():
        return {"calibration_cache_path": str(every_type)}
    return {"calibration_cache_path": str(folder / f"{'-'.join(sorted(op_types))}.json")}


def quantize_modelopt(job: QuantizeJob, images: np.ndarray) -> None:
    """Model Optimizer's TensorRT-aware INT8 placement, calibrated on the CPU. The float part stays FP32 in the
    graph (high_precision_dtype): the engine runs it in FP16 through build_engine.sh's flags, as it does for
    edgevision's own graph, and ONNX Runtime can run the graph here to check its accuracy."""
    from modelopt.onnx.quantization import quantize

    [output] = job.outputs
    quantize(job.fp32, quantize_mode="int8", calibration_data=images, calibration_method=job.method,
             calibration_eps=["cpu"], high_precision_dtype="fp32", dq_only=True, nodes_to_exclude=job.exclude or None,
             output_path=output.out, log_level="ERROR")


ENGINES = {EDGEVISION_ENGINE: quantize_onnxruntime, MODELOPT_ENGINE: quantize_modelopt}


def main(job_file: str) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)  # this process's own logging: per-node warnings are noise
    job = from_data(QuantizeJob, json.loads(Path(job_file).read_text(encoding="utf-8")), source=job_file)
    ENGINES[job.engine](job, np.load(job.calibration))


if __name__ == "__main__":
    main(sys.argv[1])
