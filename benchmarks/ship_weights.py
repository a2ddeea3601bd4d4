"""Make the float weights edgevision ships for `--weights fashion-mnist` (edgevision/training/shipped/).

    python benchmarks/ship_weights.py [ALIAS ...]      # default: convnext_mini

Trains ALIAS with the fashion-mnist recipe (training/fashion_mnist.py) through `edgevision train` on the
60,000 training images, evaluates it on the 10,000 test images, writes it as safetensors with its
edgevision metadata, and records in SHIPPED.json: the file, its sha256, the command, the recipe, the test top-1,
and the training time with the CPU it was measured on. The weight source checks the sha256 before use.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgevision.io import sha256
from edgevision.measure.bench import cpu_name
from edgevision.measure.cpu_profile import host_flags, int8_features
from edgevision.models.checkpoint import read_checkpoint, write_checkpoint
from edgevision.training.fashion_mnist import (
    FASHION_MNIST_TEST,
    FASHION_MNIST_TRAIN,
    SHIPPED_DIR,
    fashion_mnist_settings,
)


def train_command(alias: str, out: Path) -> list[str]:
    s = fashion_mnist_settings(alias)
    return ["edgevision", "train", alias, "--data", FASHION_MNIST_TRAIN, "--eval-data", FASHION_MNIST_TEST,
            "--epochs", str(s["epochs"]), "--lr", str(s["lr"]), "--batch-size", str(s["batch_size"]),
            "--augment", s["augment"], "--seed", "0", "--out", str(out), "--json"]


def ship(alias: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{alias}.pt"
        cmd = train_command(alias, out)
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "edgevision", *cmd[1:]], stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"training {alias} failed ({done.returncode})")
        result = json.loads(done.stdout)
        state, meta = read_checkpoint(out)
        target = SHIPPED_DIR / f"{alias}-fashion-mnist.safetensors"
        write_checkpoint(target, state, meta)
    return {"file": target.name, "sha256": sha256(target), "bytes": target.stat().st_size,
            "command": " ".join(c for c in cmd if c not in ("--json",)).replace(str(out), f"{alias}.pt"),
            "recipe": fashion_mnist_settings(alias), "test_top1": result["history"][-1].get("eval_top1"),
            "train_seconds": round(seconds, 1), "measured_on": {"cpu": cpu_name(),
                                                                "int8_features": int8_features(host_flags())},
            "made": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("aliases", nargs="*", default=["convnext_mini"])
    args = parser.parse_args()
    index_path = SHIPPED_DIR / "SHIPPED.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    for alias in args.aliases:
        index[alias] = ship(alias)
        print(json.dumps(index[alias], indent=2))
    SHIPPED_DIR.mkdir(exist_ok=True)
    index_path.write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
