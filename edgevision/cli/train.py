"""`edgevision train`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, model_options, print_json, rank_zero_log
from edgevision.cli.options import (
    CheckpointOpt,
    DebugOpt,
    DeviceOpt,
    GradAccumOpt,
    ImgSizeOpt,
    JsonOpt,
    ModelArg,
    ModelArgOpt,
    NumClassesOpt,
    ResumeOpt,
    SaveEveryOpt,
    ThreadsOpt,
    WeightsOpt,
    WorkersOpt,
)
from edgevision.reports.render import fmt
from edgevision.training.freeze import frozen_backbone_epochs
from edgevision.training.loop import TrainConfig
from edgevision.typed import to_data

_D = TrainConfig()


def train_command(
    model: ModelArg = None,
    data: Annotated[str, typer.Option("--data", help="Training data: ImageFolder, labels CSV or builtin:NAME "
                                      "(builtin splits default to train).")] = ...,
    out: Annotated[Path, typer.Option("--out", help="Where to write the edgevision checkpoint "
                                      "(.pt, or .safetensors).")] = ...,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = _D.epochs,
    eval_data: Annotated[Optional[str], typer.Option(
        "--eval-data", help="Evaluate top-1 on this data after each epoch (builtin splits default to test).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Per process.")] = _D.batch_size,
    grad_accum: GradAccumOpt = 1,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak AdamW learning rate.")] = _D.lr,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0)] = _D.weight_decay,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", min=0.0, max=0.99)] = _D.label_smoothing,
    warmup_steps: Annotated[Optional[int], typer.Option(
        "--warmup-steps", min=1, help="Linear warm-up steps. Default: 10% of all steps, at most 200.",
        show_default=False)] = _D.warmup_steps,
    augment: Annotated[str, typer.Option(
        "--augment", help="light: random resized crop (80-100%) and flip; none: the evaluation preprocessing "
        "only (learns faster in short runs from scratch).")] = _D.augment,
    freeze_backbone_epochs: Annotated[int, typer.Option(
        "--freeze-backbone-epochs", min=0, help="Train only the classifier for the first N epochs, then every "
        "layer.")] = _D.freeze_backbone_epochs,
    backbone_lr_scale: Annotated[float, typer.Option(
        "--backbone-lr-scale", min=0.0, help="Backbone learning rate = F x the classifier's "
        "(once unfrozen).")] = _D.backbone_lr_scale,
    freeze: Annotated[Optional[str], typer.Option(
        "--freeze", help="backbone: train only the classifier in every epoch (a linear probe).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data order, the augmentation and a random "
                                      "model's initial weights.")] = _D.seed,
    workers: WorkersOpt = _D.workers,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    save_every: SaveEveryOpt = 60.0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    weights: WeightsOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    img_size: ImgSizeOpt = None,
    model_arg: ModelArgOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train or fine-tune a model and write an edgevision checkpoint (resumable after a kill; runs under
    `torchrun --nproc_per_node N` as well)."""
    main, log = rank_zero_log()
    with cli_errors(debug):
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                          label_smoothing=label_smoothing, warmup_steps=warmup_steps, seed=seed, workers=workers,
                          augment=augment, grad_accum=grad_accum, backbone_lr_scale=backbone_lr_scale,
                          freeze_backbone_epochs=frozen_backbone_epochs(freeze, freeze_backbone_epochs, epochs))
        loaded, source, result = api.train_model(
            model, data, out, cfg, eval_data=eval_data, threads=threads, resume=resume, force=force, device=device,
            progress=not json_out and main, save_every_s=save_every, log=log,
            **model_options(weights, checkpoint, num_classes, img_size, model_arg))
        if not main:
            return
        if json_out:
            print_json({"model": loaded.spec.to_dict(), "data": source.spec, **to_data(result)})
            return
        show_training(result, f"{loaded.spec.name} on {source.spec}")


def show_training(result, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    phases = any(h.trained for h in result.history)
    for col in ("epoch", "train loss", "eval top-1", "time (s)") + (("trained",) if phases else ()):
        table.add_column(col, justify="right")
    for h in result.history:
        table.add_row(str(h.epoch), fmt(h.train_loss, 4), fmt(h.eval_top1), fmt(h.time_s, 1),
                      *((h.trained or "",) if phases else ()))
    out = console()
    out.print(table)
    if result.skipped_images:
        out.print(f"skipped {result.skipped_images} unreadable images")
    out.print(f"checkpoint: {result.checkpoint}  ({result.train_time_s:.0f} s)")
