"""A Transformers image classifier timm has no equivalent of (ResNet, DeiT, BEiT, ...), registered with timm
as `transformers_image_classifier` so that it loads, trains, compresses, exports and reloads like any timm
model: its constructor argument `transformers_config` is the Transformers config as data (JSON), from which
`AutoModelForImageClassification.from_config` builds it. Pruning has no rules for it (family 'other').
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from edgevision.errors import ModelError
from edgevision.models.hf import label_count, require_transformers, side


class TransformersClassifier(nn.Module):
    """Pixels (N, C, H, W) in, logits out, with timm's classifier interface."""

    def __init__(self, transformers_config: dict[str, Any], num_classes: int | None = None, in_chans: int = 3,
                 **_: Any):
        super().__init__()
        transformers = require_transformers()
        config = dict(transformers_config)
        labels = label_count(config)
        if num_classes is not None and num_classes != labels:
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_classes)}
            config.pop("label2id", None)
        built = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
        self.net = transformers.AutoModelForImageClassification.from_config(built)
        self.num_classes, self.in_chans = built.num_labels, in_chans
        size = side(getattr(built, "image_size", 224))
        self.pretrained_cfg = {"input_size": (in_chans, size, size), "classifier": "net.classifier",
                               "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits

    def get_classifier(self) -> nn.Module:
        return self.net.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new last Linear layer of the classifier (a Linear, or a Sequential ending in one)."""
        head = self.net.classifier
        parent, name = (head, str(len(head) - 1)) if isinstance(head, nn.Sequential) else (self.net, "classifier")
        last = getattr(parent, name)
        if not isinstance(last, nn.Linear):
            raise ModelError(f"{type(self.net).__name__}'s classifier is not a linear layer",
                             "keep the checkpoint's classes (drop --num-classes)")
        setattr(parent, name, nn.Linear(last.in_features, num_classes))
        self.num_classes = num_classes


@register_model
def transformers_image_classifier(pretrained: bool = False, **kwargs: Any) -> TransformersClassifier:
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg")}
    return TransformersClassifier(**kwargs)
