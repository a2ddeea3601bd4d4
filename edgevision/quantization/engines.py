"""The Q/DQ engines that write the jetson target's INT8 ONNX: one registry, read by the recipe check, the CLI
help and the TensorRT bundle. Each takes (float ONNX, output path, calibration images, calibration method,
nodes to keep in float) and returns what it did, for the report and the manifest."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.quantization import modelopt as modelopt_qdq
from edgevision.quantization import onnxruntime as ort_qdq
from edgevision.quantization.engine_names import EDGEVISION_ENGINE, MODELOPT_ENGINE
from edgevision.quantization.records import QDQRecord

Quantize = Callable[[Path, Path, Sequence[np.ndarray], str, Sequence[str]], QDQRecord]


@dataclass(frozen=True)
class QDQEngine:
    name: str
    description: str
    quantize: Quantize
    check: Callable[[str], Any]  # raises a one-line error when the engine cannot run with this calibration

    def supports(self, method: str) -> bool:
        """Whether the engine calibrates with `method` (the guard's calibration fixes ask)."""
        try:
            self.check(method)
        except EdgevisionError:
            return False
        return True


def _edgevision(fp32_path, out_path, calibration, method, exclude) -> QDQRecord:
    record = ort_qdq.quantize_qdq(fp32_path, out_path, calibration, ort_qdq.PROFILES["tensorrt"], method, exclude)
    return replace(record, engine=EDGEVISION_ENGINE)


QDQ_ENGINES: dict[str, QDQEngine] = {
    EDGEVISION_ENGINE: QDQEngine(EDGEVISION_ENGINE, "ONNX Runtime's quantize_static with edgevision's TensorRT placement",
                            _edgevision, check=lambda method: None),
    MODELOPT_ENGINE: QDQEngine(MODELOPT_ENGINE, "NVIDIA Model Optimizer's TensorRT-aware INT8 placement (the jetson extra)",
                          modelopt_qdq.quantize_qdq, check=modelopt_qdq.check_modelopt),
}
DEFAULT_QDQ_ENGINE = EDGEVISION_ENGINE
