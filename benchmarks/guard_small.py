"""The accuracy guard on what users have: a small folder of real images and a 224-pixel depthwise CNN.

    python benchmarks/guard_small.py [--model tf_efficientnet_lite0] [--images 30] [--threads 2] [--max-drop 1]

Writes a folder of IMAGES real photos (Fashion-MNIST test images, class-balanced, as PNG), then runs
`edgevision compress MODEL --int8 --weights random --seed 0` on it at 224x224 twice, one after the other: held
to the budget (`--max-drop`, which random weights need explicitly) and with `--max-drop none`; both calibrate
on the folder itself. No ImageNet weights can be had offline, and random weights make top-1 meaningless (they
answer one class for everything), so the folder is unlabelled and the budget is in points of agreement with the
float model: a format that changes answers on these images (ONNX Runtime's u8 x s8 saturating on x86 without
VNNI) costs the guard the same steps and seconds as with trained weights. The table gives each INT8 candidate's guard path
(steps, metric and KL after each, seconds), where the ladder stopped, whether it held, the selected variant,
and the guarded command's wall time against the unguarded one. Writes benchmarks/results/guard_small.{json,md}.
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


def image_folder(root: Path, images: int) -> Path:
    from PIL import Image

    from edgevision.data.builtin import fashion_mnist
    from edgevision.data.sources import balanced_indices

    pixels, labels = fashion_mnist("test")
    root.mkdir(parents=True)
    for i in balanced_indices(len(labels), images, labels, seed=0):
        Image.fromarray(pixels[i]).save(root / f"{i}.png")
    return root


def compress(args, data: Path, out: Path, max_drop: str) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "edgevision", "compress", args.model, "--weights", "random", "--seed", "0",
           "--img-size", "224", "--int8", "--data", str(data), "--calib-data", str(data), "--threads",
           str(args.threads), "--max-drop", max_drop, "--out", str(out), "--json"]
    print("+", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode not in (0, 3):
        raise SystemExit(f"compress failed ({done.returncode})")
    return json.loads(done.stdout), round(time.perf_counter() - t0, 1)


def guard_of(variant: dict) -> dict | None:
    q = variant.get("quantization") or {}
    return q.get("accuracy_guard") or q.get("accuracy_control")


def summary(report: dict, seconds: float, unguarded: dict, unguarded_s: float) -> dict:
    rows = []
    for v in report["variants"]:
        guard = guard_of(v)
        if v["role"] != "candidate" or not v["name"].startswith("int8"):
            continue
        plain = next(u for u in unguarded["variants"] if (u["name"], u["runtime"]) == (v["name"], v["runtime"]))
        rows.append({"candidate": f"{v['name']}/{v['runtime']}", "drop_unguarded": 100 - plain["agreement"],
                     "drop_guarded": 100 - v["agreement"], "needed": bool(guard and guard["needed"]),
                     "held": guard.get("held", True) if guard else None,
                     "steps": [(s["step"], s["int8"], s.get("kl"), s["seconds"]) for s in (guard or {}).get("path", [])],
                     "ranking_s": ((guard or {}).get("ranking") or {}).get("seconds"),
                     "ladder_stopped": (guard or {}).get("ladder_stopped"), "gave_up": (guard or {}).get("gave_up"),
                     "stopped": (guard or {}).get("stopped"), "guard_s": (guard or {}).get("seconds")})
    return {"selected": report["selection"]["selected"], "status": report["status"], "guarded_s": seconds,
            "unguarded_s": unguarded_s, "ratio": round(seconds / unguarded_s, 2), "candidates": rows}


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    lines = [f"# The accuracy guard on {result['images']} unlabelled images at 224 ({p['cpu']}; INT8 features: "
             f"{', '.join(p['features']) or 'none'}; tier {p['tier']})", "",
             f"`{result['command']}` ({result['measured']}): `{result['model']}`, random weights (seed 0), "
             f"budget {result['max_drop']} point(s) of agreement with the float model, calibrated on the folder "
             "itself.", "",
             f"Selected: {result['selected']} ({result['status']}); guarded command {result['guarded_s']} s, "
             f"`--max-drop none` {result['unguarded_s']} s: **{result['ratio']}x**.", "",
             "| candidate | drop unguarded | drop guarded | guard needed | held | steps (metric, KL, s) | guard s | "
             "ended |", "|---|---|---|---|---|---|---|---|"]
    for r in result["candidates"]:
        steps = "; ".join(f"{n}: {m:.1f}" + (f", {k:.4f}" if k is not None else "") + (f", {s} s" if s else "")
                          for n, m, k, s in r["steps"])
        ended = r["stopped"] or r["ladder_stopped"] or r["gave_up"] or ""
        lines.append(f"| {r['candidate']} | {r['drop_unguarded']:.2f} | {r['drop_guarded']:.2f} | "
                     f"{'yes' if r['needed'] else 'no'} | {r['held']} | {steps} | {r['guard_s']} | {ended} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-drop", default="1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = image_folder(Path(tmp) / "photos", args.images)
        guarded, guarded_s = compress(args, data, Path(tmp) / "guarded", args.max_drop)
        unguarded, unguarded_s = compress(args, data, Path(tmp) / "unguarded", "none")
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "images": args.images,
              "max_drop": args.max_drop, "command": "python benchmarks/guard_small.py " + " ".join(sys.argv[1:]),
              "cpu_profile": guarded["benchmark"]["cpu_profile"],
              **summary(guarded, guarded_s, unguarded, unguarded_s)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "guard_small.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "guard_small.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
