"""`edgevision export` and `edgevision build-engine`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, exit_for_status, model_options, note, print_json, show_run
from edgevision.cli.options import (
    TARGET_HELP,
    CheckpointOpt,
    DebugOpt,
    ForceOpt,
    ImgSizeOpt,
    JsonOpt,
    ModelArgOpt,
    NumClassesOpt,
    ThreadsOpt,
    WeightsOpt,
)
from edgevision.pipeline.export import EngineFlags
from edgevision.pipeline.targets import get_target
from edgevision.quantization.engines import DEFAULT_QDQ_ENGINE, QDQ_ENGINES


def export_command(
    source: Annotated[Optional[str], typer.Argument(
        help="A compress run directory (default: the latest under runs/), a distill run directory (its student), "
        "or a model alias / timm name.",
        show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help=f"Deployment target. {TARGET_HELP}.")] = "jetson",
    precision: Annotated[str, typer.Option("--precision", help="int8, fp16 (jetson only) or fp32.")] = "int8",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: RUN_DIR/export-TARGET, "
                                                "or exports/MODEL-TARGET-TIMESTAMP).", show_default=False)] = None,
    force: ForceOpt = False,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="jetson: static batch, or the "
                                                 "optimisation point with --dynamic-batch (1).", show_default=False)] = None,
    dynamic_batch: Annotated[Optional[bool], typer.Option("--dynamic-batch/--static-batch", help="jetson: "
                                                          "dynamic batch axis (static).", show_default=False)] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="jetson: largest batch of a "
                                                     "dynamic engine (32).", show_default=False)] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", min=0, help="jetson: build for this DLA core, "
                                                    "with GPU fallback.", show_default=False)] = None,
    qdq_engine: Annotated[Optional[str], typer.Option(
        "--qdq-engine", help=f"jetson INT8: who writes the Q/DQ graph, {' or '.join(QDQ_ENGINES)} (default "
        f"{DEFAULT_QDQ_ENGINE}; modelopt needs the jetson extra).", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Evaluation data (default: the run's; "
                                                "builtin:photos for a model).", show_default=False)] = None,
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="Calibration data (default: the "
                                                      "run's; else the evaluation data).", show_default=False)] = None,
    calib_size: Annotated[Optional[int], typer.Option("--calib-size", min=1, help="Calibration images.",
                                                      show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate a seeded, class-balanced "
                                                 "subset of this many images.", show_default=False)] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe (for a model; a run has its "
                                                   "own).", show_default=False)] = None,
    threads: ThreadsOpt = None,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, help="Timed calls per variant.",
                                                 show_default=False)] = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Make the deployable artifact for a target, checked against the float model on the same data.

    jetson: model.onnx with INT8 Q/DQ, build_engine.sh (trtexec, TensorRT 10 and 11), manifest and README; the
    INT8 accuracy is simulated in ONNX Runtime and the graph is checked against TensorRT's INT8 rules.
    """
    with cli_errors(debug):
        flags = EngineFlags(batch, dynamic_batch, max_batch, dla_core, qdq_engine)
        result = api.export(source, target=target, precision=precision, out=out, force=force, engine_flags=flags,
                            data=data, calib_data=calib_data, calib_size=calib_size, limit=limit, recipe=recipe,
                            threads=threads, iters=iters, progress=not json_out, log=note,
                            **model_options(weights, checkpoint, num_classes, img_size, model_arg))
        report = result.report
        if json_out:
            print_json(report)
        else:
            next_step = get_target(target).next_step
            show_run(report, get_target(target).summary_lines(report), (f"exported to: {result.run_dir}", *([next_step] if next_step else [])))
        exit_for_status(report, result.run_dir)


def build_engine_command(
    bundle: Annotated[Path, typer.Argument(help="A jetson bundle made by `edgevision export --target jetson`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model.engine.")] = False,
    precision: Annotated[Optional[str], typer.Option(
        "--precision", help="int8, fp16 or auto (an INT8 bundle's default: build both, time them, keep the "
        "faster).", show_default=False)] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build the TensorRT engine of a bundle with the TensorRT Python API (on the device that will run it)."""
    with cli_errors(debug):
        engine = api.build_engine(bundle, force=force, precision=precision, log=note)
        if json_out:
            print_json({"engine": str(engine)})
        else:
            console().print(f"engine written: {engine}")
