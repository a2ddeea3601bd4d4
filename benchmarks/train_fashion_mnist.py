"""Train the four *_mini models on builtin:fashion-mnist with `edgevision train`, then measure test top-1
with `edgevision evaluate`. Writes benchmarks/results/fashion_mnist_train.{json,md}.

    python benchmarks/train_fashion_mnist.py [--out-dir DIR] [--models convnext_mini ...]

Settings (epochs per model, no augmentation, lr, batch size) are edgevision's own, from
edgevision/models/trained.py, the same that `--weights fashion-mnist` trains with on first use. The
checkpoints are what the INT8, pruning and distillation work is measured on. An interrupted run resumes:
rerun the same command (finished models are kept, an unfinished one continues).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from edgevision.io import cache_dir
from edgevision.training.fashion_mnist import (
    FASHION_MNIST_EPOCHS,
    FASHION_MNIST_TEST,
    FASHION_MNIST_TRAIN,
    fashion_mnist_settings,
)

RESULTS = Path(__file__).resolve().parent / "results"


def edgevision(*args: str) -> dict:
    cmd = [sys.executable, "-m", "edgevision", *args, "--json"]
    print("+ edgevision " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, check=False, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edgevision {args[0]} failed with exit code {done.returncode}")
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Default: the cache behind `--weights fashion-mnist`, so later commands use exactly these models.
    ap.add_argument("--out-dir", type=Path, default=cache_dir() / "fashion-mnist")
    ap.add_argument("--models", nargs="+", default=list(FASHION_MNIST_EPOCHS),
                    choices=list(FASHION_MNIST_EPOCHS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)

    rows = []
    for alias in args.models:
        ckpt = args.out_dir / f"{alias}.pt"
        if not ckpt.exists():
            options = fashion_mnist_settings(alias)
            flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
            edgevision("train", alias, "--data", FASHION_MNIST_TRAIN, "--eval-data", FASHION_MNIST_TEST,
                                 "--out", str(ckpt), "--threads", str(args.threads), *flags)
        evaluated = edgevision("evaluate", "--checkpoint", str(ckpt), "--data", FASHION_MNIST_TEST,
                               "--threads", str(args.threads))
        from edgevision.models.checkpoint import read_checkpoint

        _, meta = read_checkpoint(ckpt)
        training = meta["training"]
        rows.append({
            "model": alias, "timm_name": meta["model"]["timm_name"], "img_size": meta["model"]["img_size"],
            "model_kwargs": meta["model"]["model_kwargs"], "epochs": training["config"]["epochs"],
            "train_time_s": training["train_time_s"], "test_top1": evaluated["top1"],
            "test_top5": evaluated["top5"], "test_images": evaluated["images"],
            "history": training["history"], "checkpoint": str(ckpt),
        })
        print(f"{alias}: top-1 {evaluated['top1']:.2f}% after {training['train_time_s']:.0f} s", file=sys.stderr)

    import torch

    machine = {"cpu": _cpu(), "threads": args.threads, "python": platform.python_version(),
               "torch": torch.__version__}
    (RESULTS / "fashion_mnist_train.json").write_text(json.dumps({"machine": machine, "models": rows}, indent=2))
    lines = ["| model | timm architecture | input | epochs | train time (s) | test top-1 (%) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['timm_name']} | {r['img_size']}px | {r['epochs']} | "
                     f"{r['train_time_s']:.0f} | {r['test_top1']:.2f} |")
    lines.append(f"\nMeasured on {machine['cpu']}, {args.threads} threads, torch {machine['torch']}.")
    (RESULTS / "fashion_mnist_train.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpu() -> str:
    from edgevision.measure.bench import cpu_name

    return cpu_name()


if __name__ == "__main__":
    main()
