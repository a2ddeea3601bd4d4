"""INT8 speed at 224x224, batch 1: `edgevision compress --int8` for convnext_t, vit_b, swin_t and maxvit_t with
random weights, and OpenVINO's own benchmark_app on the same INT8 IR.

    python benchmarks/int8_speed.py [--threads 2] [--models convnext_t vit_b swin_t maxvit_t]

Speedups are measured side by side (interleaved rounds, medians) against PyTorch eager FP32 in the same
process: once inside compress, then `--repeats` more times on the IR compress wrote, because this shared
machine's speed drifts between minutes; the table gives the median of all of them, the JSON each one.
Writes benchmarks/results/int8_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"convnext_t": 3.0, "vit_b": 2.8, "swin_t": 3.3, "maxvit_t": 3.2}  # issue #3's minimum speedups


def compress(alias: str, out: Path, threads: int, iters: int) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "edgevision", "compress", alias, "--weights", "random", "--int8",
           "--data", "builtin:photos", "--calib-data", "builtin:fashion-mnist:train", "--calib-size", "300",
           "--threads", str(threads), "--iters", str(iters), "--out", str(out), "--json"]
    print("+", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"compress {alias} failed ({done.returncode})")
    return json.loads(done.stdout), wall


def retime(alias: str, run_dir: Path, threads: int, iters: int, repeats: int) -> list[float]:
    """More side-by-side PyTorch FP32 vs OpenVINO INT8 measurements on the IR that compress wrote."""
    from edgevision.measure.bench import compare_latency
    from edgevision.models import load_model
    from edgevision.runtimes import create_runner

    loaded = load_model(alias, weights="random")
    runners = {"pytorch": create_runner("pytorch", loaded.model, threads=threads),
               "int8": create_runner("openvino", run_dir / "model_int8.xml", threads=threads)}
    speedups = []
    for _ in range(repeats):
        r = compare_latency(runners, loaded.spec.input_size, iters=iters)
        speedups.append(r["pytorch"].latency_ms_p50 / r["int8"].latency_ms_p50)
    return speedups


def ratio_to_benchmark_app(xml: Path, threads: int, iters: int, seconds: int, repeats: int) -> list[float]:
    """Our runner alone vs benchmark_app, alternated `repeats` times: the host drifts between minutes, so
    each ratio compares two measurements taken back to back."""
    from edgevision.measure.bench import benchmark
    from edgevision.runtimes import create_runner

    runner = create_runner("openvino", xml, threads=threads)
    input_shape = tuple(runner.model.input(0).get_partial_shape().to_shape())[1:]
    ratios = []
    for _ in range(repeats):
        ours = benchmark(runner, input_shape, iters=iters, throughput_batch=None).latency_ms_p50
        ratios.append(ours / benchmark_app(xml, threads, seconds))
    return ratios


def benchmark_app(xml: Path, threads: int, seconds: int) -> float:
    """Median latency (ms) from OpenVINO's benchmark_app: one stream, one request, f32 where not INT8."""
    exe = Path(sys.executable).parent / "benchmark_app"
    cmd = [str(exe), "-m", str(xml), "-d", "CPU", "-hint", "none", "-nthreads", str(threads), "-nstreams", "1",
           "-nireq", "1", "-api", "sync", "-infer_precision", "f32", "-t", str(seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = re.search(r"Median:\s+([0-9.]+)\s*ms", done.stdout)
    if done.returncode != 0 or not match:
        raise SystemExit(f"benchmark_app failed on {xml}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--bench-app-seconds", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3, help="extra side-by-side timings of the written IR")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "int8_speed.json"  # rows of models not measured in this call are kept
    rows = [r for r in json.loads(previous.read_text()) if r["model"] not in args.models] if previous.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        for alias in args.models:
            report, wall = compress(alias, Path(tmp) / alias, args.threads, args.iters)
            v = {(x["name"], x["runtime"]): x for x in report["variants"]}
            ref, ov32, int8 = v["fp32", "pytorch"], v["fp32", "openvino"], v["int8", "openvino"]
            xml = Path(tmp) / alias / "model_int8.xml"
            app_ms = benchmark_app(xml, args.threads, args.bench_app_seconds)
            app_ratios = ratio_to_benchmark_app(xml, args.threads, args.iters, args.bench_app_seconds, args.repeats)
            speedups = [int8["speedup"]] + retime(alias, Path(tmp) / alias, args.threads, args.iters, args.repeats)
            t = report["timings_s"]
            rows.append({
                "model": alias, "timm_name": report["model"]["timm_name"],
                "pytorch_fp32_ms": ref["latency_ms_p50"], "openvino_fp32_ms": ov32["latency_ms_p50"],
                "openvino_int8_ms": int8["latency_ms_p50"], "int8_speedup": float(np.median(speedups)),
                "int8_speedups_measured": speedups,
                "target_speedup": TARGETS[alias], "benchmark_app_int8_ms": app_ms,
                "int8_vs_benchmark_app": float(np.median(app_ratios)), "int8_vs_benchmark_app_measured": app_ratios,
                "int8_layers_executed": int8["quantization"]["int8_layers_executed"],
                "compress_before_evaluation_s": round(wall - t["evaluation"] - t["benchmark"], 1),
                "timings_s": t, "cpu": report["benchmark"]["cpu"], "threads": args.threads,
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    rows.sort(key=lambda r: list(TARGETS).index(r["model"]))
    (RESULTS / "int8_speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| model | PyTorch FP32 ms | OpenVINO FP32 ms | OpenVINO INT8 ms | INT8 speedup, median (target) | "
             "benchmark_app INT8 ms | ours / benchmark_app | compress before eval (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['pytorch_fp32_ms']:.1f} | {r['openvino_fp32_ms']:.1f} | "
                     f"{r['openvino_int8_ms']:.1f} | {r['int8_speedup']:.2f}x ({r['target_speedup']}x) | "
                     f"{r['benchmark_app_int8_ms']:.1f} | {r['int8_vs_benchmark_app']:.2f} | "
                     f"{r['compress_before_evaluation_s']:.0f} |")
    if rows:
        lines.append(f"\n224x224, batch 1, {args.threads} threads, random weights, medians; {rows[0]['cpu']}. "
                     f"Milliseconds from the run inside compress; speedup: median of {args.repeats + 1} "
                     "side-by-side measurements; ours / benchmark_app: median of alternated measurements (each in int8_speed.json).")
    (RESULTS / "int8_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
