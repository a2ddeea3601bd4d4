"""Child process for ONNX Runtime's static quantization (see onnxruntime.quantize_qdq for why a child).

Reads job.json from its working directory (a scratch folder): the float model, the output path, the
calibration images (.npy, N x C x H x W), the calibration method, the profile and the node lists.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgevision.runtimes.onnxruntime import QDQProfile


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


def main(job_file: str) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, quantize_static

    logging.basicConfig(level=logging.ERROR)  # this process's own logging: per-node warnings are noise
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    profile = QDQProfile(**{**job["profile"], "op_types": tuple(job["profile"]["op_types"] or ()) or None})
    prepared = str(Path("prepared.onnx").resolve())
    prepare(job["fp32"], prepared)
    images = np.load(job["calibration"])
    input_name = onnx.load(prepared, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(images)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {input_name: np.ascontiguousarray(item[None], dtype=np.float32)}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[job["method"]]
    quantize_static(prepared, job["out"], Reader(), calibrate_method=method, nodes_to_quantize=job["nodes"],
                    nodes_to_exclude=job["exclude"] or None, **profile.quantize_kwargs())


if __name__ == "__main__":
    main(sys.argv[1])
