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
app.command("models")(models_command)
app.command("device")(device_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("benchmark")(benchmark_command)
app.command("compress")(compress_command)
app.command("prune")(prune_command)
app.command("distill")(distill_command)
app.command("export")(export_command)
app.command("build-engine")(build_engine_command)
app.command("deploy-check")(deploy_check_command)
app.command("compare")(compare_command)
app.command("sweep")(sweep_command)
app.command("recommend")(recommend_command)
