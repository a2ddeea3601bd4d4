"""`edgevision prune`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, model_options, note, print_json, show_run
from edgevision.cli.options import (
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
    ThreadsOpt,
    WeightsOpt,
)

RatioOpt = Annotated[float, typer.Option("--ratio", min=0.0, max=1.0, help="Fraction of each group's channels/heads "
                                         "to remove, e.g. 0.3 or 0.5.")]


def prune_command(
    model: ModelArg = None,
    ratio: RatioOpt = ...,
    importance: ImportanceOpt = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Labelled data for the recovery fine-tune (builtin "
                                                "splits default to train). Without it, no recovery.",
                                                show_default=False)] = None,
    eval_data: Annotated[Optional[str], typer.Option("--eval-data", help="Evaluation data (default: --data's test "
                                                     "split for builtin data, else builtin:photos).",
                                                     show_default=False)] = None,
    finetune_epochs: FinetuneEpochsOpt = None,
    finetune_images: FinetuneImagesOpt = None,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Also quantize the pruned model (cpu target).")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate a class-balanced subset.",
                                                 show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory; the pruned checkpoint is "
                                                "OUT/model.safetensors (default: runs/MODEL-pruneR-TIMESTAMP).",
                                                show_default=False)] = None,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Structured pruning (channels, heads, MLP width) with a distilled recovery fine-tune, checked against the
    unpruned model on the same data. The run directory holds the pruned checkpoint, loadable with --checkpoint."""
    with cli_errors(debug):
        result = api.prune(model, ratio, importance=importance, data=data, eval_data=eval_data,
                           finetune_epochs=finetune_epochs, finetune_images=finetune_images, int8=int8, limit=limit,
                           out=out, force=force, threads=threads, progress=not json_out, log=note,
                           **model_options(weights, checkpoint, num_classes, img_size, model_arg))
        report = result.report
        if json_out:
            print_json(report)
            return
        p = report.pruning
        show_run(report, (f"pruned {p.ratio:.0%} ({p.importance}): {p.params_before / 1e6:.2f} -> "
                          f"{p.params_after / 1e6:.2f} M params, {p.gmacs_before:.3f} -> {p.gmacs_after:.3f} GMACs",),
                 (f"pruned checkpoint: {result.run_dir / 'model.safetensors'} (use it with --checkpoint)",))
