"""`edgevision recommend`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, error, print_json
from edgevision.cli.options import DebugOpt, JsonOpt
from edgevision.reports.render import fmt


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
    with cli_errors(debug):
        result = api.recommend(runs, target=target, max_latency_ms=max_latency_ms, max_drop=max_drop,
                               max_size_mb=max_size_mb)
        if json_out:
            print_json(result)
        else:
            c = console()
            for item in result.checklist:
                c.print(f"{item.question:16s} {item.answer}")
            pick = result.recommendation or result.closest
            kind = "recommended" if result.recommendation else "nothing meets every budget; closest"
            c.print(f"{kind}: {pick.model} {pick.variant} on {pick.runtime}: p50 {pick.latency_ms_p50:.2f} ms, "
                    f"drop {fmt(pick.drop)}, agreement {pick.agreement:.2f} %, {fmt(pick.size_mb, 1)} MB ({pick.run})")
            c.print("measurements used: " + ", ".join(f"{m.run} ({m.measured})" for m in result.measurements))
        if result.recommendation is None:
            error("no measured variant meets every budget (see closest above)")
            raise typer.Exit(3)
