from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision.cli.prune import FinetuneEpochsOpt, FinetuneImagesOpt
from edgevision.cli.common import (DebugOpt, JsonOpt, ThreadsOpt, WeightsOpt, cli_errors, console, error, note,
                                   print_json)
from edgevision.report import fmt

AllowMixedOpt = Annotated[bool, typer.Option("--allow-mixed", help="Compare runs evaluated on different data.")]


def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (compress, prune, export), or directories of "
                                               "runs such as a sweep.", show_default=False)],
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the accuracy-vs-latency plot (PNG).",
                                                 show_default=False)] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report.",
                                                     show_default=False)] = None,
    markdown_out: Annotated[Optional[Path], typer.Option("--markdown", help="Write the table as Markdown.",
                                                         show_default=False)] = None,
    allow_mixed: AllowMixedOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """One table of accuracy drop vs speedup across runs, with the Pareto frontier, plus plot/HTML/Markdown."""
    from edgevision import compare as cmp

    with cli_errors(debug):
        rows = cmp.load_rows(runs, allow_mixed=allow_mixed)
        written = cmp.write_outputs(rows, plot, html_out, markdown_out)
        if json_out:
            print_json({"rows": cmp.rows_to_json(rows), "written": written})
            return
        console().print(cmp.rich_table(rows))
        for kind, path in written.items():
            note(f"{kind} written: {path}")


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
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a grid of compress runs (models x prune ratios x targets) into one directory and compare it.
    Run the same command again after an interruption: finished cells are not redone."""
    from edgevision import compare as cmp
    from edgevision.sweep import sweep

    with cli_errors(debug):
        ratios = _floats(prune, "--prune")
        target_list = [t.strip() for t in targets.split(",") if t.strip()]
        out = out or Path("runs") / f"sweep-{'-'.join(models)}"
        overrides = {k: v for k, v in {"calib_size": calib_size, "eval_limit": limit, "benchmark_iters": iters,
                                        "threads": threads}.items() if v is not None}
        recovery = {k: v for k, v in {"finetune_epochs": finetune_epochs, "finetune_images": finetune_images}.items()
                    if v is not None}
        if recovery:
            overrides["prune"] = recovery
        result = sweep(models, ratios, target_list, out, int8=int8, weights=weights, data=data, calib_data=calib_data,
                       finetune_data=finetune_data, overrides=overrides, progress=not json_out, log=note)
        rows = cmp.load_rows([out])
        written = cmp.write_outputs(rows, out / "compare.png", out / "compare.html", out / "compare.md")
        if json_out:
            print_json({"sweep": str(out), "done": result.done, "skipped": result.skipped,
                        "rows": cmp.rows_to_json(rows), "written": written})
            return
        console().print(cmp.rich_table(rows))
        note(f"sweep {out}: {len(result.done)} cells run, {len(result.skipped)} already done; report {out / 'compare.html'}")


def recommend_command(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="Sweep or run directories (default: runs/).",
                                                         show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help="cpu (OpenVINO) or onnx (ONNX Runtime).")] = "cpu",
    max_latency_ms: Annotated[float, typer.Option("--max-latency-ms", min=0.0, help="p50 latency budget, batch 1.")] = ...,
    max_drop: Annotated[float, typer.Option("--max-drop", min=0.0, help="Accuracy budget in top-1 points "
                                            "(agreement points without labels).")] = 1.0,
    max_size_mb: Annotated[Optional[float], typer.Option("--max-size-mb", min=0.0, help="Artifact size budget.",
                                                         show_default=False)] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Which measured variant to deploy: the selection checklist answered from runs timed on this machine."""
    from edgevision.sweep import recommend

    with cli_errors(debug):
        result = recommend(runs or [Path("runs")], target, max_latency_ms, max_drop, max_size_mb)
        if json_out:
            print_json(result)
        else:
            c = console()
            for item in result["checklist"]:
                c.print(f"{item['question']:16s} {item['answer']}")
            pick = result["recommendation"] or result["closest"]
            kind = "recommended" if result["recommendation"] else "nothing meets every budget; closest"
            c.print(f"{kind}: {pick['model']} {pick['variant']} on {pick['runtime']}: p50 {pick['latency_ms_p50']:.2f} ms, "
                    f"drop {fmt(pick['drop'])}, agreement {pick['agreement']:.2f} %, {fmt(pick['size_mb'], 1)} MB "
                    f"({pick['run']})")
            c.print("measurements used: " + ", ".join(f"{m['run']} ({m['measured']})" for m in result["measurements"]))
        if result["recommendation"] is None:
            error("no measured variant meets every budget (see closest above)")
            raise typer.Exit(3)


def _floats(text: str, option: str) -> list[float]:
    from edgevision.errors import EdgevisionError

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EdgevisionError(f"{option} '{text}' is not a comma-separated list of numbers", f"e.g. {option} 0,0.3,0.5") from None
    if not values:
        raise EdgevisionError(f"{option} is empty", f"e.g. {option} 0,0.5")
    return values
