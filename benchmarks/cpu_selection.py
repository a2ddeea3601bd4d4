"""The selection itself, measured: `edgevision compress MODEL --int8` (target cpu) at 224x224, batch 1, random
weights, for convnext_t, vit_b, swin_t and maxvit_t, on whatever CPU runs it.

    python benchmarks/cpu_selection.py [--models convnext_t vit_b swin_t maxvit_t] [--threads 2] [--iters 30]
        [--eval-images 8]

Each run builds every candidate (OpenVINO FP32 and INT8, ONNX Runtime INT8 in the CPU profile's formats and the
latency-aware int8-mixed, INT8 only where it measured faster on this CPU), times
them side by side against PyTorch eager FP32 (interleaved rounds, medians) and selects the fastest (random
weights: the accuracy guard is off, speed alone decides). The table gives each candidate's speedup, the
selected one, whether it is the fastest measured (within the medians' 3% noise), its speedup against the
issue's target for this CPU's INT8 tier, and the INT8 efficiency against the INT8 GEMM roofline of the selected
runtime (the profile's, or the same GEMMs measured again before the layer profile, whichever is higher) twice:
the whole model's GOPs / latency, and its INT8 GEMM layers' own GOP/s from the selected artifact profiled layer
by layer (what `edgevision benchmark ARTIFACT --layers` prints). Writes
benchmarks/results/cpu_selection_TIER.{json,md} (TIER: the CPU's INT8 tier, avx2, vnni, amx, ...) with the CPU
profile of the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edgevision.measure.cpu_profile import CpuProfile, cpu_profile, measure_gemms

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS_NOTE = ("Whole model: its GMACs x 2 over its latency, as a share of the INT8 GEMM roofline of the selected "
               "runtime: the higher of the profile's (measured at the start) and the same GEMMs measured again just "
               "before the model's layer profile (a busy spell on a shared machine can hold one measurement down). "
               "INT8 GEMM layers: the selected artifact profiled layer by layer "
               "(`edgevision benchmark ARTIFACT --layers`: the runtime's own profiler, medians of 10 calls): the "
               "layers that ran as INT8 convolutions, fully connected layers and matrix multiplies, their share of "
               "the profiled time, their GOP/s, and that as a share of the same roofline.")
# the selected variant's speedup over PyTorch eager FP32 that the CPU issue asks for, by INT8 tier
TARGETS = {"avx2": {"convnext_t": 1.8, "vit_b": 2.2, "swin_t": 1.7, "maxvit_t": 1.7},
           "vnni": {"convnext_t": 4.0, "vit_b": 3.6, "swin_t": 3.4, "maxvit_t": 3.6}}
TARGETS["amx"] = TARGETS["vnni"]  # AMX CPUs have VNNI too: the VNNI figures are their floor


def compress(alias: str, out: Path, threads: int, iters: int, calib_size: int, eval_images: int,
             code: Path | None = None) -> dict:
    """compress's --json report; `code`: run the edgevision in that folder instead of the installed one."""
    cmd = [sys.executable, "-m", "edgevision", "compress", alias, "--weights", "random", "--int8",
           "--data", "builtin:photos", "--limit", str(eval_images), "--calib-data", "builtin:fashion-mnist:train",
           "--calib-size", str(calib_size), "--threads", str(threads), "--iters", str(iters), "--out", str(out),
           "--json"]
    env = None
    if code is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    print("+", *([f"PYTHONPATH={code}"] if code else []), " ".join(cmd[2:]), file=sys.stderr, flush=True)
    # run from `code`: `python -m` puts the working folder before PYTHONPATH, for compress and its workers
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=code, check=False)
    if done.returncode != 0:
        raise SystemExit(f"compress {alias}{f' at {code}' if code else ''} failed ({done.returncode})")
    return json.loads(done.stdout)


def selected_layers(run: Path, report: dict, threads: int) -> dict:
    """The selected artifact's per-layer profile (`edgevision benchmark ARTIFACT --layers`, in-process)."""
    from edgevision.api import benchmark
    from edgevision.typed import to_data

    artifact = next(v["artifact"] for v in report["variants"] if v.get("selected"))
    return to_data(benchmark(run / artifact, threads=threads, iters=10, throughput_batch=0, layers=True).layers)


def int8_roofline(profile: CpuProfile, gemms_again: dict[str, float], runtime: str) -> float | None:
    """The INT8 GEMM roofline of `runtime`: the profile's, or that of the same GEMMs measured again if higher."""
    rooflines = [p.int8_gops(runtime) for p in (profile, replace(profile, gemm_gops=gemms_again))]
    return max((r for r in rooflines if r), default=None)


def row(alias: str, report: dict, gmacs: float, tier: str, layers: dict, gemms_again: dict[str, float]) -> dict:
    profile = CpuProfile.from_dict(report["benchmark"]["cpu_profile"])
    candidates = {c["key"]: c["latency_ms_p50"] for c in report["selection"]["candidates"]}
    reference = next(v for v in report["variants"] if v["role"] == "reference")["latency_ms_p50"]
    selected = report["selection"]["selected"]
    roofline = int8_roofline(profile, gemms_again, selected.split("/")[1])
    gemm = layers["int8_gemm"]
    if gemm.get("gops") and roofline:
        gemm = {**gemm, "roofline_gops": roofline, "roofline_share": round(gemm["gops"] / roofline, 3)}
    achieved = 2 * gmacs / (candidates[selected] / 1000)
    target = TARGETS.get(tier, {}).get(alias)
    speedup = reference / candidates[selected]
    return {"model": alias, "pytorch_fp32_ms": round(reference, 2),
            "speedups": {k: round(reference / v, 2) for k, v in candidates.items()},
            "selected": selected, "selected_speedup": round(speedup, 2),
            "fastest_within_noise": candidates[selected] <= min(candidates.values()) * 1.03,
            "target_speedup": target, "target_met": None if target is None else speedup >= target,
            "gops": round(2 * gmacs, 2), "achieved_gops": round(achieved, 1), "roofline_gops": roofline,
            "gemm_gops_before_layers": gemms_again,
            "roofline_share": None if not roofline or "int8" not in selected else round(achieved / roofline, 2),
            "int8_gemm_layers": gemm, "layer_groups": layers["groups"],
            "compress_stages_s": report["timings_s"],
            "warnings": [w for w in report["warnings"] if "INT8 is no faster" in w]}


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    keys = sorted({k for r in result["rows"] for k in r["speedups"]})
    lines = ["# CPU selection at 224x224 (compress --int8, target cpu)", "",
             f"Measured {result['measured']} on {p['cpu']} ({p['arch']}), {p['threads']} threads, INT8 and bf16 features "
             f"{', '.join(p['features']) or 'none'} (tier {p['tier']}); GEMM roofline GOP/s: "
             + ", ".join(f"{k} {v}" for k, v in p["gemm_gops"].items()) + ".", "",
             "Speedup over PyTorch eager FP32, batch 1, random weights, measured side by side in each run.", "",
             "| model | PyTorch FP32 ms | " + " | ".join(keys) + " | selected | fastest? | target | whole model: "
             "share of INT8 roofline | INT8 GEMM layers: time, GOP/s, share of roofline |",
             "|" + "---|" * (len(keys) + 7)]
    for r in result["rows"]:
        cells = [f"{r['speedups'][k]:.2f}x" if k in r["speedups"] else "-" for k in keys]
        target = "-" if r["target_speedup"] is None else \
            f"{r['target_speedup']}x {'met' if r['target_met'] else 'NOT met'}"
        share = "-" if r["roofline_share"] is None else f"{r['roofline_share']:.0%}"
        gemm = r["int8_gemm_layers"]
        layers = "-" if gemm["roofline_share"] is None else \
            f"{gemm['time_share']:.0%}, {gemm['gops']}, {gemm['roofline_share']:.0%}"
        lines.append(f"| {r['model']} | {r['pytorch_fp32_ms']} | " + " | ".join(cells)
                     + f" | {r['selected']} ({r['selected_speedup']:.2f}x) | {'yes' if r['fastest_within_noise'] else 'no'}"
                     f" | {target} | {share} | {layers} |")
    lines += ["", LAYERS_NOTE, "", *[f"- {line}" for line in p["conclusions"]], "",
              f"The benchmark took {result['seconds'] // 60} min {result['seconds'] % 60} s for "
              f"{len(result['rows'])} models: `{result['command']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(TARGETS["avx2"]))
    ap.add_argument("--threads", type=int, default=2)
    # calls per candidate, in compress's 5 interleaved rounds (compress's default is 50)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--calib-size", type=int, default=16,
                    help="calibration images: the kernels and so the speed do not depend on them; calibrating on "
                         "more only makes the run longer")
    ap.add_argument("--eval-images", type=int, default=8,
                    help="photos each candidate is evaluated on (compress --limit): random weights make their "
                         "answers a check that each candidate runs, not an accuracy")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    from edgevision.models import load_model
    from edgevision.models.zoo import count_gmacs

    profile = cpu_profile(args.threads, refresh=True)  # measured now, on the quiet machine, for every run below
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": profile.to_dict(), "rows": [],
              "command": f"python benchmarks/cpu_selection.py --models {' '.join(args.models)} --threads {args.threads} "
                         f"--iters {args.iters} --calib-size {args.calib_size} --eval-images {args.eval_images}"}
    start = time.perf_counter()
    args.results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgevision-selection-") as tmp:
        for alias in args.models:
            loaded = load_model(alias, weights="random")
            run = Path(tmp) / alias
            report = compress(alias, run, args.threads, args.iters, args.calib_size, args.eval_images)
            gemms_again = measure_gemms(args.threads)
            layers = selected_layers(run, report, args.threads)
            gmacs = count_gmacs(loaded.model, loaded.spec.input_size)
            result["rows"].append(row(alias, report, gmacs, profile.tier, layers, gemms_again))
            result["seconds"] = round(time.perf_counter() - start)  # the whole benchmark so far, profile included
            print(json.dumps(result["rows"][-1]), file=sys.stderr, flush=True)
            # written after every model: a stopped run keeps the models it finished
            name = f"cpu_selection_{profile.tier}"  # one file per INT8 tier: machines differ from day to day
            (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.results / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
