"""Checkpoints as data: safetensors or torch files read with weights_only=True, never pickled code.

An edgevision checkpoint is a dict with `format: edgevision.checkpoint`, the model config (timm name,
constructor kwargs, classes, input size), the preprocessing, and the state dict, so that
`--checkpoint PATH` alone rebuilds the model. It is written as a torch file (.pt) or, for a `.safetensors`
path, as safetensors with the config in the header metadata.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, TypedDict

from edgevision.data.loader import DataConfig
from edgevision.errors import ModelError
from edgevision.io import atomic_write
from edgevision.models.structure import Structure
from edgevision.models.zoo import ModelKwargs
from edgevision.typed import JSONObject

FORMAT = "edgevision.checkpoint"
FORMAT_VERSION = 1
_META_KEY = "edgevision"


class CheckpointModel(TypedDict, total=False):
    """How to rebuild the model: a ModelSpec's recorded part."""

    name: str
    timm_name: str
    num_classes: int
    img_size: int
    model_kwargs: ModelKwargs
    structure: Structure  # pruned: the changed attributes


class TrainingRecord(TypedDict, total=False):
    """What `train` or `distill` recorded about the training that made the weights."""

    data: str
    images: int
    config: dict[str, float | int | str | bool | None]  # the TrainConfig (or DistillConfig) as data
    history: list[dict[str, float | int | str]]  # one EpochRecord per epoch, as data
    train_time_s: float
    initial_weights: str
    processes: int
    distilled_from: JSONObject  # the teacher, as the distillation report names it


class CheckpointMeta(TypedDict, total=False):
    """Everything an edgevision checkpoint holds besides its weights."""

    format: str
    version: int
    model: CheckpointModel
    data_config: DataConfig
    classes: list[str] | None
    training: TrainingRecord


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a kill never leaves half a file."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def spec_meta(spec, classes: list[str] | None = None) -> CheckpointMeta:
    """What a checkpoint records about its model (a ModelSpec) so that it loads without a model name."""
    model = CheckpointModel(name=spec.name, timm_name=spec.timm_name, num_classes=spec.num_classes,
                            img_size=spec.img_size, model_kwargs=spec.model_kwargs)
    if getattr(spec, "structure", None):
        model["structure"] = spec.structure
    return CheckpointMeta(model=model, data_config=spec.data_config,
                          classes=spec.classes if classes is None else classes)


def write_checkpoint(path: Path, state_dict: dict, meta: CheckpointMeta) -> None:
    """Write an edgevision checkpoint; `meta` holds model/data_config/classes/metrics."""
    path = Path(path)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, **meta}
    state_dict = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(state_dict, str(tmp), metadata={_META_KEY: json.dumps(meta)}))
    else:
        atomic_save({**meta, "state_dict": state_dict}, path)


def read_checkpoint(path: Path) -> tuple[dict, CheckpointMeta | None]:
    """Return (state_dict, edgevision meta or None for a plain state dict)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}", "check the path given to --checkpoint")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"cannot read safetensors checkpoint {path}: {e}") from None
        meta = json.loads(header[_META_KEY]) if _META_KEY in header else None
        return state, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # torch refused to import a class or function
            raise ModelError(
                f"checkpoint {path} holds pickled Python objects, which could run code when loaded",
                "edgevision loads only plain tensors: save model.state_dict() or use safetensors",
            ) from None
        raise ModelError(f"cannot read checkpoint {path}: not a torch or safetensors file") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ModelError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise ModelError(f"checkpoint {path} is not a state dict (got {type(obj).__name__})")
    if obj.get("format") == FORMAT:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        return obj["state_dict"], meta
    for wrapper in ("state_dict", "model", "model_state_dict"):  # common training-script layouts
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    return obj, None


def strip_prefixes(state_dict: dict) -> dict:
    """Remove DDP's `module.` and torch.compile's `_orig_mod.` prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def check_fits(model, state_dict: dict, source: str) -> None:
    """Raise a one-line error naming missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

    parts = []
    if shapes:
        parts.append(f"shape mismatch (checkpoint vs model): {few(shapes)}")
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    raise ModelError(
        f"checkpoint {source} does not fit the model: " + "; ".join(parts),
        "check the model name, --num-classes and --img-size",
    )
