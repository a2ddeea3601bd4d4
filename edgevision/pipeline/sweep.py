"""`edgevision sweep`: a grid of compress runs (models x prune ratios x targets) in one directory, resumable."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgevision.data.open import open_source
from edgevision.errors import EdgevisionError
from edgevision.io import write_json
from edgevision.models.loading import load_model
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.resolve import check_target, resolve
from edgevision.pipeline.run import compress_model


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
    write_json(previous, {"grid": grid, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
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
                compress_model(loaded, eval_source, recipe, cell, calib_source=calib_source,
                               finetune_source=finetune_source, progress=progress, save_model=False, log=log)
                result.done.append(name)
    return result
