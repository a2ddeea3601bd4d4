"""`edgevision recommend`: the selection checklist answered from measured runs."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevision.errors import EdgevisionError
from edgevision.pipeline.targets import TARGETS, get_target
from edgevision.reports.compare import Row, load_report, load_rows, run_file


@dataclass
class Budgets:
    max_latency_ms: float
    max_drop: float
    max_size_mb: float | None


@dataclass
class Answer:
    question: str
    answer: str


@dataclass
class Candidate:
    """A measured variant, as the recommendation names it."""

    model: str
    variant: str
    runtime: str
    top1: float | None
    drop: float | None
    agreement: float | None
    latency_ms_p50: float | None
    size_mb: float | None
    speedup: float | None
    selected: bool
    run: str

    @classmethod
    def of(cls, row: Row | None) -> Candidate | None:
        if row is None:
            return None
        return cls(row.model, row.variant, row.runtime, row.top1, row.drop, row.agreement, row.latency_ms_p50,
                   row.size_mb, row.speedup, row.selected, row.run)


@dataclass
class Measurement:
    run: str
    measured: str  # when its report was written, local time


@dataclass
class Recommendation:
    """Which measured variant meets the budgets (None: none does, and `closest` is the nearest miss), and the
    selection checklist answered from the measurements."""

    target: str
    budgets: Budgets
    recommendation: Candidate | None
    closest: Candidate | None
    checklist: list[Answer]
    meeting: list[Candidate]  # every variant that meets the budgets, fastest first
    measurements: list[Measurement]


def recommend(paths: list[str | Path], target: str, max_latency_ms: float, max_drop: float,
              max_size_mb: float | None = None) -> Recommendation:
    """The selection checklist answered from measured runs: which variant meets the budgets, and why."""
    spec = get_target(target)
    if not spec.timed_runtimes:
        timed = [t.name for t in TARGETS.values() if t.timed_runtimes]
        raise EdgevisionError(spec.untimed_reason or f"no latency is measured for {target} here",
                              f"time it on the device (edgevision benchmark model.engine), or ask for --target "
                              f"{'/'.join(timed)}")
    rows = load_rows(paths)
    candidates = [r for r in rows if spec.name == r.target and r.runtime in spec.timed_runtimes
                  and r.latency_ms_p50 is not None]
    if not candidates:
        raise EdgevisionError(f"no measured {target} variant in {', '.join(map(str, paths))}",
                              f"run `edgevision sweep MODELS --int8 --targets {target}` first")

    fast = [r for r in candidates if r.latency_ms_p50 <= max_latency_ms]
    accurate = [r for r in candidates if r.accuracy_drop <= max_drop]
    small = [r for r in candidates if max_size_mb is None or (r.size_mb is not None and r.size_mb <= max_size_mb)]
    meeting = [r for r in fast if r in accurate and r in small]
    pick = max(meeting, key=lambda r: (r.accuracy, -r.latency_ms_p50)) if meeting else None
    reports = sorted({r.run for r in candidates})
    closest = None
    if pick is None:
        # the nearest miss: the most accurate variant within the latency budget, else the fastest within the drop
        pool = fast or accurate or candidates
        closest = max(pool, key=lambda r: r.accuracy) if fast else min(pool, key=lambda r: r.latency_ms_p50)
    counts = (len(fast), len(accurate), len(small), len(candidates))
    budgets = Budgets(max_latency_ms, max_drop, max_size_mb)
    return Recommendation(target, budgets, Candidate.of(pick), Candidate.of(closest),
                          _checklist(candidates, reports, target, counts, budgets),
                          [Candidate.of(r) for r in sorted(meeting, key=lambda r: r.latency_ms_p50)],
                          [Measurement(run, _mtime(run)) for run in reports])


def _checklist(candidates: list[Row], reports: list[str], target: str, counts: tuple[int, int, int, int],
               budgets: Budgets) -> list[Answer]:
    """The selection checklist's answers; `counts`: variants within the latency, accuracy and size budgets, and
    all measured."""
    fast, accurate, small, total = counts
    cpu, threads = _machine(reports)
    metric = "top-1" if all(r.top1 is not None for r in candidates) else "agreement with the float model"
    return [
        Answer("data size", f"measured on {candidates[0].images} images of {candidates[0].data} ({metric}); "
                            "budgets are judged on that data"),
        Answer("target device", f"{target}: {cpu}, {threads} threads (where the runs were timed)"),
        Answer("latency budget", f"{fast} of {total} measured {target} variants have p50 <= "
                                 f"{budgets.max_latency_ms:g} ms"),
        Answer("accuracy budget", f"{accurate} of {total} lose <= {budgets.max_drop:g} points"),
        Answer("task", "image classification (what every measured run evaluated)"),
        Answer("memory", f"{small} of {total} artifacts are <= {budgets.max_size_mb:g} MB"
                         if budgets.max_size_mb is not None else "no limit given (sizes are in the table)"),
    ]


def _machine(runs: list[str]) -> tuple[str, Any]:
    bench = load_report(run_file(runs[0])).benchmark
    return bench.cpu or "?", bench.threads or "?"


def _mtime(run: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run_file(run).stat().st_mtime))
