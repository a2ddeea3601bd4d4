"""Pick the fastest model of this bundle that holds its accuracy budget, measured on this machine.

    python select_model.py [BUNDLE] [--threads N] [--rounds R] [--max-drop P] [--json]

For every candidate the installed runtimes can run: check its files' sha256, run it on the bundle's sample,
compare with the float model's stored logits (top-1 with labels, agreement, logit cosine, KL), time those
within the budget side by side (interleaved rounds, medians), and keep the fastest. Writes decision.json and
the pick under a fixed name (model.onnx, or model.xml + model.bin). Exit 0 with a pick, 3 when no candidate
holds the budget, 2 for a bad bundle or argument. Needs Python, numpy and onnxruntime and/or openvino.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

if __package__:
    from . import bundle_lib as lib
else:  # run as a script inside the bundle
    import bundle_lib as lib

BATCH = 16  # the accuracy pass's batch (OpenVINO compiles once for it; the last batch is padded)
CALLS_PER_ROUND = 3
# after this many rounds, a candidate slower than the fastest by this factor cannot win within the noise: its
# remaining rounds are skipped (its p50 stays that of the rounds it ran)
SETTLE_ROUNDS, OUT_OF_REACH = 3, 1.5
TIMING_SECONDS = 25.0  # the rounds are cut to what fits in this, measured on the first (at least SETTLE_ROUNDS)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_sample(bundle: Path, manifest: lib.BundleManifest) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(model inputs, labels or None, the float model's logits) of the bundle's sample, checksum first."""
    problem = lib.checksum_problem(bundle, {manifest.sample.file: manifest.sample.sha256})
    if problem:
        raise lib.BundleError(f"the bundle's sample {problem}", "copy the bundle again")
    with np.load(bundle / manifest.sample.file) as data:
        labels = data["labels"] if "labels" in data.files else None
        return lib.normalize(data["images"], manifest.preprocessing), labels, data["logits"]


def predict_all(runner: Callable, inputs: np.ndarray) -> np.ndarray:
    """Logits of every input, in batches of one size (the last padded: OpenVINO compiles once per size); a
    sample smaller than BATCH is one batch of its own size."""
    size = min(BATCH, len(inputs))
    out = []
    for start in range(0, len(inputs), size):
        chunk = inputs[start:start + size]
        pad = size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
        out.append(runner(chunk)[:size - pad])
    return np.concatenate(out)


PROBE = """import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, bundle_lib as lib
m = lib.load_manifest(sys.argv[2]); c = next(c for c in m.candidates if c.key == sys.argv[3])
lib.load_runner(sys.argv[2], c, 1)(np.zeros((1, *m.preprocessing.input_size), np.float32))"""


def crashes(bundle: Path, cand: lib.Candidate) -> str | None:
    """Whether running `cand` kills the process (OpenVINO's compile_model segfaulted under qemu emulation): each
    runtime runs its first candidate once in a child process, so a crash is a reason, not the end of the run."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(Path(lib.__file__).parent), str(bundle), cand.key],
                          capture_output=True, text=True)
    return f"{cand.runtime} crashed on this machine (signal {-done.returncode})" if done.returncode < 0 else None


def check_candidate(bundle: Path, cand: lib.Candidate, threads: int, inputs, labels, reference, ref_top1):
    """Its accuracy result, and its runner when it could run (None, with the reason in the result, when not)."""
    result = lib.CandidateResult(cand.key, cand.runtime, cand.precision, "out", host=cand.host)
    problem = lib.checksum_problem(bundle, cand.files)
    if problem:
        result.reason = problem
        return result, None
    try:
        runner = lib.load_runner(bundle, cand, threads)
        measured = lib.fidelity(reference, predict_all(runner, inputs), labels)
    except lib.BundleError as e:
        result.reason = str(e)
        return result, None
    except Exception as e:  # noqa: BLE001 - a runtime that cannot load or run a file is a reason, not a crash
        text = str(e).strip()
        result.reason = f"{cand.runtime} could not run it: {text.splitlines()[0][:160] if text else type(e).__name__}"
        return result, None
    result.top1, result.agreement = measured["top1"], measured["agreement"]
    result.cosine, result.kl = measured["cosine"], measured["kl"]
    result.drop = lib.drop_points(measured, ref_top1)
    return result, runner


def time_side_by_side(runners: dict[str, Callable], x: np.ndarray, rounds: int) -> dict[str, tuple[float, float]]:
    """{key: (p50, p90) ms} at batch 1: interleaved rounds, each runner's calls in a round after one untimed call
    (the runner before it may leave threads spinning); those out of reach after SETTLE_ROUNDS stop there, and the
    rounds are as many as fit in TIMING_SECONDS (at least SETTLE_ROUNDS, at most `rounds`)."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for runner in runners.values():
        runner(x)
        runner(x)
    active, done = list(runners), 0
    while done < rounds:
        started = time.perf_counter()
        for key in active:
            runners[key](x)
            for _ in range(CALLS_PER_ROUND):
                t0 = time.perf_counter()
                runners[key](x)
                times[key].append((time.perf_counter() - t0) * 1000)
        done += 1
        if done == 1:  # a 224-pixel ViT's round takes seconds: as many as fit in TIMING_SECONDS
            rounds = min(rounds, max(SETTLE_ROUNDS, int(TIMING_SECONDS / (time.perf_counter() - started))))
        if done == SETTLE_ROUNDS:
            fastest = min(float(np.median(times[k])) for k in active)
            active = [k for k in active if float(np.median(times[k])) <= fastest * OUT_OF_REACH]
    return {k: (float(np.median(v)), float(np.percentile(v, 90))) for k, v in times.items()}


def run_selection(bundle: Path, threads: int | None = None, rounds: int = 10, max_drop: float | None = None,
                  log: Callable[[str], None] = _log) -> lib.Decision:
    """The whole selection; writes decision.json and the pick into the bundle and returns the decision."""
    t0 = time.perf_counter()
    bundle = Path(bundle)
    manifest = lib.load_manifest(bundle)
    threads = threads or os.cpu_count() or 1
    budget = manifest.max_drop if max_drop is None else max_drop
    inputs, labels, reference = load_sample(bundle, manifest)
    ref_top1 = None if labels is None else float((reference.argmax(1) == labels).mean() * 100)
    results, runners, crashed = [], {}, {}
    for cand in manifest.candidates:
        log(f"checking {cand.key} on {len(inputs)} images")
        if cand.runtime not in crashed and lib.runtime_version(cand.runtime) is not None:
            crashed[cand.runtime] = crashes(bundle, cand)
        if crashed.get(cand.runtime):
            results.append(lib.CandidateResult(cand.key, cand.runtime, cand.precision, "out", crashed[cand.runtime],
                                               host=cand.host))
            continue
        result, runner = check_candidate(bundle, cand, threads, inputs, labels, reference, ref_top1)
        results.append(result)
        if runner is not None and (budget is None or result.drop <= budget):
            runners[cand.key] = runner
    if runners:
        log(f"timing {len(runners)} candidates side by side ({threads} threads, batch 1, at most {rounds} rounds "
            f"or {TIMING_SECONDS:.0f} s)")
        for key, (p50, p90) in time_side_by_side(runners, inputs[:1], rounds).items():
            row = next(r for r in results if r.key == key)
            row.latency_ms_p50, row.latency_ms_p90 = round(p50, 3), round(p90, 3)
    picked, rule = lib.choose(results, budget)
    lib.add_speedups(results)
    chosen = next((c for c in manifest.candidates if c.key == picked), None)
    files = lib.copy_pick(bundle, chosen) if chosen else []
    decision = lib.Decision(
        lib.MANIFEST_VERSION, manifest.model, picked, files, dict(chosen.options) if chosen else {}, rule, budget,
        manifest.metric, len(inputs), lib.device_info(threads), manifest.host, results,
        round(time.perf_counter() - t0, 2))
    lib.write_json_atomic(bundle / lib.DECISION_FILE, lib.to_dict(decision))
    return decision


def summary(decision: lib.Decision) -> str:
    lines = [f"{decision.device.cpu} ({decision.device.arch}; {', '.join(decision.device.features) or 'no INT8 features'})"]
    for r in decision.candidates:
        acc = f"drop {r.drop:.2f}" if r.drop is not None else "not run"
        speed = f"{r.latency_ms_p50:.2f} ms" if r.latency_ms_p50 is not None else "-"
        mark = "*" if r.status == "picked" else " "
        lines.append(f"{mark} {r.key:<24} {acc:<12} {speed:>10}  {r.reason or r.status}")
    if decision.picked:
        lines.append(f"picked {decision.picked} -> {' + '.join(decision.files)} ({decision.rule})")
    else:
        lines.append(f"no candidate holds the accuracy budget here ({decision.rule}); see decision.json")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--threads", type=int, default=None, help="threads per runtime (default: all cores)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    parser.add_argument("--max-drop", type=float, default=None, help="points; default: the bundle's budget")
    parser.add_argument("--json", action="store_true", help="print decision.json to stdout")
    args = parser.parse_args(argv)
    try:
        decision = run_selection(Path(args.bundle), args.threads, args.rounds, args.max_drop)
    except lib.BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(lib.to_dict(decision), indent=2) if args.json else summary(decision))
    return 0 if decision.picked else 3


if __name__ == "__main__":
    sys.exit(main())
