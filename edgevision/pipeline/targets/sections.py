"""The targets' quantization sections of the recipe: their settings types live with the quantization they
configure (edgevision/quantization/); several targets read `qdq`, the cpu target `quantization`."""
from __future__ import annotations

from edgevision.pipeline.recipe import RecipeSection
from edgevision.quantization.onnxruntime import QDQSettings
from edgevision.quantization.openvino import NNCFSettings

QDQ = RecipeSection("qdq", QDQSettings)
QUANTIZATION = RecipeSection("quantization", NNCFSettings)

__all__ = ["QDQ", "QUANTIZATION", "NNCFSettings", "QDQSettings"]
