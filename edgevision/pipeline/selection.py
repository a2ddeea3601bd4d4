"""Which variant to deploy: the fastest candidate measured in this run that holds the accuracy budget.

Pure functions of the report's variant rows (name, runtime, role, latency, drop), so the rule is tested
with recorded numbers: candidates are the target's timed artifacts; with the guard on, those losing more
than the budget are out; the fastest p50 of the rest is selected. With random weights accuracy means
nothing, so the guard is off and speed alone decides (the report says which rule was used).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NOISE = 0.03  # two medians within 3% of each other are not told apart


def drop_points(variant: dict[str, Any]) -> float:
    """Points lost: top-1 with labels, else agreement with the float model."""
    return variant["top1_drop"] if variant["top1_drop"] is not None else 100.0 - variant["agreement"]


@dataclass
class Selection:
    selected: str | None  # "name/runtime" of the selected variant, None when nothing holds the budget
    rule: str  # how it was chosen, in words
    max_drop: float | None
    candidates: list[dict[str, Any]] = field(default_factory=list)  # key, p50, drop, within budget

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def key(variant: dict[str, Any]) -> str:
    return f"{variant['name']}/{variant['runtime']}"


def select(variants: list[dict[str, Any]], max_drop: float | None, guard: bool = True) -> Selection:
    """The fastest timed candidate within `max_drop` (all timed candidates when the guard is off)."""
    timed = [v for v in variants if v["role"] == "candidate" and v["latency_ms_p50"] is not None]
    guarded = guard and max_drop is not None
    rows = [{"key": key(v), "latency_ms_p50": v["latency_ms_p50"], "drop": drop_points(v),
             "within_budget": not guarded or drop_points(v) <= max_drop} for v in timed]
    if not guarded:
        rule = ("fastest measured (accuracy guard off: random weights, accuracy means nothing)" if not guard
                else "fastest measured (no accuracy budget)")
    else:
        rule = f"fastest measured within the accuracy budget ({budget_text(max_drop)})"
    holding = [r for r in rows if r["within_budget"]]
    best = min(holding, key=lambda r: r["latency_ms_p50"], default=None)
    return Selection(best["key"] if best else None, rule, max_drop if guarded else None, rows)


def budget_text(max_drop: float) -> str:
    """The budget in words: "1 point", "0.5 points"."""
    return f"{max_drop:g} point" + ("" if max_drop == 1 else "s")


def int8_no_faster(variants: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(INT8, FP32) candidate pairs where INT8 is no faster than float in this run (within the noise): per
    runtime that has both, and the fastest INT8 against the fastest float overall."""
    timed = [v for v in variants if v["role"] == "candidate" and v["latency_ms_p50"] is not None]
    groups = [[v for v in timed if v["runtime"] == r] for r in sorted({v["runtime"] for v in timed})] + [timed]
    pairs: list[tuple[dict, dict]] = []
    for rows in groups:
        int8 = [v for v in rows if v["name"].startswith("int8")]
        fp32 = [v for v in rows if not v["name"].startswith("int8")]
        if not int8 or not fp32:
            continue
        pair = (min(int8, key=lambda v: v["latency_ms_p50"]), min(fp32, key=lambda v: v["latency_ms_p50"]))
        if pair[0]["latency_ms_p50"] >= pair[1]["latency_ms_p50"] * (1 - NOISE) and pair not in pairs:
            pairs.append(pair)
    return pairs


# where a candidate's quantization record keeps its guard's summary: the OpenVINO guard (NNCF's accuracy
# control is its last step) and the Q/DQ guard
GUARD_RECORDS = ("accuracy_control", "accuracy_guard")


def held_on_guard_sample_only(variants: list[dict[str, Any]], max_drop: float | None, images: int) -> list[str]:
    """One line per candidate whose accuracy guard held the budget on a sample of the evaluation data (it checks
    on at most what fits its memory cap) but that loses more than the budget on all `images`: the selection
    goes by the full evaluation, so it is not selected, and the run says why."""
    if max_drop is None:
        return []
    lines = []
    for v in variants:
        records = v.get("quantization") or {}
        guard = next((records[k] for k in GUARD_RECORDS if k in records), None)
        if v["role"] != "candidate" or not guard or guard["images"] >= images:
            continue
        guard_drop, drop = guard["float"] - guard.get("final_int8", guard["plain_int8"]), drop_points(v)
        if guard_drop <= max_drop < drop:
            lines.append(f"{key(v)} held the accuracy budget on the guard's sample of {guard['images']} images "
                         f"({guard_drop:.2f} points) but loses {drop:.2f} on all {images} evaluation images: "
                         "not selected")
    return lines


DEFAULT_MAX_DROP = 1.0  # top-1 points with labels, agreement points without
RANDOM_WEIGHTS = "off (random weights)"


@dataclass(frozen=True)
class Guard:
    """The accuracy budget a run holds its INT8 candidates to, and where it came from."""

    max_drop: float | None  # None: off
    source: str  # default | asked | off (asked) | off (random weights)

    @property
    def speed_only(self) -> bool:
        """Random weights: accuracy means nothing, speed alone decides."""
        return self.source == RANDOM_WEIGHTS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_guard(asked: float | str | None, weights: str) -> Guard:
    """`asked` is the recipe's max_drop: None (not given: the default budget), "none" (off), or points.
    With random weights accuracy means nothing: the default budget is off (an explicit one still holds)."""
    if asked == "none":
        return Guard(None, "off (asked)")
    if asked is not None:
        return Guard(float(asked), "asked")
    if weights == "random":
        return Guard(None, RANDOM_WEIGHTS)
    return Guard(DEFAULT_MAX_DROP, "default")
