"""The CPU deploy bundle, measured: `edgevision export MODEL --target cpu` at 224x224 (random weights), then the
bundle's own select_model.py in a Python without torch, for convnext_t, vit_b, swin_t and maxvit_t.

    python benchmarks/cpu_bundle.py [--models convnext_t vit_b swin_t maxvit_t] [--threads 2] [--iters 30]
                                    [--device-python .venv-device/bin/python]

Per model: the pick the export made here (compress's rule over every candidate, timed against PyTorch eager FP32)
and the pick the device-side selector made on the same machine, whether they agree (the same candidate, or the
selector's own p50 of the export's pick within 3% of its pick's: the medians' noise), the selector's wall time,
and what the bundle adds to its models (sample, logits, scripts). The device python should have only numpy,
Pillow and the runtimes. Writes benchmarks/results/cpu_bundle_TIER.{json,md} (TIER: this CPU's INT8 tier).
A bundle checked on another machine: copy it there and run its select_model.py; `compare` reads decision.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgevision.measure.cpu_profile import CpuProfile

RESULTS = Path(__file__).resolve().parent / "results"
NOISE = 0.03
ADDED = ("sample.npz", "select_model.py", "predict.py", "bundle_lib.py", "requirements.txt", "README.md")


def export(alias: str, out: Path, threads: int, iters: int) -> dict:
    cmd = [sys.executable, "-m", "edgevision", "export", alias, "--target", "cpu", "--weights", "random",
           "--data", "builtin:photos", "--calib-data", "builtin:fashion-mnist:train", "--calib-size", "32",
           "--threads", str(threads), "--iters", str(iters), "--out", str(out), "--json"]
    print("+", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"export {alias} failed ({done.returncode})")
    return json.loads(done.stdout)


def select(python: str, bundle: Path, threads: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    done = subprocess.run([python, "select_model.py", "--threads", str(threads), "--json"], cwd=bundle,
                          stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 3):
        raise SystemExit(f"select_model.py failed in {bundle} ({done.returncode})")
    return json.loads(done.stdout), seconds


def row(alias: str, report: dict, decision: dict, seconds: float, bundle: Path) -> dict:
    host_pick = report["selection"]["selected"]
    p50 = {c["key"]: c["latency_ms_p50"] for c in decision["candidates"]}
    device_pick = decision["picked"]
    agree = host_pick == device_pick or (
        p50.get(host_pick) is not None and p50[host_pick] <= p50[device_pick] * (1 + NOISE))
    return {"model": alias, "host_pick": host_pick, "device_pick": device_pick, "agree": agree,
            "device_p50_ms": p50, "host_speedups": {f"{v['name']}/{v['runtime']}": v["speedup"]
                                                    for v in report["variants"] if v["role"] == "candidate"},
            "selector_seconds": round(seconds, 1), "decision_seconds": decision["seconds"],
            "added_mb": round(sum((bundle / f).stat().st_size for f in ADDED) / 1e6, 2),
            "sample_images": decision["sample_images"]}


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    lines = [f"# CPU deploy bundle: export pick vs device pick ({p['cpu']}, {p['arch']}; INT8 features: "
             f"{', '.join(p['features']) or 'none'}; tier {p['tier']})", "",
             f"`{result['command']}` ({result['measured']}; {result['threads']} threads, 224x224, batch 1, random "
             "weights: speed alone decides). Export pick: the export's own selection (every candidate timed side by "
             "side against PyTorch eager FP32). Device pick: the bundle's select_model.py in a Python with only "
             "numpy, Pillow and the runtimes, on the same machine.", "",
             "| model | export pick | device pick | agree | selector s | added MB |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['host_pick']} | {r['device_pick']} | {'yes' if r['agree'] else 'NO'} | "
                     f"{r['selector_seconds']} | {r['added_mb']} |")
    lines += ["", "Targets: picks agree (same candidate, or within the medians' 3% noise); selector under 60 s; "
              "bundle additions under 20 MB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["convnext_t", "vit_b", "swin_t", "maxvit_t"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--device-python", default=str(Path(".venv-device/bin/python").resolve()))
    args = parser.parse_args()
    rows, profile = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for alias in args.models:
            bundle = Path(tmp) / alias
            report = export(alias, bundle, args.threads, args.iters)
            profile = profile or report["benchmark"]["cpu_profile"]
            decision, seconds = select(args.device_python, bundle, args.threads)
            rows.append(row(alias, report, decision, seconds, bundle))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    tier = CpuProfile.from_dict(profile).tier
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "cpu_profile": profile,
              "command": "python benchmarks/cpu_bundle.py " + " ".join(sys.argv[1:]), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cpu_bundle_{tier}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"cpu_bundle_{tier}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
