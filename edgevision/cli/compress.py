from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision.cli.prune import FinetuneEpochsOpt, FinetuneImagesOpt, ImportanceOpt
from edgevision.cli.common import (CheckpointOpt, DebugOpt, ImgSizeOpt, JsonOpt, ModelArg, ModelArgOpt,
                                   NumClassesOpt, ThreadsOpt, WeightsOpt, cli_errors,
                                   exit_for_status, load_model_from_options, note, print_json, show_run)


def compress_command(
    model: ModelArg = None,
    int8: Annotated[Optional[bool], typer.Option("--int8/--no-int8", help="Quantize to INT8 (the recipe's "
                                                 "default is yes).", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option(
        "--target", help="Deployment target: cpu (OpenVINO IR), onnx (ONNX Runtime) or jetson (Q/DQ ONNX bundle "
        "for TensorRT); default cpu.", show_default=False)] = None,
    data: Annotated[str, typer.Option("--data", help="Evaluation data; without labels, fidelity to the float "
                                      "model only. Builtin splits default to test.")] = "builtin:photos",
    calib_data: Annotated[Optional[str], typer.Option(
        "--calib-data", help="Calibration data (default: the evaluation data; builtin splits default to train).",
        show_default=False)] = None,
    calib_size: Annotated[Optional[int], typer.Option("--calib-size", min=1, help="Calibration images (300).",
                                                      show_default=False)] = None,
    prune: Annotated[Optional[float], typer.Option(
        "--prune", min=0.0, max=1.0, help="Prune this fraction of channels/heads first, recover with a distilled "
        "fine-tune on --finetune-data, then quantize.", show_default=False)] = None,
    importance: ImportanceOpt = None,
    finetune_data: Annotated[Optional[str], typer.Option(
        "--finetune-data", help="Labelled recovery data after --prune (default: --calib-data).",
        show_default=False)] = None,
    finetune_epochs: FinetuneEpochsOpt = None,
    finetune_images: FinetuneImagesOpt = None,
    max_drop: Annotated[Optional[float], typer.Option(
        "--max-drop", min=0.0, help="Accuracy budget in top-1 points (agreement points without labels); "
        "exit code 3 if it cannot be met.", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate a seeded, class-balanced "
                                                 "subset of this many images.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the calibration and --limit draws (0).",
                                                show_default=False)] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe (see recipes/); flags "
                                                   "override it.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default: "
                                                "runs/MODEL-TARGET-TIMESTAMP).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    threads: ThreadsOpt = None,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, help="Timed calls per variant (50).",
                                                 show_default=False)] = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Quantize to INT8 with calibration data, check it against the float model on the same data, and time it."""
    from edgevision.compress.pipeline import compress
    from edgevision.compress.presets import preset_for
    from edgevision.compress.recipe import check_target, resolve
    from edgevision.data import open_source

    with cli_errors(debug):
        if target is not None:
            check_target(target)
        loaded = load_model_from_options(model, weights, checkpoint, num_classes, img_size, model_arg)
        resolved = resolve(preset_for(loaded.spec.family), recipe, {
            "target": target, "int8": int8, "calib_size": calib_size, "seed": seed, "max_drop": max_drop,
            "eval_limit": limit, "threads": threads, "benchmark_iters": iters,
            "prune": {"ratio": prune, "importance": importance, "finetune_epochs": finetune_epochs,
                      "finetune_images": finetune_images}})
        eval_source = open_source(data, default_split="test")
        calib_source = open_source(calib_data, default_split="train") if calib_data else None
        finetune_source = open_source(finetune_data, default_split="train") if finetune_data else None
        out = out or Path("runs") / f"{loaded.spec.name}-{resolved['target']}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = compress(loaded, eval_source, resolved, out, calib_source=calib_source,
                          finetune_source=finetune_source, force=force,
                          progress=not json_out, log=note)
        report = result.report
        if json_out:
            print_json(report)
        else:
            show_run(report, footer=(f"run directory: {result.run_dir}",))
        exit_for_status(report, result.run_dir)
