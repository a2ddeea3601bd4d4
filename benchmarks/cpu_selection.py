"""The selection itself, measured: `edgevision compress MODEL --int8` (target cpu) at 224x224, batch 1, random
weights, for convnext_t, vit_b, swin_t and maxvit_t, on whatever CPU runs it.

    python benchmarks/cpu_selection.py [--models convnext_t vit_b swin_t maxvit_t] [--threads 2] [--iters 100]

Each run builds every candidate (OpenVINO FP32 and INT8, ONNX Runtime INT8 in the CPU profile's formats), times
them side by side against PyTorch eager FP32 (interleaved rounds, medians) and selects the fastest (random
weights: the accuracy guard is off, speed alone decides). The table gives each candidate's speedup, the
selected one, whether it is the fastest measured (within the medians' 3% noise), its speedup against the
issue's target for this CPU's INT8 tier, and the INT8 efficiency: the model's GOPs / latency as a share of the
profile's INT8 GEMM roofline for the selected runtime. Writes benchmarks/results/cpu_selection_TIER.{json,md}
(TIER: the CPU's INT8 tier, avx2, vnni, amx, ...) with the CPU profile of the machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# the selected variant's speedup over PyTorch eager FP32 that the CPU issue asks for, by INT8 tier
TARGETS = {"avx2": {"convnext_t": 1.8, "vit_b": 2.2, "swin_t": 1.7, "maxvit_t": 1.7},
           "vnni": {"convnext_t": 4.0, "vit_b": 3.6, "swin_t": 3.4, "maxvit_t": 3.6}}
TARGETS["amx"] = TARGETS["vnni"]  # AMX CPUs have VNNI too: the VNNI figures are their floor


def compress(alias: str, out: Path, threads: int, iters: int, calib_size: int) -> dict:
    cmd = [sys.executable, "-m", "edgevision", "compress", alias, "--weights", "random", "--int8",
           "--data", "builtin:photos", "--calib-data", "builtin:fashion-mnist:train", "--calib-size", str(calib_size),
           "--threads", str(threads), "--iters", str(iters), "--out", str(out), "--json"]
    print("+", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"compress {alias} failed ({done.returncode})")
    return json.loads(done.stdout)


def row(alias: str, report: dict, gmacs: float, tier: str) -> dict:
    profile = report["benchmark"]["cpu_profile"]
    candidates = {c["key"]: c["latency_ms_p50"] for c in report["selection"]["candidates"]}
    reference = next(v for v in report["variants"] if v["role"] == "reference")["latency_ms_p50"]
    selected = report["selection"]["selected"]
    runtime = selected.split("/")[1]
    roofline = max((v for k, v in profile["gemm_gops"].items() if k.startswith(f"{runtime} int8")), default=None)
    achieved = 2 * gmacs / (candidates[selected] / 1000)
    target = TARGETS.get(tier, {}).get(alias)
    speedup = reference / candidates[selected]
    return {"model": alias, "pytorch_fp32_ms": round(reference, 2),
            "speedups": {k: round(reference / v, 2) for k, v in candidates.items()},
            "selected": selected, "selected_speedup": round(speedup, 2),
            "fastest_within_noise": candidates[selected] <= min(candidates.values()) * 1.03,
            "target_speedup": target, "target_met": None if target is None else speedup >= target,
            "gops": round(2 * gmacs, 2), "achieved_gops": round(achieved, 1), "roofline_gops": roofline,
            "roofline_share": None if not roofline or "int8" not in selected else round(achieved / roofline, 2),
            "warnings": [w for w in report["warnings"] if "INT8 is no faster" in w]}


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    keys = sorted({k for r in result["rows"] for k in r["speedups"]})
    lines = ["# CPU selection at 224x224 (compress --int8, target cpu)", "",
             f"Measured {result['measured']} on {p['cpu']} ({p['arch']}), {p['threads']} threads, INT8 and bf16 features "
             f"{', '.join(p['features']) or 'none'} (tier {p['tier']}); GEMM roofline GOP/s: "
             + ", ".join(f"{k} {v}" for k, v in p["gemm_gops"].items()) + ".", "",
             "Speedup over PyTorch eager FP32, batch 1, random weights, measured side by side in each run.", "",
             "| model | PyTorch FP32 ms | " + " | ".join(keys) + " | selected | fastest? | target | INT8 share of "
             "roofline |", "|" + "---|" * (len(keys) + 6)]
    for r in result["rows"]:
        cells = [f"{r['speedups'][k]:.2f}x" if k in r["speedups"] else "-" for k in keys]
        target = "-" if r["target_speedup"] is None else \
            f"{r['target_speedup']}x {'met' if r['target_met'] else 'NOT met'}"
        share = "-" if r["roofline_share"] is None else f"{r['roofline_share']:.0%}"
        lines.append(f"| {r['model']} | {r['pytorch_fp32_ms']} | " + " | ".join(cells)
                     + f" | {r['selected']} ({r['selected_speedup']:.2f}x) | {'yes' if r['fastest_within_noise'] else 'no'}"
                     f" | {target} | {share} |")
    lines += ["", *[f"- {line}" for line in p["conclusions"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(TARGETS["avx2"]))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--calib-size", type=int, default=64, help="calibration images (speed does not depend on them)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    from edgevision.measure.cpu_profile import cpu_profile
    from edgevision.models import load_model
    from edgevision.models.zoo import count_gmacs

    profile = cpu_profile(args.threads, refresh=True)  # measured now, on the quiet machine, for every run below
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": profile.to_dict(), "rows": []}
    args.results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgevision-selection-") as tmp:
        for alias in args.models:
            loaded = load_model(alias, weights="random")
            report = compress(alias, Path(tmp) / alias, args.threads, args.iters, args.calib_size)
            result["rows"].append(row(alias, report, count_gmacs(loaded.model, loaded.spec.input_size), profile.tier))
            print(json.dumps(result["rows"][-1]), file=sys.stderr, flush=True)
            # written after every model: a stopped run keeps the models it finished
            name = f"cpu_selection_{profile.tier}"  # one file per INT8 tier: machines differ from day to day
            (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.results / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
