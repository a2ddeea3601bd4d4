"""Distillation, measured: a ViT teacher trained by edgevision into ConvNeXt, ViT and hybrid students.

    python benchmarks/distill.py [fashion-mnist] [gpu-throughput] [--epochs 8] [--threads 2]
        [--students convnext_mini vit_mini hybrid_mini] [--seed N] [--device cuda] [--batch 128] [--steps 50]

fashion-mnist: the teacher is vit_teacher_mini (--weights fashion-mnist: trained by edgevision on the 60,000
  training images on first use, with the settings models/trained.py:fashion_mnist_settings gives it). Each
  student starts from random weights twice, with the same settings (AdamW lr 2e-3, batch 128, no
  augmentation, --epochs epochs on the 60,000 images): `edgevision distill` (KL at T=2 x T^2, alpha 0.7,
  plus cross-entropy; teacher outputs cached, filled by the first student, reused by the others) and
  `edgevision train` (label-smoothed cross-entropy, no teacher). All top-1 on the 10,000 test images.
  Latency: teacher and every distilled student at batch 1 in OpenVINO FP32 and in PyTorch eager,
  interleaved side by side in one run (medians). Targets: each distilled student within 1.5 points of the
  teacher, >= 3x lower latency, and above its no-teacher twin.
gpu-throughput: ViT-L/16 -> ViT-S/16 at 224, bf16 autocast, random weights (speed only), images per second
  through the distillation step: without the teacher cache, on the epoch that fills it, and on an epoch that
  reads it. Needs a CUDA GPU (skipped with a note otherwise; --device cpu runs it small, as a check).
Students are kept under --work (runs/distill-bench/eEPOCHS/, seedN/ below it with --seed N: rows of their own,
the same initial weights for the distilled student and its twin; distilled students in teacher-DIGEST/ below
that, so a retrained teacher gets its own): a rerun trains only what is missing, and --baselines-only trains
the no-teacher students alone (they need no teacher, so they can run first).
Writes benchmarks/results/distill.{json,md}: one fashion-mnist section per --epochs (a run replaces the rows of the
students it ran in its own section and keeps the others, if they were measured against the same teacher), and
the gpu-throughput part; each part keeps the other's earlier results.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TEACHER = "vit_teacher_mini"
STUDENTS = ["convnext_mini", "vit_mini", "hybrid_mini"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fashion_mnist(args) -> dict | None:
    """Trains what is missing under --work (a rerun reuses finished students), then evaluates and times;
    None with --baselines-only, which measures nothing."""
    import torch

    from edgevision import DistillConfig, TrainConfig, distill, load_model, open_source, train
    from edgevision.compression.distill import REPORT_FILE, weights_digest
    from edgevision.measure import evaluate_model
    from edgevision.measure.bench import compare_latency
    from edgevision.models import read_checkpoint
    from edgevision.runtimes import create_runner
    from edgevision.training.fashion_mnist import FASHION_MNIST_DEFAULTS

    torch.set_num_threads(args.threads)
    source, test = open_source("builtin:fashion-mnist:train"), open_source("builtin:fashion-mnist:test")
    if args.limit:  # a quick check of the script, not a result
        source, test = source.subset(range(args.limit)), test.subset(range(args.limit))
    shared = args.work / (f"e{args.epochs}" + (f"-limit{args.limit}" if args.limit else ""))
    work = shared if args.seed is None else shared / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    common = {"epochs": args.epochs, "workers": 1, **FASHION_MNIST_DEFAULTS, "seed": args.seed or 0}

    def random_student(name: str):
        if args.seed is not None:  # the same initial weights for the distilled student and its no-teacher twin
            torch.manual_seed(args.seed)
        return load_model(name, weights="random", num_classes=10)

    for name in args.students:  # the students without a teacher need no teacher: they can run first
        plain = work / f"plain-{name}.pt"
        if not plain.exists():
            train(random_student(name), source, plain, TrainConfig(**common), progress=False, log=log)
    if args.baselines_only:
        return None
    teacher = load_model(TEACHER, weights="fashion-mnist", log=log)
    teacher_digest = weights_digest(teacher.model)
    taught = work / f"teacher-{teacher_digest[:12]}"  # a retrained teacher gets distilled students of its own
    for name in args.students:
        if not (taught / f"distill-{name}" / REPORT_FILE).exists():
            distill(teacher, random_student(name), source, taught / f"distill-{name}",
                    DistillConfig(**common), eval_source=test, teacher_cache=shared / "teacher-cache",
                    latency_runtime="none", progress=False, log=log)

    teacher_top1 = evaluate_model(teacher, test, progress=False).top1
    log(f"teacher {TEACHER}: top-1 {teacher_top1:.2f}")
    rows, distilled = [], {}
    for name in args.students:
        r = json.loads((taught / f"distill-{name}" / REPORT_FILE).read_text())
        distilled[name] = load_model(checkpoint=taught / f"distill-{name}")
        plain_top1 = evaluate_model(load_model(checkpoint=work / f"plain-{name}.pt"), test, progress=False).top1
        plain_meta = read_checkpoint(work / f"plain-{name}.pt")[1]["training"]
        rows.append({"student": name, "seed": args.seed,
                     "gmacs": r["student"]["gmacs"], "params_m": r["student"]["params_m"],
                     "distilled_top1": r["student"]["top1"], "no_teacher_top1": plain_top1,
                     "teacher_top1": teacher_top1, "gap": round(teacher_top1 - r["student"]["top1"], 2),
                     "gain_over_no_teacher": round(r["student"]["top1"] - plain_top1, 2),
                     "distill_time_s": r["train_time_s"], "train_time_s": plain_meta["train_time_s"],
                     "distill_images_s": r["throughput_images_s"], "teacher_cache": r["teacher_cache"]})
        log(f"{name}: distilled {r['student']['top1']:.2f}, no teacher {plain_top1:.2f}")

    # every model in one side-by-side run per runtime (interleaved rounds, medians)
    latency = {}
    models = {TEACHER: teacher, **distilled}
    for runtime in ("openvino", "pytorch"):
        runners = {n: create_runner(runtime, m.model, threads=args.threads, input_size=m.spec.input_size)
                   for n, m in models.items()}
        bench = compare_latency(runners, {n: m.spec.input_size for n, m in models.items()}, iters=400, rounds=8)
        latency[runtime] = {n: round(b.latency_ms_p50, 4) for n, b in bench.items()}
    for row in rows:
        for runtime, ms in latency.items():
            row[f"{runtime}_teacher_ms"] = ms[TEACHER]
            row[f"{runtime}_student_ms"] = ms[row["student"]]
            row[f"{runtime}_speedup"] = round(ms[TEACHER] / ms[row["student"]], 2)
        row["within_1_5"] = row["gap"] <= 1.5
        row["speedup_3x"] = row["openvino_speedup"] >= 3.0
        row["beats_no_teacher"] = row["gain_over_no_teacher"] > 0
    previous_teacher = args.previous.get("teacher", {})
    if (previous_teacher.get("top1") == teacher_top1
            and previous_teacher.get("weights_sha256", teacher_digest) == teacher_digest):
        # rows of (student, seed) pairs this run did not touch, measured earlier against the same teacher (the
        # previous section is this --epochs' own)
        ran = {(name, args.seed) for name in args.students}
        rows += [r for r in args.previous.get("rows", []) if (r["student"], r.get("seed")) not in ran]
    rows.sort(key=lambda r: (r["student"], r.get("seed") is not None, r.get("seed") or 0))
    teacher_meta = read_checkpoint(teacher.spec.checkpoint)[1]["training"]
    return {"teacher": {"model": TEACHER, "top1": teacher_top1, "gmacs": _gmacs(teacher),
                        "trained": f"{teacher_meta['config']['epochs']} epochs at lr {teacher_meta['config']['lr']} "
                                   f"from {teacher_meta['initial_weights']} weights", "weights_sha256": teacher_digest},
            "epochs": args.epochs, "threads": args.threads, "test_images": len(test), "train_images": len(source),
            "rows": rows}


def _gmacs(loaded) -> float:
    from edgevision.models.zoo import count_gmacs

    return round(count_gmacs(loaded.model, loaded.spec.input_size), 4)


def gpu_throughput(args, work: Path) -> dict:
    import torch

    from edgevision import DistillConfig, distill, load_model, open_source
    from edgevision.typed import to_data

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        return {"skipped": "no CUDA GPU on this machine"}
    try:
        source = open_source("builtin:fashion-mnist:train")
    except Exception:  # noqa: BLE001 - the GPU machine may lack the Debian package: photos, unlabelled
        source = open_source("builtin:photos")
    batch = args.batch if device.startswith("cuda") else 4
    steps = args.steps if device.startswith("cuda") else 2
    from edgevision.data.loader import balanced_indices

    n = min(len(source), batch * steps)
    idx = balanced_indices(len(source), n, source.labels, 0) if n < len(source) else range(len(source))
    source = source.subset(idx)
    alpha = 1.0 if source.labels is None else 0.7
    out = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "batch": batch,
           "images": len(source), "precision": "bf16 autocast" if device.startswith("cuda") else "fp32"}
    teacher = load_model("vit_l", weights="random", num_classes=1000)
    for label, cache in (("no_cache", False), ("cache", work / "gpu-cache")):
        cfg = DistillConfig(epochs=2, batch_size=batch, workers=args.workers, augment="none", alpha=alpha)
        student = load_model("vit_s", weights="random", num_classes=1000)
        result = distill(teacher, student, source, work / f"gpu-{label}", cfg, teacher_cache=cache,
                         latency_runtime="none", device=device, progress=False, log=log)
        times = [h.time_s for h in result.report.history]
        epoch_s = [times[0], times[1] - times[0]]
        out[label] = {"epoch_s": epoch_s, "images_s": [round(len(source) / s, 1) for s in epoch_s],
                      "teacher_cache": to_data(result.report.teacher_cache)}
        log(f"{label}: {out[label]['images_s']} images/s per epoch")
    return out


def _label(row: dict) -> str:
    return row["student"] + (f" (seed {row['seed']})" if row.get("seed") is not None else "")


def markdown(results: dict) -> str:
    lines = ["# Distillation"]
    for epochs, fm in sorted(results.get("fashion_mnist", {}).items(), key=lambda item: int(item[0])):
        t = fm["teacher"]
        lines += ["", f"## Fashion-MNIST, {epochs} epochs", "",
                  f"Teacher {t['model']} (trained by edgevision, {t['gmacs']} GMACs): top-1 {t['top1']:.2f}% on "
                  f"{fm['test_images']} Fashion-MNIST test images. Students from random weights, {fm['epochs']} epochs "
                  f"on {fm.get('train_images', 60000)} training images, distilled vs trained without the teacher with the same settings. "
                  f"Latency at batch 1, {fm['threads']} threads, medians of interleaved rounds.", "",
                  "| student | GMACs | distilled top-1 | teacher - student | no-teacher top-1 | gain | "
                  "OpenVINO ms (teacher / student) | speedup | PyTorch speedup | within 1.5 | >= 3x | beats no-teacher |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in fm["rows"]:
            lines.append(f"| {_label(r)} | {r['gmacs']} | {r['distilled_top1']:.2f} | {r['gap']:+.2f} | "
                         f"{r['no_teacher_top1']:.2f} | {r['gain_over_no_teacher']:+.2f} | "
                         f"{r['openvino_teacher_ms']:.3f} / {r['openvino_student_ms']:.3f} | "
                         f"{r['openvino_speedup']:.2f}x | {r['pytorch_speedup']:.2f}x | "
                         f"{'yes' if r['within_1_5'] else 'NO'} | {'yes' if r['speedup_3x'] else 'NO'} | "
                         f"{'yes' if r['beats_no_teacher'] else 'NO'} |")
        gains: dict[str, list[float]] = {}
        for r in fm["rows"]:
            gains.setdefault(r["student"], []).append(r["gain_over_no_teacher"])
        if any(len(g) > 1 for g in gains.values()):  # several seeds: is the gain larger than seed noise?
            lines += ["", "| student | runs | gain over no-teacher, per run | mean gain |", "|---|---|---|---|"]
            lines += [f"| {name} | {len(g)} | {', '.join(f'{x:+.2f}' for x in g)} | {sum(g) / len(g):+.2f} |"
                      for name, g in gains.items()]
        lines += ["", "| student | distill time (s) | train time, no teacher (s) | distill images/s | "
                  "teacher outputs computed / reused |", "|---|---|---|---|---|"]
        for r in fm["rows"]:
            c = r["teacher_cache"] or {}
            lines.append(f"| {_label(r)} | {r['distill_time_s']} | {r['train_time_s']} | {r['distill_images_s']} | "
                         f"{c.get('computed', '-')} / {c.get('reused', '-')} |")
        lines += ["", f"Measured on {fm['machine']}, {fm['written']}."]
    gpu = results.get("gpu_throughput")
    if gpu:
        lines += ["", "## ViT-L/16 -> ViT-S/16 at 224, throughput", ""]
        if "skipped" in gpu:
            lines.append(f"Not measured: {gpu['skipped']}.")
        else:
            lines += [f"{gpu['device']}, {gpu['precision']}, batch {gpu['batch']}, {gpu['images']} images per epoch.",
                      "", "| teacher cache | epoch 1 images/s | epoch 2 images/s |", "|---|---|---|"]
            for label in ("no_cache", "cache"):
                ips = gpu[label]["images_s"]
                lines.append(f"| {'off' if label == 'no_cache' else 'on (epoch 1 fills, 2 reads)'} | {ips[0]} | {ips[1]} |")
            lines += ["", f"Measured {gpu['written']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", help="fashion-mnist (default) and/or gpu-throughput")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--students", nargs="+", default=STUDENTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=None,
                    help="Seed the students' initial weights and data order; kept under eEPOCHS/seedN/ and reported "
                         "as rows of their own (default: unseeded initial weights, data order 0).")
    ap.add_argument("--limit", type=int, default=None, help="Train/test on this many images (a smoke check).")
    ap.add_argument("--results", type=Path, default=RESULTS, help="Where distill.{json,md} go.")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent.parent / "runs" / "distill-bench",
                    help="Checkpoints of the students (reused by a rerun with the same --epochs).")
    ap.add_argument("--baselines-only", action="store_true",
                    help="Train the no-teacher students only (they do not need the teacher).")
    args = ap.parse_args()
    args.parts = args.parts or ["fashion-mnist"]
    if set(args.parts) - {"fashion-mnist", "gpu-throughput"}:
        ap.error(f"unknown part in {args.parts}: use fashion-mnist and/or gpu-throughput")
    from edgevision.measure.bench import cpu_name

    path = args.results / "distill.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        if "fashion-mnist" in args.parts:
            # one section per epoch count: an 8-epoch run must not drop the 6-epoch rows
            by_epochs = results.setdefault("fashion_mnist", {})
            args.previous = by_epochs.get(str(args.epochs), {})
            section = fashion_mnist(args)
            if section is not None:  # --baselines-only leaves the results as they were
                by_epochs[str(args.epochs)] = {**section, "machine": f"{cpu_name()}, {args.threads} threads",
                                               "written": time.strftime("%Y-%m-%d %H:%M")}
        if "gpu-throughput" in args.parts:
            results["gpu_throughput"] = {**gpu_throughput(args, Path(tmp)), "written": time.strftime("%Y-%m-%d %H:%M")}
    args.results.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (args.results / "distill.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
