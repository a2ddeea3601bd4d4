"""The Typer app: one module per command, joined here."""
from __future__ import annotations

import typer

from edgevision.cli.benchmark import benchmark_command
from edgevision.cli.compare import compare_command
from edgevision.cli.compress import compress_command
from edgevision.cli.deploy_check import deploy_check_command
from edgevision.cli.device import device_command
from edgevision.cli.distill import distill_command
from edgevision.cli.evaluate import evaluate_command
from edgevision.cli.export import build_engine_command, export_command
from edgevision.cli.models import models_command
from edgevision.cli.prune import prune_command
from edgevision.cli.recommend import recommend_command
from edgevision.cli.sweep import sweep_command
from edgevision.cli.train import train_command

app = typer.Typer(
    name="edgevision",
    help="Compress timm vision models for edge devices and measure what it cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Each command's --help ends with real examples (tests/test_docs.py runs them through the parser).
EXAMPLES = {
    "models": ["edgevision models", "edgevision models --json"],
    "device": ["edgevision device", "edgevision device --threads 2 --refresh"],
    "train": ["edgevision train convnext_mini --data builtin:fashion-mnist --epochs 4 --augment none --out m.pt",
              "edgevision train vit_b --data /data/train --eval-data /data/val --img-size 384 "
              "--freeze-backbone-epochs 2 --out vit_b.pt"],
    "evaluate": ["edgevision evaluate --checkpoint m.pt --data builtin:fashion-mnist",
                 "edgevision evaluate runs/RUN/model_int8.onnx --data val.csv --limit 1000"],
    "benchmark": ["edgevision benchmark convnext_t --threads 2",
                  "edgevision benchmark runs/RUN/model_int8.xml --layers"],
    "compress": ["edgevision compress convnext_mini --weights fashion-mnist --int8 --data builtin:fashion-mnist "
                 "--calib-data builtin:fashion-mnist",
                 "edgevision compress convnext_t --int8 --data val.csv --calib-data calib.csv --max-drop 0.5"],
    "prune": ["edgevision prune convnext_mini --weights fashion-mnist --ratio 0.5 --data builtin:fashion-mnist"],
    "distill": ["edgevision distill --teacher vit_l --teacher-checkpoint teacher.pt --student vit_s "
                "--data /data/train --eval-data /data/val --epochs 10"],
    "export": ["edgevision export --target jetson", "edgevision export runs/RUN --target cpu --out bundle"],
    "build-engine": ["edgevision build-engine runs/RUN/export-jetson"],
    "deploy-check": ["edgevision deploy-check bundle", "edgevision deploy-check bundle --max-drop 0.5 --json"],
    "compare": ["edgevision compare runs/ --plot compare.png", "edgevision compare sweep --html compare.html"],
    "sweep": ["edgevision sweep convnext_t swin_t --int8 --prune 0,0.5 --targets cpu --weights random --out sweep"],
    "recommend": ["edgevision recommend sweep --target cpu --max-latency-ms 20 --max-drop 1"],
}
COMMANDS = {"models": models_command, "device": device_command, "train": train_command,
            "evaluate": evaluate_command, "benchmark": benchmark_command, "compress": compress_command,
            "prune": prune_command, "distill": distill_command, "export": export_command,
            "build-engine": build_engine_command, "deploy-check": deploy_check_command,
            "compare": compare_command, "sweep": sweep_command, "recommend": recommend_command}
for name, command in COMMANDS.items():
    app.command(name, epilog="Examples:\n\n" + "\n\n".join(f"  {e}" for e in EXAMPLES[name]))(command)
