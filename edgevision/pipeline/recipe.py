"""The compression recipe as types: the common settings, pruning, and each target's own sections.

A recipe is layered as plain data (defaults <- family preset <- recipe file <- flags: pipeline/resolve.py) and
then read into a `Recipe`: an unknown key or a value of the wrong type is an error that names the key, the value
and what is allowed, so a typo never silently falls back to a default. `Recipe.to_dict()` is what recipe.yaml
holds in every run directory. A target's sections (`quantization`, `qdq`, `tensorrt`, `deploy`) are dataclasses
of its own, registered with the target (`RecipeSection`) and read with `recipe.section(TheirType)`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import yaml

from edgevision.errors import EdgevisionError
from edgevision.typed import ContractError, from_data, to_data

S = TypeVar("S")


class RecipeError(EdgevisionError):
    pass


@dataclass(frozen=True)
class RecipeSection:
    """A recipe section a target reads: its key in the recipe and its settings dataclass (defaults included)."""

    name: str
    settings: type


SECTIONS: dict[str, RecipeSection] = {}  # every target's sections (pipeline/targets/registry.py registers them)


def register_section(section: RecipeSection) -> None:
    known = SECTIONS.get(section.name)
    if known is not None and known.settings is not section.settings:
        raise ValueError(f"two recipe sections named {section.name}")
    SECTIONS[section.name] = section


@dataclass
class PruneSettings:
    """Structured pruning and its recovery before quantization (compression/prune.py)."""

    ratio: float | None = None  # None: no pruning
    importance: Literal["magnitude", "taylor"] = "magnitude"
    finetune_epochs: int = 1
    finetune_images: int | None = None
    finetune_lr: float = 1e-3
    temperature: float = 2.0
    alpha: float = 0.7


@dataclass
class Recipe:
    target: str = "cpu"  # a name in the target registry
    runtime: str | None = None  # pins one of the target's timed runtimes; None: the fastest measured
    int8: bool = True
    calib_size: int = 300
    seed: int = 0
    max_drop: float | str | None = None  # points; "none": no accuracy guard; None: the default budget
    guard_time: float | None = None  # seconds the accuracy guards may take; None: as quantization/budget.GuardClock
    eval_limit: int | None = None
    threads: int | None = None
    benchmark_iters: int = 50
    prune: PruneSettings = field(default_factory=PruneSettings)
    sections: dict[str, Any] = field(default_factory=dict)  # section name -> its settings (RecipeSection)

    def section(self, settings: type[S]) -> S:
        """The settings of a target's section, by its type: `recipe.section(TensorRTSettings).fp16`."""
        found = next((s for s in self.sections.values() if isinstance(s, settings)), None)
        if found is None:
            raise KeyError(f"no recipe section of type {settings.__name__}")
        return found

    def to_dict(self) -> dict[str, Any]:
        data = to_data(self)
        return {**{k: v for k, v in data.items() if k != "sections"}, **data["sections"]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """A complete recipe (every key present or defaulted) from plain data."""
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: the recipe must be a mapping, got {type(data).__name__}")
        unknown = [key for key in data if key not in allowed_keys()]
        if unknown:
            raise RecipeError(f"{source}: unknown key '{unknown[0]}'", f"allowed here: {', '.join(sorted(allowed_keys()))}")
        common = {k: v for k, v in data.items() if k not in SECTIONS}
        try:
            recipe = from_data(cls, common, source=source)
            for name, section in SECTIONS.items():
                recipe.sections[name] = from_data(section.settings, data.get(name, {}), f"{name}.", source=source)
        except ContractError as e:
            raise RecipeError(e.message, e.hint) from None
        return recipe

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def allowed_keys() -> set[str]:
    return {name for name in Recipe.__dataclass_fields__ if name != "sections"} | set(SECTIONS)


def defaults() -> dict[str, Any]:
    """The default recipe as plain data, every section included: the base that presets and files override."""
    return Recipe(sections={name: s.settings() for name, s in SECTIONS.items()}).to_dict()


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
