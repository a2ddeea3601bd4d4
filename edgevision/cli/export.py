from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision.cli.common import (CheckpointOpt, DebugOpt, ImgSizeOpt, JsonOpt, ModelArgOpt, NumClassesOpt,
                                   ThreadsOpt, WeightsOpt, cli_errors, console, exit_for_status,
                                   load_model_from_options, note, print_json, show_run)


def export_command(
    source: Annotated[Optional[str], typer.Argument(
        help="A compress run directory (default: the latest under runs/), a distill run directory (its student), "
        "or a model alias / timm name.",
        show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help="jetson (Q/DQ ONNX bundle for TensorRT), cpu "
                                        "(OpenVINO IR) or onnx (ONNX Runtime).")] = "jetson",
    precision: Annotated[str, typer.Option("--precision", help="int8, fp16 (jetson only) or fp32.")] = "int8",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: RUN_DIR/export-TARGET, "
                                                "or exports/MODEL-TARGET-TIMESTAMP).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="jetson: static batch, or the "
                                                 "optimisation point with --dynamic-batch (1).", show_default=False)] = None,
    dynamic_batch: Annotated[Optional[bool], typer.Option("--dynamic-batch/--static-batch", help="jetson: "
                                                          "dynamic batch axis (static).", show_default=False)] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="jetson: largest batch of a "
                                                     "dynamic engine (32).", show_default=False)] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", min=0, help="jetson: build for this DLA core, "
                                                    "with GPU fallback.", show_default=False)] = None,
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
    from edgevision.compress import export as ex
    from edgevision.compress.distill import STUDENT_FILE
    from edgevision.compress.presets import preset_for
    from edgevision.compress.recipe import check_target, resolve
    from edgevision.data import open_source
    from edgevision.errors import EdgevisionError

    with cli_errors(debug):
        check_target(target)
        trt = {"batch": batch, "dynamic_batch": dynamic_batch, "max_batch": max_batch, "dla_core": dla_core}
        overrides = {"calib_size": calib_size, "eval_limit": limit, "threads": threads, "benchmark_iters": iters}
        if source is None and checkpoint is None:
            source = str(ex.latest_run())
            note(f"exporting the latest compress run: {source}")
        if source is not None and checkpoint is None and (Path(source) / STUDENT_FILE).is_file():
            source, checkpoint = None, Path(source)  # a distill run: export its student
        if source is not None and Path(source).is_dir() and not ex.is_run_dir(source):
            raise EdgevisionError(f"{source} is a directory but not a compress run (no manifest.json)",
                                  "give a run directory made by `edgevision compress` or `distill`, or a model name")
        if ex.is_run_dir(source):
            result = ex.export_run(ex.open_run(source), target, precision, out, tensorrt=trt, data=data,
                                   calib_data=calib_data, overrides=overrides, force=force,
                                   progress=not json_out, log=note)
        else:
            loaded = load_model_from_options(source, weights, checkpoint, num_classes, img_size, model_arg)
            resolved = resolve(preset_for(loaded.spec.family), recipe, overrides)
            eval_source = open_source(data or "builtin:photos", default_split="test")
            calib_source = open_source(calib_data, default_split="train") if calib_data else None
            out = out or Path("exports") / f"{loaded.spec.name}-{target}-{time.strftime('%Y%m%d-%H%M%S')}"
            result = ex.export_model(loaded, eval_source, resolved, target, precision, out,
                                     calib_source=calib_source, tensorrt=trt, force=force,
                                     progress=not json_out, log=note)
        report = result.report
        if json_out:
            print_json(report)
        else:
            rules = (report.get("tensorrt") or {}).get("rules_check")
            summary = () if rules is None else ("TensorRT INT8 rules: " + (
                "passed" if rules["passed"] else f"{len(rules['violations'])} violation(s)"),)
            footer = (f"exported to: {result.run_dir}",) + (
                ("next: copy it to the Jetson and run ./build_engine.sh there",) if target == "jetson" else ())
            show_run(report, summary, footer)
        exit_for_status(report, result.run_dir)


def build_engine_command(
    bundle: Annotated[Path, typer.Argument(help="A jetson bundle made by `edgevision export --target jetson`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model.engine.")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build the TensorRT engine of a bundle with the TensorRT Python API (on the device that will run it)."""
    import json

    from edgevision.backends import tensorrt as trt_backend
    from edgevision.errors import EdgevisionError, OutputExistsError

    with cli_errors(debug):
        try:
            manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
            opts = trt_backend.EngineOptions(**manifest["tensorrt"]["engine_options"])
        except (OSError, ValueError, KeyError, TypeError):
            raise EdgevisionError(f"{bundle} is not a jetson bundle (manifest.json with tensorrt settings)",
                                  "make one with `edgevision export --target jetson`") from None
        if (bundle / opts.engine).exists() and not force:
            raise OutputExistsError(f"{bundle / opts.engine} already exists", "pass --force to rebuild it")
        engine = trt_backend.build_engine(bundle, opts, log=note)
        if json_out:
            print_json({"engine": str(engine)})
        else:
            console().print(f"engine written: {engine}")
