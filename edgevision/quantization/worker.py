"""Child process for static INT8 Q/DQ quantization, by ONNX Runtime or by NVIDIA Model Optimizer.

Both libraries write scratch files into the working directory, configure the root logger and print progress,
so they run in a child process inside a scratch folder: the caller's working directory, logging and stdout
stay as they were (`--json` keeps stdout for the JSON). The child is kept while jobs come (quantization/child.py
starts it and sends it jobs one after another), so its imports, about 3 s, are paid once, not once per job.
Each job is a job.json in its own scratch folder: the engine, the float model, the output path, the calibration
images (.npy, N x C x H x W), the calibration method and the node lists (and the ONNX Runtime profile).
`python -m edgevision.quantization.worker job.json` runs one job alone.
"""
from __future__ import annotations

import ctypes
import gc
import inspect
import json
import os
import select
import shutil
import sys
import traceback
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

    prepared = _prepared(job)
    input_name = onnx.load(prepared, load_external_data=False).graph.input[0].name
    for output in job.outputs:
        _quantize_static(prepared, input_name, job, output, images)


def _prepared(job: QuantizeJob) -> str:
    """The pre-processed float graph: from job.prepared_cache when a job before this one wrote it, else written
    there now (into the job's own folder when it has no cache). The cache holds one graph, the last one asked
    for: a run quantizes one float graph, and a sweep's graphs would otherwise pile up on disk."""
    folder = Path(job.prepared_cache or ".").resolve()
    if not (folder / "prepared.done").exists():  # a job stopped half-way leaves no marker: prepared again
        if job.prepared_cache:
            for other in folder.parent.glob("*"):
                shutil.rmtree(other, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        prepare(job.fp32, str(folder / "prepared.onnx"))
        (folder / "prepared.done").touch()
    return str(folder / "prepared.onnx")


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


def run_job(job_file: Path) -> None:
    job = from_data(QuantizeJob, json.loads(job_file.read_text(encoding="utf-8")), source=str(job_file))
    ENGINES[job.engine](job, np.load(job.calibration))


def serve(idle_exit_s: float) -> None:
    """Run jobs until stdin closes or none came for `idle_exit_s` (exit code 0 before reading a job: the parent
    sends it to a new child). Each stdin line is the path of a job.json; each reply, one JSON line on the stdout
    the parent reads, says whether it finished and, if not, the exception. What the libraries print goes to
    stderr instead, and each job runs inside its job's folder (their scratch files land there)."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # one job at a time: the parent waits for each reply, so nothing waits in sys.stdin's buffer unseen by select
    while select.select([sys.stdin], [], [], idle_exit_s)[0]:
        line = sys.stdin.readline()
        if not line:
            return
        job_file = Path(line.strip())
        try:
            os.chdir(job_file.parent)
            run_job(job_file)
            reply = {"returncode": 0, "error": ""}
        except Exception as e:  # noqa: BLE001 - any failure is the job's, told to the parent as its error line
            traceback.print_exc()
            reply = {"returncode": 1, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        finally:
            os.chdir("/")  # the parent removes the job's folder next
            _give_memory_back()
        replies.write(json.dumps(reply) + "\n")


def _give_memory_back() -> None:
    """Between jobs the child waits holding little: the graph copies of the last job freed and handed back to the
    system (glibc keeps freed heap for reuse otherwise; a 224 px ViT-B left 1.7 GB resident)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator keeps what it keeps
        pass


def main(argv: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)  # this process's own logging: per-node warnings are noise
    if argv[0] == "--serve":
        serve(float(argv[1]))
    else:
        os.chdir(Path(argv[0]).resolve().parent)
        run_job(Path(argv[0]).resolve())


if __name__ == "__main__":
    main(sys.argv[1:])
