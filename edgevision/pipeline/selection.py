"""Which variant to deploy: the fastest candidate measured in this run that holds the accuracy budget.

Pure functions of the report's variant rows (name, runtime, role, latency, drop), so the rule is tested
with recorded numbers: candidates are the target's timed artifacts; with the guard on, those losing more
than the budget are out; the fastest p50 of the rest is selected. With random weights accuracy means
nothing, so the guard is off and speed alone decides (the report says which rule was used).
"""
from __future__ import annotations

from edgevision.pipeline.report import Selection, SelectionCandidate, VariantRecord
from edgevision.quantization.budget import RANDOM_WEIGHTS, Guard

NOISE = 0.03  # two medians within 3% of each other are not told apart


def select(variants: list[VariantRecord], max_drop: float | None, guard: bool = True) -> Selection:
    """The fastest timed candidate within `max_drop` (all timed candidates when the guard is off)."""
    timed = [v for v in variants if v.is_candidate and v.timed]
    guarded = guard and max_drop is not None
    rows = [SelectionCandidate(v.key, v.latency_ms_p50, v.drop, not guarded or v.drop <= max_drop) for v in timed]
    if not guarded:
        rule = ("fastest measured (accuracy guard off: random weights, accuracy means nothing)" if not guard
                else "fastest measured (no accuracy budget)")
    else:
        rule = f"fastest measured within the accuracy budget ({budget_text(max_drop)})"
    holding = [r for r in rows if r.within_budget]
    best = min(holding, key=lambda r: r.latency_ms_p50, default=None)
    return Selection(best.key if best else None, rule, max_drop if guarded else None, rows)


def budget_text(max_drop: float) -> str:
    """The budget in words: "1 point", "0.5 points"."""
    return f"{max_drop:g} point" + ("" if max_drop == 1 else "s")


def int8_no_faster(variants: list[VariantRecord]) -> list[tuple[VariantRecord, VariantRecord]]:
    """(INT8, FP32) candidate pairs where INT8 is no faster than float in this run (within the noise): per
    runtime that has both, and the fastest INT8 against the fastest float overall."""
    timed = [v for v in variants if v.is_candidate and v.timed]
    by_runtime: dict[str, list[VariantRecord]] = {}
    for v in timed:
        by_runtime.setdefault(v.runtime, []).append(v)
    groups = [by_runtime[r] for r in sorted(by_runtime)] + [timed]
    pairs: list[tuple[VariantRecord, VariantRecord]] = []
    for rows in groups:
        int8 = [v for v in rows if v.is_int8]
        fp32 = [v for v in rows if not v.is_int8]
        if not int8 or not fp32:
            continue
        pair = (min(int8, key=lambda v: v.latency_ms_p50), min(fp32, key=lambda v: v.latency_ms_p50))
        if pair[0].latency_ms_p50 >= pair[1].latency_ms_p50 * (1 - NOISE) and pair not in pairs:
            pairs.append(pair)
    return pairs


# where a candidate's quantization record keeps its guard's summary: the OpenVINO guard (NNCF's accuracy
# control is its last step) and the Q/DQ guard
GUARD_RECORDS = ("accuracy_control", "accuracy_guard")


def held_on_guard_sample_only(variants: list[VariantRecord], max_drop: float | None, images: int) -> list[str]:
    """One line per candidate whose accuracy guard held the budget on a sample of the evaluation data (it checks
    on at most what fits its memory cap) but that loses more than the budget on all `images`: the selection
    goes by the full evaluation, so it is not selected, and the run says why."""
    if max_drop is None:
        return []
    lines = []
    for v in variants:
        records = v.quantization or {}
        guard = next((records[k] for k in GUARD_RECORDS if k in records), None)
        if not v.is_candidate or not guard or guard["images"] >= images:
            continue
        guard_drop, drop = guard["float"] - guard.get("final_int8", guard["plain_int8"]), v.drop
        if guard_drop <= max_drop < drop:
            lines.append(f"{v.key} held the accuracy budget on the guard's sample of {guard['images']} images "
                         f"({guard_drop:.2f} points) but loses {drop:.2f} on all {images} evaluation images: "
                         "not selected")
    return lines


DEFAULT_MAX_DROP = 1.0  # top-1 points with labels, agreement points without


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
