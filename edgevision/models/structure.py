"""A pruned model's structure as checkpoint data: the attributes pruning changed, never pickled code.

A pruned checkpoint reloads as timm model + these attributes + safetensors weights (tensor shapes come from
the weights). compression/prune.py records the structure; models/loading.py applies it.
"""
from __future__ import annotations

from edgevision.errors import ModelError

_SIMPLE = (int, float, bool, str)
SimpleAttr = int | float | bool | str | list[int | float | bool | str]  # a tuple attribute is kept as a list
Structure = dict[str, dict[str, SimpleAttr]]  # module path -> {attribute: value}


def _simple_attrs(module) -> dict[str, SimpleAttr]:
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _SIMPLE) or (isinstance(v, (tuple, list)) and all(isinstance(x, _SIMPLE) for x in v)):
            out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def structure_diff(reference, pruned) -> Structure:
    """module path -> {attribute: value} for every simple attribute pruning changed."""
    ref = {name: _simple_attrs(m) for name, m in reference.named_modules()}
    diff = {}
    for name, m in pruned.named_modules():
        changed = {k: v for k, v in _simple_attrs(m).items() if ref.get(name, {}).get(k) != v}
        if changed:
            diff[name] = changed
    return diff


def apply_structure(model, structure: Structure, state_dict: dict) -> None:
    """Give a freshly built (unpruned) model the pruned structure: attributes from `structure`, tensor
    shapes from `state_dict`. Then `load_state_dict` fills the weights."""
    import torch

    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise ModelError(f"pruned structure names module '{name}', which this model does not have",
                             "load the checkpoint with the model it was pruned from")
        m = modules[name]
        for k, v in attrs.items():
            old = getattr(m, k, None)
            setattr(m, k, tuple(v) if isinstance(old, tuple) and isinstance(v, list) else v)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if name in state_dict and tuple(state_dict[name].shape) != tuple(tensor.shape):
            owner_name, _, attr = name.rpartition(".")
            owner = modules[owner_name]
            empty = torch.empty(state_dict[name].shape, dtype=tensor.dtype)
            if isinstance(tensor, torch.nn.Parameter):
                setattr(owner, attr, torch.nn.Parameter(empty, requires_grad=tensor.requires_grad))
            else:
                owner.register_buffer(attr, empty, persistent=attr not in owner._non_persistent_buffers_set)


