"""What every command shares: option types, error handling, output."""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import typer
import yaml

from edgevision.errors import EdgevisionError
from edgevision.io import json_default
from edgevision.models.zoo import ModelKwargs
from edgevision.pipeline.report import RunReport
from edgevision.pipeline.status import CHECK_FAILED_EXIT, failure_message
from edgevision.reports.render import selection_line, variants_table
from edgevision.training.distributed import env_from_torchrun


# --- errors ----------------------------------------------------------------------------------------
def error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


@contextlib.contextmanager
def cli_errors(debug: bool):
    """Known problems become one line and an exit code; anything else too, unless --debug."""
    try:
        yield
    except EdgevisionError as e:
        if debug:
            raise
        error(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        if debug:
            raise
        error("interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # noqa: BLE001 - the contract is: no traceback without --debug
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        error(f"{type(e).__name__}: {first} (rerun with --debug for the traceback)")
        raise typer.Exit(1) from None


# --- output ----------------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=json_default))


def console():
    from rich.console import Console

    # Pipes and CI logs get 120 columns rather than rich's 80, so tables keep one line per row.
    width = None if sys.stdout.isatty() else 120
    return Console(file=sys.stdout, highlight=False, width=width)


def show_run(report: RunReport, summary: tuple[str, ...] = (), footer: tuple[str, ...] = ()) -> None:
    """What compress, prune and export print: the variants table, summary lines, the run's notes, footer lines."""
    out = console()
    out.print(variants_table(report))
    selected = selection_line(report)
    for line in (*summary, *([selected] if selected else []), *(f"note: {w}" for w in report.warnings), *footer):
        out.print(line)


def exit_for_status(report: RunReport, run_dir) -> None:
    """Exit code 3, with the reason, for a run that was written but failed its checks."""
    message = failure_message(report, run_dir)
    if message:
        error(message)
        raise typer.Exit(CHECK_FAILED_EXIT)


def rank_zero_log():
    """(is rank 0, log): under torchrun only rank 0 prints, so one run reads as one."""
    main = env_from_torchrun().is_main
    return main, (note if main else (lambda message: None))


def note(message: str) -> None:
    """Progress-style messages go to stderr so --json stays parseable."""
    typer.echo(message, err=True)


def parse_model_args(items: list[str] | None) -> ModelKwargs:
    """--model-arg KEY=VALUE items (YAML values) -> timm constructor kwargs."""
    out: ModelKwargs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EdgevisionError(f"--model-arg '{item}' is not KEY=VALUE", "e.g. --model-arg depth=6")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise EdgevisionError(f"--model-arg {key}: cannot parse value {value!r}",
                                  "use YAML syntax, e.g. 6, 0.1 or [32,64]") from None
    return out


def model_options(weights, checkpoint, num_classes, img_size, model_args) -> dict[str, Any]:
    """The model options every command shares, as the API's keyword arguments."""
    return {"weights": weights, "checkpoint": checkpoint, "num_classes": num_classes, "img_size": img_size,
            "model_kwargs": parse_model_args(model_args) or None}


def parse_budget(text: str | None) -> float | str | None:
    """--max-drop: points (a number >= 0), `none` (no guard), or not given (None: the default budget)."""
    if text is None or text.strip().lower() == "none":
        return None if text is None else "none"
    try:
        value = float(text)
    except ValueError:
        raise EdgevisionError(f"--max-drop {text!r} is not a number of points", "e.g. --max-drop 1, or --max-drop none") from None
    if value < 0:
        raise EdgevisionError(f"--max-drop {text} is negative", "give points to lose at most, e.g. --max-drop 1")
    return value
