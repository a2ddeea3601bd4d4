"""The accuracy guard of a Q/DQ graph run by ONNX Runtime: the jetson target's (a simulation of the engine, as
the report is) and the ONNX Runtime INT8 candidates of the cpu and onnx targets.

When the Q/DQ graph loses more than the budget against the float graph on the evaluation data, it is
quantized again on a calibration set 4 times larger (at most 1200 images, when the calibration data has
them). If that does not hold either, the nodes of the better of the two graphs are ranked by the accuracy
the graph keeps with each one alone quantized (runtimes/qdq_sensitivity.py, on up to RANK_IMAGES images),
and it is quantized again by the same engine, on its calibration set, with the 1, 2, 4, ... most sensitive
nodes excluded, up to half of them; then, if the engine quantized more than Conv/Gemm/MatMul inputs, with
INT8 kept to those. It stops at the first that holds, else keeps the best tried. Every step is recorded
with its metric, its calibration images and what it cost in time; the jetson target also pins the excluded
nodes to FP16 in build_engine.sh.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.pipeline.context import Context
from edgevision.pipeline.targets.cpu_guard import metric_name, score, validation_items
from edgevision.runtimes import create_runner
from edgevision.runtimes.qdq_engines import Quantize
from edgevision.runtimes.qdq_sensitivity import rank_by_sensitivity
from edgevision.runtimes.tensorrt import WEIGHTED_OPS

RANK_IMAGES = 500


def _metric_of(ctx: Context, items) -> Any:
    """ONNX file or ModelProto -> % of `items` whose top-1 matches their target, in ONNX Runtime."""
    import onnx

    def metric(model) -> float:
        with tempfile.TemporaryDirectory(prefix="edgevision-guard-") as tmp:
            path = model if isinstance(model, (str, Path)) else Path(tmp) / "m.onnx"
            if not isinstance(model, (str, Path)):
                onnx.save(model, str(path))
            return score(create_runner("onnxruntime", path, threads=ctx.threads), items)

    return metric


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


def guard_qdq(ctx: Context, quantize: Quantize, float_path: Path, model_path: Path) -> dict[str, Any]:
    """Hold model_path (the Q/DQ graph `quantize` made of float_path) to ctx.guard's budget; returns the path
    taken. model_path is replaced by the first graph that holds (else by the best tried)."""
    qdq = ctx.recipe["qdq"]
    items = validation_items(ctx, lambda: create_runner("onnxruntime", float_path, threads=ctx.threads),
                             str(float_path))
    metric = _metric_of(ctx, items)
    float_metric = ctx.memo(("float metric", str(float_path)), lambda: metric(float_path))
    plain_metric = metric(model_path)
    summary = {"metric": metric_name(ctx),
               "max_drop": ctx.guard.max_drop, "images": len(items), "float": float_metric,
               "plain_int8": plain_metric, "needed": float_metric - plain_metric > ctx.guard.max_drop,
               "path": [{"step": "as quantized", "excluded": list(qdq["exclude_nodes"]), "int8": plain_metric,
                         "calibration_images": len(ctx.calibration()), "seconds": None}]}
    if not summary["needed"]:
        return summary
    ctx.log(f"the Q/DQ graph loses {float_metric - plain_metric:.2f} points of {summary['metric']} (budget "
            f"{ctx.guard.max_drop}): trying more calibration images, then float for its most sensitive nodes")
    best = Candidate(plain_metric, model_path, list(qdq["exclude_nodes"]), ctx.calibration())

    def attempt(name: str, excluded: list[str], calibration) -> bool:
        """Quantize once more; True when it holds the budget."""
        nonlocal best
        t0 = time.perf_counter()
        candidate = model_path.with_name(f".guard-{len(summary['path'])}.onnx")
        exclude = sorted({*qdq["exclude_nodes"], *excluded})
        quantize(float_path, candidate, calibration, qdq["calibration_method"], exclude)
        tried = Candidate(metric(candidate), candidate, exclude, calibration)
        summary["path"].append({"step": name, "excluded": exclude, "int8": tried.metric,
                                "calibration_images": len(calibration), "seconds": round(time.perf_counter() - t0, 2)})
        best = max(best, tried, key=lambda c: c.metric)
        return float_metric - tried.metric <= ctx.guard.max_drop

    more = ctx.more_calibration()
    if not (more is not None and attempt(f"{len(more)} calibration images", [], more)):
        _exclude_most_sensitive(ctx, summary, items, float_path, best, attempt)
    _keep(best, model_path, summary)
    return summary


@dataclass(frozen=True)
class Candidate:
    metric: float
    path: Path  # its file: model_path for the graph as first quantized, .guard-N.onnx for the others
    excluded: list[str]
    calibration: list[np.ndarray]


def _exclude_most_sensitive(ctx: Context, summary, items, float_path: Path, best: Candidate, attempt) -> None:
    """Rank the nodes of the best graph so far by sensitivity and `attempt` the exclusion steps in order, on
    its calibration set, until one holds."""
    import onnx

    t0 = time.perf_counter()
    graph = onnx.load(str(best.path))
    ranked = rank_by_sensitivity(graph, _metric_of(ctx, items[:RANK_IMAGES]), onnx.load(str(float_path)))
    summary["ranking"] = {"seconds": round(time.perf_counter() - t0, 2), "images": min(len(items), RANK_IMAGES),
                          "top": [{"node": n, "metric_with_only_it_int8": v} for n, v in ranked[:10]]}
    op_types = {n.name: n.op_type for n in graph.graph.node}
    for name, excluded in exclusion_steps([n for n, _ in ranked], op_types):
        if attempt(name, excluded, best.calibration):
            return


def _keep(best: Candidate, model_path: Path, summary: dict[str, Any]) -> None:
    """Move the best graph tried into model_path and remove the other candidates."""
    if best.path != model_path:
        shutil.move(str(best.path), str(model_path))
        summary["excluded_nodes"] = best.excluded
    summary["calibration_images"] = len(best.calibration)
    for leftover in model_path.parent.glob(".guard-*.onnx"):
        leftover.unlink()
    summary["final_int8"] = best.metric
    summary["held"] = summary["float"] - best.metric <= summary["max_drop"]
