"""Compression recipes: the family preset, overridden by a YAML recipe file, overridden by CLI flags.

The schema is small and explicit: an unknown key or a value of the wrong type is an error that names it,
so a typo never silently falls back to a default. The resolved recipe is saved in every run directory.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from edgevision.errors import EdgevisionError
from edgevision.pipeline.targets import TARGETS, RecipeSection, target_names
from edgevision.runtimes.qdq_engines import QDQ_ENGINES

# key -> (allowed types, allowed values or None). Nested dicts are sub-schemas. The target sections
# (quantization, qdq, tensorrt) come from the target registry: each target declares what it reads.
COMMON_SCHEMA: dict[str, Any] = {
    "target": ((str,), None),  # checked against the target registry
    "runtime": ((str, type(None)), None),  # pins one of the target's timed runtimes; None: the fastest measured
    "int8": ((bool,), None),
    "calib_size": ((int,), None),
    "seed": ((int,), None),
    "max_drop": ((int, float, str, type(None)), None),  # points; "none": no accuracy guard; null: the default
    "guard_time": ((int, float, type(None)), None),  # seconds the accuracy guards may take; null: pipeline/context
    "eval_limit": ((int, type(None)), None),
    "threads": ((int, type(None)), None),
    "benchmark_iters": ((int,), None),
    # structured pruning + recovery before quantization (compress/prune.py)
    "prune": {
        "ratio": ((int, float, type(None)), None),
        "importance": ((str,), ("magnitude", "taylor")),
        "finetune_epochs": ((int,), None),
        "finetune_images": ((int, type(None)), None),
        "finetune_lr": ((int, float), None),
        "temperature": ((int, float), None),
        "alpha": ((int, float), None),
    },
}

COMMON_DEFAULTS: dict[str, Any] = {
    "target": "cpu",
    "runtime": None,
    "int8": True,
    "calib_size": 300,
    "seed": 0,
    "max_drop": None,
    "guard_time": None,
    "eval_limit": None,
    "threads": None,
    "benchmark_iters": 50,
    "prune": {"ratio": None, "importance": "magnitude", "finetune_epochs": 1, "finetune_images": None,
              "finetune_lr": 1e-3, "temperature": 2.0, "alpha": 0.7},
}


def _sections() -> dict[str, RecipeSection]:
    return {section.name: section for target in TARGETS.values() for section in target.recipe_sections}


SCHEMA: dict[str, Any] = {**COMMON_SCHEMA, **{name: s.schema for name, s in _sections().items()}}
DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, **{name: s.defaults for name, s in _sections().items()}}


class RecipeError(EdgevisionError):
    pass


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise RecipeError(f"unknown target '{target}'", f"choose one of {', '.join(target_names())}")


def validate(recipe: dict[str, Any], source: str = "recipe", schema: dict | None = None, prefix: str = "") -> None:
    schema = SCHEMA if schema is None else schema
    if not isinstance(recipe, dict):
        raise RecipeError(f"{source}: {prefix or 'the recipe'} must be a mapping, got {type(recipe).__name__}")
    for key, value in recipe.items():
        where = f"{prefix}{key}"
        if key not in schema:
            raise RecipeError(f"{source}: unknown key '{where}'",
                              f"allowed here: {', '.join(sorted(schema))}")
        rule = schema[key]
        if schema is SCHEMA and key == "target" and isinstance(value, str):
            check_target(value)  # the same message as the --target flag
        if isinstance(rule, dict):
            validate(value, source, rule, f"{where}.")
            continue
        types, allowed = rule
        if isinstance(value, bool) and bool not in types:  # YAML `yes` is not a number
            raise RecipeError(f"{source}: '{where}' must be {_names(types)}, got {value!r}")
        if not isinstance(value, types):
            raise RecipeError(f"{source}: '{where}' must be {_names(types)}, got {value!r}")
        if allowed is not None and value not in allowed:
            raise RecipeError(f"{source}: '{where}' must be one of {', '.join(map(str, allowed))}, got {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise RecipeError(f"{source}: '{where}' must be a list of strings")


def _names(types) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}", "see recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"recipe {path} is not valid YAML{where}") from None
    validate(data, str(path))
    return data


def resolve(family_preset: dict[str, Any], recipe_file: str | Path | None,
            overrides: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS <- family preset <- recipe file <- CLI flags (None flags are not overrides)."""
    recipe = merge(DEFAULTS, family_preset)
    if recipe_file is not None:
        recipe = merge(recipe, load_recipe_file(recipe_file))
    recipe = merge(recipe, _drop_none(overrides))
    validate(recipe, "resolved recipe")
    check_values(recipe)
    return recipe


def check_values(recipe: dict[str, Any]) -> None:
    """What the schema's types cannot say: ranges, and values that depend on each other."""
    max_drop = recipe["max_drop"]
    if max_drop is not None and max_drop != "none" and (isinstance(max_drop, str) or max_drop < 0):
        raise RecipeError(f"max_drop must be a number of points >= 0 or 'none', got {max_drop!r}",
                          "e.g. --max-drop 1 or --max-drop none")
    timed = TARGETS[recipe["target"]].timed_runtimes
    if recipe["runtime"] is not None and recipe["runtime"] not in timed:
        raise RecipeError(f"--runtime {recipe['runtime']} is not a runtime of --target {recipe['target']}",
                          f"use one of {', '.join(timed)}" if timed else "drop --runtime: this target is not timed here")
    if recipe["guard_time"] is not None and recipe["guard_time"] < 0:
        raise RecipeError(f"guard_time must be seconds >= 0, got {recipe['guard_time']}", "e.g. --guard-time 120")
    if recipe["calib_size"] < 1:
        raise RecipeError(f"calib_size must be at least 1, got {recipe['calib_size']}")
    ratio = recipe["prune"]["ratio"]
    if ratio is not None and not 0 < ratio < 1:
        raise RecipeError(f"prune.ratio must be between 0 and 1 (exclusive), got {ratio}", "e.g. --prune 0.5")
    if recipe["prune"]["finetune_epochs"] < 0:
        raise RecipeError("prune.finetune_epochs must be 0 or more")
    trt = recipe["tensorrt"]
    if not 1 <= trt["batch"] <= trt["max_batch"]:
        raise RecipeError(f"--batch {trt['batch']} (tensorrt.batch) must be between 1 and --max-batch "
                          f"{trt['max_batch']} (tensorrt.max_batch)")
    if recipe["int8"] and "tensorrt" in {s.name for s in TARGETS[recipe["target"]].recipe_sections}:
        QDQ_ENGINES[trt["qdq_engine"]].check(recipe["qdq"]["calibration_method"])  # a missing extra: before any work


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


def dump(recipe: dict[str, Any]) -> str:
    return yaml.safe_dump(recipe, sort_keys=False)
