"""Where INT8 pays for itself on this CPU, per operator type, in OpenVINO and ONNX Runtime.

    python benchmarks/int8_payoff.py [--models convnext_t vit_b] [--threads 2]

For each model (224x224, random weights: latency does not depend on them): `edgevision export MODEL --target cpu`
(the deploy bundle keeps every INT8 format beside its float artifact), then `edgevision benchmark --layers` on
model_int8.xml (OpenVINO) and model_int8.onnx (ONNX Runtime u8s8), which profiles the float artifact of the same
format in alternating passes and joins each INT8 operator with the float one it replaces. Writes
benchmarks/results/int8_payoff_TIER.{json,md} (TIER: this CPU's INT8 tier, `edgevision device`).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ARTIFACTS = {"openvino": "model_int8.xml", "onnxruntime": "model_int8.onnx"}
SHOWN = 8  # operator rows per model and runtime in the markdown


def measure(model: str, work: Path, threads: int) -> dict:
    from edgevision import api
    from edgevision.typed import to_data

    bundle = work / model
    print(f"exporting {model} (cpu bundle, 224x224)", file=sys.stderr, flush=True)
    api.export(model, target="cpu", weights="random", data="builtin:photos", calib_size=32, threads=threads,
               out=bundle, force=True, progress=False)
    out = {}
    for runtime, artifact in ARTIFACTS.items():
        result = api.benchmark(bundle / artifact, threads=threads, iters=10, warmup=2, throughput_batch=None,
                               layers=True)
        out[runtime] = to_data(result.layers.int8_vs_float)
    return out


def markdown(results: dict, profile) -> str:
    lines = [f"CPU: {profile.cpu}; INT8 features: {', '.join(profile.features) or 'none'} (tier {profile.tier}); "
             f"{results['threads']} threads. Command: `python benchmarks/int8_payoff.py --models "
             f"{' '.join(results['models'])} --threads {results['threads']}`.", "",
             "Per-layer profiles (each runtime's own profiler), float and INT8 in alternating passes, batch 1, "
             "224x224, random weights. `quantize/dequantize` is INT8's own cost.", ""]
    for model, runtimes in results["models"].items():
        for runtime, against in runtimes.items():
            lines += [f"**{model}, {runtime}**: float {against['float_total_ms']:.1f} ms, INT8 "
                      f"{against['int8_total_ms']:.1f} ms (sum of profiled layers)", "",
                      "| operator | kind | float ms | INT8 ms | saved ms | INT8 |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['op']} | {r['kind']} | {r['float_ms']:.2f} | {r['int8_ms']:.2f} | {r['saved_ms']:.2f} | "
                      f"{r['verdict']} |" for r in against["operators"][:SHOWN]]
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["convnext_t", "vit_b"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from edgevision.measure.cpu_profile import cpu_profile

    profile = cpu_profile(args.threads)
    with tempfile.TemporaryDirectory(prefix="edgevision-payoff-") as work:
        models = {model: measure(model, Path(work), args.threads) for model in args.models}
    results = {"cpu": profile.cpu, "features": profile.features, "tier": profile.tier, "threads": args.threads,
               "models": models}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"int8_payoff_{profile.tier}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(results, profile) + "\n", encoding="utf-8")
    print(f"wrote {stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
