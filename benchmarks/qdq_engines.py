"""The jetson target's two Q/DQ engines side by side: edgevision's (ONNX Runtime's quantize_static with its
TensorRT placement) and NVIDIA Model Optimizer's (--qdq-engine modelopt, the jetson extra).

    python benchmarks/qdq_engines.py [structure] [accuracy] [--models ...] [--limit 2000] [--threads 2]

structure: convnext_t, swin_t, vit_b, maxvit_t at 224x224, random weights, 64 calibration images: per engine the
  Q/DQ placement by operator type (which ops read an INT8 activation), which residual adds, LayerNorms,
  Softmaxes and GELUs stay in float, the TensorRT INT8 rules check and the bundle's build (export) time.
accuracy: the Fashion-MNIST-trained *_mini models (--weights fashion-mnist: trained on first use and cached),
  300 calibration images from the training split, evaluated on a class-balanced subset of the test split: the
  simulated INT8 accuracy (the Q/DQ graph in ONNX Runtime, as the engine wrote it: the accuracy guard off)
  against PyTorch FP32 on the same images.
TensorRT cannot run here, so no engine latency is measured: which engine makes the faster engine is for the
device to time. Writes benchmarks/results/qdq_engines.{json,md} with the CPU profile of the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("edgevision", "modelopt")
STRUCTURE_MODELS = ["convnext_t", "swin_t", "vit_b", "maxvit_t"]
ACCURACY_MODELS = ["convnext_mini", "swin_mini", "vit_mini", "maxvit_mini"]
GELU = {"Erf", "Gelu"}


def export(alias: str, weights: str, engine: str, out: Path, args, **overrides) -> tuple[dict, float]:
    from edgevision.data import open_source
    from edgevision.models import load_model
    from edgevision.pipeline.export import export_model
    from edgevision.pipeline.presets import preset_for
    from edgevision.pipeline.resolve import resolve

    loaded = load_model(alias, weights=weights)
    recipe = resolve(preset_for(loaded.spec.family), None, {"threads": args.threads, "benchmark_iters": 3,
                                                            "tensorrt": {"qdq_engine": engine}, **overrides})
    data = "builtin:fashion-mnist:test" if weights == "fashion-mnist" else "builtin:photos"
    t0 = time.perf_counter()
    result = export_model(loaded, open_source(data), recipe, "jetson", "int8", out, progress=False,
                          calib_source=open_source("builtin:fashion-mnist:train"),
                          log=lambda m: print(f"  {alias}/{engine}: {m}", file=sys.stderr))
    return result.report.to_dict(), round(time.perf_counter() - t0, 1)


def placement(path: Path) -> dict:
    """Which ops read an INT8 activation (a DequantizeLinear of a QuantizeLinear), and which residual adds,
    LayerNorms, Softmaxes and GELUs read only float tensors."""
    import onnx

    from edgevision.runtimes.tensorrt import graph_constants

    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    constants = set(graph_constants(graph))  # Identity of a constant too: the exporter's shared weights

    def int8_inputs(node) -> int:
        return sum(1 for i in node.input if i in producers and producers[i].op_type == "DequantizeLinear"
                   and producers[i].input[0] in producers)  # an activation: its DQ reads a QuantizeLinear

    readers = Counter(n.op_type for n in graph.node for _ in range(int8_inputs(n)))
    residual = [n for n in graph.node if n.op_type == "Add" and sum(i not in constants for i in n.input) == 2]
    kinds = {"residual_add": residual, "layernorm": [n for n in graph.node if n.op_type == "LayerNormalization"],
             "softmax": [n for n in graph.node if n.op_type == "Softmax"],
             "gelu": [n for n in graph.node if n.op_type in GELU]}
    return {"int8_activation_readers": dict(readers.most_common()),
            "quantize_ops": sum(n.op_type == "QuantizeLinear" for n in graph.node),
            "float": {k: f"{sum(int8_inputs(n) == 0 for n in v)}/{len(v)}" for k, v in kinds.items()}}


def structure(args, tmp: Path) -> list[dict]:
    rows = []
    for alias in args.models or STRUCTURE_MODELS:
        for engine in ENGINES:
            out = tmp / f"{alias}-{engine}"
            report, wall = export(alias, "random", engine, out, args, calib_size=64, eval_limit=8)
            rows.append({"model": alias, "engine": engine, "export_s": wall,
                         "rules_passed": report["tensorrt"]["rules_check"]["passed"],
                         "violations": report["tensorrt"]["rules_check"]["violations"][:3],
                         **placement(out / "model.onnx")})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def accuracy(args, tmp: Path) -> list[dict]:
    rows = []
    for alias in args.models or ACCURACY_MODELS:
        for engine in ENGINES:
            # the guard off: each engine's own graph, as it wrote it
            report, wall = export(alias, "fashion-mnist", engine, tmp / f"{alias}-{engine}", args,
                                  eval_limit=args.limit, max_drop="none")
            ref, sim = report["variants"][0], report["variants"][-1]
            rows.append({"model": alias, "engine": engine, "images": report["data"]["images"],
                         "float_top1": ref["top1"], "int8_top1": sim["top1"], "drop": sim["top1_drop"],
                         "agreement": sim["agreement"], "rules_passed": report["tensorrt"]["rules_check"]["passed"],
                         "export_s": wall})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(results: dict) -> str:
    lines = ["# Q/DQ engines for the jetson target: edgevision vs NVIDIA Model Optimizer", "",
             f"Measured on {results['machine']}.", ""]
    if results.get("structure"):
        lines += ["## Placement at 224x224 (random weights, 64 calibration images)", "",
                  "float: how many of each kind read only float tensors (stay in FP16 on the device).", "",
                  "| model | engine | QuantizeLinear | ops reading INT8 activations | float residual adds | "
                  "float LayerNorms | float Softmax | float GELU | TensorRT rules | export s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["structure"]:
            readers = ", ".join(f"{k} {v}" for k, v in r["int8_activation_readers"].items())
            f = r["float"]
            lines.append(f"| {r['model']} | {r['engine']} | {r['quantize_ops']} | {readers} | {f['residual_add']} | "
                         f"{f['layernorm']} | {f['softmax']} | {f['gelu']} | "
                         f"{'passed' if r['rules_passed'] else 'FAILED'} | {r['export_s']} |")
        lines.append("")
    if results.get("accuracy"):
        lines += ["## Simulated INT8 accuracy: Fashion-MNIST-trained models vs PyTorch FP32", "",
                  "| model | engine | images | FP32 top-1 | INT8 top-1 (simulated) | drop | agreement % | "
                  "TensorRT rules | export s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["accuracy"]:
            lines.append(f"| {r['model']} | {r['engine']} | {r['images']} | {r['float_top1']:.2f} | "
                         f"{r['int8_top1']:.2f} | {r['drop']:+.2f} | {r['agreement']:.2f} | "
                         f"{'passed' if r['rules_passed'] else 'FAILED'} | {r['export_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgevision.measure.cpu_profile import cpu_profile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["structure", "accuracy"], choices=["structure", "accuracy"])
    ap.add_argument("--models", nargs="+", help="instead of the part's four families")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=2000, help="test images (class-balanced subset)")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "qdq_engines.json"
    results = json.loads(path.read_text()) if path.exists() else {}  # parts not measured now are kept
    profile = cpu_profile(args.threads, measure=False)
    results["machine"] = (f"{profile.cpu} ({profile.arch}), {args.threads} threads, INT8 features "
                          f"{', '.join(profile.features) or 'none'} (tier {profile.tier})")
    results["cpu_profile"] = profile.to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            results[part] = {"structure": structure, "accuracy": accuracy}[part](args, Path(tmp))
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "qdq_engines.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
