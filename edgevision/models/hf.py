"""Hugging Face Transformers image classifiers as a model source: `hf:ORG/NAME` (the Hugging Face cache,
offline first) or a folder written by `save_pretrained` given as `--checkpoint DIR`.

Where timm has the same architecture (ViT, ConvNeXt, Swin), the weights are converted into it, so that pruning, the
family presets and every target apply, and the converted model's logits are checked against the original's
on a random batch before anything else runs. Any other image classifier runs as a generic model
(models/hf_generic.py): every target, no pruning. Preprocessing comes from the checkpoint's image-processor config
(preprocessor_config.json), expressed as timm's data config, so float and compressed models see the same
tensors. `transformers` is an optional extra (`pip install -e ".[hf]"`).
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgevision.data.loader import DataConfig
from edgevision.errors import ModelError
from edgevision.models.weights import may_download

HF_PREFIX = "hf:"
GENERIC_NAME = "transformers_image_classifier"  # the timm name of a model without a conversion (hf_generic.py)
LOGITS_ATOL = 1e-4  # converted vs original logits, on a random batch
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's codes in preprocessor_config.json
_LAYER = r"vit\.encoder\.layer\.(\d+)\."


@dataclass(frozen=True)
class Conversion:
    """How one Transformers model type becomes a timm model: its architecture, constructor arguments from the
    config, and the weight names."""

    timm_name: str
    kwargs: Callable[[dict], dict]  # Transformers config -> timm constructor arguments
    rename: Callable[[dict, Any], dict]  # (stored weights, the timm model built for them) -> its state dict


def transformers_source(name: str | None, checkpoint: str | Path | None) -> str | None:
    """The hub id of `hf:ORG/NAME`, or a `save_pretrained` folder (config.json beside the weights) given as
    --checkpoint; None for anything else."""
    if checkpoint is not None:
        folder = Path(checkpoint)
        return str(folder) if folder.is_dir() and (folder / "config.json").is_file() else None
    return name[len(HF_PREFIX):] if name is not None and name.startswith(HF_PREFIX) else None


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise ModelError("Hugging Face Transformers models need the transformers package",
                         "pip install -e \".[hf]\" (or pip install transformers)") from None
    return transformers


def open_hf(source: str) -> tuple[Any, dict, dict]:
    """(the Transformers model in eval mode, its config as a dict, its preprocessor config) from a folder or a
    hub id in the local cache (downloaded only when the hub is reachable and HF_HUB_OFFLINE is unset). The
    loaded model is the reference a conversion's logits are checked against."""
    transformers = require_transformers()
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
    processor = _file(source, "preprocessor_config.json")
    return model.eval(), model.config.to_dict(), json.loads(processor.read_text()) if processor else {}


def _file(source: str, name: str) -> Path | None:
    """A file of a save_pretrained folder or of a hub id's cached snapshot, or None."""
    if Path(source).is_dir():
        path = Path(source) / name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, name)
    return Path(cached) if isinstance(cached, str) else None


def _cached(hub_id: str) -> bool:
    return _file(hub_id, "config.json") is not None


def stored_weights(source: str) -> dict:
    """The checkpoint's tensors as stored, under the names every Transformers version writes (what the
    conversions read): safetensors, or torch files read with weights_only, sharded or not."""
    import torch
    from safetensors.torch import load_file

    torch_file = functools.partial(torch.load, map_location="cpu", weights_only=True)
    for name, read in (("model.safetensors", load_file), ("pytorch_model.bin", torch_file)):
        single = _file(source, name)
        if single is not None:
            return read(str(single))
        index = _file(source, f"{name}.index.json")
        if index is not None:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in read(str(index.parent / shard)).items()}
    raise ModelError(f"{source} holds no model.safetensors or pytorch_model.bin", "save it with save_pretrained")


def data_config(processor: dict, config: dict) -> DataConfig:
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


def label_count(config: dict) -> int:
    """The checkpoint's class count: its id2label entries, else num_labels (Transformers' default 2)."""
    return len(config.get("id2label") or {}) or config.get("num_labels", 2)


def side(size) -> int:
    """A Transformers image_size (an int, or a [height, width] pair) as the one side of a square input."""
    return size if isinstance(size, int) else size[0]


def classes(config: dict) -> list[str] | None:
    """The class names, unless they are Transformers' placeholders (LABEL_0, ...)."""
    labels = config.get("id2label") or {}
    names = [labels.get(i, labels.get(str(i))) for i in range(len(labels))]
    return None if not names or all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names) else names


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
    (_LAYER + r"attention\.attention\.(query|key|value)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"vit\.layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]


def merge_qkv(named: dict) -> dict:
    """Separate `attn.query/key/value` projections become timm's one `attn.qkv` projection."""
    import torch

    out = {k: v for k, v in named.items() if not re.search(r"\.attn\.(query|key|value)\.", k)}
    for q in (k for k in named if re.search(r"\.attn\.query\.(weight|bias)$", k)):
        out[q.replace(".query.", ".qkv.")] = torch.cat([named[q.replace(".query.", f".{a}.")]
                                                       for a in ("query", "key", "value")])
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

def _swin_kwargs(c: dict) -> dict:
    return {"patch_size": c["patch_size"], "embed_dim": c["embed_dim"], "depths": list(c["depths"]),
            "num_heads": list(c["num_heads"]), "window_size": c["window_size"], "mlp_ratio": c.get("mlp_ratio", 4.0),
            "qkv_bias": c.get("qkv_bias", True), "in_chans": c.get("num_channels", 3)}


_SWIN_BLOCK = r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
# To the Swin authors' own names, which timm's checkpoint filter then takes (it moves each stage's patch
# merging from the stage's end, where the authors and Transformers put it, to the next stage's start).
_SWIN_RULES = [
    (r"swin\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"swin\.embeddings\.norm\.(weight|bias)", r"patch_embed.norm.\1"),
    (_SWIN_BLOCK + r"layernorm_before\.(weight|bias)", r"layers.\1.blocks.\2.norm1.\3"),
    (_SWIN_BLOCK + r"attention\.self\.(query|key|value)\.(weight|bias)", r"layers.\1.blocks.\2.attn.\3.\4"),
    (_SWIN_BLOCK + r"attention\.self\.relative_position_bias_table",
     r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (_SWIN_BLOCK + r"attention\.self\.relative_position_index", r"layers.\1.blocks.\2.attn.relative_position_index"),
    (_SWIN_BLOCK + r"attention\.output\.dense\.(weight|bias)", r"layers.\1.blocks.\2.attn.proj.\3"),
    (_SWIN_BLOCK + r"layernorm_after\.(weight|bias)", r"layers.\1.blocks.\2.norm2.\3"),
    (_SWIN_BLOCK + r"intermediate\.dense\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc1.\3"),
    (_SWIN_BLOCK + r"output\.dense\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"swin\.encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)", r"layers.\1.downsample.\2.\3"),
    (r"swin\.layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]


def _swin_rename(state: dict, model) -> dict:
    from timm.models.swin_transformer import checkpoint_filter_fn

    original = merge_qkv(convert_state(state, _SWIN_RULES))
    if "layers.0.downsample.reduction.weight" not in original:  # one stage: nothing tells timm the layout
        original = {k.replace("head.", "head.fc."): v for k, v in original.items()}
    return checkpoint_filter_fn(original, model)


# Transformers model_type -> its timm equivalent
CONVERSIONS: dict[str, Conversion] = {
    "vit": Conversion("vit_base_patch16_224", _vit_kwargs, lambda s, m: merge_qkv(convert_state(s, _VIT_RULES))),
    "convnext": Conversion("convnext_tiny", _convnext_kwargs, lambda s, m: convert_state(s, _CONVNEXT_RULES)),
    "swin": Conversion("swin_tiny_patch4_window7_224", _swin_kwargs, _swin_rename),
}


def logits_gap(original, converted, input_size: tuple[int, int, int], seed: int = 0) -> float:
    """Largest absolute difference between the two models' logits on a seeded random batch of 2."""
    import torch

    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((original(pixel_values=x).logits - converted(x)).abs().max())
