"""Exported artifacts (model.onnx, model_int8.xml, model.engine) as models for evaluate and benchmark.

An artifact carries no preprocessing of its own: it comes from the manifest.json that export or compress
wrote beside it, so an artifact is evaluated with exactly the preprocessing it was checked with.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgevision.errors import EdgevisionError
from edgevision.models.loading import LoadedModel, ModelSpec
from edgevision.models.resize import InputResize
from edgevision.runtimes import runtime_of_artifact


def artifact_runtime(name: str | Path | None) -> str | None:
    """The runtime of an artifact file, or None when `name` is not an artifact file."""
    if name is None or not Path(name).is_file():
        return None
    return runtime_of_artifact(name)


def load_artifact(path: str | Path) -> LoadedModel:
    """A LoadedModel whose `model` is the artifact's path and whose spec comes from the manifest beside it."""
    path = Path(path)
    manifest_path = path.parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        fields = {k: v for k, v in manifest["model"].items() if k != "family"}
        resized = fields.pop("resized", None)
        spec = ModelSpec(**fields, resized=InputResize(**resized) if resized else None)
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgevisionError(f"{path} has no edgevision manifest.json beside it to say how to feed it",
                              "keep the artifact in the directory export/compress wrote") from None
    # the runner settings the selected variant was checked with (OpenVINO INT8 with BF16 for the rest)
    return LoadedModel(path, spec, dict((manifest.get("runner_options") or {}).get(path.name, {})))


def check_runtime(name: str | Path, runtime: str, asked: str | None) -> str:
    """The artifact's runtime; a different --runtime is an error rather than a silent switch."""
    if asked is not None and asked != runtime:
        raise EdgevisionError(f"{Path(name).name} runs in {runtime}, not {asked}",
                              f"drop --runtime or pass --runtime {runtime}")
    return runtime


FLOAT_STEM = "model_fp32"  # the float artifact compress and export write beside the INT8 ones


def float_counterpart(path: str | Path, asked: str | Path | None = None) -> Path | None:
    """The float artifact an INT8 artifact was made from, in the same runtime: `asked`, else the run directory's
    model_fp32 of the same format (model_int8.xml -> model_fp32.xml). None when there is none."""
    path = Path(path)
    if asked is not None:
        asked = Path(asked)
        if not asked.is_file():
            raise EdgevisionError(f"--float {asked} is not a file", "give the float artifact the INT8 one was made from")
        if runtime_of_artifact(asked) != runtime_of_artifact(path):
            raise EdgevisionError(f"--float {asked.name} does not run in {runtime_of_artifact(path)}",
                                  f"give the float {path.suffix} artifact")
        return asked
    sibling = path.with_name(FLOAT_STEM + path.suffix)
    return sibling if sibling.is_file() and sibling != path and path.stem.startswith("model_int8") else None
