"""`edgevision benchmark`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, model_options, print_json
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
from edgevision.reports.render import fmt, int8_gemm_line, int8_payoff_table, layer_tables


def benchmark_command(
    model: ModelArg = None,
    runtime: RuntimeOpt = None,
    threads: ThreadsOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size of the latency measurement.")] = 1,
    throughput_batch: Annotated[int, typer.Option(
        "--throughput-batch", min=0, help="Batch size of the throughput measurement (0 to skip).")] = 32,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls first.")] = 10,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed calls (at least).")] = 50,
    min_seconds: Annotated[float, typer.Option("--min-seconds", min=0.0,
                                               help="Keep timing until this long has passed.")] = 0.0,
    layers: Annotated[bool, typer.Option(
        "--layers", help="Also time each layer with the runtime's profiler (OpenVINO, ONNX Runtime): time by "
                         "kind of layer, the slowest layers, and the INT8 GEMMs' share of this CPU's roofline; for an "
                         "INT8 artifact, per operator type whether INT8 paid against its float artifact.")] = False,
    float_model: Annotated[Optional[Path], typer.Option(
        "--float", help="With --layers: the float artifact the INT8 one was made from (default: model_fp32 of the "
                        "same format beside it).", show_default=False)] = None,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Latency p50/p90/p99 at batch 1 and throughput at a larger batch, after warm-up, at a stated thread count.

    Weights do not change speed, so without --checkpoint this uses random weights unless --weights says otherwise.
    """
    with cli_errors(debug):
        result = api.benchmark(model, runtime=runtime, threads=threads, batch=batch, throughput_batch=throughput_batch,
                               warmup=warmup, iters=iters, min_seconds=min_seconds,
                               layers=layers, float_model=float_model,
                               **model_options(weights, checkpoint, num_classes, img_size, model_arg))
        if json_out:
            print_json(result)
            return
        info, b, out = result.model, result.result, console()
        r = b.runner
        size = (f"{info.params_m} M params, {info.gmacs} GMACs" if info.params_m is not None
                else f"artifact {info.artifact}")
        shape = b.input_shape
        out.print(f"model      {info.spec.name} ({info.spec.timm_name}): {size} at {shape[1]}x{shape[2]}")
        out.print(f"runtime    {r.runtime} {r.version or ''} ({r.precision or ''}), {r.threads or '?'} threads on "
                  f"{b.cpu}")
        out.print(f"latency    batch {b.batch}: p50 {fmt(b.latency_ms_p50)} ms, p90 {fmt(b.latency_ms_p90)} ms, "
                  f"p99 {fmt(b.latency_ms_p99)} ms ({b.iterations} calls after {b.warmup} warm-up)")
        if b.throughput_ips is not None:
            out.print(f"throughput batch {b.throughput_batch}: {fmt(b.throughput_ips, 1)} images/s")
        if result.layers is not None:
            for table in layer_tables(result.layers):
                out.print(table)
            out.print(int8_gemm_line(result.layers))
            if result.layers.int8_vs_float is not None:
                out.print(int8_payoff_table(result.layers.runtime, result.layers.int8_vs_float))
