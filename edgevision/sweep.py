"""`edgevision sweep` (a grid of compress runs in one directory, resumable) and `edgevision recommend`
(the selection checklist answered from those measurements)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgevision.errors import EdgevisionError

RUNTIMES_OF_TARGET = {"cpu": ("openvino",), "onnx": ("onnxruntime",), "jetson": ()}


def cell_name(model: str, ratio: float, target: str) -> str:
    return f"{model}-prune{ratio:g}-{target}"


@dataclass
class SweepResult:
    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier, interrupted sweep


def sweep(models: list[str], ratios: list[float], targets: list[str], out: Path, *, int8: bool = True,
          weights: str | None = None, data: str = "builtin:photos", calib_data: str | None = None,
          finetune_data: str | None = None, overrides: dict[str, Any] | None = None, progress: bool = True,
          log: Callable[[str], None] = lambda msg: None) -> SweepResult:
    """Run every (model, prune ratio, target) cell into OUT/MODEL-pruneR-TARGET.

    A cell is finished when its report.json exists; compress writes each cell in a temporary directory and
    renames it into place, so a killed sweep leaves finished cells and nothing half-written, and running
    the same command again does only the missing cells.
    """
    from edgevision.compress.pipeline import compress
    from edgevision.compress.presets import preset_for
    from edgevision.compress.recipe import check_target, resolve
    from edgevision.data import open_source
    from edgevision.models import load_model

    for target in targets:
        check_target(target)
    for ratio in ratios:
        if not 0 <= ratio < 1:
            raise EdgevisionError(f"prune ratio {ratio} is out of range", "give ratios in [0, 1), e.g. --prune 0,0.3,0.5")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = {"models": models, "prune": ratios, "targets": targets, "int8": int8, "weights": weights, "data": data,
            "calib_data": calib_data, "finetune_data": finetune_data, "overrides": overrides or {}}
    previous = out / "sweep.json"
    if previous.exists() and json.loads(previous.read_text(encoding="utf-8"))["grid"] != grid:
        raise EdgevisionError(f"{out} holds a sweep with other settings",
                              "rerun with the same settings to resume it, or choose another --out")
    previous.write_text(json.dumps({"grid": grid, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    result = SweepResult(out)
    eval_source = open_source(data, default_split="test")
    calib_source = open_source(calib_data, default_split="train") if calib_data else None
    finetune_source = open_source(finetune_data, default_split="train") if finetune_data else None
    for model in models:
        loaded = None
        for ratio in ratios:
            for target in targets:
                name = cell_name(model, ratio, target)
                cell = out / name
                if (cell / "report.json").is_file():
                    result.skipped.append(name)
                    log(f"sweep: {name} already done")
                    continue
                log(f"sweep: {name}")
                loaded = loaded or load_model(model, weights=weights)
                given = dict(overrides or {})
                recipe = resolve(preset_for(loaded.spec.family), None, {
                    **given, "target": target, "int8": int8,
                    "prune": {**given.get("prune", {}), "ratio": ratio or None}})
                compress(loaded, eval_source, recipe, cell, calib_source=calib_source, finetune_source=finetune_source,
                         progress=progress, save_model=False, log=log)
                result.done.append(name)
    return result


def recommend(paths: list[str | Path], target: str, max_latency_ms: float, max_drop: float,
              max_size_mb: float | None = None) -> dict[str, Any]:
    """The selection checklist answered from measured runs: which variant meets the budgets, and why."""
    from edgevision.compare import load_rows
    from edgevision.compress.recipe import check_target

    check_target(target)
    if not RUNTIMES_OF_TARGET[target]:
        raise EdgevisionError("no latency is measured for jetson here: TensorRT builds and runs on the device",
                              "time the engine there (edgevision benchmark model.engine), or ask for --target cpu/onnx")
    rows = load_rows(paths)
    candidates = [r for r in rows if r.target == target and r.runtime in RUNTIMES_OF_TARGET[target]
                  and r.latency_ms_p50 is not None]
    if not candidates:
        raise EdgevisionError(f"no measured {target} variant in {', '.join(map(str, paths))}",
                              f"run `edgevision sweep MODELS --int8 --targets {target}` first")

    def drop(r) -> float:
        return r.drop if r.drop is not None else 100.0 - r.agreement

    fast = [r for r in candidates if r.latency_ms_p50 <= max_latency_ms]
    accurate = [r for r in candidates if drop(r) <= max_drop]
    small = [r for r in candidates if max_size_mb is None or (r.size_mb is not None and r.size_mb <= max_size_mb)]
    meeting = [r for r in fast if r in accurate and r in small]
    pick = max(meeting, key=lambda r: (r.accuracy, -r.latency_ms_p50)) if meeting else None
    reports = sorted({r.run for r in candidates})
    cpu, threads = _machine(reports)
    metric = "top-1" if all(r.top1 is not None for r in candidates) else "agreement with the float model"
    checklist = [
        {"question": "data size", "answer": f"measured on {candidates[0].images} images of {candidates[0].data} "
                                            f"({metric}); budgets are judged on that data"},
        {"question": "target device", "answer": f"{target}: {cpu}, {threads} threads (this machine, where the "
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
            "speedup": row.speedup, "run": row.run}


def _machine(runs: list[str]) -> tuple[str, Any]:
    report = json.loads((Path(runs[0]) / "report.json").read_text(encoding="utf-8"))
    bench = report.get("benchmark", {})
    return bench.get("cpu", "?"), bench.get("threads", "?")


def _mtime(run: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime((Path(run) / "report.json").stat().st_mtime))
