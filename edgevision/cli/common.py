"""What every command shares: option types, error handling, output."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgevision.errors import EdgevisionError

# --- options shared by several commands -------------------------------------------------------------
ModelArg = Annotated[Optional[str], typer.Argument(
    help="Alias (see `edgevision models`) or any timm model name; optional with an edgevision --checkpoint.",
    show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="pretrained (timm's hub/cache), random (speed-only work), or fashion-mnist (a *_mini "
    "model trained by edgevision on first use and cached). Default: pretrained where timm has weights for "
    "the architecture, else random.", show_default=False)]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="Local weights: safetensors, a torch state dict, or an edgevision checkpoint.",
    show_default=False)]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", min=1, help="Classifier outputs.",
                                                      show_default=False)]
ImgSizeOpt = Annotated[Optional[int], typer.Option("--img-size", min=8, help="Square input size in pixels.",
                                                   show_default=False)]
ModelArgOpt = Annotated[Optional[list[str]], typer.Option(
    "--model-arg", help="Extra timm constructor argument KEY=VALUE (YAML value), repeatable; "
    "e.g. --model-arg depth=6 --model-arg 'dims=[32,64,128,256]'.", show_default=False)]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1,
                                                   help="CPU threads. Default: all available cores.",
                                                   show_default=False)]
RuntimeOpt = Annotated[Optional[str], typer.Option(
    "--runtime", help="pytorch, openvino or onnxruntime (default pytorch); an artifact file (model.onnx, "
    "model_int8.xml, model.engine) runs in its own runtime.", show_default=False)]
# the training loop's options (train, distill)
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Data-loading processes (per training process).")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="cpu or cuda (default: cuda if available); under torchrun each process takes its "
    "LOCAL_RANK's GPU.", show_default=False)]
ResumeOpt = Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run of the same "
                                         "command (same settings and process count).")]
SaveEveryOpt = Annotated[float, typer.Option("--save-every", min=1.0, help="Seconds between resume-state saves.")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-batches per optimiser step.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
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


def load_model_from_options(model, weights, checkpoint, num_classes, img_size, model_args):
    from edgevision.models import load_model

    return load_model(model, weights=weights, checkpoint=checkpoint, num_classes=num_classes,
                      img_size=img_size, model_kwargs=parse_model_args(model_args) or None, log=note)


def load_model_or_artifact(model, runtime, weights, checkpoint, num_classes, img_size, model_args):
    """(LoadedModel, runtime): an exported artifact file with its manifest, or a model as the options say."""
    from edgevision.artifacts import artifact_runtime, check_runtime, load_artifact

    own = artifact_runtime(model)
    if own is not None:
        return load_artifact(model), check_runtime(model, own, runtime)
    return load_model_from_options(model, weights, checkpoint, num_classes, img_size, model_args), runtime or "pytorch"


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
    from edgevision.report import json_default

    typer.echo(json.dumps(data, indent=2, default=json_default))


def console():
    from rich.console import Console

    # Pipes and CI logs get 120 columns rather than rich's 80, so tables keep one line per row.
    width = None if sys.stdout.isatty() else 120
    return Console(file=sys.stdout, highlight=False, width=width)


def show_run(report: dict[str, Any], summary: tuple[str, ...] = (), footer: tuple[str, ...] = ()) -> None:
    """What compress, prune and export print: the variants table, summary lines, the run's notes, footer lines."""
    from edgevision.report import variants_table

    out = console()
    out.print(variants_table(report))
    for line in (*summary, *(f"note: {w}" for w in report["warnings"]), *footer):
        out.print(line)


def exit_for_status(report: dict[str, Any], run_dir) -> None:
    """Exit code 3, with the reason, for a run that was written but failed its checks."""
    if report["status"] == "tensorrt_rules_failed":
        error(f"model.onnx breaks TensorRT's INT8 rules (see report.json); written to {run_dir}")
        raise typer.Exit(3)
    if report["status"] == "max_drop_not_met":
        how = ("even with NNCF's accuracy control" if report["target"] == "cpu" else
               "(accuracy control is OpenVINO's: try --target cpu, or keep layers float with qdq.exclude_nodes)")
        error(f"the INT8 model loses more than --max-drop {report['max_drop']} points {how}; "
              f"report written to {run_dir}")
        raise typer.Exit(3)


def rank_zero_log():
    """(is rank 0, log): under torchrun only rank 0 prints, so one run reads as one."""
    from edgevision.distributed import env_from_torchrun

    main = env_from_torchrun().is_main
    return main, (note if main else (lambda message: None))


def note(message: str) -> None:
    """Progress-style messages go to stderr so --json stays parseable."""
    typer.echo(message, err=True)


def weights_warning(spec) -> str | None:
    if spec.weights == "random":
        return "weights: random - accuracy numbers are meaningless; latency is real"
    return None
