"""Recipe sections that several targets read."""
from __future__ import annotations

from edgevision.pipeline.targets.registry import RecipeSection
from edgevision.runtimes import onnxruntime as ort_backend

# ONNX Runtime static quantization (the cpu target's ONNX Runtime candidate, onnx and jetson)
QDQ = RecipeSection(
    "qdq",
    schema={"calibration_method": ((str,), ort_backend.CALIBRATION_METHODS), "exclude_nodes": ((list,), None)},
    defaults={"calibration_method": "minmax", "exclude_nodes": []},
)
