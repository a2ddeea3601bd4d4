"""The training loop train and distill share: AdamW, warm-up + cosine, bf16 autocast on GPU, gradient
accumulation, data parallel under torchrun, a progress bar, and resume after a kill.

Resume: the loop saves its state (weights, optimiser, epoch, position) atomically beside the output every
`save_every_s` seconds and at each epoch end. The order of samples in an epoch is a function of
(seed, epoch, process), so a resumed run skips exactly the batches already done. The loop seeds torch for
its own randomness (dropout, drop-path) inside `torch.random.fork_rng`: the caller's generator state is the
same after the loop as before it.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgevision.data.loader import SkipCounter, TransformedDataset, make_loader
from edgevision.errors import DataError, EdgevisionError
from edgevision.models.checkpoint import atomic_save
from edgevision.progress import progress_bar
from edgevision.training.distributed import DistEnv, all_sum, broadcast
from edgevision.training.freeze import FreezeSchedule, backbone_parameters, enter_phase, unfreeze
from edgevision.typed import from_data, omitted, to_data

STATE_FORMAT = "edgevision.train-state"


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
    freeze_backbone_epochs: int = 0  # the classifier alone for this many epochs first (all: a linear probe)
    backbone_lr_scale: float = 1.0  # backbone learning rate = this x the classifier's

    @property
    def freeze(self) -> FreezeSchedule:
        return FreezeSchedule(self.freeze_backbone_epochs, self.backbone_lr_scale)


@dataclass
class EpochRecord:
    """One finished epoch, as the log line, the checkpoint's training history and the CLI's table show it."""

    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's images, all processes
    time_s: float  # since the run started (a resumed run included)
    trained: str | None = omitted()  # with a freeze schedule: classifier or all
    eval_top1: float | None = omitted()  # with evaluation data


@dataclass
class LoopResult:
    history: list[EpochRecord]
    resumed_from: dict[str, int] | None
    train_time_s: float  # all invocations, a resumed run included
    skipped_images: int
    throughput_images_s: float | None = None  # this invocation, all processes


@dataclass
class LoopHooks:
    """What a caller plugs into the loop: the loss of a micro-batch, and per-epoch extras (rank 0)."""

    objective: Callable  # (net, batch) -> loss; `net` is the module, wrapped in DDP with several processes
    end_of_epoch: Callable | None = None  # (module) -> top-1 on the evaluation data, or None
    view_seed_for_epoch: Callable[[int], int] | None = None  # augmentation view of each epoch (distill)


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


def _param_groups(model, weight_decay: float, backbone: list, backbone_lr_scale: float):
    """No weight decay on norms, biases, tokens and position embeddings (1-d parameters); the `backbone`
    parameters (a freeze schedule's, else none) in groups of their own at `backbone_lr_scale` x the rate."""
    in_backbone = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_backbone]
    groups = []
    for params, scale in [(rest, 1.0)] + ([(backbone, backbone_lr_scale)] if backbone else []):
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lr_scale": scale},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": scale}]
    return groups


class _Loop:
    """One run of the loop: the optimiser, the sampler, the position reached, and saving it."""

    def __init__(self, module, dataset: TransformedDataset, cfg: TrainConfig, key: object,
                 state_file: Path, env: DistEnv, dev, log: Callable[[str], None]):
        import torch
        from torch.utils.data import DistributedSampler

        self.module, self.dataset, self.cfg, self.key = module, dataset, cfg, to_data(key)
        self.state_file, self.env, self.dev, self.log = state_file, env, dev, log
        module.to(dev).train()
        self.backbone = backbone_parameters(module) if cfg.freeze.active else []
        self.net = module
        if env.active:
            from torch.nn.parallel import DistributedDataParallel

            # a frozen backbone takes no gradient: DDP must not wait for one
            self.net = DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                               find_unused_parameters=cfg.freeze_backbone_epochs > 0)
        self.optimizer = torch.optim.AdamW(_param_groups(module, cfg.weight_decay, self.backbone,
                                                         cfg.backbone_lr_scale), lr=cfg.lr)
        # DistributedSampler with one replica is a seeded shuffle: one code path for 1 and N processes.
        self.sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                          seed=cfg.seed)
        self.micro_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.epoch, self.start_micro, self.done = 0, 0, 0  # done: micro-batches of `epoch` in the weights
        self.history: list[EpochRecord] = []
        self.elapsed, self.resumed_from = 0.0, None
        self.skips, self.images = SkipCounter(), 0

    def restore(self, resume: bool) -> None:
        import torch

        state = None
        if self.env.is_main and resume and self.state_file.exists():
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
            if state.get("format") != STATE_FORMAT or state.get("key") != self.key:
                state = {"mismatch": True}
        state = broadcast(state, self.env)  # rank 0 reads; every process continues from the same point
        if state and state.get("mismatch"):
            raise EdgevisionError(f"{self.state_file} was saved by a run with other settings",
                                  "rerun with the same settings (and process count), or pass --no-resume")
        if not state:
            return
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.start_micro = state["epoch"], state["step"]
        self.history = [from_data(EpochRecord, h, source=str(self.state_file)) for h in state["history"]]
        self.elapsed = state["elapsed_s"]
        self.resumed_from = {"epoch": self.epoch, "step": self.start_micro}
        self.log(f"resuming from {self.state_file}: epoch {self.epoch + 1}, batch {self.start_micro}/"
                 f"{self.micro_per_epoch}")

    def save(self, epoch: int, micro: int) -> None:
        if self.env.is_main:
            atomic_save({"format": STATE_FORMAT, "key": self.key, "model": self.module.state_dict(),
                         "optimizer": self.optimizer.state_dict(), "epoch": epoch, "step": micro,
                         "history": to_data(self.history), "elapsed_s": time.perf_counter() - self.t_start},
                        self.state_file)

    def micro_step(self, batch, micro: int) -> tuple[float, int]:
        """Forward and backward of one micro-batch (its share of the step's gradient); (loss sum, images)."""
        import torch

        cfg, env = self.cfg, self.env
        step = (micro - 1) // cfg.grad_accum  # optimiser step within the epoch
        in_step = min(cfg.grad_accum, self.micro_per_epoch - step * cfg.grad_accum)
        if not len(batch.labels):
            if env.active:  # every process must take part in every gradient exchange
                raise DataError(f"a whole batch of {self.dataset.source.spec} failed to decode",
                                "remove the unreadable files")
            return 0.0, 0
        sync = self.net.no_sync() if env.active and not self.closes_step(micro) else contextlib.nullcontext()
        with sync:
            with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.dev.type == "cuda"):
                loss = self.objective(self.net, batch)
            if not torch.isfinite(loss):  # under torchrun, one failing process stops them all
                raise EdgevisionError(f"training diverged (loss {loss.item()}) at epoch {self.epoch + 1} batch "
                                      f"{micro}", "lower --lr")
            (loss / in_step).backward()
        return loss.item() * len(batch.labels), len(batch.labels)

    def closes_step(self, micro: int) -> bool:
        step = (micro - 1) // self.cfg.grad_accum
        return micro == min(self.micro_per_epoch, (step + 1) * self.cfg.grad_accum)

    def optimizer_step(self, micro: int) -> None:
        step = (micro - 1) // self.cfg.grad_accum
        lr = lr_at(self.epoch * self.steps_per_epoch + step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.done = micro

    def run_epoch(self, bar, save_every_s: float) -> tuple[float, int]:
        """The micro-batches of `self.epoch` from where it stands; (loss sum, images) of this process."""
        cfg = self.cfg
        first = self.done = self.start_micro
        loader = make_loader(self.dataset, cfg.batch_size, sampler=list(self.sampler)[first * cfg.batch_size:],
                             workers=cfg.workers)
        task = bar.add_task(f"epoch {self.epoch + 1}/{cfg.epochs}", total=self.micro_per_epoch, completed=first,
                            status="")
        if self.backbone:
            enter_phase(self.module, self.cfg.freeze, self.epoch, self.backbone)
        else:
            self.module.train()
        loss_sum, seen, last_save = 0.0, 0, time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for micro, batch in enumerate(loader, start=first + 1):
            self.skips.add(batch)
            batch_loss, batch_images = self.micro_step(batch, micro)
            loss_sum, seen = loss_sum + batch_loss, seen + batch_images
            if self.closes_step(micro):
                self.optimizer_step(micro)
                if time.perf_counter() - last_save > save_every_s:
                    self.save(self.epoch, self.done)
                    last_save = time.perf_counter()
            bar.update(task, advance=1, status=f"loss {loss_sum / max(seen, 1):.3f}")
        self.skips.check(self.dataset.source)
        return loss_sum, seen

    def finish_epoch(self, loss_sum: float, seen: int, end_of_epoch) -> None:
        loss_total, seen_total = all_sum([loss_sum, float(seen)], self.env, self.dev)
        record = EpochRecord(self.epoch + 1, loss_total / max(seen_total, 1.0),
                             round(time.perf_counter() - self.t_start, 1))
        if self.backbone:
            record.trained = self.cfg.freeze.trained_at(self.epoch)
        if end_of_epoch is not None and self.env.is_main:
            record.eval_top1 = end_of_epoch(self.module)
            self.module.train()
        self.history.append(record)
        if self.env.is_main:
            self.log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in to_data(record).items()))
        self.start_micro = 0
        self.save(self.epoch + 1, 0)

    def run(self, hooks: LoopHooks, progress: bool, save_every_s: float) -> None:
        self.objective = hooks.objective
        self.t_start = time.perf_counter() - self.elapsed
        try:
            with progress_bar(progress and self.env.is_main) as bar:
                for self.epoch in range(self.epoch, self.cfg.epochs):
                    self.sampler.set_epoch(self.epoch)
                    if hooks.view_seed_for_epoch is not None:
                        self.dataset.set_view_seed(hooks.view_seed_for_epoch(self.epoch))
                    loss_sum, seen = self.run_epoch(bar, save_every_s)
                    self.images += seen
                    self.finish_epoch(loss_sum, seen, hooks.end_of_epoch)
        except KeyboardInterrupt:
            self.save(self.epoch, self.done)
            raise
        finally:
            unfreeze(self.backbone)


def fit(module, dataset: TransformedDataset, cfg: TrainConfig, *, key: object, state_file: Path,
        hooks: LoopHooks, env: DistEnv, dev, resume: bool = True, progress: bool = True, save_every_s: float = 60.0,
        log: Callable[[str], None] = lambda msg: None) -> LoopResult:
    """Train `module` on `dataset` with `hooks.objective`; resumable from `state_file` when `key` (a dataclass of
    what the run depends on, saved as data) matches.

    Resume positions count micro-batches per process and are saved only at optimiser-step boundaries, so a
    resumed run redoes at most the micro-batches of one unfinished step.
    """
    import torch

    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        loop = _Loop(module, dataset, cfg, key, state_file, env, dev, log)
        loop.restore(resume)
        t_session = time.perf_counter()
        loop.run(hooks, progress, save_every_s)
    session_s = time.perf_counter() - t_session
    images_all = all_sum([float(loop.images)], env, dev)[0]
    return LoopResult(history=loop.history, resumed_from=loop.resumed_from,
                      train_time_s=round(time.perf_counter() - loop.t_start, 1), skipped_images=loop.skips.skipped,
                      throughput_images_s=round(images_all / session_s, 1) if session_s > 0 else None)
