"""`edgevision evaluate`."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, model_options, note, print_json
from edgevision.cli.options import (
    CheckpointOpt,
    DebugOpt,
    ImgSizeOpt,
    JsonOpt,
    ModelArg,
    ModelArgOpt,
    NumClassesOpt,
    RuntimeOpt,
    ThreadsOpt,
    WeightsOpt,
)
from edgevision.reports.render import fmt


def evaluate_command(
    model: ModelArg = None,
    data: Annotated[str, typer.Option("--data", help="ImageFolder, labels CSV, unlabelled folder or "
                                      "builtin:NAME (builtin splits default to test).")] = ...,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, help="Evaluate a seeded, class-balanced subset of this many images.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit subset.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    runtime: RuntimeOpt = None,
    threads: ThreadsOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data-loading processes.")] = 0,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Top-1/top-5 of a model on labelled data, with the model's own preprocessing."""
    with cli_errors(debug):
        report = api.evaluate(model, data, runtime=runtime, limit=limit, seed=seed, batch_size=batch_size,
                              threads=threads, workers=workers, progress=not json_out, log=note,
                              **model_options(weights, checkpoint, num_classes, img_size, model_arg))
        if json_out:
            print_json(report)
            return
        out, spec, result = console(), report.model, report.result
        out.print(f"model    {spec.name} ({spec.timm_name}), weights {spec.weights}")
        out.print(f"data     {result.data}: {result.images} images"
                  + (f", {result.skipped} unreadable skipped" if result.skipped else ""))
        if result.top1 is None:
            out.print("top-1    - (no labels: use `edgevision compress` for agreement with the float model)")
        else:
            out.print(f"top-1    {fmt(result.top1)} %\ntop-5    {fmt(result.top5)} %")
