"""`edgevision export`: a compress run (or a model) -> the artifact a target deploys.

An export runs the same pipeline as compress with the target's stages (pipeline/targets/), so every artifact
is checked against the float model on the same data before it ships. From a run directory it rebuilds the
run's float model (model.safetensors) and reuses the run's recipe, evaluation and calibration data.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgevision.data.open import open_source
from edgevision.errors import EdgevisionError
from edgevision.models.loading import LoadedModel, load_model
from edgevision.pipeline.recipe import Recipe, defaults, merge
from edgevision.pipeline.report import RunReport
from edgevision.pipeline.resolve import checked
from edgevision.pipeline.run import CompressResult, compress_model
from edgevision.pipeline.targets import TARGETS, get_target
from edgevision.typed import to_data

RUNS_DIR = Path("runs")


@dataclass
class EngineFlags:
    """export's engine options (--batch, --dynamic-batch, --max-batch, --dla-core, --qdq-engine), for the recipe
    section the target names for them (Target.engine_flags_section); one left None keeps the recipe's value."""

    batch: int | None = None
    dynamic_batch: bool | None = None
    max_batch: int | None = None
    dla_core: int | None = None
    qdq_engine: str | None = None


@dataclass
class RunSource:
    """What export needs from a compress run directory."""

    run_dir: Path
    manifest: dict[str, Any]
    report: RunReport

    @property
    def recipe(self) -> dict[str, Any]:
        """The run's recipe as plain data, to be layered over (export changes the target's settings)."""
        return copy.deepcopy(self.manifest["recipe"])

    @property
    def eval_spec(self) -> str:
        return self.manifest["data"]["evaluation"]

    @property
    def calib_spec(self) -> str | None:
        calib = self.manifest["data"].get("calibration") or {}
        spec = calib.get("data")
        return None if spec == self.eval_spec else spec  # None: calibrated on the evaluation data

    def load_model(self) -> LoadedModel:
        checkpoint = self.run_dir / "model.safetensors"
        if not checkpoint.is_file():
            raise EdgevisionError(f"{self.run_dir} has no model.safetensors to export from",
                                  "rerun `edgevision compress` with this version, or export the model by name")
        return load_model(checkpoint=checkpoint)


def is_run_dir(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def open_run(run_dir: str | Path) -> RunSource:
    run_dir = Path(run_dir)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        if not {"recipe", "data"} <= manifest.keys():  # a compress run has both
            raise KeyError("recipe")
    except (OSError, ValueError, KeyError):
        raise EdgevisionError(f"{run_dir} is not an edgevision compress run (manifest.json/report.json)",
                              "give a directory made by `edgevision compress`, or a model name") from None
    return RunSource(run_dir, manifest, RunReport.from_dict(report, str(run_dir / "report.json")))


def latest_run(runs_dir: Path = RUNS_DIR) -> Path:
    """The most recent compress run under runs/ (exports inside runs are not runs: no model.safetensors)."""
    runs = [m.parent for m in Path(runs_dir).glob("*/manifest.json") if (m.parent / "model.safetensors").is_file()]
    if not runs:
        raise EdgevisionError(f"no compress run found in {runs_dir}/",
                              "run `edgevision compress MODEL --int8` first, or name a RUN_DIR or a MODEL")
    return max(runs, key=lambda p: (p / "manifest.json").stat().st_mtime)


def apply_target(recipe: dict[str, Any] | Recipe, target: str, precision: str,
                 engine_flags: EngineFlags | None = None) -> Recipe:
    """The recipe for one target and precision (validated again after the change), with export's engine flags
    set in the recipe section the target names for them."""
    spec = get_target(target)
    if precision not in spec.precisions:
        others = [t.name for t in _targets_with(precision)]
        where = f"is for --target {' or '.join(others)}; " if others else "is not known; "
        raise EdgevisionError(f"--precision {precision} {where}{target} runs {' or '.join(spec.precisions)}",
                              f"use --precision {' or '.join(spec.precisions)}")
    data = recipe.to_dict() if isinstance(recipe, Recipe) else recipe
    flags = {k: v for k, v in to_data(engine_flags or EngineFlags()).items() if v is not None}
    data = merge(merge(defaults(), data), {"target": target, "int8": precision == "int8",
                                           **({spec.engine_flags_section: flags} if spec.engine_flags_section else {})})
    return checked(merge(data, spec.precision_settings(precision)), "export settings")


def _targets_with(precision: str):
    return [t for t in TARGETS.values() if precision in t.precisions]


def export_run(
    run: RunSource,
    target: str,
    precision: str = "int8",
    out: Path | None = None,
    *,
    engine_flags: EngineFlags | None = None,
    data: str | None = None,
    calib_data: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> CompressResult:
    """Export a compress run for a target; `data`/`calib_data` replace the run's data (e.g. moved files)."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    recipe = apply_target(merge(run.recipe, given), target, precision, engine_flags)
    out = Path(out) if out is not None else run.run_dir / f"export-{target}"
    eval_spec = data or run.eval_spec
    calib_spec = calib_data or run.calib_spec
    loaded = run.load_model()
    eval_source = open_source(eval_spec, default_split="test")
    calib_source = open_source(calib_spec, default_split="train") if calib_spec else None
    log(f"exporting {run.run_dir} ({loaded.spec.name}) for {target}, {precision}")
    return compress_model(loaded, eval_source, recipe, out, calib_source=calib_source, force=force,
                          progress=progress, save_model=False, origin_weights=run.report.weights, log=log)


def export_model(loaded, eval_source, recipe: Recipe, target: str, precision: str, out: Path, *,
                 calib_source=None, engine_flags: EngineFlags | None = None, force: bool = False,
                 progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> CompressResult:
    """Export a model that has no compress run yet (the same pipeline, made for the target)."""
    recipe = apply_target(recipe, target, precision, engine_flags)
    return compress_model(loaded, eval_source, recipe, out, calib_source=calib_source, force=force,
                          progress=progress, save_model=False, log=log)
