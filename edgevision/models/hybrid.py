"""A hybrid student: convolution stages early, attention stages late, registered with timm.

Early, high-resolution stages are ConvNeXt blocks (cheap at many pixels, good local features); late,
low-resolution stages are pre-norm transformer blocks over the few remaining tokens (global context where
attention costs little). The shape follows CoAtNet / EfficientFormer; the blocks are timm's own
(ConvNeXtBlock, vision_transformer.Block), so ONNX export, OpenVINO and NNCF treat them like the models
they come from.

Registered as `hybrid_cnn_vit_mini` (32 px, Fashion-MNIST-sized) and `hybrid_cnn_vit_tiny` (224 px), so
`timm.create_model`, every edgevision command and `--student` take it like any timm model. Attention stages
find positions through a depthwise convolution (conditional position encoding), so the model has no fixed
token count and accepts any input size divisible by its total stride.
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.convnext import ConvNeXtBlock
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["HybridConvAttention"]


class AttentionStage(nn.Module):
    """Transformer blocks over the (H*W) tokens of a feature map, with a depthwise-conv position encoding."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: Sequence[float]):
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.Sequential(*[
            Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path[i]) for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        b, c, h, w = x.shape
        tokens = self.blocks(x.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class HybridConvAttention(nn.Module):
    """Stem -> [downsample -> stage] per entry of `stage_types` ('conv' or 'attn') -> norm, pool, classifier."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 4, 2),
        stage_types: Sequence[str] = ("conv", "conv", "attn", "attn"),
        head_dim: int = 32,
        stem_stride: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        if not (len(dims) == len(depths) == len(stage_types)):
            raise ValueError("dims, depths and stage_types need one entry per stage")
        if any(t not in ("conv", "attn") for t in stage_types):
            raise ValueError("stage_types entries are 'conv' or 'attn'")
        if any(d % head_dim for d, t in zip(dims, stage_types) if t == "attn"):
            raise ValueError(f"attention stage widths must be multiples of head_dim {head_dim}")
        self.num_classes, self.global_pool = num_classes, global_pool
        self.img_size, self.stage_types = img_size, tuple(stage_types)
        self.num_features = self.head_hidden_size = dims[-1]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], stem_stride, stride=stem_stride), LayerNorm2d(dims[0]))
        total = max(1, sum(depths) - 1)
        rates = [drop_path_rate * i / total for i in range(sum(depths))]  # linear, as timm's models
        stages, start, prev = [], 0, dims[0]
        for i, (dim, depth, kind) in enumerate(zip(dims, depths, stage_types)):
            down = nn.Identity() if i == 0 else nn.Sequential(LayerNorm2d(prev), nn.Conv2d(prev, dim, 2, stride=2))
            dpr = rates[start:start + depth]
            if kind == "conv":
                body = nn.Sequential(*[ConvNeXtBlock(dim, drop_path=dpr[j]) for j in range(depth)])
            else:
                body = AttentionStage(dim, depth, dim // head_dim, mlp_ratio, dpr)
            stages.append(nn.Sequential(down, body))
            start, prev = start + depth, dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=d, reduction=stem_stride * 2 ** i, module=f"stages.{i}")
                             for i, d in enumerate(dims)]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean((2, 3)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(size: int, **kwargs):
    return {"num_classes": 1000, "input_size": (3, size, size), "pool_size": None, "crop_pct": 0.875,
            "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
            "first_conv": "stem.0", "classifier": "head", **kwargs}


# No published weights: these are students, trained or distilled by edgevision.
default_cfgs = generate_default_cfgs({
    "hybrid_cnn_vit_mini": _cfg(32, crop_pct=1.0),
    "hybrid_cnn_vit_tiny": _cfg(224),
})


def _create(variant: str, pretrained: bool, **kwargs) -> HybridConvAttention:
    return build_model_with_cfg(HybridConvAttention, variant, pretrained, **kwargs)


@register_model
def hybrid_cnn_vit_mini(pretrained: bool = False, **kwargs) -> HybridConvAttention:
    """32 px: conv 32 (16x16), conv 64 (8x8), attention 128 (4x4 tokens); about 12 MMACs."""
    args = dict(img_size=32, dims=(32, 64, 128), depths=(1, 1, 2), stage_types=("conv", "conv", "attn"),
                head_dim=32, stem_stride=2)
    return _create("hybrid_cnn_vit_mini", pretrained, **{**args, **kwargs})


@register_model
def hybrid_cnn_vit_tiny(pretrained: bool = False, **kwargs) -> HybridConvAttention:
    """224 px: conv 64 (56x56), conv 128 (28x28), attention 256 (14x14), attention 512 (7x7)."""
    args = dict(img_size=224, dims=(64, 128, 256, 512), depths=(2, 2, 4, 2),
                stage_types=("conv", "conv", "attn", "attn"), head_dim=32, stem_stride=4)
    return _create("hybrid_cnn_vit_tiny", pretrained, **{**args, **kwargs})
