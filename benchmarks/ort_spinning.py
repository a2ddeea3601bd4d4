"""Why edgevision's ONNX Runtime sessions stop spinning after a run: the CPU profile's GEMMs (784 x 768 x 3072,
FP32 and INT8) timed side by side, one call each in turn, with ONNX Runtime's sessions as edgevision makes them
(`session.force_spinning_stop`) and as ONNX Runtime's defaults make them (its threads keep spinning after a
run), OpenVINO's alone, and OpenVINO's beside PyTorch eager (the reference of every speedup: whether its
OpenMP threads slow the runner timed after it).

    python benchmarks/ort_spinning.py [--threads 2] [--iters 15]

Writes benchmarks/results/ort_spinning.{json,md}: GOP/s (medians) per runner and setting, OpenVINO's first
calls right after a PyTorch call (how long the slowdown lasts), and the CPU profile.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("openvino alone", "spinning stopped (edgevision)", "spinning (ONNX Runtime default)",
            "beside PyTorch (eager FP32 matmul)")


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
    if setting in SETTINGS[1:3]:
        for name in ("fp32", "int8 u8s8"):
            out[f"onnxruntime {name}"] = ort_session(models[name], threads, setting == SETTINGS[1])
    if setting == SETTINGS[3]:  # the reference every speedup divides by: do its OpenMP threads slow OpenVINO?
        out["pytorch fp32"] = torch_matmul(threads)
    return out


def torch_matmul(threads: int):
    """The same GEMM in PyTorch eager FP32 (a bias-free Linear), run as compress runs its float reference."""
    import torch

    from edgevision.measure.cpu_profile import GEMM_SHAPE
    from edgevision.runtimes import create_runner

    _, k, n = GEMM_SHAPE
    return create_runner("pytorch", torch.nn.Linear(k, n, bias=False), threads=threads)


def gemm_input() -> np.ndarray:
    """The GEMM's activation, M x K, the same in every measurement."""
    from edgevision.measure.cpu_profile import GEMM_SHAPE

    m, k, _ = GEMM_SHAPE
    return np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)


def to_gops(seconds: list[float]) -> float:
    """The GEMM's 2 M K N operations over the median of `seconds`, in GOP/s."""
    from edgevision.measure.cpu_profile import GEMM_SHAPE

    m, k, n = GEMM_SHAPE
    return round(2 * m * k * n / float(np.median(seconds)) / 1e9, 1)


def gops(calls: dict, iters: int) -> dict[str, float]:
    x = gemm_input()
    for call in calls.values():
        call(x)
    times = {name: [] for name in calls}
    for _ in range(iters):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(x)
            times[name].append(time.perf_counter() - t0)
    return {name: to_gops(t) for name, t in times.items()}


def calls_after(before, runner, iters: int, calls: int = 3) -> list[float]:
    """GOP/s of `runner`'s 1st, 2nd, ... call right after one call of `before` (medians over `iters` rounds):
    how long another runtime's spinning threads slow it."""
    x = gemm_input()
    before(x), runner(x)
    times: list[list[float]] = [[] for _ in range(calls)]
    for _ in range(iters):
        before(x)
        for position in times:
            t0 = time.perf_counter()
            runner(x)
            position.append(time.perf_counter() - t0)
    return [to_gops(t) for t in times]


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
        openvino = runners(models, SETTINGS[0], args.threads)["openvino fp32"]
        after = {"pytorch fp32": calls_after(torch_matmul(args.threads), openvino, args.iters),
                 "openvino fp32": calls_after(openvino, openvino, args.iters)}
    p = cpu_profile(args.threads, measure=False).to_dict()
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": p, "gops": measured,
              "openvino_fp32_calls_after": after}
    names = ["openvino fp32", "openvino int8 u8s8", "onnxruntime fp32", "onnxruntime int8 u8s8", "pytorch fp32"]
    lines = ["# ONNX Runtime's spinning threads and the runner timed next (GOP/s, medians)", "",
             f"Measured {result['measured']} on {p['cpu']}, {args.threads} threads, INT8 and bf16 features "
             f"{', '.join(p['features']) or 'none'} (tier {p['tier']}); one call of each in turn, {args.iters} rounds.",
             "", "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {s} | " + " | ".join(str(measured[s].get(n, "-")) for n in names) + " |" for s in SETTINGS]
    lines += ["", "OpenVINO FP32's 1st, 2nd and 3rd call right after one call of another runner (GOP/s, medians):", "",
              "| called before | 1st | 2nd | 3rd |", "|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(map(str, values)) + " |" for name, values in after.items()]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "ort_spinning.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "ort_spinning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
