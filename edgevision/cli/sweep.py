"""`edgevision sweep`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, note, print_json
from edgevision.cli.options import (
    DebugOpt,
    FinetuneEpochsOpt,
    FinetuneImagesOpt,
    JsonOpt,
    PinRuntimeOpt,
    ThreadsOpt,
    WeightsOpt,
    WideOpt,
)
from edgevision.errors import EdgevisionError
from edgevision.reports import compare as cmp


def sweep_command(
    models: Annotated[list[str], typer.Argument(help="Model aliases or timm names.", show_default=False)],
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Quantize every cell.")] = True,
    prune: Annotated[str, typer.Option("--prune", help="Comma-separated pruning ratios; 0 = unpruned.")] = "0",
    targets: Annotated[str, typer.Option("--targets", help="Comma-separated targets: cpu, onnx, jetson.")] = "cpu",
    out: Annotated[Optional[Path], typer.Option("--out", help="Sweep directory (default: runs/sweep-MODELS).",
                                                show_default=False)] = None,
    data: Annotated[str, typer.Option("--data", help="Evaluation data (builtin splits default to test).")] = "builtin:photos",
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="Calibration (and recovery) data.",
                                                      show_default=False)] = None,
    finetune_data: Annotated[Optional[str], typer.Option("--finetune-data", help="Recovery data after pruning "
                                                         "(default: --calib-data).", show_default=False)] = None,
    finetune_epochs: FinetuneEpochsOpt = None,
    finetune_images: FinetuneImagesOpt = None,
    calib_size: Annotated[Optional[int], typer.Option("--calib-size", min=1, show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate a class-balanced subset.",
                                                 show_default=False)] = None,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, show_default=False)] = None,
    threads: ThreadsOpt = None,
    weights: WeightsOpt = None,
    runtime: PinRuntimeOpt = None,
    wide: WideOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a grid of compress runs (models x prune ratios x targets) into one directory and compare it.
    Run the same command again after an interruption: finished cells are not redone."""
    with cli_errors(debug):
        ratios = _floats(prune, "--prune")
        target_list = [t.strip() for t in targets.split(",") if t.strip()]
        overrides = {k: v for k, v in {"calib_size": calib_size, "eval_limit": limit, "benchmark_iters": iters,
                                        "threads": threads, "runtime": runtime}.items() if v is not None}
        recovery = {k: v for k, v in {"finetune_epochs": finetune_epochs, "finetune_images": finetune_images}.items()
                    if v is not None}
        if recovery:
            overrides["prune"] = recovery
        result, comparison, written = api.sweep(models, ratios, target_list, out, int8=int8, weights=weights, data=data,
                                          calib_data=calib_data, finetune_data=finetune_data, overrides=overrides,
                                                progress=not json_out, log=note)
        out = result.out
        if json_out:
            print_json({"sweep": str(out), "done": result.done, "skipped": result.skipped,
                        "rows": cmp.sorted_rows(comparison.rows), "caveats": comparison.caveats, "written": written})
            return
        console().print(cmp.rich_table(comparison, wide=wide))
        note(f"sweep {out}: {len(result.done)} cells run, {len(result.skipped)} already done; report {out / 'compare.html'}")


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EdgevisionError(f"{option} '{text}' is not a comma-separated list of numbers", f"e.g. {option} 0,0.3,0.5") from None
    if not values:
        raise EdgevisionError(f"{option} is empty", f"e.g. {option} 0,0.5")
    return values
