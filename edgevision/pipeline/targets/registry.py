"""The target registry: what a deployment target is (pipeline/targets/__init__.py imports the targets).

A Target holds its stages (what compress and export run for it), the runtimes it times, the recipe
sections it reads, the precisions `export` offers and how they set the recipe, and what to tell the user
when its checks fail. Adding a target is one new module here that calls `register_target`, imported at the
bottom of this file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgevision.errors import EdgevisionError
from edgevision.pipeline.recipe import Recipe, RecipeSection, register_section
from edgevision.pipeline.report import RunReport


@dataclass(frozen=True)
class Target:
    name: str
    description: str  # one line, for --help and docs
    stages: tuple[type, ...]  # pipeline.stages.Stage subclasses, in order
    timed_runtimes: tuple[str, ...]  # runtimes whose latency on this machine means something for the target
    recipe_sections: tuple[RecipeSection, ...] = ()
    precisions: tuple[str, ...] = ("int8", "fp32")
    # (recipe, precision) -> recipe changes beyond int8 on/off, e.g. the jetson engine's FP16 flag
    precision_settings: Callable[[str], dict[str, Any]] = lambda precision: {}
    max_drop_hint: str = ""  # said when the INT8 model misses the accuracy budget
    next_step: str | None = None  # said after an export, e.g. where to build the engine
    untimed_reason: str | None = None  # why recommend cannot rank it here (no timed runtime)
    # report -> the target's own failed check (a status), or None; and the line that explains each such status
    check_report: Callable[[RunReport], str | None] = lambda report: None
    status_messages: dict[str, str] = field(default_factory=dict)  # status -> message, {run_dir} filled in
    # report -> lines the CLI prints under an export's table, from the target's own report section
    summary_lines: Callable[[RunReport], tuple[str, ...]] = lambda report: ()
    engine_flags_section: str | None = None  # the recipe section export's engine flags (--batch, ...) set
    # (recipe, whether it is this target's run) -> raise RecipeError for settings of its sections that do not fit
    check_recipe: Callable[[Recipe, bool], None] = lambda recipe, chosen: None


TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    TARGETS[target.name] = target
    for section in target.recipe_sections:
        register_section(section)
    return target


def target_names() -> tuple[str, ...]:
    return tuple(TARGETS)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise EdgevisionError(f"unknown target '{name}'", f"choose one of {', '.join(TARGETS)}")
    return TARGETS[name]
