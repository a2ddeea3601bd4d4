"""`edgevision compress`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, exit_for_status, model_options, note, parse_budget, print_json, show_run
from edgevision.cli.options import (
    TARGET_HELP,
    CheckpointOpt,
    DebugOpt,
    FinetuneEpochsOpt,
    FinetuneImagesOpt,
    ForceOpt,
    ImgSizeOpt,
    ImportanceOpt,
    JsonOpt,
    ModelArg,
    ModelArgOpt,
    NumClassesOpt,
    PinRuntimeOpt,
    ThreadsOpt,
    WeightsOpt,
)


def compress_command(
    model: ModelArg = None,
    int8: Annotated[Optional[bool], typer.Option("--int8/--no-int8", help="Quantize to INT8 (the recipe's "
                                                 "default is yes).", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option(
        "--target", help=f"Deployment target (default cpu). {TARGET_HELP}.", show_default=False)] = None,
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
    max_drop: Annotated[Optional[str], typer.Option(
        "--max-drop", help="Accuracy budget in top-1 points (agreement points without labels), or none; default 1 "
        "(off with random weights). INT8 that misses it tries other settings and 4x the calibration images, then "
        "NNCF's accuracy control (OpenVINO) or float for the most sensitive nodes (ONNX Runtime); exit code 3 if "
        "no INT8 candidate holds it.", show_default=False)] = None,
    guard_time: Annotated[Optional[float], typer.Option(
        "--guard-time", min=0, help="Seconds the accuracy guard may spend (default: as long as the run's unguarded "
        "work, at least 30); it says what it would have tried next.", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate a seeded, class-balanced "
                                                 "subset of this many images.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the calibration and --limit draws (0), and of "
                                                "a random model's initial weights.",
                                                show_default=False)] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe (see recipes/); flags "
                                                   "override it.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default: "
                                                "runs/MODEL-TARGET-TIMESTAMP).", show_default=False)] = None,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, help="Timed calls per variant (50).",
                                                 show_default=False)] = None,
    runtime: PinRuntimeOpt = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Quantize to INT8 with calibration data, check it against the float model on the same data, and time it."""
    with cli_errors(debug):
        result = api.compress(
            model, int8=int8, target=target, data=data, calib_data=calib_data, calib_size=calib_size, prune=prune,
            importance=importance, finetune_data=finetune_data, finetune_epochs=finetune_epochs,
            finetune_images=finetune_images, max_drop=parse_budget(max_drop), guard_time=guard_time, limit=limit,
            seed=seed, recipe=recipe, out=out,
            force=force, threads=threads, iters=iters, runtime=runtime, progress=not json_out, log=note,
            **model_options(weights, checkpoint, num_classes, img_size, model_arg))
        if json_out:
            print_json(result.report)
        else:
            show_run(result.report, footer=(f"run directory: {result.run_dir}",))
        exit_for_status(result.report, result.run_dir)
