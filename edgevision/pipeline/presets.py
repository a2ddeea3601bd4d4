"""Per-family INT8 settings for the cpu target (NNCF + OpenVINO), as recipe fragments.

Chosen by measuring, not guessing: benchmarks/int8_presets.py quantized the Fashion-MNIST-trained *_mini
models with seven candidate settings (300 calibration images from the training split) and measured INT8
against the float model on 5,000 test images (benchmarks/results/int8_presets.md). The pick per family is the
highest top-1 agreement with the float model, unless a setting that also met the bar ran faster at 224
(ConvNeXt); every pick is within 0.2 top-1 points of float.

| family   | pick                                  | agreement % | top-1 drop | runner-up (agreement %)           |
|----------|---------------------------------------|-------------|------------|-----------------------------------|
| convnext | performance (NNCF default)            | 99.40       | -0.02      | transformer (99.68, 2.50-3.23x vs 3.00-3.35x) |
| swin     | transformer, SmoothQuant off          | 99.62       | -0.10      | performance (99.52)               |
| vit      | transformer                           | 99.70       | +0.10      | transformer, SmoothQuant off (99.66) |
| maxvit   | transformer, SmoothQuant off          | 99.28       | -0.20      | transformer / mixed+transformer (99.22) |

On random weights the transformer scheme had raised ViT's INT8 logit cosine (0.944 -> 0.999) and lowered
Swin/MaxViT/ConvNeXt's (0.96-0.996); on trained models it raised agreement for all four, but Swin only with
SmoothQuant off (with it, KL rose from 0.0002 to 0.03), and for ConvNeXt it cost speed.
Any other timm model gets NNCF's defaults: nothing was measured for it.
"""
from __future__ import annotations

from typing import Any

from edgevision.models.zoo import OTHER_FAMILY

_NNCF_DEFAULTS = {"preset": "performance", "model_type": None, "smooth_quant_alpha": None}
_TRANSFORMER = {"preset": "performance", "model_type": "transformer", "smooth_quant_alpha": None}
_TRANSFORMER_NO_SMOOTHQUANT = {"preset": "performance", "model_type": "transformer", "smooth_quant_alpha": -1}

FAMILY_PRESETS: dict[str, dict[str, Any]] = {
    "convnext": {"quantization": dict(_NNCF_DEFAULTS)},
    # Swin is pruned in full (stage widths too, ~70% of its MACs at 50%): one recovery epoch left it 2.06
    # points below float after INT8 (benchmarks/results/prune.md), so it gets two (still under 5 minutes).
    "swin": {"quantization": dict(_TRANSFORMER_NO_SMOOTHQUANT), "prune": {"finetune_epochs": 2}},
    "vit": {"quantization": dict(_TRANSFORMER)},
    "maxvit": {"quantization": dict(_TRANSFORMER_NO_SMOOTHQUANT)},
    "hybrid": {"quantization": dict(_NNCF_DEFAULTS)},  # not measured: NNCF's defaults, as for any other model
    OTHER_FAMILY: {"quantization": dict(_NNCF_DEFAULTS)},
}



def preset_for(family: str) -> dict[str, Any]:
    return FAMILY_PRESETS.get(family, FAMILY_PRESETS[OTHER_FAMILY])
