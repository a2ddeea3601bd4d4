"""Hugging Face Transformers image classifiers as a model source: `hf:ORG/NAME` (the Hugging Face cache,
offline first) or a folder written by `save_pretrained` given as `--checkpoint DIR`.

Where timm has the same architecture (ViT, ConvNeXt), the weights are converted into it, so that pruning, the
family presets and every target apply, and the converted model's logits are checked against the original's
on a random batch before anything else runs. Preprocessing comes from the checkpoint's image-processor config
(preprocessor_config.json), expressed as timm's data config, so float and compressed models see the same
tensors. `transformers` is an optional extra (`pip install -e ".[hf]"`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgevision.errors import ModelError
from edgevision.models.weights import may_download

HF_PREFIX = "hf:"
LOGITS_ATOL = 1e-4  # converted vs original logits, on a random batch
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's codes in preprocessor_config.json
_LAYER = r"vit\.(?:encoder\.layer|layers)\.(\d+)\."  # transformers 4 and 5 name ViT's blocks differently


@dataclass(frozen=True)
class Conversion:
    """How one Transformers model type becomes a timm model: its architecture, constructor arguments from the
    config, and the weight names."""

    timm_name: str
    kwargs: Callable[[dict], dict]
    rename: Callable[[dict], dict]


def is_hf_folder(path: Path) -> bool:
    """A `save_pretrained` folder: config.json beside the weights."""
    return path.is_dir() and (path / "config.json").is_file()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ModelError("Hugging Face Transformers models need the transformers package",
                         "pip install -e \".[hf]\" (or pip install transformers)") from None
    return transformers


def open_hf(source: str) -> tuple[Any, dict, dict]:
    """(the Transformers model in eval mode, its config as a dict, its preprocessor config) from a folder or
    a hub id in the local cache (downloaded only when the hub is reachable and HF_HUB_OFFLINE is unset)."""
    transformers = _transformers()
    local = Path(source).is_dir()
    cached_only = local or _cached(source) or not may_download()
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(source, local_files_only=cached_only)
    except OSError as e:
        if cached_only:
            raise ModelError(f"cannot read the Transformers model {source}: {str(e).splitlines()[0]}",
                             "pass a save_pretrained folder, or run once online to cache hf:ORG/NAME") from None
        raise ModelError(f"hf:{source} is not in the local cache and could not be downloaded",
                         "run once online to cache it, or pass a save_pretrained folder") from None
    except ValueError as e:
        raise ModelError(f"{source} is not an image classifier Transformers can load: {str(e).splitlines()[0]}",
                         "pass an *ForImageClassification checkpoint") from None
    return model.eval(), model.config.to_dict(), _preprocessor_config(source, local)


def _cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


def _preprocessor_config(source: str, local: bool) -> dict:
    if local:
        path = Path(source) / "preprocessor_config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "preprocessor_config.json")
        path = Path(cached) if isinstance(cached, str) else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def data_config(processor: dict, config: dict) -> dict[str, Any]:
    """timm's data config for what the image processor does: a fixed (height, width) resize is timm's
    'squash'; a shortest-edge resize then a centre crop is timm's centre crop at crop_pct."""
    size = processor.get("size") or {"height": config.get("image_size", 224), "width": config.get("image_size", 224)}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    mean = processor.get("image_mean", [0.5, 0.5, 0.5]) if processor.get("do_normalize", True) else [0, 0, 0]
    std = processor.get("image_std", [0.5, 0.5, 0.5]) if processor.get("do_normalize", True) else [1, 1, 1]
    out = {"mean": list(mean), "std": list(std), "interpolation": _RESAMPLE.get(processor.get("resample", 2), "bilinear")}
    if "height" in size:
        return {**out, "input_size": [3, size["height"], size["width"]], "crop_pct": 1.0, "crop_mode": "squash"}
    edge = size["shortest_edge"]
    crop = processor.get("crop_size") or {}
    if processor.get("crop_pct") is not None and edge < 384:  # ConvNeXt's processor: resize to edge/crop_pct, crop
        return {**out, "input_size": [3, edge, edge], "crop_pct": processor["crop_pct"], "crop_mode": "center"}
    if crop and processor.get("do_center_crop", True):
        side = crop.get("height", edge)
        return {**out, "input_size": [3, side, side], "crop_pct": side / edge, "crop_mode": "center"}
    return {**out, "input_size": [3, edge, edge], "crop_pct": 1.0, "crop_mode": "squash"}


def classes(config: dict) -> list[str] | None:
    """The class names, unless they are Transformers' placeholders (LABEL_0, ...)."""
    labels = config.get("id2label") or {}
    names = [labels.get(i, labels.get(str(i))) for i in range(len(labels))]
    return None if not names or all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names) else names


def conversion(model_type: str) -> Conversion:
    if model_type not in CONVERSIONS:
        raise ModelError(f"Transformers model type '{model_type}' has no timm conversion in edgevision",
                         f"use a {' or '.join(sorted(CONVERSIONS))} checkpoint, or a timm model")
    return CONVERSIONS[model_type]


def convert_state(state: dict, rules: list[tuple[str, str]]) -> dict:
    """Rename every tensor by the first rule that matches it; a name no rule knows is an error."""
    out = {}
    for name, tensor in state.items():
        new = next((re.sub(pattern, to, name) for pattern, to in rules if re.fullmatch(pattern, name)), None)
        if new is None:
            raise ModelError(f"the Transformers weight {name} has no place in the timm model",
                             "this variant of the architecture is not convertible; use a timm model")
        out[new] = tensor
    return out


def _vit_kwargs(c: dict) -> dict:
    return {"patch_size": c["patch_size"], "embed_dim": c["hidden_size"], "depth": c["num_hidden_layers"],
            "num_heads": c["num_attention_heads"], "mlp_ratio": c["intermediate_size"] / c["hidden_size"],
            "qkv_bias": c.get("qkv_bias", True), "in_chans": c.get("num_channels", 3),
            "layer_norm_eps": c.get("layer_norm_eps", 1e-12)}


_VIT_RULES = [
    (r"vit\.embeddings\.cls_token", "cls_token"),
    (r"vit\.embeddings\.position_embeddings", "pos_embed"),
    (r"vit\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (_LAYER + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_LAYER + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_LAYER + r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)",
     r"blocks.\1.attn.\2.\3"),
    (_LAYER + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"vit\.layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]


def _vit_rename(state: dict) -> dict:
    """Transformers' separate query/key/value projections become timm's one qkv projection."""
    import torch

    named = convert_state(state, _VIT_RULES)
    out = {k: v for k, v in named.items() if not re.search(r"\.attn\.(query|key|value|[qkv]_proj)\.", k)}
    blocks = {int(m.group(1)) for k in named if (m := re.match(r"blocks\.(\d+)\.attn\.(query|q_proj)\.", k))}
    for i in sorted(blocks):
        for part in ("weight", "bias"):
            names = [f"blocks.{i}.attn.{a}.{part}" for a in ("query", "key", "value")]
            if names[0] not in named:
                names = [f"blocks.{i}.attn.{a}_proj.{part}" for a in "qkv"]
            if all(n in named for n in names):
                out[f"blocks.{i}.attn.qkv.{part}"] = torch.cat([named[n] for n in names])
    return out


def _convnext_kwargs(c: dict) -> dict:
    return {"depths": list(c["depths"]), "dims": list(c["hidden_sizes"]), "patch_size": c.get("patch_size", 4),
            "in_chans": c.get("num_channels", 3)}


_CONVNEXT_RULES = [
    (r"convnext\.embeddings\.patch_embeddings\.(weight|bias)", r"stem.0.\1"),
    (r"convnext\.embeddings\.layernorm\.(weight|bias)", r"stem.1.\1"),
    (r"convnext\.encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.(weight|bias)", r"stages.\1.downsample.\2.\3"),
    (r"convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter", r"stages.\1.blocks.\2.gamma"),
    (r"convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.(weight|bias)", r"stages.\1.blocks.\2.conv_dw.\3"),
    (r"convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.(weight|bias)", r"stages.\1.blocks.\2.norm.\3"),
    (r"convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv1\.(weight|bias)", r"stages.\1.blocks.\2.mlp.fc1.\3"),
    (r"convnext\.encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv2\.(weight|bias)", r"stages.\1.blocks.\2.mlp.fc2.\3"),
    (r"convnext\.layernorm\.(weight|bias)", r"head.norm.\1"),
    (r"classifier\.(weight|bias)", r"head.fc.\1"),
]

# Transformers model_type -> its timm equivalent
CONVERSIONS: dict[str, Conversion] = {
    "vit": Conversion("vit_base_patch16_224", _vit_kwargs, _vit_rename),
    "convnext": Conversion("convnext_tiny", _convnext_kwargs, lambda s: convert_state(s, _CONVNEXT_RULES)),
}


def logits_gap(original, converted, input_size: tuple[int, int, int], seed: int = 0) -> float:
    """Largest absolute difference between the two models' logits on a seeded random batch of 2."""
    import torch

    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((original(pixel_values=x).logits - converted(x)).abs().max())
