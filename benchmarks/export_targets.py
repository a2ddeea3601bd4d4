"""Export targets, measured: what `edgevision export` ships and what it costs.

    python benchmarks/export_targets.py [accuracy] [speed] [fullsize] [--threads 2] [--limit 5000] [--repeats 3]

accuracy: the Fashion-MNIST-trained *_mini models (--weights fashion-mnist), exported for jetson (INT8 Q/DQ,
  accuracy simulated in ONNX Runtime, TensorRT-rules check) and for onnx (ONNX Runtime INT8), calibrated on
  300 training images and evaluated against PyTorch FP32 on a class-balanced subset of the test split.
speed: the onnx target for convnext_t and vit_b at 224x224, random weights, batch 1: ONNX Runtime INT8 vs
  ONNX Runtime FP32 (and PyTorch eager FP32), side by side (interleaved rounds, medians), once inside export
  and `--repeats` more times on the files export wrote, because this shared machine drifts between minutes.
fullsize: the user's two commands at 224x224 for convnext_t, swin_t, vit_b and maxvit_t (random weights, 64
  calibration images): `edgevision compress MODEL --int8`, then `edgevision export --target jetson` on that run;
  records wall times, the TensorRT-rules check and the bundle size.
Writes benchmarks/results/export_targets.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ["convnext_mini", "swin_mini", "vit_mini", "maxvit_mini"]
SPEED_MODELS = ["convnext_t", "vit_b"]
FULLSIZE_MODELS = ["convnext_t", "swin_t", "vit_b", "maxvit_t"]


def export(alias: str, weights: str, target: str, out: Path, **recipe_overrides):
    from edgevision.data import open_source
    from edgevision.models import load_model
    from edgevision.pipeline.export import export_model
    from edgevision.pipeline.presets import preset_for
    from edgevision.pipeline.resolve import resolve

    loaded = load_model(alias, weights=weights)
    recipe = resolve(preset_for(loaded.spec.family), None, recipe_overrides)
    data = "builtin:fashion-mnist:test" if weights == "fashion-mnist" else "builtin:photos"
    calib = open_source("builtin:fashion-mnist:train")
    t0 = time.perf_counter()
    result = export_model(loaded, open_source(data), recipe, target, "int8", out, calib_source=calib,
                          progress=False, log=lambda m: print(f"  {alias}/{target}: {m}", file=sys.stderr))
    return loaded, result, round(time.perf_counter() - t0, 1)


def accuracy(args, tmp: Path) -> list[dict]:
    rows = []
    for alias in FAMILIES:
        for target in ("jetson", "onnx"):
            _, result, wall = export(alias, "fashion-mnist", target, tmp / f"{alias}-{target}",
                                     eval_limit=args.limit, threads=args.threads, benchmark_iters=10)
            r = result.report.to_dict()
            ref, int8 = r["variants"][0], r["variants"][-1]
            rows.append({"model": alias, "target": target, "runtime": int8["runtime"], "images": r["data"]["images"],
                         "float_top1": ref["top1"], "int8_top1": int8["top1"], "drop": int8["top1_drop"],
                         "agreement": int8["agreement"],
                         "rules_passed": (r.get("tensorrt") or {}).get("rules_check", {}).get("passed"),
                         "export_s": wall})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def speed(args, tmp: Path) -> list[dict]:
    from edgevision.measure.bench import compare_latency
    from edgevision.runtimes import create_runner

    rows = []
    for alias in SPEED_MODELS:
        out = tmp / f"{alias}-onnx"
        loaded, result, wall = export(alias, "random", "onnx", out, threads=args.threads,
                                      benchmark_iters=args.iters, calib_size=64)
        v = {(x["name"], x["runtime"]): x for x in result.report.to_dict()["variants"]}
        ratios = [v["fp32", "onnxruntime"]["latency_ms_p50"] / v["int8", "onnxruntime"]["latency_ms_p50"]]
        vs_torch = [v["int8", "onnxruntime"]["speedup"]]
        runners = {"pytorch": create_runner("pytorch", loaded.model, threads=args.threads),
                   "fp32": create_runner("onnxruntime", out / "model_fp32.onnx", threads=args.threads),
                   "int8": create_runner("onnxruntime", out / "model_int8.onnx", threads=args.threads)}
        ms = {k: [v[k2]["latency_ms_p50"]] for k, k2 in
              (("pytorch", ("fp32", "pytorch")), ("fp32", ("fp32", "onnxruntime")), ("int8", ("int8", "onnxruntime")))}
        for _ in range(args.repeats):
            b = compare_latency(runners, loaded.spec.input_size, iters=args.iters)
            for k in ms:
                ms[k].append(b[k].latency_ms_p50)
            ratios.append(b["fp32"].latency_ms_p50 / b["int8"].latency_ms_p50)
            vs_torch.append(b["pytorch"].latency_ms_p50 / b["int8"].latency_ms_p50)
        rows.append({"model": alias, "timm_name": loaded.spec.timm_name, "threads": args.threads,
                     "pytorch_fp32_ms": float(np.median(ms["pytorch"])), "ort_fp32_ms": float(np.median(ms["fp32"])),
                     "ort_int8_ms": float(np.median(ms["int8"])), "int8_vs_ort_fp32": float(np.median(ratios)),
                     "int8_vs_ort_fp32_measured": ratios, "int8_vs_pytorch": float(np.median(vs_torch)),
                     "cpu": result.report.benchmark.cpu, "export_s": wall})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def fullsize(args, tmp: Path) -> list[dict]:
    import subprocess

    rows = []
    for alias in FULLSIZE_MODELS:
        run = tmp / "runs" / alias
        walls = {}
        for step, cmd in (("compress", ["compress", alias, "--weights", "random", "--int8", "--calib-size", "64",
                                        "--threads", str(args.threads), "--iters", "5", "--out", str(run)]),
                          ("export", ["export", str(run), "--target", "jetson", "--threads", str(args.threads)])):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "edgevision", *cmd, "--json"], stdout=subprocess.PIPE,
                                  text=True, check=False)
            walls[step] = round(time.perf_counter() - t0, 1)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode})")
        report = json.loads(done.stdout)
        bundle = run / "export-jetson"
        q = report["variants"][-1]["quantization"]
        rows.append({"model": alias, "compress_s": walls["compress"], "export_s": walls["export"],
                     "rules_passed": report["tensorrt"]["rules_check"]["passed"],
                     "quantize_linear_ops": q["quantize_linear_ops"], "int8_weights": report["tensorrt"]["rules_check"]["int8_weights"],
                     "model_onnx_mb": round((bundle / "model.onnx").stat().st_size / 1e6, 1),
                     "agreement_on_photos": report["variants"][-1]["agreement"]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(results: dict) -> str:
    lines = ["# Export targets", "", f"Machine: {results['machine']}", ""]
    if results.get("accuracy"):
        lines += ["## Accuracy: Fashion-MNIST-trained models, INT8 vs PyTorch FP32", "",
                  "| model | target | INT8 runtime | images | FP32 top-1 | INT8 top-1 | drop | agreement % | "
                  "TensorRT rules | export s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["accuracy"]:
            rules = "-" if r["rules_passed"] is None else ("passed" if r["rules_passed"] else "FAILED")
            lines.append(f"| {r['model']} | {r['target']} | {r['runtime']} | {r['images']} | {r['float_top1']:.2f} | "
                         f"{r['int8_top1']:.2f} | {r['drop']:+.2f} | {r['agreement']:.2f} | {rules} | {r['export_s']} |")
        lines += ["", "tensorrt-sim: the Q/DQ graph of the Jetson bundle run by ONNX Runtime on this CPU "
                  "(TensorRT itself cannot run here).", ""]
    if results.get("speed"):
        lines += ["## Speed: onnx target at 224x224, batch 1, random weights", "",
                  "| model | threads | PyTorch FP32 ms | ORT FP32 ms | ORT INT8 ms | INT8 vs ORT FP32 (median) | "
                  "each measurement | INT8 vs PyTorch |", "|---|---|---|---|---|---|---|---|"]
        for r in results["speed"]:
            each = ", ".join(f"{x:.2f}" for x in r["int8_vs_ort_fp32_measured"])
            lines.append(f"| {r['model']} | {r['threads']} | {r['pytorch_fp32_ms']:.1f} | {r['ort_fp32_ms']:.1f} | "
                         f"{r['ort_int8_ms']:.1f} | {r['int8_vs_ort_fp32']:.2f}x | {each} | {r['int8_vs_pytorch']:.2f}x |")
    if results.get("fullsize"):
        lines += ["", "## compress then export --target jetson at 224x224 (random weights)", "",
                  "| model | compress s | export s | TensorRT rules | QuantizeLinear | INT8 weights | model.onnx MB | "
                  "agreement on builtin:photos % |", "|---|---|---|---|---|---|---|---|"]
        for r in results["fullsize"]:
            lines.append(f"| {r['model']} | {r['compress_s']} | {r['export_s']} | "
                         f"{'passed' if r['rules_passed'] else 'FAILED'} | {r['quantize_linear_ops']} | "
                         f"{r['int8_weights']} | {r['model_onnx_mb']} | {r['agreement_on_photos']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgevision.measure.bench import cpu_name

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["accuracy", "speed", "fullsize"],
                    choices=["accuracy", "speed", "fullsize"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=5000, help="test images (class-balanced subset)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "export_targets.json"
    results = json.loads(path.read_text()) if path.exists() else {}  # parts not measured now are kept
    results["machine"] = f"{cpu_name()}, {args.threads} threads"
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            results[part] = {"accuracy": accuracy, "speed": speed, "fullsize": fullsize}[part](args, Path(tmp))
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "export_targets.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
