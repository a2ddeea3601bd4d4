"""A plain, solid training / fine-tuning loop: AdamW, warm-up + cosine, label smoothing, bf16 autocast
on GPU, progress bar, and resume after a kill.

Resume: the loop saves its state (weights, optimiser, epoch, step) atomically beside the output every
`save_every_s` seconds and at each epoch end. The order of samples in an epoch is a function of
(seed, epoch), so a resumed run skips exactly the batches already done. Pruning recovery and
distillation reuse this loop through `loss_fn`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevision.data.loader import SkipCounter, eval_transform, make_loader, train_transform
from edgevision.data.sources import ImageSource
from edgevision.errors import EdgevisionError, OutputExistsError
from edgevision.models.checkpoint import atomic_save, spec_meta, write_checkpoint
from edgevision.models.loading import LoadedModel
from edgevision.progress import progress_bar

STATE_FORMAT = "edgevision.train-state"
AUGMENTS = ("light", "none")


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_steps: int | None = None  # None: 10% of all steps, at most 200
    min_lr_ratio: float = 0.01
    seed: int = 0
    workers: int = 1
    augment: str = "light"  # light: random resized crop 80-100% + flip; none: eval preprocessing only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    checkpoint: str
    epochs: int
    train_time_s: float
    resumed_from: dict[str, int] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_path(out: Path) -> Path:
    """Where an unfinished run keeps its state: beside the output, so the same command finds it."""
    return out.with_name(out.name + ".resume")


def warmup_steps(total: int, cfg: TrainConfig) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else min(200, max(1, total // 10))


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    warmup = warmup_steps(total, cfg)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def _param_groups(model, weight_decay: float):
    """No weight decay on norms, biases, tokens and position embeddings (1-d parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _resume_key(loaded: LoadedModel, source: ImageSource, cfg: TrainConfig) -> dict[str, Any]:
    """What must match for a saved state to be continued rather than started over."""
    return {"model": loaded.spec.timm_name, "model_kwargs": loaded.spec.model_kwargs,
            "num_classes": loaded.spec.num_classes, "data": source.spec, "data_size": len(source),
            "config": cfg.to_dict()}


def train(
    loaded: LoadedModel,
    source: ImageSource,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    eval_source: ImageSource | None = None,
    resume: bool = True,
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    save_every_s: float = 60.0,
    loss_fn: Callable | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> TrainResult:
    """Train `loaded.model` on `source` and write an edgevision checkpoint to `out`.

    `loss_fn(logits, labels, images)` replaces label-smoothed cross-entropy (used by distillation).
    """
    import torch

    cfg = config or TrainConfig()
    if cfg.augment not in AUGMENTS:
        raise EdgevisionError(f"unknown augmentation '{cfg.augment}'", f"use one of {', '.join(AUGMENTS)}")
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", "pass --force to overwrite it, or choose another --out")
    if not out.parent.exists():
        raise EdgevisionError(f"output folder {out.parent} does not exist", "create it first")
    if source.labels is None:
        raise EdgevisionError(f"{source.spec} has no labels", "training needs an ImageFolder, a labels CSV "
                              "or a labelled built-in dataset")
    model = loaded.model
    if source.num_classes and source.num_classes > model.num_classes:
        raise EdgevisionError(f"{source.spec} has {source.num_classes} classes but the model has "
                              f"{model.num_classes} outputs", f"pass --num-classes {source.num_classes}")

    spec = loaded.spec
    log(f"training {spec.name} ({spec.timm_name}, weights {spec.weights}) on {source.spec}: "
        f"{len(source)} images, {spec.num_classes} classes")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    model.to(dev).train()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, labels, images: criterion(logits, labels))
    steps_per_epoch = math.ceil(len(source) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs

    key = _resume_key(loaded, source, cfg)
    start_epoch, start_step, history, elapsed, resumed_from = 0, 0, [], 0.0, None
    state_file = state_path(out)
    if state_file.exists() and resume:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT or state.get("key") != key:
            raise EdgevisionError(f"{state_file} was saved by a run with other settings",
                                  "rerun with the same settings, or pass --no-resume to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_step = state["epoch"], state["step"]
        history, elapsed = state["history"], state["elapsed_s"]
        resumed_from = {"epoch": start_epoch, "step": start_step}
        log(f"resuming from {state_file}: epoch {start_epoch + 1}, step {start_step}/{steps_per_epoch}")

    def save_state(epoch: int, step: int, spent: float) -> None:
        atomic_save({"format": STATE_FORMAT, "key": key, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                     "history": history, "elapsed_s": spent}, state_file)

    use_autocast = dev.type == "cuda"
    # Short from-scratch runs learn faster without augmentation (measured on Fashion-MNIST, see README).
    transform = (train_transform if cfg.augment == "light" else eval_transform)(loaded.spec.data_config)
    skips = SkipCounter()
    t_start = time.perf_counter() - elapsed
    epoch, done = start_epoch, start_step  # `done`: batches of `epoch` already applied
    try:
        with progress_bar(progress) as bar:
            for epoch in range(start_epoch, cfg.epochs):
                order = np.random.default_rng([cfg.seed, epoch]).permutation(len(source))
                first = done = start_step if epoch == start_epoch else 0
                loader = make_loader(source, transform, cfg.batch_size,
                                     sampler=order[first * cfg.batch_size:].tolist(), workers=cfg.workers)
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                    completed=first, status="")
                model.train()
                loss_sum, seen, last_save = 0.0, 0, time.perf_counter()
                for step, batch in enumerate(loader, start=first + 1):
                    skips.add(batch)
                    if len(batch.labels):
                        for group in optimizer.param_groups:
                            group["lr"] = lr_at(epoch * steps_per_epoch + step - 1, total_steps, cfg)
                        images, labels = batch.images.to(dev), batch.labels.to(dev)
                        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_autocast):
                            logits = model(images)
                        loss = loss_fn(logits.float(), labels, images)
                        if not torch.isfinite(loss):
                            raise EdgevisionError(f"training diverged (loss {loss.item()}) at epoch "
                                                  f"{epoch + 1} step {step}", "lower --lr")
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        loss_sum += loss.item() * len(labels)
                        seen += len(labels)
                    done = step
                    bar.update(task, advance=1, status=f"loss {loss_sum / max(seen, 1):.3f}")
                    if time.perf_counter() - last_save > save_every_s:
                        save_state(epoch, done, time.perf_counter() - t_start)
                        last_save = time.perf_counter()
                skips.check(source)
                record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                          "time_s": round(time.perf_counter() - t_start, 1)}
                if eval_source is not None:
                    record["eval_top1"] = _quick_eval(model, eval_source, loaded, dev, progress)
                history.append(record)
                log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
                start_step = 0
                save_state(epoch + 1, 0, time.perf_counter() - t_start)
    except KeyboardInterrupt:
        save_state(epoch, done, time.perf_counter() - t_start)
        raise

    train_time = time.perf_counter() - t_start
    model.eval().cpu()
    write_checkpoint(out, model.state_dict(), {
        **spec_meta(spec, source.classes),
        "training": {"data": source.spec, "images": len(source), "config": cfg.to_dict(),
                     "history": history, "train_time_s": round(train_time, 1),
                     "initial_weights": spec.weights},
    })
    state_file.unlink(missing_ok=True)
    return TrainResult(checkpoint=str(out), epochs=cfg.epochs, train_time_s=round(train_time, 1),
                       resumed_from=resumed_from, history=history, skipped_images=skips.skipped)


def _quick_eval(model, source: ImageSource, loaded: LoadedModel, dev, progress: bool) -> float | None:
    from edgevision.backends.pytorch import TorchRunner
    from edgevision.evaluate import evaluate

    result = evaluate(TorchRunner(model, device=str(dev)), source, loaded.spec.data_config,
                      batch_size=256, progress=progress, description="  evaluate")
    model.train()
    return result.top1
