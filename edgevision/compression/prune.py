"""Structured pruning of timm models, per family, so that dense runtimes get faster.

Torch-Pruning is the engine: its dependency graph and MetaPruner prune ConvNeXt's channels end to end, and its
per-layer pruning functions cut every layer of the groups that the family adapters here define. The adapters
own the rules Torch-Pruning cannot infer from a trace (its MetaPruner failed on Swin's patch merging, where
the merged 4C input is four copies of the stage's channels, and on attention heads with per-head tables) and
fix timm's attributes afterwards. Each family is one entry of PRUNING_FAMILIES:

| family   | what is pruned                                                                         |
|----------|----------------------------------------------------------------------------------------|
| convnext | channels everywhere (stem, stages, downsampling, head input): Torch-Pruning MetaPruner |
| vit      | attention heads (qkv rows, proj columns) and MLP width                                 |
| swin     | attention heads (with the relative-position table), MLP width, and each stage's width, |
|          | through the patch-merging layers (their 4C input is 4 copies of the stage's channels)  |
| maxvit   | MBConv expansion channels (with SE), attention heads (with relative bias), MLP width   |

A group is a set of layer slices that must keep the same units (channels or heads). Its units are ranked by
importance summed over its members (each member's scores normalised by their mean, so that no single large
layer decides): `magnitude` = squared weights, `taylor` = |weight x gradient| on a few batches of data.

The pruned structure is recorded as data (models/structure.py: module path -> the attributes that changed),
so a pruned checkpoint reloads as timm model + attributes + safetensors weights, without pickled code.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from edgevision.errors import EdgevisionError
from edgevision.models.loading import LoadedModel
from edgevision.models.structure import Structure, structure_diff

IMPORTANCES = ("magnitude", "taylor")


class PruneError(EdgevisionError):
    pass


# --- groups of layer slices ---------------------------------------------------------------------------
@dataclass
class Member:
    kind: str  # linear_out | linear_in | conv_out | conv_in | dwconv | norm | param
    module: Any
    expand: Callable[[list[int]], list[int]] = lambda units: units  # units -> channel indices of this member
    attr: str = ""  # kind == "param": the parameter's name on `module`
    dim: int = 0  # kind == "param": the pruned dimension


@dataclass
class Group:
    name: str
    size: int  # units (channels or heads)
    members: list[Member]
    keep: int = 0
    on_pruned: Callable[[int], None] = lambda kept: None  # fix timm's attributes


def _heads(num_heads: int, head_dim: int, copies: int = 1) -> Callable[[list[int]], list[int]]:
    """Head units -> rows: `copies` blocks (q, k, v) of num_heads x head_dim rows."""
    def expand(units: list[int]) -> list[int]:
        return [c * num_heads * head_dim + h * head_dim + j for c in range(copies) for h in units
                for j in range(head_dim)]
    return expand


def _tiled(width: int, copies: int) -> Callable[[list[int]], list[int]]:
    """Channel units -> the same channels in each of `copies` concatenated blocks (Swin patch merging)."""
    return lambda units: [k * width + c for k in range(copies) for c in units]


def _member_scores(member: Member, scores: dict[int, Any]):
    """Per-channel importance of one member (sum over everything but the pruned axis), or None."""
    import torch

    m = member.module
    if member.kind == "param":
        p = getattr(m, member.attr)
        s = scores.get(id(p))
        return None if s is None else s.transpose(0, member.dim).reshape(s.shape[member.dim], -1).sum(1)
    weight = getattr(m, "weight", None)
    if weight is None or id(weight) not in scores:
        return None
    s = scores[id(weight)]
    if member.kind in ("linear_out", "conv_out", "dwconv", "norm"):
        out = s.reshape(s.shape[0], -1).sum(1)
        bias = getattr(m, "bias", None)
        if bias is not None and id(bias) in scores and member.kind != "norm":
            out = out + scores[id(bias)]
        return out
    return s.transpose(0, 1).reshape(s.shape[1], -1).sum(1) if s.dim() > 1 else torch.zeros(0)


def rank_units(group: Group, scores: dict[int, Any]) -> list[int]:
    """Units of the group, most important first."""
    import torch

    total = torch.zeros(group.size)
    for member in group.members:
        per_channel = _member_scores(member, scores)
        if per_channel is None or per_channel.numel() == 0:
            continue
        per_unit = torch.stack([per_channel[member.expand([u])].sum() for u in range(group.size)])
        total += per_unit / per_unit.mean().clamp_min(1e-12)
    return torch.argsort(total, descending=True).tolist()


def apply_group(group: Group, keep_units: list[int]) -> None:
    import torch
    import torch_pruning as tp

    keep_units = sorted(keep_units)
    for member in group.members:
        keep = member.expand(keep_units)
        m = member.module
        if member.kind == "param":
            p = getattr(m, member.attr)
            new = p.data.index_select(member.dim, torch.tensor(keep, dtype=torch.long)).clone()
            setattr(m, member.attr, torch.nn.Parameter(new, requires_grad=p.requires_grad))
            continue
        channels = {"linear_out": lambda: m.out_features, "linear_in": lambda: m.in_features,
                    "conv_out": lambda: m.out_channels, "conv_in": lambda: m.in_channels,
                    "dwconv": lambda: m.out_channels, "norm": lambda: _norm_width(m)}[member.kind]()
        drop = sorted(set(range(channels)) - set(keep))
        if not drop:
            continue
        {"linear_out": tp.prune_linear_out_channels, "linear_in": tp.prune_linear_in_channels,
         "conv_out": tp.prune_conv_out_channels, "conv_in": tp.prune_conv_in_channels,
         "dwconv": tp.prune_depthwise_conv_out_channels,
         "norm": _prune_norm}[member.kind](m, drop)
    group.on_pruned(len(keep_units))


def _norm_width(m) -> int:
    return m.normalized_shape[0] if hasattr(m, "normalized_shape") else m.num_features


def _prune_norm(m, drop):
    import torch_pruning as tp

    if hasattr(m, "normalized_shape"):
        return tp.prune_layernorm_out_channels(m, drop)
    return tp.prune_batchnorm_out_channels(m, drop)


def keep_count(size: int, ratio: float, multiple: int = 1) -> int:
    """Units kept when pruning `ratio` of `size`: at least one, rounded to `multiple` where that is possible."""
    keep = max(1, round(size * (1 - ratio)))
    if multiple > 1 and size >= 2 * multiple:
        keep = max(multiple, int(round(keep / multiple)) * multiple)
    return min(keep, size)


# --- family adapters -------------------------------------------------------------------------------------
def _mlp_group(name: str, mlp, ratio: float) -> Group:
    g = Group(f"{name}.mlp", mlp.fc1.out_features, [Member("linear_out", mlp.fc1), Member("linear_in", mlp.fc2)])
    g.keep = keep_count(g.size, ratio, 8)
    return g


def _vit_heads(name: str, attn, ratio: float) -> Group:
    hd = attn.head_dim
    g = Group(f"{name}.heads", attn.num_heads, [Member("linear_out", attn.qkv, _heads(attn.num_heads, hd, 3)),
                                                 Member("linear_in", attn.proj, _heads(attn.num_heads, hd))])
    g.keep = keep_count(g.size, ratio)

    def fix(kept: int) -> None:
        attn.num_heads, attn.attn_dim = kept, kept * hd
    g.on_pruned = fix
    return g


def vit_groups(model, ratio: float) -> list[Group]:
    groups = []
    for i, block in enumerate(model.blocks):
        q_norm = getattr(block.attn, "q_norm", None)
        if not hasattr(block.attn, "qkv") or (q_norm is not None and type(q_norm).__name__ != "Identity"):
            raise PruneError("this ViT variant (separate q/k/v or q/k norms) is not supported by the pruner")
        groups += [_vit_heads(f"blocks.{i}.attn", block.attn, ratio), _mlp_group(f"blocks.{i}", block.mlp, ratio)]
    return groups


def _swin_heads(name: str, attn, ratio: float) -> Group:
    heads = attn.num_heads
    hd = attn.qkv.out_features // (3 * heads)
    g = Group(f"{name}.heads", heads, [Member("linear_out", attn.qkv, _heads(heads, hd, 3)),
                                       Member("linear_in", attn.proj, _heads(heads, hd)),
                                       Member("param", attn, attr="relative_position_bias_table", dim=1)])
    g.keep = keep_count(heads, ratio)

    def fix(kept: int) -> None:
        attn.num_heads = kept
    g.on_pruned = fix
    return g


def swin_groups(model, ratio: float) -> list[Group]:
    groups = []
    stages = list(model.layers)
    for s, stage in enumerate(stages):
        for b, block in enumerate(stage.blocks):
            groups += [_swin_heads(f"layers.{s}.blocks.{b}.attn", block.attn, ratio),
                       _mlp_group(f"layers.{s}.blocks.{b}", block.mlp, ratio)]
        # the stage's width: produced by the patch embedding or the stage's patch merging, read by every
        # block, and by the next patch merging as 4 concatenated copies (or the final norm and the head)
        width = stage.blocks[0].norm1.normalized_shape[0]
        if s == 0:
            members = [Member("conv_out", model.patch_embed.proj)]
            if hasattr(model.patch_embed.norm, "normalized_shape"):
                members.append(Member("norm", model.patch_embed.norm))
        else:
            members = [Member("linear_out", stage.downsample.reduction)]
        for block in stage.blocks:
            members += [Member("norm", block.norm1), Member("linear_in", block.attn.qkv),
                        Member("linear_out", block.attn.proj), Member("norm", block.norm2),
                        Member("linear_in", block.mlp.fc1), Member("linear_out", block.mlp.fc2)]
        if s + 1 < len(stages):
            merge = stages[s + 1].downsample
            members += [Member("norm", merge.norm, _tiled(width, 4)), Member("linear_in", merge.reduction, _tiled(width, 4))]
        else:
            members += [Member("norm", model.norm), Member("linear_in", model.head.fc)]
        g = Group(f"layers.{s}.width", width, members)
        g.keep = keep_count(width, ratio, 8)

        def fix(kept: int, s=s, stage=stage) -> None:
            stage.dim = kept
            for block in stage.blocks:
                block.dim = block.attn.dim = kept
            if s > 0:
                stage.downsample.out_dim = kept
            if s + 1 < len(stages):
                stages[s + 1].downsample.dim = kept
            else:
                model.num_features = model.head_hidden_size = kept
                model.head.in_features = model.head.num_features = kept
        g.on_pruned = fix
        groups.append(g)
    return groups


def maxvit_groups(model, ratio: float) -> list[Group]:
    groups = []
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage.blocks):
            name = f"stages.{s}.blocks.{b}"
            conv = block.conv
            mid = conv.conv1_1x1.out_channels
            members = [Member("conv_out", conv.conv1_1x1), Member("norm", conv.norm1), Member("dwconv", conv.conv2_kxk),
                       Member("norm", conv.norm2), Member("conv_in", conv.conv3_1x1)]
            if hasattr(conv.se, "fc1"):
                members += [Member("conv_in", conv.se.fc1), Member("conv_out", conv.se.fc2)]
            g = Group(f"{name}.conv.mid", mid, members)
            g.keep = keep_count(mid, ratio, 8)
            groups.append(g)
            for part in ("attn_block", "attn_grid"):
                attn_block = getattr(block, part, None)
                if attn_block is None:
                    continue
                groups += [_maxvit_heads(f"{name}.{part}.attn", attn_block.attn, ratio),
                           _mlp_group(f"{name}.{part}", attn_block.mlp, ratio)]
    return groups


def _maxvit_heads(name: str, attn, ratio: float) -> Group:
    heads, hd = attn.num_heads, attn.dim_head
    if getattr(attn, "head_first", False):
        raise PruneError("MaxViT attention with head_first layout is not supported by the pruner")
    members = [Member("linear_out", attn.qkv, _heads(heads, hd, 3)), Member("linear_in", attn.proj, _heads(heads, hd))]
    rel = getattr(attn, "rel_pos", None)
    if rel is not None and hasattr(rel, "relative_position_bias_table"):
        members.append(Member("param", rel, attr="relative_position_bias_table", dim=0))
    g = Group(f"{name}.heads", heads, members)
    g.keep = keep_count(heads, ratio)

    def fix(kept: int) -> None:
        attn.num_heads = kept
        if rel is not None:
            rel.num_heads = kept
            if hasattr(rel, "bias_shape"):
                rel.bias_shape = (kept, *tuple(rel.bias_shape)[1:])
    g.on_pruned = fix
    return g


# --- importance ------------------------------------------------------------------------------------------
def importance_scores(model, importance: str, batches: Iterable | None = None) -> dict[int, Any]:
    """id(parameter) -> elementwise importance: squared weight, or |weight x gradient| over the batches."""
    if importance == "magnitude":
        return {id(p): p.detach() ** 2 for p in model.parameters()}
    accumulate_gradients(model, batches)
    scores = {id(p): (p.detach() * p.grad).abs() for p in model.parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return scores


def accumulate_gradients(model, batches) -> None:
    """Gradients of the loss (cross-entropy with labels, else log-sum-exp of the logits) over the batches."""
    import torch

    if not batches:
        raise PruneError("taylor importance needs data", "give --data, or use --importance magnitude")
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.enable_grad():
        for images, labels in batches:
            logits = model(images)
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else \
                logits.logsumexp(1).mean()
            loss.backward()


# --- the families ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PruningFamily:
    name: str
    what: str  # what is pruned, for docs and errors
    prune: Callable[..., int]  # (model, ratio, input_size, importance, batches) -> groups pruned, in place


def _prune_by_groups(adapter: Callable[[Any, float], list[Group]]) -> Callable[..., int]:
    """A family pruned through its adapter's groups, ranked on the unpruned weights first: pruning replaces
    parameters, and a layer can sit in two groups (Swin's qkv: heads on its rows, stage width on its columns)."""
    def prune(model, ratio: float, input_size, importance: str, batches) -> int:
        scores = importance_scores(model, importance, batches)
        plan = adapter(model, ratio)
        ranked = [rank_units(group, scores)[:group.keep] for group in plan]
        for group, keep in zip(plan, ranked):
            apply_group(group, keep)
        return len(plan)
    return prune


def _prune_convnext(model, ratio: float, input_size, importance: str, batches) -> int:
    import torch
    import torch_pruning as tp

    example = torch.zeros(1, *input_size)
    imp = tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" else \
        tp.importance.GroupTaylorImportance()
    # ConvNeXt's layer-scale `gamma` scales the block's output channels (dim 0).
    gammas = [(m.gamma, 0) for m in model.modules() if isinstance(getattr(m, "gamma", None), torch.nn.Parameter)]
    pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=ratio,
                                  ignored_layers=[model.get_classifier()], round_to=8, unwrapped_parameters=gammas)
    if importance == "taylor":
        accumulate_gradients(model, batches)  # GroupTaylorImportance reads the gradients
    groups = 0
    for group in pruner.step(interactive=True):
        group.prune()
        groups += 1
    model.zero_grad(set_to_none=True)
    return groups


PRUNING_FAMILIES: dict[str, PruningFamily] = {f.name: f for f in [
    PruningFamily("convnext", "channels everywhere (Torch-Pruning MetaPruner)", _prune_convnext),
    PruningFamily("vit", "attention heads and MLP width", _prune_by_groups(vit_groups)),
    PruningFamily("swin", "attention heads, MLP width and stage widths", _prune_by_groups(swin_groups)),
    PruningFamily("maxvit", "MBConv expansion, attention heads and MLP width", _prune_by_groups(maxvit_groups)),
]}


# --- the one door ------------------------------------------------------------------------------------------
@dataclass
class PruneResult:
    model: Any
    structure: Structure
    groups: int
    params_before: int
    params_after: int


def prune_model(model, family: str, ratio: float, input_size: tuple[int, int, int], *, importance: str = "magnitude",
                batches: Iterable | None = None) -> PruneResult:
    """A pruned copy of `model` (the original is left as it is)."""
    import torch

    if not 0 < ratio < 1:
        raise PruneError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}", "e.g. --ratio 0.5")
    if importance not in IMPORTANCES:
        raise PruneError(f"unknown importance '{importance}'", f"choose one of {', '.join(IMPORTANCES)}")
    if family not in PRUNING_FAMILIES:
        raise PruneError(f"no pruning rules for the '{family}' family",
                         f"pruning supports {', '.join(PRUNING_FAMILIES)} (ConvNeXt, ViT, Swin, MaxViT)")
    pruned = copy.deepcopy(model).eval()
    before = sum(p.numel() for p in pruned.parameters())
    batches = list(batches) if batches is not None else None
    groups = PRUNING_FAMILIES[family].prune(pruned, ratio, input_size, importance, batches)
    with torch.no_grad():  # the pruned model must still run and give logits of the same shape
        pruned(torch.zeros(1, *input_size))
    after = sum(p.numel() for p in pruned.parameters())
    return PruneResult(pruned, structure_diff(model, pruned), groups, before, after)


def pruned_loaded(loaded: LoadedModel, result: PruneResult) -> LoadedModel:
    """A LoadedModel for the pruned model: the same spec, with the structure recorded."""
    return LoadedModel(result.model, dataclasses.replace(loaded.spec, structure=result.structure or None))
