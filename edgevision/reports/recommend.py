"""`edgevision recommend`: the selection checklist answered from measured runs."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgevision.errors import EdgevisionError
from edgevision.pipeline.targets import TARGETS, get_target
from edgevision.reports.compare import load_report, load_rows, run_file


def recommend(paths: list[str | Path], target: str, max_latency_ms: float, max_drop: float,
              max_size_mb: float | None = None) -> dict[str, Any]:
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
    cpu, threads = _machine(reports)
    metric = "top-1" if all(r.top1 is not None for r in candidates) else "agreement with the float model"
    checklist = [
        {"question": "data size", "answer": f"measured on {candidates[0].images} images of {candidates[0].data} "
                                            f"({metric}); budgets are judged on that data"},
        {"question": "target device", "answer": f"{target}: {cpu}, {threads} threads (where the "
                                                "runs were timed)"},
        {"question": "latency budget", "answer": f"{len(fast)} of {len(candidates)} measured {target} variants "
                                                 f"have p50 <= {max_latency_ms:g} ms"},
        {"question": "accuracy budget", "answer": f"{len(accurate)} of {len(candidates)} lose <= {max_drop:g} points"},
        {"question": "task", "answer": "image classification (what every measured run evaluated)"},
        {"question": "memory", "answer": (f"{len(small)} of {len(candidates)} artifacts are <= {max_size_mb:g} MB"
                                          if max_size_mb is not None else "no limit given (sizes are in the table)")},
    ]
    closest = None
    if pick is None:
        # the nearest miss: the most accurate variant within the latency budget, else the fastest within the drop
        pool = fast or accurate or candidates
        closest = max(pool, key=lambda r: r.accuracy) if fast else min(pool, key=lambda r: r.latency_ms_p50)
    return {"target": target, "budgets": {"max_latency_ms": max_latency_ms, "max_drop": max_drop,
                                          "max_size_mb": max_size_mb},
            "recommendation": _describe(pick), "closest": _describe(closest), "checklist": checklist,
            "meeting": [_describe(r) for r in sorted(meeting, key=lambda r: r.latency_ms_p50)],
            "measurements": [{"run": run, "measured": _mtime(run)} for run in reports]}


def _describe(row) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"model": row.model, "variant": row.variant, "runtime": row.runtime, "top1": row.top1, "drop": row.drop,
            "agreement": row.agreement, "latency_ms_p50": row.latency_ms_p50, "size_mb": row.size_mb,
            "speedup": row.speedup, "selected": row.selected, "run": row.run}


def _machine(runs: list[str]) -> tuple[str, Any]:
    bench = load_report(run_file(runs[0])).benchmark
    return bench.cpu or "?", bench.threads or "?"


def _mtime(run: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run_file(run).stat().st_mtime))
