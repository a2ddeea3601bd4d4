"""Fine-tuning at a new resolution, with and without a frozen backbone first: a Fashion-MNIST model trained at
28 px (edgevision's own `--weights fashion-mnist` float model, trained on first use) loaded at 56 px (its
position embeddings or relative-position tables resampled by timm), given a fresh classifier as for a new
dataset, and fine-tuned on a small class-balanced training subset.

    python benchmarks/finetune_resolution.py [--models vit_mini] [--train-images 3000] [--seeds 0 1 2] [--threads 2]

Schedules, each from the same weights and, per seed, the same fresh classifier and data order, 2 epochs:
- all layers from the start;
- the classifier alone for 1 epoch (--freeze-backbone-epochs 1), then all layers;
- the same with the backbone at 0.1x the learning rate once unfrozen (--backbone-lr-scale 0.1);
- a linear probe (--freeze backbone).
The table gives top-1 on class-balanced test images at 56 px for the model at 28 px, the resized model before
any fine-tuning (its original classifier), and each schedule: the mean over the seeds (a single run moved by
up to 2 points from one seed to the next), their range, and the mean fine-tuning time. Writes
benchmarks/results/finetune_resolution.{json,md} with the CPU profile.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCHEDULES = {"all layers": {}, "classifier 1 epoch, then all": {"freeze_backbone_epochs": 1},
             "classifier 1 epoch, then all at 0.1x lr": {"freeze_backbone_epochs": 1, "backbone_lr_scale": 0.1},
             "linear probe": {"freeze_backbone_epochs": 2}}


def top1(loaded, test) -> float:
    from edgevision.measure import evaluate_model

    return round(evaluate_model(loaded, test, progress=False, batch_size=256).top1, 2)


def fine_tune(alias: str, size: int, schedule: dict, train, out: Path, lr: float, seed: int
              ) -> tuple[object, float, list]:
    import torch

    from edgevision import TrainConfig, load_model
    from edgevision import train as train_model

    loaded = load_model(alias, weights="fashion-mnist", img_size=size)
    torch.manual_seed(seed)
    loaded.model.reset_classifier(10)  # a new dataset's classifier: random, as the frozen phase is for
    cfg = TrainConfig(epochs=2, batch_size=64, lr=lr, augment="none", workers=0, seed=seed, **schedule)
    t0 = time.perf_counter()
    result = train_model(loaded, train, out, cfg, progress=False, force=True)
    return loaded, round(time.perf_counter() - t0, 1), [h.get("trained", "all") for h in result.history]


def measure(alias: str, size: int, train, test, tmp: Path, lr: float, seeds: list[int]) -> dict:
    from edgevision import load_model

    base = load_model(alias, weights="fashion-mnist")
    resized = load_model(alias, weights="fashion-mnist", img_size=size)
    row = {"model": alias, "from_size": base.spec.img_size, "to_size": size,
           "resized": sorted(resized.spec.resized["tensors"]),
           "top1_at_base_size": top1(base, test), "top1_resized_no_finetune": top1(resized, test), "schedules": {}}
    for name, schedule in SCHEDULES.items():
        runs = []
        for seed in seeds:
            tuned, seconds, phases = fine_tune(alias, size, schedule, train, tmp / f"{alias}.pt", lr, seed)
            runs.append({"seed": seed, "top1": top1(tuned, test), "seconds": seconds, "epochs": phases})
            print(alias, name, runs[-1], file=sys.stderr, flush=True)
        accuracies = [r["top1"] for r in runs]
        row["schedules"][name] = {"top1": round(statistics.mean(accuracies), 2), "top1_range": [min(accuracies),
                                  max(accuracies)], "seconds": round(statistics.mean(r["seconds"] for r in runs), 1),
                                  "runs": runs}
    return row


def markdown(result: dict) -> str:
    p = result["cpu_profile"]
    names = list(SCHEDULES)
    lines = [f"# Fine-tuning at {result['to_size']} px after training at the model's own size", "",
             f"Measured {result['measured']} on {p['cpu']}, {p['threads']} threads (tier {p['tier']}); "
             f"{result['train_images']} training and {result['test_images']} test images (class-balanced), "
             f"2 epochs at batch 64, lr {result['lr']}, a fresh classifier; seeds {result['seeds']}. Top-1 on the "
             "test images: mean over the seeds [range] (mean fine-tuning seconds).", "",
             "| model | top-1 at its own size | resized, no fine-tuning | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for r in result["rows"]:
        cells = [f"{c['top1']:.2f} [{c['top1_range'][0]:.2f}-{c['top1_range'][1]:.2f}] ({c['seconds']:.0f} s)"
                 for c in (r["schedules"][n] for n in names)]
        lines.append(f"| {r['model']} {r['from_size']}->{r['to_size']} px | {r['top1_at_base_size']:.2f} | "
                     f"{r['top1_resized_no_finetune']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vit_mini"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    import torch

    from edgevision import open_source
    from edgevision.data.sources import sample
    from edgevision.measure.cpu_profile import cpu_profile

    torch.set_num_threads(args.threads)
    train_all, test_all = open_source("builtin:fashion-mnist:train"), open_source("builtin:fashion-mnist:test")
    train, test = sample(train_all, args.train_images), sample(test_all, args.test_images)
    with tempfile.TemporaryDirectory(prefix="edgevision-finetune-") as tmp:
        rows = [measure(alias, args.size, train, test, Path(tmp), args.lr, args.seeds) for alias in args.models]
    result = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_profile": cpu_profile(args.threads).to_dict(),
              "to_size": args.size, "train_images": len(train), "test_images": len(test), "lr": args.lr,
              "seeds": args.seeds,
              "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "finetune_resolution.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "finetune_resolution.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
