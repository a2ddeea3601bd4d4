"""A run's recipe: the defaults, overridden by the family preset, a YAML recipe file, then the flags; read into a
`Recipe` (pipeline/recipe.py) and checked against the target registry."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgevision.pipeline.recipe import Recipe, RecipeError, defaults, merge
from edgevision.pipeline.targets import TARGETS, target_names


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise RecipeError(f"unknown target '{target}'", f"choose one of {', '.join(target_names())}")


def read_recipe(data: Any, source: str) -> Recipe:
    """Plain data (complete or partial: the defaults fill in the rest) as a Recipe, its target checked first so
    that a wrong one reads as the --target flag's error."""
    if isinstance(data, dict) and isinstance(data.get("target"), str):
        check_target(data["target"])
    return Recipe.from_dict(merge(defaults(), data) if isinstance(data, dict) else data, source)


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    """A YAML recipe file's overrides, checked (but not yet layered over the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}", "see recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"recipe {path} is not valid YAML{where}") from None
    read_recipe(data, str(path))
    return data


def resolve(family_preset: dict[str, Any], recipe_file: str | Path | None, overrides: dict[str, Any]) -> Recipe:
    """Defaults <- family preset <- recipe file <- flags (None flags are not overrides)."""
    layered = merge(defaults(), family_preset)
    if recipe_file is not None:
        layered = merge(layered, load_recipe_file(recipe_file))
    return checked(merge(layered, _drop_none(overrides)), "resolved recipe")


def checked(data: dict[str, Any], source: str) -> Recipe:
    """Plain data as a Recipe, with what the types cannot say checked too."""
    recipe = read_recipe(data, source)
    check_values(recipe)
    return recipe


def check_values(recipe: Recipe) -> None:
    """What the types cannot say: ranges, and values that depend on each other or on the target."""
    max_drop = recipe.max_drop
    if max_drop is not None and max_drop != "none" and (isinstance(max_drop, str) or max_drop < 0):
        raise RecipeError(f"max_drop must be a number of points >= 0 or 'none', got {max_drop!r}",
                          "e.g. --max-drop 1 or --max-drop none")
    target = TARGETS[recipe.target]
    if recipe.runtime is not None and recipe.runtime not in target.timed_runtimes:
        raise RecipeError(f"--runtime {recipe.runtime} is not a runtime of --target {recipe.target}",
                          f"use one of {', '.join(target.timed_runtimes)}" if target.timed_runtimes
                          else "drop --runtime: this target is not timed here")
    if recipe.guard_time is not None and recipe.guard_time < 0:
        raise RecipeError(f"guard_time must be seconds >= 0, got {recipe.guard_time}", "e.g. --guard-time 120")
    if recipe.calib_size < 1:
        raise RecipeError(f"calib_size must be at least 1, got {recipe.calib_size}")
    ratio = recipe.prune.ratio
    if ratio is not None and not 0 < ratio < 1:
        raise RecipeError(f"prune.ratio must be between 0 and 1 (exclusive), got {ratio}", "e.g. --prune 0.5")
    if recipe.prune.finetune_epochs < 0:
        raise RecipeError("prune.finetune_epochs must be 0 or more")
    for each in TARGETS.values():
        each.check_recipe(recipe, each is target)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out
