"""A plain, solid training / fine-tuning loop: AdamW, warm-up + cosine, label smoothing, bf16 autocast
on GPU, gradient accumulation, data parallel under torchrun, progress bar, and resume after a kill.

Resume: the loop saves its state (weights, optimiser, epoch, position) atomically beside the output every
`save_every_s` seconds and at each epoch end. The order of samples in an epoch is a function of
(seed, epoch, process), so a resumed run skips exactly the batches already done. `fit` is the loop;
`train` (plain training, pruning recovery through `loss_fn`) and compress/distill.py run it.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgevision.data.loader import SkipCounter, TransformedDataset, eval_transform, make_loader, train_transform
from edgevision.data.sources import ImageSource
from edgevision.errors import DataError, EdgevisionError, OutputExistsError
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
    grad_accum: int = 1  # micro-batches per optimiser step (effective batch = batch_size x grad_accum x processes)

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


def _resume_key(loaded: LoadedModel, source: ImageSource, cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """What must match for a saved state to be continued rather than started over."""
    return {"model": loaded.spec.timm_name, "model_kwargs": loaded.spec.model_kwargs,
            "num_classes": loaded.spec.num_classes, "data": source.spec, "data_size": len(source),
            "config": cfg.to_dict(), "world_size": world_size}


def check_training_inputs(loaded: LoadedModel, source: ImageSource, out: Path, cfg: TrainConfig, force: bool,
                          needs_labels: bool = True) -> None:
    """The one-line refusals shared by train and distill, before any work starts."""
    if cfg.augment not in AUGMENTS:
        raise EdgevisionError(f"unknown augmentation '{cfg.augment}'", f"use one of {', '.join(AUGMENTS)}")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", "pass --force to overwrite it, or choose another --out")
    if not out.parent.exists():
        raise EdgevisionError(f"output folder {out.parent} does not exist", "create it first")
    if needs_labels and source.labels is None:
        raise EdgevisionError(f"{source.spec} has no labels", "training needs an ImageFolder, a labels CSV "
                              "or a labelled built-in dataset")
    if source.num_classes and source.num_classes > loaded.model.num_classes:
        raise EdgevisionError(f"{source.spec} has {source.num_classes} classes but the model has "
                              f"{loaded.model.num_classes} outputs", f"pass --num-classes {source.num_classes}")


def transform_for(data_config: dict[str, Any], augment: str):
    # Short from-scratch runs learn faster without augmentation (measured on Fashion-MNIST, see README).
    return (train_transform if augment == "light" else eval_transform)(data_config)


def evaluate_during_training(loaded: LoadedModel, source: ImageSource, dev, progress: bool,
                             limit: int | None = None, seed: int = 0):
    """Top-1 of the model being trained, on the device it trains on (rank 0, at an epoch's end; `fit` puts
    it back in train mode)."""
    from edgevision.api import evaluate_model  # api imports this module

    return evaluate_model(loaded, source, limit=limit, seed=seed, batch_size=256, progress=progress,
                          device=str(dev))


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

    `loss_fn(logits, labels, images)` replaces label-smoothed cross-entropy (used by pruning recovery).
    Under torchrun every process runs this; rank 0 logs and writes (edgevision/distributed.py).
    """
    import torch

    from edgevision.distributed import setup, teardown

    cfg = config or TrainConfig()
    out = Path(out)
    check_training_inputs(loaded, source, out, cfg, force)
    env, dev = setup(device)
    spec = loaded.spec
    log(f"training {spec.name} ({spec.timm_name}, weights {spec.weights}) on {source.spec}: "
        f"{len(source)} images, {spec.num_classes} classes" + (f", {env.world_size} processes" if env.active else ""))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, labels, images: criterion(logits, labels))

    def objective(net, batch) -> Any:
        images = batch.images.to(dev, non_blocking=True)
        logits = net(images)
        return loss_fn(logits.float(), batch.labels.to(dev, non_blocking=True), images)

    def evaluate_epoch(_module) -> dict[str, Any]:  # _module is loaded.model, the model being trained
        if eval_source is None:
            return {}
        return {"eval_top1": evaluate_during_training(loaded, eval_source, dev, progress).top1}

    dataset = TransformedDataset(source, transform_for(spec.data_config, cfg.augment))
    loop = fit(loaded.model, dataset, cfg, key=_resume_key(loaded, source, cfg, env.world_size),
               state_file=state_path(out), objective=objective, env=env, dev=dev, resume=resume, progress=progress,
               save_every_s=save_every_s, log=log, end_of_epoch=evaluate_epoch)
    model = loaded.model.eval().cpu()
    if env.is_main:
        write_checkpoint(out, model.state_dict(), {
            **spec_meta(spec, source.classes),
            "training": {"data": source.spec, "images": len(source), "config": cfg.to_dict(),
                         "history": loop.history, "train_time_s": loop.train_time_s,
                         "initial_weights": spec.weights, "processes": env.world_size},
        })
        state_path(out).unlink(missing_ok=True)
    teardown(env)
    return TrainResult(checkpoint=str(out), epochs=cfg.epochs, train_time_s=loop.train_time_s,
                       resumed_from=loop.resumed_from, history=loop.history, skipped_images=loop.skipped_images)


@dataclass
class LoopResult:
    history: list[dict[str, Any]]
    resumed_from: dict[str, int] | None
    train_time_s: float  # all invocations, a resumed run included
    skipped_images: int
    throughput_images_s: float | None = None  # this invocation, all processes


def fit(
    module,
    dataset: TransformedDataset,
    cfg: TrainConfig,
    *,
    key: dict[str, Any],
    state_file: Path,
    objective: Callable,
    env,
    dev,
    resume: bool = True,
    progress: bool = True,
    save_every_s: float = 60.0,
    log: Callable[[str], None] = lambda msg: None,
    end_of_epoch: Callable | None = None,
    view_seed_for_epoch: Callable[[int], int] | None = None,
) -> LoopResult:
    """The loop train and distill share: AdamW + warm-up/cosine, bf16 autocast on GPU, gradient accumulation,
    DistributedDataParallel under torchrun, resumable state, progress on rank 0.

    `objective(net, batch)` returns the loss of one micro-batch; `net` is `module`, wrapped in DDP when there
    are several processes. `end_of_epoch(module)` (rank 0 only) adds fields to the epoch's record.
    Resume positions count micro-batches per process and are saved only at optimiser-step boundaries, so a
    resumed run redoes at most the micro-batches of one unfinished step.
    """
    import torch
    from torch.utils.data import DistributedSampler

    from edgevision.distributed import all_sum, broadcast

    torch.manual_seed(cfg.seed)
    module.to(dev).train()
    net = module
    if env.active:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(_param_groups(module, cfg.weight_decay), lr=cfg.lr)
    # DistributedSampler with one replica is a seeded shuffle: one code path for 1 and N processes.
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed)
    micro_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs

    start_epoch, start_micro, history, elapsed, resumed_from = 0, 0, [], 0.0, None
    state = None
    if env.is_main and resume and state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT or state.get("key") != key:
            state = {"mismatch": True}
    state = broadcast(state, env)  # rank 0 reads; every process continues from the same point
    if state and state.get("mismatch"):
        raise EdgevisionError(f"{state_file} was saved by a run with other settings",
                              "rerun with the same settings (and process count), or pass --no-resume")
    if state:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_micro = state["epoch"], state["step"]
        history, elapsed = state["history"], state["elapsed_s"]
        resumed_from = {"epoch": start_epoch, "step": start_micro}
        log(f"resuming from {state_file}: epoch {start_epoch + 1}, batch {start_micro}/{micro_per_epoch}")

    def save_state(epoch: int, micro: int, spent: float) -> None:
        if env.is_main:
            atomic_save({"format": STATE_FORMAT, "key": key, "model": module.state_dict(),
                         "optimizer": optimizer.state_dict(), "epoch": epoch, "step": micro,
                         "history": history, "elapsed_s": spent}, state_file)

    use_autocast = dev.type == "cuda"
    skips = SkipCounter()
    t_session, images_session = time.perf_counter(), 0
    t_start = time.perf_counter() - elapsed
    epoch, done = start_epoch, start_micro  # `done`: micro-batches of `epoch` applied to the weights
    try:
        with progress_bar(progress and env.is_main) as bar:
            for epoch in range(start_epoch, cfg.epochs):
                sampler.set_epoch(epoch)
                if view_seed_for_epoch is not None:
                    dataset.set_view_seed(view_seed_for_epoch(epoch))
                first = done = start_micro if epoch == start_epoch else 0
                loader = make_loader(dataset, cfg.batch_size, sampler=list(sampler)[first * cfg.batch_size:],
                                     workers=cfg.workers)
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=micro_per_epoch, completed=first,
                                    status="")
                module.train()
                loss_sum, seen, last_save = 0.0, 0, time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                for micro, batch in enumerate(loader, start=first + 1):
                    skips.add(batch)
                    step = (micro - 1) // cfg.grad_accum  # optimiser step within the epoch
                    in_step = min(cfg.grad_accum, micro_per_epoch - step * cfg.grad_accum)
                    closes_step = micro == min(micro_per_epoch, (step + 1) * cfg.grad_accum)
                    if not len(batch.labels):
                        if env.active:  # every process must take part in every gradient exchange
                            raise DataError(f"a whole batch of {dataset.source.spec} failed to decode",
                                            "remove the unreadable files")
                    else:
                        sync = net.no_sync() if env.active and not closes_step else contextlib.nullcontext()
                        with sync:
                            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_autocast):
                                loss = objective(net, batch)
                            if not torch.isfinite(loss):  # under torchrun, one failing process stops them all
                                raise EdgevisionError(f"training diverged (loss {loss.item()}) at epoch "
                                                      f"{epoch + 1} batch {micro}", "lower --lr")
                            (loss / in_step).backward()
                        loss_sum += loss.item() * len(batch.labels)
                        seen += len(batch.labels)
                        images_session += len(batch.labels)
                    if closes_step:
                        for group in optimizer.param_groups:
                            group["lr"] = lr_at(epoch * steps_per_epoch + step, total_steps, cfg)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        done = micro
                        if time.perf_counter() - last_save > save_every_s:
                            save_state(epoch, done, time.perf_counter() - t_start)
                            last_save = time.perf_counter()
                    bar.update(task, advance=1, status=f"loss {loss_sum / max(seen, 1):.3f}")
                skips.check(dataset.source)
                loss_total, seen_total = all_sum([loss_sum, float(seen)], env, dev)
                record = {"epoch": epoch + 1, "train_loss": loss_total / max(seen_total, 1.0),
                          "time_s": round(time.perf_counter() - t_start, 1)}
                if end_of_epoch is not None and env.is_main:
                    record.update(end_of_epoch(module))
                    module.train()
                history.append(record)
                if env.is_main:
                    log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
                start_micro = 0
                save_state(epoch + 1, 0, time.perf_counter() - t_start)
    except KeyboardInterrupt:
        save_state(epoch, done, time.perf_counter() - t_start)
        raise
    session_s = time.perf_counter() - t_session
    images_all = all_sum([float(images_session)], env, dev)[0]
    return LoopResult(history=history, resumed_from=resumed_from,
                      train_time_s=round(time.perf_counter() - t_start, 1), skipped_images=skips.skipped,
                      throughput_images_s=round(images_all / session_s, 1) if session_s > 0 else None)

