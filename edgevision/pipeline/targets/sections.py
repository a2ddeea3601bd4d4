"""Recipe sections of the targets (several read `qdq`; the cpu target and its guard read `quantization`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgevision.pipeline.recipe import RecipeSection
from edgevision.runtimes import onnxruntime as ort_backend
from edgevision.typed import allowed


@dataclass
class QDQSettings:
    """ONNX Runtime static quantization (the cpu target's ONNX Runtime candidates, onnx and jetson)."""

    calibration_method: str = allowed(ort_backend.CALIBRATION_METHODS, "minmax")
    exclude_nodes: list[str] = field(default_factory=list)  # nodes kept in float


QDQ = RecipeSection("qdq", QDQSettings)


@dataclass
class IgnoredScope:
    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)


@dataclass
class NNCFSettings:
    """NNCF's post-training quantization of the OpenVINO candidate (per-family picks: pipeline/presets.py)."""

    preset: Literal["performance", "mixed"] = "performance"
    model_type: Literal["transformer"] | None = None
    smooth_quant_alpha: float | None = None
    bias_correction: Literal["fast", "full", "off"] = "fast"
    ignored_scope: IgnoredScope = field(default_factory=IgnoredScope)


QUANTIZATION = RecipeSection("quantization", NNCFSettings)
