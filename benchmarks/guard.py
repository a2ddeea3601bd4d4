"""The accuracy guard, measured: Fashion-MNIST models compressed for the cpu target with the default budget
(1 top-1 point) and with no guard (`--max-drop none`), evaluated on the 10,000 test images, calibrated on 300
training images (`--calib-size`).

    python benchmarks/guard.py [--models mobilenetv3_mini efficientnet_lite_mini convnext_mini] [--threads 2]
                               [--limit N] [--calib-size 300]

Each model is edgevision's own Fashion-MNIST float model (`--weights fashion-mnist`, trained on first use,
before anything is timed).
The table gives each INT8 candidate's top-1 drop without the guard, the path the guard took on each candidate
that needed it (steps, the metric after each, seconds), the drop it ended with, the selected variant, and the wall
time of the guarded command against the unguarded one. Writes benchmarks/results/guard.{json,md}
(guard_calibN.{json,md} with another --calib-size: with 4, EfficientNet-Lite's OpenVINO INT8 misses the budget).
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
DEFAULT_CALIB_SIZE = 300  # edgevision's default --calib-size


def compress(alias: str, out: Path, args: argparse.Namespace, max_drop: str | None) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "edgevision", "compress", alias, "--weights", "fashion-mnist", "--int8",
           "--data", "builtin:fashion-mnist", "--calib-data", "builtin:fashion-mnist", "--calib-size",
           str(args.calib_size), "--threads", str(args.threads), "--out", str(out), "--json"]
    cmd += ["--limit", str(args.limit)] if args.limit else []
    cmd += ["--max-drop", max_drop] if max_drop else []
    print("+", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode not in (0, 3):
        raise SystemExit(f"compress {alias} failed ({done.returncode})")
    return json.loads(done.stdout), round(time.perf_counter() - t0, 1)


def trained(alias: str) -> None:
    """Train the model's Fashion-MNIST weights now if this machine has none, so that no timed command does."""
    cmd = [sys.executable, "-m", "edgevision", "evaluate", alias, "--weights", "fashion-mnist", "--data",
           "builtin:fashion-mnist", "--limit", "10", "--json"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)


def int8_drops(report: dict) -> dict[str, float]:
    return {f"{v['name']}/{v['runtime']}": round(v["top1_drop"], 2) for v in report["variants"]
            if v["role"] == "candidate" and v["name"].startswith("int8")}


def guard_paths(report: dict) -> dict[str, list[dict]]:
    """The steps the guard took on each INT8 candidate that needed it (OpenVINO's ladder, the Q/DQ guard of the
    ONNX Runtime ones); the bf16 variant shares the OpenVINO INT8 model's."""
    paths = {}
    for v in report["variants"]:
        q = v.get("quantization") or {}
        guard = q.get("accuracy_control") or q.get("accuracy_guard")
        if guard and guard.get("needed") and "inference_precision" not in q:
            paths[f"{v['name']}/{v['runtime']}"] = [
                {k: s.get(k) for k in ("step", "int8", "calibration_images", "seconds")} for s in guard["path"]]
    return paths


def row(alias: str, plain: dict, plain_s: float, guarded: dict, guarded_s: float) -> dict:
    selected = next((v for v in guarded["variants"] if v.get("selected")), None)
    return {"model": alias, "float_top1": next(v for v in guarded["variants"] if v["role"] == "reference")["top1"],
            "unguarded_int8_drops": int8_drops(plain), "guarded_int8_drops": int8_drops(guarded),
            "guard_paths": guard_paths(guarded), "status": guarded["status"],
            "selected": selected and f"{selected['name']}/{selected['runtime']}",
            "selected_drop": selected and round(selected["top1_drop"], 2),
            "unguarded_s": plain_s, "guarded_s": guarded_s, "time_ratio": round(guarded_s / plain_s, 2)}


def path_cell(paths: dict[str, list[dict]]) -> str:
    """Each guarded candidate's steps: top-1 after each, its calibration images, seconds."""
    def step(s: dict) -> str:
        return (f"{s['step']} {s['int8']:.2f}" + (f" ({s['seconds']} s)" if s["seconds"] else ""))
    return "<br>".join(f"{key}: " + "; ".join(map(step, steps)) for key, steps in paths.items()) or "not needed"


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    lines = ["# The accuracy guard (compress --int8, target cpu, default budget 1 top-1 point)", "",
             f"Measured {result['measured']} on {p['cpu']}, {p['threads']} threads, INT8 and bf16 features "
             f"{', '.join(p['features']) or 'none'} (tier {p['tier']}); {result['images']} Fashion-MNIST test images, "
             f"calibrated on {result['calib_size']} training images.",
             "", "| model | float top-1 | INT8 drops, no guard | guard path (top-1 after each step, s) | INT8 drops, "
             "guarded | selected (drop) | status | time guarded / unguarded |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        drops = ", ".join(f"{k} {v:+.2f}" for k, v in r["unguarded_int8_drops"].items())
        guarded = ", ".join(f"{k} {v:+.2f}" for k, v in r["guarded_int8_drops"].items())
        lines.append(f"| {r['model']} | {r['float_top1']:.2f} | {drops} | {path_cell(r['guard_paths'])} | {guarded} "
                     f"| {r['selected']} ({r['selected_drop']}) | {r['status']} | {r['guarded_s']} / "
                     f"{r['unguarded_s']} s ({r['time_ratio']}x) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenetv3_mini", "efficientnet_lite_mini", "convnext_mini"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="test images (class-balanced subset); all by default")
    ap.add_argument("--calib-size", type=int, default=DEFAULT_CALIB_SIZE,
                    help="calibration images from the training split (results: guard_calibN.* when not 300)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    from edgevision.measure.cpu_profile import cpu_profile

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgevision-guard-") as tmp:
        for alias in args.models:
            trained(alias)
            plain, plain_s = compress(alias, Path(tmp) / f"{alias}-plain", args, "none")
            guarded, guarded_s = compress(alias, Path(tmp) / f"{alias}-guarded", args, None)
            rows.append(row(alias, plain, plain_s, guarded, guarded_s))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": cpu_profile(args.threads).to_dict(),
              "images": args.limit or 10000, "calib_size": args.calib_size, "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    name = "guard" if args.calib_size == DEFAULT_CALIB_SIZE else f"guard_calib{args.calib_size}"
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
