"""A model made at one input size, run at another: timm's own `set_input_size` adapts it.

ViT resamples its absolute position embeddings (bicubic, e.g. a 14x14 grid at 224 to 24x24 at 384); Swin
scales each stage's window with the patch grid and resizes its relative-position bias tables; MaxViT derives
its window and grid partitions from the new size and resizes its tables. Convolutional families take any size
and change nothing. What changed (tensor shapes, window settings) is returned as data for the report, and the
changed constructor arguments go into the model's kwargs so that a checkpoint saved afterwards rebuilds the
same model. A size that the family cannot run (a window that no longer divides a feature map) is refused with
the nearest sizes that work, checked by a forward pass on the meta device (no memory, no compute).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from edgevision.errors import ModelError

# constructor arguments set_input_size may change, besides img_size; the first three are reported
_RESIZE_ARGS = ("window_size", "transformer_window_size", "transformer_grid_size", "transformer_partition_ratio")
_REPORTED_ARGS = _RESIZE_ARGS[:3]
WindowSetting = int | list[int] | list[list[int]]  # a window or grid size (per stage), or a ratio, as JSON holds it
_PROBE_STEP = 8  # sizes tried when naming the nearest ones that work
_PROBE_SPAN = 16  # steps tried each way


@dataclass
class InputResize:
    from_size: int
    to_size: int
    tensors: dict[str, list[list[int]]] = field(default_factory=dict)  # name -> [old shape, new shape]
    settings: dict[str, WindowSetting] = field(default_factory=dict)  # constructor arguments that changed

    def summary(self) -> str:
        head = f"input size {self.from_size} -> {self.to_size} px: "
        if not self.tensors:
            return head + "nothing to resize (the family takes any input size)"
        names = sorted(self.tensors)
        shown = ", ".join(f"{n} {tuple(self.tensors[n][0])} -> {tuple(self.tensors[n][1])}" for n in names[:2])
        more = f" and {len(names) - 2} more" if len(names) > 2 else ""
        windows = f"; {', '.join(f'{k} {v}' for k, v in self.settings.items())}" if self.settings else ""
        return head + f"resized {shown}{more}{windows}"


def resize_input(model, from_size: int, to_size: int) -> InputResize:
    """Adapt `model` (weights loaded, made at `from_size`) to `to_size` in place, with timm's functions."""
    before = _shapes(model)
    args_before = dict(getattr(model, "_model_args", {}))
    if hasattr(model, "set_input_size"):
        model.set_input_size(img_size=(to_size, to_size))
    args_after = getattr(model, "_model_args", {})
    after = _shapes(model)
    check_runs_at(model, to_size)
    return InputResize(
        from_size, to_size,
        tensors={k: [list(before[k]), list(v)] for k, v in after.items() if k in before and before[k] != v},
        settings={k: _plain(args_after[k]) for k in _REPORTED_ARGS
                  if k in args_after and args_after[k] != args_before.get(k)},
    )


def rebuild_kwargs(model) -> dict[str, WindowSetting]:
    """The window settings set_input_size recorded, as plain data for the model's kwargs."""
    args = getattr(model, "_model_args", {})
    return {k: _plain(args[k]) for k in _RESIZE_ARGS if k in args}


def check_runs_at(model, size: int) -> None:
    """Refuse a size the model cannot run, naming the nearest sizes that work (probed on a meta twin, so the
    model's own weights are never resampled back and forth)."""
    twin = _meta_twin(model)
    if _runs_at(twin, size):
        return
    below = next((s for s in _probe(size, -1) if _runs_at(twin, s)), None)
    above = next((s for s in _probe(size, 1) if _runs_at(twin, s)), None)
    works = " or ".join(str(s) for s in (below, above) if s is not None) or "its default size"
    raise ModelError(f"{type(model).__name__} cannot run at {size} px (its windows no longer divide the "
                     f"feature maps)", f"use --img-size {works}")


def _runs_at(twin, size: int) -> bool:
    import torch

    try:
        if hasattr(twin, "set_input_size"):
            twin.set_input_size(img_size=(size, size))
        with torch.no_grad():
            twin(torch.empty(1, 3, size, size, device="meta"))
        return True
    except (AssertionError, RuntimeError, ValueError):
        return False


def _meta_twin(model):
    """A weightless copy of `model` on the meta device (the same modules and attributes)."""
    import torch

    memo = {id(t): torch.empty_like(t, device="meta") for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo).eval()


def _probe(size: int, direction: int):
    start = (size // _PROBE_STEP + (direction > 0)) * _PROBE_STEP
    for i in range(_PROBE_SPAN):
        s = start + direction * i * _PROBE_STEP
        if s >= _PROBE_STEP:
            yield s


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _plain(value):
    """Tuples as lists, so the settings survive JSON (checkpoint metadata, reports) unchanged."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value
