"""The cpu target's selection at two versions of edgevision, timed side by side on this CPU: whether this checkout
selects anything slower than an earlier version did, for convnext_t, vit_b, swin_t and maxvit_t at 224x224.

    python benchmarks/selection_ab.py --ref REV [--head REV] [--models convnext_t vit_b swin_t maxvit_t]
        [--threads 2]

For each model, `edgevision compress MODEL --weights random --int8` (target cpu) runs twice: with the code at REV
and with this checkout's (or the code at --head REV), each version unpacked by `git archive` into a temporary
folder and run from it, first on PYTHONPATH (the installed libraries are the same). Then PyTorch eager FP32 and
the two selected artifacts, each run as its report says (an OpenVINO INT8 model with bf16 float layers so), are
timed side by side in one process: interleaved rounds, medians, so that the machine's drift hits all three alike.
The compress runs' own timings pick each side's winner; only this last timing compares the two. "Not slower":
this checkout's selected artifact within 3% (the medians' noise) of REV's, or faster. Writes
benchmarks/results/selection_ab_TIER.{json,md} (TIER: the CPU's INT8 tier) with the CPU's features.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cpu_selection  # the benchmark beside this one: its compress command

from edgevision.api import open_model
from edgevision.measure.bench import compare_latency, model_runner
from edgevision.measure.cpu_profile import cpu_profile

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOISE = 1.03  # the selection's own margin: medians within 3% are the same speed
SIDES = ("ref", "head")


def commit_of(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def code_at(rev: str, folder: Path) -> Path:
    """The tree at `rev` unpacked into `folder`."""
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def compress(alias: str, out: Path, code: Path, args: argparse.Namespace) -> tuple[dict, float]:
    """(compress's --json report, its wall seconds), run with the edgevision at `code`, as cpu_selection.py runs it."""
    start = time.perf_counter()
    report = cpu_selection.compress(alias, out, args.threads, iters=30, calib_size=16, eval_images=8, code=code)
    return report, time.perf_counter() - start


def timed_side_by_side(alias: str, artifacts: dict[str, Path], args: argparse.Namespace) -> dict[str, float]:
    """Median ms of PyTorch eager FP32 and each side's selected artifact, timed in interleaved rounds."""
    eager, _ = open_model(alias, weights="random")
    runners = {"pytorch": model_runner(eager, "pytorch", args.threads)}
    for side, path in artifacts.items():
        loaded, runtime = open_model(path)
        runners[side] = model_runner(loaded, runtime, args.threads)
    results = compare_latency(runners, eager.spec.input_size, iters=args.iters, rounds=args.rounds)
    return {name: round(r.latency_ms_p50, 2) for name, r in results.items()}


def row(alias: str, reports: dict[str, dict], seconds: dict[str, float], ms: dict[str, float]) -> dict:
    ratio = ms["head"] / ms["ref"]
    return {"model": alias, "pytorch_fp32_ms": ms["pytorch"],
            **{f"{side}_selected": reports[side]["selection"]["selected"] for side in SIDES},
            **{f"{side}_ms": ms[side] for side in SIDES},
            **{f"{side}_speedup": round(ms["pytorch"] / ms[side], 2) for side in SIDES},
            "head_over_ref": round(ratio, 3), "not_slower": ratio <= NOISE,
            **{f"{side}_compress_s": round(seconds[side]) for side in SIDES}}


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    lines = [f"# The selection at {result['head'][:10]} (head) against {result['ref'][:10]} (ref), timed side by side",
             "",
             f"Measured {result['measured']} on {p['cpu']} ({p['arch']}), {p['threads']} threads, INT8 and bf16 "
             f"features {', '.join(p['features']) or 'none'} (tier {p['tier']}).", "",
             "Batch 1, 224x224, random weights; each side's selected artifact and PyTorch eager FP32 timed in one "
             f"process, {result['rounds']} interleaved rounds, {result['iters']} calls each, medians.", "",
             "| model | selected at ref | selected at head | PyTorch FP32 ms | ref ms | head ms | ref speedup | "
             "head speedup | head / ref | not slower? | compress s (ref, head) |", "|" + "---|" * 11]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['ref_selected']} | {r['head_selected']} | {r['pytorch_fp32_ms']} | "
                     f"{r['ref_ms']} | {r['head_ms']} | {r['ref_speedup']:.2f}x | {r['head_speedup']:.2f}x | "
                     f"{r['head_over_ref']:.3f} | {'yes' if r['not_slower'] else 'NO'} | "
                     f"{r['ref_compress_s']}, {r['head_compress_s']} |")
    lines += ["", f"Not slower: head within {NOISE - 1:.0%} of ref's latency, or faster. "
              f"The benchmark took {result['seconds'] // 60} min {result['seconds'] % 60} s: `{result['command']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the earlier version: a commit, tag or branch of this repository")
    ap.add_argument("--head", help="the later version (default: this checkout, as it is)")
    ap.add_argument("--models", nargs="+", default=["convnext_t", "vit_b", "swin_t", "maxvit_t"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=60, help="timed calls per runner in the side-by-side timing")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    profile = cpu_profile(args.threads, refresh=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgevision-ab-") as tmp:
        code = {"ref": code_at(args.ref, Path(tmp) / "ref"),
                "head": code_at(args.head, Path(tmp) / "head") if args.head else ROOT}
        head = commit_of(args.head or "HEAD") + ("" if args.head else " (checkout)")
        result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": profile.to_dict(),
                  "ref": commit_of(args.ref), "head": head,
                  "iters": args.iters, "rounds": args.rounds, "rows": [],
                  "command": f"python benchmarks/selection_ab.py --ref {args.ref} "
                             + (f"--head {args.head} " if args.head else "") + f"--models {' '.join(args.models)} "
                             f"--threads {args.threads} --iters {args.iters} --rounds {args.rounds}"}
        args.results.mkdir(parents=True, exist_ok=True)
        for alias in args.models:
            reports, seconds, artifacts = {}, {}, {}
            for side in SIDES:
                out = Path(tmp) / f"{alias}-{side}"
                reports[side], seconds[side] = compress(alias, out, code[side], args)
                artifacts[side] = out / next(v["artifact"] for v in reports[side]["variants"] if v.get("selected"))
            result["rows"].append(row(alias, reports, seconds, timed_side_by_side(alias, artifacts, args)))
            result["seconds"] = round(time.perf_counter() - start)
            print(json.dumps(result["rows"][-1]), file=sys.stderr, flush=True)
            name = f"selection_ab_{profile.tier}"  # written after every model: a stopped run keeps what it finished
            (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            (args.results / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
