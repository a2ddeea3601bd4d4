"""One entry point for the README's headline numbers; writes benchmarks/results/*.json and BENCHMARKS.md.

    python benchmarks/run_all.py [--only speed224 int8 export prune distill train] [--threads 2]

Parts, each a script of its own that can also run alone:
- speed224: `edgevision sweep convnext_t swin_t vit_b maxvit_t --weights random --prune 0,0.5 --targets cpu,onnx`
  (PyTorch FP32, OpenVINO FP32/INT8, ONNX Runtime FP32/INT8, each unpruned and 50% pruned, at 224x224,
  batch 1), compared into results/speed224.{json,md} and a plot;
- int8: benchmarks/int8_speed.py (compress --int8 at 224, and OpenVINO's benchmark_app on the same IR);
- selection: benchmarks/cpu_selection.py (the selected candidate vs each runtime at 224, with the CPU profile);
- (not run here, it needs a REV: benchmarks/selection_ab.py --ref REV, the selection of an earlier version against
  this checkout's, timed side by side; its results file is assembled with the others)
- spinning: benchmarks/ort_spinning.py (the CPU profile's GEMMs side by side with ONNX Runtime's threads left
  spinning after a run, and stopped as edgevision's sessions do);
- guard: benchmarks/guard.py (the default accuracy guard on Fashion-MNIST models: MobileNetV3, EfficientNet-Lite,
  ConvNeXt);
- guard4: the same with 4 calibration images (where EfficientNet-Lite's OpenVINO INT8 misses the budget);
- export: benchmarks/export_targets.py (jetson/onnx accuracy on the Fashion-MNIST models, ONNX Runtime speed);
- qdq: benchmarks/qdq_engines.py (the jetson target's Q/DQ engines side by side, edgevision vs Model Optimizer:
  placement at 224, rules check, simulated INT8 accuracy on the Fashion-MNIST models; needs the jetson extra);
- prune: benchmarks/prune.py (pruning + recovery + INT8 accuracy, pruned speed at 224);
- distill: benchmarks/distill.py (a ViT teacher into ConvNeXt, ViT and hybrid students on Fashion-MNIST, vs the
  students trained without it, 8 epochs each; about 6 minutes a run for convnext_mini on 2 cores, 13 for
  hybrid_mini, 20 for vit_mini, and the teacher on first use about two hours);
- finetune: benchmarks/finetune_resolution.py (a Fashion-MNIST model trained at 28 px fine-tuned at 56 px: all
  layers vs the classifier first, a linear probe; vit_mini by default, about 5 minutes after its weights exist);
- train: benchmarks/train_fashion_mnist.py (the float Fashion-MNIST models; about an hour on 2 cores, so it
  runs only when asked with --only train).
BENCHMARKS.md is rebuilt from every results file present, with the machine's details.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_PARTS = ["speed224", "int8", "selection", "spinning", "guard", "guard4", "export", "qdq", "prune", "distill",
                 "finetune"]


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def speed224(threads: int) -> None:
    out = HERE.parent / "runs" / "speed224-sweep"  # the cells hold IR and ONNX files: not for git
    run([sys.executable, "-m", "edgevision", "sweep", "convnext_t", "swin_t", "vit_b", "maxvit_t", "--weights", "random",
         "--prune", "0,0.5", "--targets", "cpu,onnx", "--finetune-epochs", "0", "--calib-size", "64",
         "--threads", str(threads), "--out", str(out)])
    run([sys.executable, "-m", "edgevision", "compare", str(out), "--plot", str(RESULTS / "speed224.png"),
         "--markdown", str(RESULTS / "speed224.md")])
    rows = subprocess.run([sys.executable, "-m", "edgevision", "compare", str(out), "--json"], check=True,
                          capture_output=True, text=True).stdout
    (RESULTS / "speed224.json").write_text(rows)


def machine() -> list[str]:
    from edgevision.measure.bench import available_cores, cpu_name
    from edgevision.pipeline.manifest import versions

    v = versions()
    return [f"- CPU: {cpu_name()}, {available_cores()} cores available ({os.cpu_count()} visible)",
            f"- OS: {platform.platform()}", f"- Python {v.get('python')}; " + ", ".join(
                f"{k} {v[k]}" for k in ("torch", "timm", "openvino", "nncf", "onnxruntime", "onnx") if k in v),
            f"- written {time.strftime('%Y-%m-%d %H:%M')}"]


def benchmarks_md() -> str:
    parts = ["# Benchmarks", "", "Reproduce with `python benchmarks/run_all.py` (see its docstring for the parts).",
             "", "## Machine that assembled this file (each section says where it was measured)", "", *machine(), ""]
    sections = [("speed224.md", "Speed at 224x224: four families x fp32/int8/pruned+int8 x PyTorch/OpenVINO/ONNX Runtime "
                 "(random weights: read the latency and speedup columns; accuracy and Pareto marks mean nothing here)"),
                *((f"cpu_selection_{tier}.md", f"CPU selection: the fastest candidate, on a CPU of INT8 tier {tier}")
                  for tier in ("avx2", "vnni", "amx", "dotprod", "none")),
                *((f"selection_ab_{tier}.md", f"The selection against an earlier version, side by side, INT8 tier {tier}")
                  for tier in ("avx2", "vnni", "amx", "dotprod", "none")),
                ("ort_spinning.md", "ONNX Runtime's spinning threads and side-by-side timing"),
                ("guard.md", "The accuracy guard"),
                ("guard_calib4.md", "The accuracy guard with 4 calibration images"),
                ("int8_speed.md", "INT8 speed (compress --int8) and benchmark_app"),
                ("export_targets.md", "Export targets"),
                ("qdq_engines.md", "Q/DQ engines for the jetson target: edgevision vs Model Optimizer"),
                ("prune.md", "Structured pruning"),
                ("distill.md", "Distillation"),
                ("finetune_resolution.md", "Fine-tuning at a new resolution, with a frozen backbone first"),
                ("int8_presets.md", "INT8 presets (how they were chosen)"),
                ("fashion_mnist_train.md", "Float Fashion-MNIST models"),
                *((f"cpu_bundle_{tier}.md", f"CPU deploy bundle: the export's pick vs the device's, INT8 tier {tier}")
                  for tier in ("avx2", "vnni", "amx", "dotprod", "none")),
                ("aarch64_bundle.md", "CPU deploy bundle on 64-bit ARM under emulation (functional only)"),
                ("guard_small.md", "The accuracy guard on a small folder of images at 224"),
                *((f"int8_payoff_{tier}.md", f"Where INT8 pays, per operator type, INT8 tier {tier}")
                  for tier in ("avx2", "vnni", "amx", "dotprod", "none")),
                *((f"quickstart_{tier}.txt", f"The README's quickstart from an empty cache, INT8 tier {tier}")
                  for tier in ("avx2", "vnni", "amx", "dotprod", "none"))]
    # the history of earlier measurements stays in benchmarks/results/history.md, not here
    for name, title in sections:
        path = RESULTS / name
        if path.exists():
            text = path.read_text(encoding="utf-8").strip()
            lines = text.splitlines()
            if lines and lines[0].startswith("# "):
                lines = lines[1:]
            lines = ["#" + line if line.startswith("#") else line for line in lines]  # its headings nest below ours
            if name.endswith(".txt"):
                lines = ["```", *lines, "```"]
            parts += [f"## {title}", f"(`benchmarks/results/{name}`)", "", *lines, ""]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=DEFAULT_PARTS + ["train"], default=DEFAULT_PARTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--assemble-only", action="store_true", help="only rebuild BENCHMARKS.md from the results")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    scripts = {"int8": [str(HERE / "int8_speed.py"), "--threads", str(args.threads)],
               "selection": [str(HERE / "cpu_selection.py"), "--threads", str(args.threads)],
               "spinning": [str(HERE / "ort_spinning.py"), "--threads", str(args.threads)],
               "guard": [str(HERE / "guard.py"), "--threads", str(args.threads)],
               "guard4": [str(HERE / "guard.py"), "--threads", str(args.threads), "--calib-size", "4"],
               "export": [str(HERE / "export_targets.py"), "--threads", str(args.threads)],
               "qdq": [str(HERE / "qdq_engines.py"), "--threads", str(args.threads)],
               "prune": [str(HERE / "prune.py"), "--threads", str(args.threads)],
               "distill": [str(HERE / "distill.py"), "--threads", str(args.threads)],
               "finetune": [str(HERE / "finetune_resolution.py"), "--threads", str(args.threads)],
               "train": [str(HERE / "train_fashion_mnist.py")]}
    for part in [] if args.assemble_only else args.only:
        if part == "speed224":
            speed224(args.threads)
        else:
            run([sys.executable, *scripts[part]])
    (HERE.parent / "BENCHMARKS.md").write_text(benchmarks_md(), encoding="utf-8")
    print(f"wrote {HERE.parent / 'BENCHMARKS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
