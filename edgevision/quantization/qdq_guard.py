"""The accuracy guard of a Q/DQ graph run by ONNX Runtime: the jetson target's (a simulation of the engine, as
the report is) and the ONNX Runtime INT8 candidates of the cpu and onnx targets.

When the Q/DQ graph loses more than the budget against the float graph on the evaluation data (top-1 with
labels, agreement without: the budget's measure), the guard tries, in order, stopping at the first that holds:
1. the same quantization on a calibration set 4 times larger (at most 1200 images, when the data has them);
2. the compute nodes of the better graph, ranked by how far the graph's outputs move from the float graph's
   (mean KL divergence of the softmax) with each one alone quantized (quantization/sensitivity.py), then
   quantized again with the 1, 2, 4, ... most damaging left in float (up to half), then INT8 kept to
   Conv/Gemm/MatMul; this ladder ends early when a step does not bring the graph closer to the float one
   beyond the noise of its images (a loss spread over the whole graph, which no exclusion fixes);
3. the format's own fixes: 7-bit weights for u8 x s8 on x86 without VNNI (where its 16-bit sums saturate),
   percentile calibration;
then it keeps the best tried and says it gave up. KL separates nodes where top-1 on a few dozen images ties.
The guards' time is bounded (quantization/budget.GuardClock): past it the guard keeps the best so far and says what
it would have tried next. Every step is recorded with its metric, its KL, its calibration images and seconds;
the jetson target also pins the excluded nodes to FP16 in build_engine.sh.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgevision.measure.evaluate import kl_per_image
from edgevision.quantization.budget import GuardOutOfTime
from edgevision.quantization.engines import Quantize
from edgevision.quantization.onnxruntime import QDQSettings
from edgevision.quantization.openvino_guard import logits, metric_name, validation_items
from edgevision.quantization.records import GuardRanking, GuardStep, GuardSummary, RankedNode
from edgevision.quantization.run import QuantizationRun
from edgevision.quantization.sensitivity import RankingOutOfTime, rank_by_sensitivity
from edgevision.runtimes import create_runner
from edgevision.runtimes.tensorrt import WEIGHTED_OPS

RANK_IMAGES = 500
# A step helps when it lowers the per-image KL by more than NOISE_SE standard errors (paired, on the same
# images) and by at least MIN_GAIN of what was left: a loss spread over the whole graph shrinks by a sliver per
# node left in float, consistently but to no end. The ladder stops after STALLED such steps in a row: two nodes
# that break INT8 together restore nothing one at a time (the gain Mul and the conv it feeds, in the tests).
NOISE_SE, MIN_GAIN, STALLED = 2.0, 0.1, 2


@dataclass(frozen=True)
class Fix:
    """A format's own remedy: quantize again with another quantizer (7-bit weights) or calibration method."""

    name: str
    quantize: Quantize
    method: str | None = None  # None: the calibration method of the best graph so far


@dataclass(frozen=True)
class Measured:
    metric: float  # the budget's measure: % top-1 (or agreement) on the guard's images
    kl: np.ndarray  # per image: KL(float graph's softmax || this graph's)

    @property
    def mean_kl(self) -> float:
        return float(self.kl.mean()) if self.kl.size else 0.0


def improves(best: np.ndarray, new: np.ndarray) -> bool:
    """Whether `new` per-image KLs are lower than `best`'s beyond the noise and by a share worth a step."""
    diff = best - new
    if diff.mean() < MIN_GAIN * best.mean():
        return False
    return bool(diff.size < 2 or diff.mean() > NOISE_SE * diff.std(ddof=1) / np.sqrt(diff.size))


def _measure_of(ctx: QuantizationRun, items, reference: np.ndarray):
    """ONNX file or ModelProto -> Measured on `items` (top-1 against their targets, KL against `reference`)."""
    import onnx

    images, targets = [x for x, _ in items], np.array([t for _, t in items])

    def measure(model) -> Measured:
        with tempfile.TemporaryDirectory(prefix="edgevision-guard-") as tmp:
            path = model if isinstance(model, (str, Path)) else Path(tmp) / "m.onnx"
            if not isinstance(model, (str, Path)):
                onnx.save(model, str(path))
            out = logits(create_runner("onnxruntime", path, threads=ctx.threads), images)
        return Measured(float(np.mean(out.argmax(1) == targets)) * 100, kl_per_image(reference, out))

    return measure


def exclusion_steps(ranked: list[str], op_types: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(step name, nodes to exclude) in order: the 1, 2, 4, ... most sensitive (up to half), then INT8 only on
    Conv/Gemm/MatMul inputs when other ops read INT8 too."""
    steps, k = [], 1
    while k <= (len(ranked) + 1) // 2:
        steps.append((f"{k} most sensitive node(s) in float", ranked[:k]))
        k *= 2
    others = [n for n in ranked if op_types.get(n) not in WEIGHTED_OPS]
    if others:
        steps.append(("INT8 on Conv/Gemm/MatMul only", others))
    return steps


def calibration_fixes(quantize: Quantize, method: str, supported=lambda method: True) -> list[Fix]:
    """Percentile calibration when the run used another method (entropy is left out: its histograms over every
    activation took far longer on the same graphs)."""
    return [Fix("percentile calibration", quantize, "percentile")] if method != "percentile" and supported(
        "percentile") else []


@dataclass(frozen=True)
class Candidate:
    measured: Measured
    path: Path  # its file: model_path for the graph as first quantized, .guard-N.onnx for the others
    excluded: list[str]
    calibration: list[np.ndarray]
    method: str
    step: str = "as quantized"

    @property
    def metric(self) -> float:
        return self.measured.metric


def guard_qdq(ctx: QuantizationRun, quantize: Quantize, float_path: Path, model_path: Path,
              fixes: Sequence[Fix] = (), same_as: Path | None = None) -> GuardSummary:
    """Hold model_path (the Q/DQ graph `quantize` made of float_path) to ctx.guard's budget; returns the path
    taken. model_path is replaced by the first graph that holds (else by the best tried). `fixes`: the format's
    own remedies (format_fixes of ort_int8, calibration_fixes), tried in order after the exclusion ladder.
    `same_as`: a float graph that computes float_path's outputs (before a fusion), whose outputs on the guard's
    images the run may hold already: they are the reference."""
    qdq, reference_path = ctx.settings(QDQSettings), same_as or float_path
    items = validation_items(ctx, lambda: create_runner("onnxruntime", reference_path, threads=ctx.threads),
                             str(reference_path))
    reference = ctx.memo(("float logits", str(reference_path)), lambda: logits(
        create_runner("onnxruntime", reference_path, threads=ctx.threads), [x for x, _ in items]))
    float_metric = float(np.mean(reference.argmax(1) == np.array([t for _, t in items]))) * 100
    plain = _measure_of(ctx, items, reference)(model_path)
    summary = GuardSummary(metric_name(ctx), ctx.guard.max_drop, len(items), float_metric, plain.metric,
                           needed=float_metric - plain.metric > ctx.guard.max_drop,
                           path=[GuardStep("as quantized", plain.metric, len(ctx.calibration()), None,
                                           excluded=list(qdq.exclude_nodes), kl=plain.mean_kl)])
    if not summary.needed:
        return summary
    ctx.log(f"the Q/DQ graph loses {float_metric - plain.metric:.2f} points of {summary.metric} (budget "
            f"{ctx.guard.max_drop}): trying more calibration images, float for its most damaging nodes, then the "
            "format's own fixes")
    guard = _QDQGuard(ctx, quantize, float_path, model_path, (items, reference), summary,
                      Candidate(plain, model_path, list(qdq.exclude_nodes), ctx.calibration(),
                                qdq.calibration_method))
    t0 = time.perf_counter()
    with ctx.guard_clock.running():
        try:
            guard.run(fixes)
        except GuardOutOfTime as stop:
            summary.stopped = ctx.guard_clock.stopped_line(stop.step)
            ctx.warn(f"{model_path.name}: the accuracy guard {summary.stopped}")
    summary.seconds = round(time.perf_counter() - t0, 2)
    _keep(guard.best, model_path, summary)
    return summary


class _QDQGuard:
    """The steps of one guard, sharing the graph, the measure and the best candidate so far."""

    def __init__(self, ctx: QuantizationRun, quantize: Quantize, float_path: Path, model_path: Path, checked,
                 summary: GuardSummary, plain: Candidate):
        """`checked`: (the guard's items, the float graph's logits on them)."""
        self.ctx, self.quantize, self.float_path, self.model_path = ctx, quantize, float_path, model_path
        self.items, self.reference = checked
        self.measure, self.summary, self.best = _measure_of(ctx, *checked), summary, plain

    def holds(self, c: Candidate) -> bool:
        return self.summary.holds(c.metric)

    def attempt(self, name: str, excluded: list[str], calibration, quantize: Quantize | None = None,
                method: str | None = None) -> Candidate:
        """Quantize once more (after checking the clock) and record it; the best so far is kept."""
        self.ctx.guard_clock.check(name)
        t0, qdq = time.perf_counter(), self.ctx.settings(QDQSettings)
        path = self.model_path.with_name(f".guard-{len(self.summary.path)}.onnx")
        exclude, method = sorted({*qdq.exclude_nodes, *excluded}), method or self.best.method
        (quantize or self.quantize)(self.float_path, path, calibration, method, exclude)
        tried = Candidate(self.measure(path), path, exclude, calibration, method, name)
        self.summary.path.append(GuardStep(name, tried.metric, len(calibration), round(time.perf_counter() - t0, 2),
                                           excluded=exclude, kl=tried.measured.mean_kl))
        self.best = max(self.best, tried, key=lambda c: (c.metric, -c.measured.mean_kl))
        return tried

    def run(self, fixes: Sequence[Fix]) -> None:
        more = self.ctx.more_calibration()
        if more is not None and self.holds(self.attempt(f"{len(more)} calibration images", [], more)):
            return
        if self._exclusion_ladder():
            return
        for fix in fixes:
            best = self.best
            if self.holds(self.attempt(fix.name, best.excluded, best.calibration, fix.quantize, fix.method)):
                return
        tried = ", ".join(s.step for s in self.summary.path[1:])
        self.summary.gave_up = f"no step held the budget (tried: {tried}); kept the best: {self.best.step}"

    def _exclusion_ladder(self) -> bool:
        """Rank the best graph's compute nodes by KL and leave the most damaging in float, 1, 2, 4, ...: True when
        a step holds; ends early when a step stops bringing the graph closer to the float one."""
        import onnx

        self.ctx.guard_clock.check("ranking the quantized nodes")
        t0, base = time.perf_counter(), self.best
        graph = onnx.load(str(base.path))
        rank_items = self.items[:RANK_IMAGES]
        on_rank_items = _measure_of(self.ctx, rank_items, self.reference[:RANK_IMAGES])
        try:
            ranked = rank_by_sensitivity(graph, lambda model: on_rank_items(model).mean_kl,
                                         onnx.load(str(self.float_path)), deadline=self.ctx.guard_clock.deadline())
        except RankingOutOfTime as e:
            raise GuardOutOfTime(f"ranking the quantized nodes ({e.ranked} of {e.total} done)") from None
        self.summary.ranking = GuardRanking(round(time.perf_counter() - t0, 2), len(rank_items),
                                            "mean KL of the softmax against the float graph", len(ranked),
                                            [RankedNode(n, v) for n, v in ranked[:10]])
        op_types = {n.name: n.op_type for n in graph.graph.node}
        closest, stalled = base.measured.kl, 0
        for name, excluded in exclusion_steps([n for n, _ in ranked], op_types):
            tried = self.attempt(name, excluded, base.calibration, method=base.method)
            if self.holds(tried):
                return True
            stalled = 0 if improves(closest, tried.measured.kl) else stalled + 1
            if stalled == 0:
                closest = tried.measured.kl
            elif stalled == STALLED:
                self.summary.ladder_stopped = (
                    f"{STALLED} steps in a row, up to {name}, did not bring the graph closer to the float one beyond "
                    f"the noise of {len(self.items)} images (mean KL {float(closest.mean()):.4f} at best, "
                    f"{tried.measured.mean_kl:.4f} last): the loss is not in a few nodes")
                return False
        return False


def _keep(best: Candidate, model_path: Path, summary: GuardSummary) -> None:
    """Move the best graph tried into model_path and remove the other candidates."""
    if best.path != model_path:
        shutil.move(str(best.path), str(model_path))
        summary.excluded_nodes = best.excluded
    summary.calibration_images, summary.calibration_method = len(best.calibration), best.method
    summary.kept = best.step
    for leftover in model_path.parent.glob(".guard-*.onnx"):
        leftover.unlink()
    summary.final_int8, summary.held = best.metric, summary.holds(best.metric)
