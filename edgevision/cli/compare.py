"""`edgevision compare`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, note, print_json
from edgevision.cli.options import DebugOpt, JsonOpt, WideOpt
from edgevision.reports import compare as cmp

AllowMixedOpt = Annotated[bool, typer.Option("--allow-mixed", help="Compare runs evaluated on different data.")]


def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (compress, prune, export), or directories of "
                                               "runs such as a sweep.", show_default=False)],
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the accuracy-drop-vs-speedup plot (PNG).",
                                                 show_default=False)] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report.",
                                                     show_default=False)] = None,
    markdown_out: Annotated[Optional[Path], typer.Option("--markdown", help="Write the table as Markdown.",
                                                         show_default=False)] = None,
    allow_mixed: AllowMixedOpt = False,
    wide: WideOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """One table of accuracy drop vs speedup across runs, grouped by model with each model's Pareto frontier and
    selected variant marked and the runs' caveats, plus plot/HTML/Markdown."""
    with cli_errors(debug):
        comparison, written = api.compare(runs, plot=plot, html=html_out, markdown=markdown_out, allow_mixed=allow_mixed)
        if json_out:
            print_json({"rows": cmp.sorted_rows(comparison.rows), "caveats": comparison.caveats, "written": written})
            return
        console().print(cmp.rich_table(comparison, wide=wide))
        for kind, path in written.items():
            note(f"{kind} written: {path}")
