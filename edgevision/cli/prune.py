from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision.cli.common import (CheckpointOpt, DebugOpt, ImgSizeOpt, JsonOpt, ModelArg, ModelArgOpt,
                                   NumClassesOpt, ThreadsOpt, WeightsOpt, cli_errors, load_model_from_options, note,
                                   print_json, show_run)

RatioOpt = Annotated[float, typer.Option("--ratio", min=0.0, max=1.0, help="Fraction of each group's channels/heads "
                                         "to remove, e.g. 0.3 or 0.5.")]
ImportanceOpt = Annotated[Optional[str], typer.Option("--importance", help="magnitude (default) or taylor "
                                                      "(gradients on calibration images).", show_default=False)]
FinetuneEpochsOpt = Annotated[Optional[int], typer.Option("--finetune-epochs", min=0, help="Recovery epochs, "
                                                          "distilled from the unpruned model (1; 0 = none).",
                                                          show_default=False)]
FinetuneImagesOpt = Annotated[Optional[int], typer.Option("--finetune-images", min=1, help="Recovery on a seeded, "
                                                          "class-balanced subset of this many images.",
                                                          show_default=False)]


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
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
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
    from edgevision.compress.pipeline import compress
    from edgevision.compress.presets import preset_for
    from edgevision.compress.recipe import resolve
    from edgevision.data import open_source

    with cli_errors(debug):
        loaded = load_model_from_options(model, weights, checkpoint, num_classes, img_size, model_arg)
        epochs = finetune_epochs if data is not None else 0
        if data is None and finetune_epochs:
            note("no --data: the pruned model is not fine-tuned")
        recipe = resolve(preset_for(loaded.spec.family), None, {
            "target": "cpu", "int8": int8, "eval_limit": limit, "threads": threads,
            "prune": {"ratio": ratio, "importance": importance, "finetune_epochs": epochs,
                      "finetune_images": finetune_images}})
        finetune_source = open_source(data, default_split="train") if data else None
        eval_spec = eval_data or (data if data and data.startswith("builtin:") and data.count(":") == 1 else None)
        eval_source = open_source(eval_spec or "builtin:photos", default_split="test")
        out = out or Path("runs") / f"{loaded.spec.name}-prune{ratio:g}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = compress(loaded, eval_source, recipe, out, calib_source=finetune_source,
                          finetune_source=finetune_source, force=force, progress=not json_out, log=note)
        report = result.report
        if json_out:
            print_json(report)
            return
        p = report["pruning"]
        show_run(report, (f"pruned {p['ratio']:.0%} ({p['importance']}): {p['params_before'] / 1e6:.2f} -> "
                          f"{p['params_after'] / 1e6:.2f} M params, {p['gmacs_before']:.3f} -> {p['gmacs_after']:.3f} "
                          "GMACs",),
                 (f"pruned checkpoint: {result.run_dir / 'model.safetensors'} (use it with --checkpoint)",))
