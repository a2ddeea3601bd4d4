"""The stages every compress run can have whatever its target: the float reference and pruning.

A stage adds to the run context (pipeline/context.py); the target stages live with their target
(pipeline/targets/). Stages get runners only through the runtime registry (`create_runner`).
"""
from __future__ import annotations

import copy
import time

from edgevision.compression.prune import prune_model, pruned_loaded
from edgevision.compression.recovery import PruningRecord, RecoveryRecord, RecoverySettings, recover
from edgevision.models.zoo import count_gmacs
from edgevision.pipeline.context import Context, Role, Variant, param_mb
from edgevision.pipeline.recipe import Recipe
from edgevision.pipeline.report import RunReport
from edgevision.runtimes import create_runner


class Stage:
    name = "stage"
    int8_only = False  # skipped when the recipe says int8: false
    runtime: str | None = None  # the runtime its variants run in; skipped when the recipe pins another

    @classmethod
    def applies(cls, recipe: Recipe) -> bool:
        """Whether a run with this recipe has the stage at all (beyond int8_only and the runtime pin)."""
        return True

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def finish(self, ctx: Context, report: RunReport) -> None:
        """After evaluation and timing: write what needs the measured numbers (a bundle's README)."""


class FloatReference(Stage):
    """PyTorch eager FP32: the reference for accuracy drop, agreement and speedup."""

    name = "float reference"

    def run(self, ctx: Context) -> None:
        ctx.variants.append(Variant("fp32", "pytorch", create_runner("pytorch", ctx.model, threads=ctx.threads),
                                    role=Role.REFERENCE, size_mb=param_mb(ctx.model)))


class PruneAndRecover(Stage):
    """Structured pruning, then a short fine-tune distilled from the unpruned model; later stages export and
    quantize the pruned model, and every drop stays measured against the unpruned float reference."""

    name = "prune + recover"

    def run(self, ctx: Context) -> None:
        cfg, spec = ctx.recipe.prune, ctx.loaded.spec
        t0 = time.perf_counter()
        result = prune_model(ctx.model, spec.family, cfg.ratio, spec.input_size, importance=cfg.importance,
                             batches=self._gradient_batches(ctx) if cfg.importance == "taylor" else None)
        pruned = pruned_loaded(ctx.loaded, result)
        info = PruningRecord(cfg.ratio, cfg.importance, result.groups, result.params_before, result.params_after,
                             count_gmacs(ctx.model, spec.input_size), count_gmacs(result.model, spec.input_size),
                             round(time.perf_counter() - t0, 2))
        ctx.log(f"pruned {cfg.ratio:.0%}: {result.params_before / 1e6:.2f} M -> {result.params_after / 1e6:.2f} M "
                f"params, {info.gmacs_before:.3f} -> {info.gmacs_after:.3f} GMACs")
        if cfg.finetune_epochs > 0:
            info.recovery = self._recover(ctx, pruned)
        ctx.variants.append(Variant("pruned", "pytorch", create_runner("pytorch", pruned.model, threads=ctx.threads),
                                    role=Role.PRUNED, size_mb=param_mb(pruned.model)))
        ctx.pruning = info
        ctx.loaded = pruned  # the target stages export and quantize the pruned model

    @staticmethod
    def _gradient_batches(ctx: Context):
        import torch  # heavy: only for taylor importance

        return [(torch.from_numpy(x), None) for x in ctx.calibration()[:32]]

    @staticmethod
    def _recover(ctx: Context, pruned) -> RecoveryRecord:
        cfg = ctx.recipe.prune
        before = copy.deepcopy(pruned.model).eval()
        ctx.variants.append(Variant("pruned, before recovery", "pytorch",
                                    create_runner("pytorch", before, threads=ctx.threads),
                                    role=Role.PRUNED_BEFORE_RECOVERY, timed=False))
        source = ctx.finetune_source or ctx.calib_source
        settings = RecoverySettings(epochs=cfg.finetune_epochs, images=cfg.finetune_images, lr=cfg.finetune_lr,
                                    temperature=cfg.temperature, alpha=cfg.alpha, seed=ctx.recipe.seed)
        scratch = ctx.workdir / ".recovery.safetensors"
        ctx.log(f"recovery: {settings.epochs} epoch(s) distilled from the unpruned model on {source.spec}")
        info = recover(pruned, ctx.model, source, scratch, settings, progress=ctx.progress, log=ctx.log)
        scratch.unlink(missing_ok=True)
        return info
