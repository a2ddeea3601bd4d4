"""Short aliases for timm models, their families, and what is published about them."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache

from edgevision.data.loader import DataConfig
from edgevision.errors import ModelError
from edgevision.typed import JSONObject

# The families, the one table of them: each per-family table (INT8 presets in pipeline/presets.py, pruning
# adapters in compression/prune.py) is keyed by these names. Found by timm name prefix; maxvit before vit: both
# start alike. Everything else is OTHER.
FAMILY_PREFIXES = ("convnext", "swin", "maxvit", "vit", "hybrid")
OTHER_FAMILY = "other"
FAMILIES = (*FAMILY_PREFIXES, OTHER_FAMILY)
ModelKwargs = JSONObject  # timm constructor arguments, as data: a spec records them and rebuilds the model from them


@dataclass(frozen=True)
class ZooEntry:
    alias: str
    timm_name: str
    description: str
    img_size: int | None = None  # None: timm's default input size
    model_kwargs: ModelKwargs = field(default_factory=dict)
    # Preprocessing that differs from timm's default for this architecture.
    data_overrides: DataConfig = field(default_factory=dict)
    # Whether timm's pretrained weights are the alias's default weights (where timm has them); False for a small-
    # input alias whose ImageNet weights at that size are not what it is for.
    pretrained_default: bool = True

    @property
    def family(self) -> str:
        return family_of(self.timm_name)


# The *_mini entries are the same architectures at small widths for 28-32 px inputs: what edgevision
# trains on builtin:fashion-mnist, and what the INT8/pruning/distillation work is measured on.
_MINI_DATA = {"crop_pct": 1.0}
ZOO: dict[str, ZooEntry] = {
    e.alias: e
    for e in [
        ZooEntry("convnext_t", "convnext_tiny", "ConvNeXt-Tiny"),
        ZooEntry("convnext_s", "convnext_small", "ConvNeXt-Small"),
        ZooEntry("convnext_b", "convnext_base", "ConvNeXt-Base"),
        ZooEntry("swin_t", "swin_tiny_patch4_window7_224", "Swin-T, window 7"),
        ZooEntry("swin_s", "swin_small_patch4_window7_224", "Swin-S, window 7"),
        ZooEntry("swin_b", "swin_base_patch4_window7_224", "Swin-B, window 7"),
        ZooEntry("vit_s", "vit_small_patch16_224", "ViT-S/16"),
        ZooEntry("vit_b", "vit_base_patch16_224", "ViT-B/16"),
        ZooEntry("vit_l", "vit_large_patch16_224", "ViT-L/16"),
        ZooEntry("maxvit_t", "maxvit_tiny_tf_224", "MaxViT-T"),
        ZooEntry("hybrid_t", "hybrid_cnn_vit_tiny",
                 "edgevision's hybrid student: ConvNeXt stages at 56/28 px, attention at 14/7 px (no weights)"),
        ZooEntry(
            "convnext_mini", "convnext_tiny", "ConvNeXt, dims 32-256, depths 1-1-3-1, 32px",
            img_size=32, model_kwargs={"depths": [1, 1, 3, 1], "dims": [32, 64, 128, 256]},
            data_overrides=_MINI_DATA,
        ),
        ZooEntry(
            "vit_mini", "vit_small_patch16_224",
            "ViT, dim 96, depth 4, 3 heads, patch 4, average-pooled (no class token), 28px",
            img_size=28,
            model_kwargs={"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3,
                          "global_pool": "avg", "class_token": False},
            data_overrides=_MINI_DATA,
        ),
        ZooEntry(
            "vit_teacher_mini", "vit_small_patch16_224",
            "ViT, dim 192, depth 6, 3 heads, patch 4, average-pooled, 28px: the Fashion-MNIST distillation "
            "teacher (about 6x vit_mini's MACs)",
            img_size=28,
            model_kwargs={"patch_size": 4, "embed_dim": 192, "depth": 6, "num_heads": 3,
                          "global_pool": "avg", "class_token": False},
            data_overrides=_MINI_DATA,
        ),
        ZooEntry(
            "hybrid_mini", "hybrid_cnn_vit_mini",
            "edgevision's hybrid student: conv 32-64 at 16/8 px, attention 128 at 4 px, 32px",
            img_size=32, data_overrides=_MINI_DATA,
        ),
        ZooEntry(
            "swin_mini", "swin_tiny_patch4_window7_224",
            "Swin, dim 32, depths 2-2-2, patch 2, window 4, 32px", img_size=32,
            model_kwargs={"patch_size": 2, "window_size": 4, "embed_dim": 32,
                          "depths": [2, 2, 2], "num_heads": [1, 2, 4]},
            data_overrides=_MINI_DATA,
        ),
        ZooEntry(
            "mobilenetv3_mini", "mobilenetv3_small_050",
            "MobileNetV3-Small 0.5 (depthwise convolutions, hard-swish, SE), 32px, random weights by default: "
            "the kind of CNN that loses the most in INT8", img_size=32, data_overrides=_MINI_DATA,
            pretrained_default=False,
        ),
        ZooEntry(
            "efficientnet_lite_mini", "efficientnet_lite0",
            "EfficientNet-Lite0 (depthwise convolutions, ReLU6, no SE), 32px, random weights by default: the "
            "other kind of depthwise CNN deployed in INT8", img_size=32, data_overrides=_MINI_DATA,
            pretrained_default=False,
        ),
        ZooEntry(
            "maxvit_mini", "maxvit_tiny_tf_224",
            "MaxViT, dims 32-64-128, depths 1-1-1, partition 2, 32px", img_size=32,
            model_kwargs={"embed_dim": [32, 64, 128], "depths": [1, 1, 1], "stem_width": [16, 32],
                          "head_hidden_size": 128, "transformer_dim_head": 16,
                          "transformer_partition_ratio": 16},
            data_overrides=_MINI_DATA,
        ),
    ]
}

# ImageNet-1k top-1 of timm's default pretrained weights, from timm's results/results-imagenet.csv,
# at the resolution timm evaluated them (ConvNeXt at its 288px test size).
PUBLISHED_TOP1: dict[str, tuple[float, int]] = {
    "convnext_tiny.in12k_ft_in1k": (84.450, 288),
    "convnext_small.in12k_ft_in1k": (85.330, 288),
    "convnext_base.fb_in22k_ft_in1k": (86.274, 288),
    "swin_tiny_patch4_window7_224.ms_in1k": (81.376, 224),
    "swin_small_patch4_window7_224.ms_in22k_ft_in1k": (83.298, 224),
    "swin_base_patch4_window7_224.ms_in22k_ft_in1k": (85.272, 224),
    "vit_small_patch16_224.augreg_in21k_ft_in1k": (81.384, 224),
    "vit_base_patch16_224.augreg2_in21k_ft_in1k": (85.096, 224),
    "vit_large_patch16_224.augreg_in21k_ft_in1k": (85.834, 224),
    "maxvit_tiny_tf_224.in1k": (83.402, 224),
}


def timm_with_students():
    """timm, with edgevision's own student architectures (models/hybrid.py) registered in it."""
    import importlib

    import timm

    importlib.import_module("edgevision.models.hybrid")  # registers hybrid_cnn_vit_* with timm
    importlib.import_module("edgevision.models.hf_generic")  # and transformers_image_classifier
    return timm


def family_of(timm_name: str) -> str:
    """The edgevision family of a timm architecture ('other' when no per-family rules apply)."""
    base = timm_name.split(".")[0]
    return next((fam for fam in FAMILY_PREFIXES if base.startswith(fam)), OTHER_FAMILY)


@dataclass(frozen=True)
class ResolvedName:
    """What a user-given model name means: the timm architecture plus edgevision's defaults."""

    name: str  # as the user wrote it
    timm_name: str  # may carry a pretrained tag, e.g. convnext_tiny.fb_in1k
    img_size: int | None
    model_kwargs: ModelKwargs
    data_overrides: DataConfig
    pretrained_default: bool = True

    @property
    def family(self) -> str:
        return family_of(self.timm_name)

    @property
    def architecture(self) -> str:
        return self.timm_name.split(".")[0]


def resolve_name(name: str) -> ResolvedName:
    """Alias or timm name -> ResolvedName; an unknown name fails with the closest matches."""
    timm = timm_with_students()

    if name in ZOO:
        e = ZOO[name]
        return ResolvedName(name, e.timm_name, e.img_size, dict(e.model_kwargs), dict(e.data_overrides),
                            e.pretrained_default)
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        if tag and f"{arch}.{tag}" not in timm.list_pretrained(f"{arch}.*"):
            tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
            fix = f"use one of: {', '.join(tags)}" if tags else f"drop the tag: {arch} has no pretrained weights"
            raise ModelError(f"timm has no pretrained tag '{tag}' for {arch}", fix)
        return ResolvedName(name, name, None, {}, {})
    candidates = list(ZOO) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `edgevision models` for aliases"
    raise ModelError(f"unknown model '{name}'", f"{hint} (any timm model name also works)")


@lru_cache(maxsize=None)
def accepts_img_size(architecture: str) -> bool:
    """Some timm families (ViT, Swin, MaxViT) fix their input size at construction; CNNs do not."""
    import torch

    timm = timm_with_students()
    try:
        with torch.device("meta"):
            timm.create_model(architecture, pretrained=False, img_size=224)
        return True
    except TypeError:
        return False


def default_pretrained_tag(timm_name: str) -> str | None:
    """The tagged name timm loads for pretrained=True, e.g. convnext_tiny.in12k_ft_in1k."""
    from timm.models import get_pretrained_cfg

    if "." in timm_name:
        return timm_name
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    return f"{timm_name}.{cfg.tag}" if cfg.tag else timm_name


def count_gmacs(model, input_size: tuple[int, int, int]) -> float:
    """Multiply-accumulates (in billions) of one forward pass at batch 1, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9


@dataclass(frozen=True)
class ZooRow:
    """An alias as `edgevision models` lists it."""

    alias: str
    timm_name: str
    family: str
    description: str
    img_size: int  # the default input size
    params_m: float
    gmacs: float  # at img_size
    pretrained_tag: str | None  # timm's default pretrained weights (None: random by default, or a changed model)
    imagenet_top1: float | None  # timm's published ImageNet-1k top-1 for those weights
    imagenet_top1_res: int | None  # ... at this resolution


@lru_cache(maxsize=1)
def zoo_table() -> tuple[ZooRow, ...]:
    """One row per alias: timm name, params and GMACs at the default input size, published top-1.

    Models are built on the meta device, so even ViT-L costs no memory or init time; counting their GMACs still
    takes seconds, so a process counts them once."""
    timm = timm_with_students()
    import torch

    rows = []
    for alias, e in ZOO.items():
        kwargs = dict(e.model_kwargs)
        if e.img_size is not None and accepts_img_size(e.timm_name.split(".")[0]):
            kwargs["img_size"] = e.img_size
        with torch.device("meta"):
            model = timm.create_model(e.timm_name, pretrained=False, **kwargs)
        size = e.img_size or model.pretrained_cfg["input_size"][-1]
        tag = None if e.model_kwargs or not e.pretrained_default else default_pretrained_tag(e.timm_name)
        top1, top1_res = PUBLISHED_TOP1.get(tag or "", (None, None))
        rows.append(ZooRow(alias, e.timm_name, e.family, e.description, size,
                           round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                           round(count_gmacs(model, (3, size, size)), 3), tag, top1, top1_res))
    return tuple(rows)
