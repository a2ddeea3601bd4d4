"""Structured pruning, measured: accuracy after recovery + INT8 on the Fashion-MNIST models, and speed at 224.

    python benchmarks/prune.py [accuracy] [speed] [--ratio 0.5] [--threads 2] [--limit 5000] [--repeats 3]

accuracy: each Fashion-MNIST-trained *_mini model (--weights fashion-mnist) through
  `compress --prune RATIO --int8` (cpu target): pruning, the family preset's recovery epochs (1; Swin 2) on the
  60,000 training images distilled from the unpruned model, INT8 with 300 calibration images, all evaluated against the unpruned
  PyTorch FP32 model on a class-balanced subset of the test split. Target: INT8 within 2 points of float,
  recovery within 5 minutes on 2 cores.
speed: convnext_t and vit_b at 224x224 (random weights, no recovery: speed does not depend on weights),
  pruned RATIO + OpenVINO INT8 vs PyTorch eager FP32 of the unpruned model, side by side (interleaved rounds,
  medians), once inside compress and `--repeats` more times on the written IR. Target: >= 6x.
Writes benchmarks/results/prune.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ["convnext_mini", "swin_mini", "vit_mini", "maxvit_mini"]
SPEED_MODELS = ["convnext_t", "vit_b"]


def run(alias: str, weights: str, out: Path, eval_spec: str, **overrides):
    from edgevision.data import open_source
    from edgevision.models import load_model
    from edgevision.pipeline.presets import preset_for
    from edgevision.pipeline.resolve import resolve
    from edgevision.pipeline.run import compress_model as compress

    loaded = load_model(alias, weights=weights)
    recipe = resolve(preset_for(loaded.spec.family), None, overrides)
    return loaded, compress(loaded, open_source(eval_spec), recipe, out,
                            calib_source=open_source("builtin:fashion-mnist:train"), progress=False,
                            log=lambda m: print(f"  {alias}: {m}", file=sys.stderr))


def accuracy(args, tmp: Path) -> list[dict]:
    rows = []
    previous = {r["model"]: r for r in args.previous.get("accuracy", [])}
    for alias in FAMILIES:
        if alias not in args.models:  # keep the row measured earlier
            if alias in previous:
                rows.append(previous[alias])
            continue
        _, result = run(alias, "fashion-mnist", tmp / alias, "builtin:fashion-mnist:test", eval_limit=args.limit,
                        threads=args.threads, benchmark_iters=20, prune={"ratio": args.ratio})
        r = result.report.to_dict()
        v = {(x["name"], x["runtime"]): x for x in r["variants"]}
        p = r["pruning"]
        rows.append({"model": alias, "ratio": args.ratio, "images": r["data"]["images"],
                     "float_top1": v["fp32", "pytorch"]["top1"],
                     "pruned_before_recovery_top1": v["pruned, before recovery", "pytorch"]["top1"],
                     "pruned_top1": v["pruned", "pytorch"]["top1"], "int8_top1": v["int8", "openvino"]["top1"],
                     "int8_drop": v["int8", "openvino"]["top1_drop"], "int8_agreement": v["int8", "openvino"]["agreement"],
                     "params_before": p["params_before"], "params_after": p["params_after"],
                     "gmacs_before": p["gmacs_before"], "gmacs_after": p["gmacs_after"],
                     "recovery_s": p["recovery"]["time_s"], "recovery_images": p["recovery"]["images"],
                     "recovery_epochs": p["recovery"]["epochs"],
                     "int8_speedup_32px": v["int8", "openvino"]["speedup"]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def speed(args, tmp: Path) -> list[dict]:
    from edgevision.measure.bench import compare_latency
    from edgevision.runtimes import create_runner

    rows = []
    for alias in SPEED_MODELS:
        loaded, result = run(alias, "random", tmp / f"{alias}-speed", "builtin:photos", threads=args.threads,
                             benchmark_iters=args.iters, calib_size=64, prune={"ratio": args.ratio, "finetune_epochs": 0})
        v = {(x["name"], x["runtime"]): x for x in result.report.to_dict()["variants"]}
        speedups = [v["int8", "openvino"]["speedup"]]
        pruned_torch = [v["pruned", "pytorch"]["speedup"]]
        runners = {"pytorch": create_runner("pytorch", loaded.model, threads=args.threads),
                   "int8": create_runner("openvino", result.run_dir / "model_int8.xml", threads=args.threads)}
        for _ in range(args.repeats):
            b = compare_latency(runners, loaded.spec.input_size, iters=args.iters)
            speedups.append(b["pytorch"].latency_ms_p50 / b["int8"].latency_ms_p50)
        p = result.report.to_dict()["pruning"]
        rows.append({"model": alias, "ratio": args.ratio, "threads": args.threads,
                     "pytorch_fp32_ms": v["fp32", "pytorch"]["latency_ms_p50"],
                     "pruned_pytorch_ms": v["pruned", "pytorch"]["latency_ms_p50"],
                     "pruned_openvino_fp32_ms": v["fp32", "openvino"]["latency_ms_p50"],
                     "pruned_int8_ms": v["int8", "openvino"]["latency_ms_p50"],
                     "speedup": float(np.median(speedups)), "speedups_measured": speedups,
                     "pruned_pytorch_speedup": pruned_torch[0],
                     "gmacs_before": p["gmacs_before"], "gmacs_after": p["gmacs_after"],
                     "params_before": p["params_before"], "params_after": p["params_after"],
                     "cpu": result.report.benchmark.cpu})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(results: dict) -> str:
    lines = ["# Structured pruning", "", f"Machine: {results['machine']}", ""]
    if results.get("accuracy"):
        lines += ["## Fashion-MNIST models: prune, recovery (distilled), INT8 (OpenVINO)", "",
                  "| model | ratio | params | GMACs | FP32 top-1 | pruned, before recovery | after recovery | "
                  "INT8 top-1 | INT8 drop | recovery epochs | recovery s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["accuracy"]:
            lines.append(
                f"| {r['model']} | {r['ratio']} | {r['params_before'] / 1e6:.2f} -> {r['params_after'] / 1e6:.2f} M | "
                f"{r['gmacs_before']:.4f} -> {r['gmacs_after']:.4f} | {r['float_top1']:.2f} | "
                f"{r['pruned_before_recovery_top1']:.2f} | {r['pruned_top1']:.2f} | {r['int8_top1']:.2f} | "
                f"{r['int8_drop']:+.2f} | {r.get('recovery_epochs', 1)} | {r['recovery_s']} |")
        lines.append("")
    if results.get("speed"):
        lines += ["## 224x224, batch 1, random weights: pruned + OpenVINO INT8 vs PyTorch eager FP32 (unpruned)", "",
                  "| model | ratio | GMACs | PyTorch FP32 ms | pruned PyTorch ms | pruned OV FP32 ms | pruned OV INT8 ms | "
                  "speedup (median) | each |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["speed"]:
            each = ", ".join(f"{x:.2f}" for x in r["speedups_measured"])
            lines.append(f"| {r['model']} | {r['ratio']} | {r['gmacs_before']:.2f} -> {r['gmacs_after']:.2f} | "
                         f"{r['pytorch_fp32_ms']:.1f} | {r['pruned_pytorch_ms']:.1f} | {r['pruned_openvino_fp32_ms']:.1f} | "
                         f"{r['pruned_int8_ms']:.1f} | **{r['speedup']:.2f}x** | {each} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgevision.measure.bench import cpu_name

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["accuracy", "speed"], choices=["accuracy", "speed"])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=FAMILIES, choices=FAMILIES, help="accuracy: which models")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "prune.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    args.previous = results
    results["machine"] = f"{cpu_name()}, {args.threads} threads"
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            results[part] = {"accuracy": accuracy, "speed": speed}[part](args, Path(tmp))
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "prune.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
