"""Why edgevision's ONNX Runtime sessions stop spinning after a run: the CPU profile's GEMMs (784 x 768 x 3072,
FP32 and INT8) timed side by side, one call each in turn, with ONNX Runtime's sessions as edgevision makes them
(`session.force_spinning_stop`) and as ONNX Runtime's defaults make them (its threads keep spinning after a
run), and OpenVINO's alone.

    python benchmarks/ort_spinning.py [--threads 2] [--iters 15]

Writes benchmarks/results/ort_spinning.{json,md}: GOP/s (medians) per runner and setting, and the CPU profile.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("openvino alone", "spinning stopped (edgevision)", "spinning (ONNX Runtime default)")


def ort_session(path: Path, threads: int, stop_spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})


def runners(models: dict[str, Path], setting: str, threads: int) -> dict:
    from edgevision.runtimes import create_runner

    out = {f"openvino {name}": create_runner("openvino", models[name], threads=threads)
           for name in ("fp32", "int8 u8s8")}
    if setting != SETTINGS[0]:
        for name in ("fp32", "int8 u8s8"):
            out[f"onnxruntime {name}"] = ort_session(models[name], threads, setting == SETTINGS[1])
    return out


def gops(calls: dict, iters: int) -> dict[str, float]:
    from edgevision.measure.cpu_profile import GEMM_SHAPE

    m, k, n = GEMM_SHAPE
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    for call in calls.values():
        call(x)
    times = {name: [] for name in calls}
    for _ in range(iters):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(x)
            times[name].append(time.perf_counter() - t0)
    return {name: round(2 * m * k * n / float(np.median(t)) / 1e9, 1) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    from edgevision.measure.cpu_profile import cpu_profile, gemm_models

    with tempfile.TemporaryDirectory(prefix="edgevision-spin-") as tmp:
        models = gemm_models(Path(tmp))
        measured = {s: gops(runners(models, s, args.threads), args.iters) for s in SETTINGS}
    p = cpu_profile(args.threads, measure=False).to_dict()
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": p, "gops": measured}
    names = ["openvino fp32", "openvino int8 u8s8", "onnxruntime fp32", "onnxruntime int8 u8s8"]
    lines = ["# ONNX Runtime's spinning threads and the runner timed next (GOP/s, medians)", "",
             f"Measured {result['measured']} on {p['cpu']}, {args.threads} threads, INT8 and bf16 features "
             f"{', '.join(p['features']) or 'none'} (tier {p['tier']}); one call of each in turn, {args.iters} rounds.",
             "", "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {s} | " + " | ".join(str(measured[s].get(n, "-")) for n in names) + " |" for s in SETTINGS]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "ort_spinning.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "ort_spinning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
