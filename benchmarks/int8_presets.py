"""Choose each family's INT8 preset by measuring: quantize the Fashion-MNIST-trained *_mini models with every
candidate setting and record INT8 top-1, drop and agreement on the 10,000 test images.

    python benchmarks/int8_presets.py [--models convnext_mini ...] [--limit N]

Uses the cached models of `--weights fashion-mnist` (trained on first use), calibration on 300 training
images, and the real `edgevision compress` pipeline. Writes benchmarks/results/int8_presets.{json,md};
edgevision/pipeline/presets.py quotes the numbers behind each family's choice.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = {
    "performance": {"preset": "performance", "model_type": None},
    "performance+transformer": {"preset": "performance", "model_type": "transformer"},
    "mixed": {"preset": "mixed", "model_type": None},
    "mixed+transformer": {"preset": "mixed", "model_type": "transformer"},
    "performance+full-bias-correction": {"preset": "performance", "model_type": None, "bias_correction": "full"},
    "transformer-smoothquant-off": {"preset": "performance", "model_type": "transformer",
                                    "smooth_quant_alpha": -1},
    "performance+head-in-float": {"preset": "performance", "model_type": None,
                                  "ignored_scope": {"patterns": [".*head.*"]}},
}


def main() -> None:
    from edgevision.data import open_source
    from edgevision.models import load_model
    from edgevision.pipeline.resolve import resolve
    from edgevision.pipeline.run import compress_model as compress
    from edgevision.training.fashion_mnist import FASHION_MNIST_EPOCHS, FASHION_MNIST_TEST, FASHION_MNIST_TRAIN

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(FASHION_MNIST_EPOCHS), choices=list(FASHION_MNIST_EPOCHS))
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--limit", type=int, default=None, help="evaluate a class-balanced subset")
    ap.add_argument("--threads", type=int, default=1, help="accuracy does not depend on it")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    test, train = open_source(FASHION_MNIST_TEST), open_source(FASHION_MNIST_TRAIN)
    # Rows of models not measured in this call are kept, so families can be measured one at a time.
    previous = RESULTS / "int8_presets.json"
    rows = [r for r in json.loads(previous.read_text()) if r["model"] not in args.models] if previous.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        for alias in args.models:
            loaded = load_model(alias, weights="fashion-mnist", log=lambda m: print(m, file=sys.stderr))
            for name in args.candidates:
                recipe = resolve({}, None, {"quantization": CANDIDATES[name], "calib_size": 300,
                                            "eval_limit": args.limit, "benchmark_iters": 5,
                                            "threads": args.threads})
                result = compress(loaded, test, recipe, Path(tmp) / f"{alias}-{name}", calib_source=train,
                                  progress=False)
                v = {(x["name"], x["runtime"]): x for x in result.report.to_dict()["variants"]}
                ref, int8 = v["fp32", "pytorch"], v["int8", "openvino"]
                rows.append({"model": alias, "candidate": name, "settings": CANDIDATES[name],
                             "fp32_top1": ref["top1"], "int8_top1": int8["top1"], "drop": int8["top1_drop"],
                             "agreement": int8["agreement"], "kl": int8["kl"],
                             "images": result.report.data.images})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                (RESULTS / "int8_presets.json").write_text(json.dumps(rows, indent=2) + "\n")
    rows.sort(key=lambda r: (list(FASHION_MNIST_EPOCHS).index(r["model"]), list(CANDIDATES).index(r["candidate"])))
    lines = ["| model | candidate | FP32 top-1 | INT8 top-1 | drop | agreement % | KL |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['candidate']} | {r['fp32_top1']:.2f} | {r['int8_top1']:.2f} | "
                     f"{r['drop']:.2f} | {r['agreement']:.2f} | {r['kl']:.4f} |")
    (RESULTS / "int8_presets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
