"""`edgevision deploy-check`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, error, note, print_json
from edgevision.cli.options import DebugOpt, JsonOpt, ThreadsOpt
from edgevision.deploy.bundle_lib import to_dict
from edgevision.deploy.select_model import summary

NO_PICK_EXIT = 3  # as compress: no candidate holds the accuracy budget


def deploy_check_command(
    bundle: Annotated[Path, typer.Argument(help="A CPU deploy bundle made by `edgevision export --target cpu`.")],
    threads: ThreadsOpt = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved timing rounds.")] = 10,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", min=0, help="Accuracy budget in points "
                                                      "(default: the bundle's).", show_default=False)] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Pick the bundle's fastest model within its accuracy budget on this machine, as the bundle's own
    select_model.py does on the device: writes decision.json and model.onnx or model.xml into the bundle."""
    with cli_errors(debug):
        decision = api.deploy_check(bundle, threads=threads, rounds=rounds, max_drop=max_drop, log=note)
        if json_out:
            print_json(to_dict(decision))
        else:
            console().print(summary(decision), markup=False)
        if not decision.picked:
            error(f"no candidate holds the accuracy budget on this machine: see {bundle / 'decision.json'}")
            raise typer.Exit(NO_PICK_EXIT)
