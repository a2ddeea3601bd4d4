"""`edgevision build-engine`'s choice on the device, as build_engine.sh makes it: where the bundle lets the device
decide, build the INT8 and the FP16 engine, time both side by side (interleaved rounds, medians) and keep the
faster as the bundle's engine; model.engine.json records the precision kept and the timings."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from edgevision.io import write_json
from edgevision.measure.bench import compare_latency
from edgevision.runtimes import create_runner
from edgevision.runtimes import tensorrt as trt_backend
from edgevision.typed import omitted, to_data


@dataclass
class EngineDecision:
    """Which precision the bundle's engine was built in, and why: the `decision` in model.engine.json, with the
    keys build_engine.sh writes."""

    precision: str  # int8 or fp16
    decided_by: str  # "asked", or "timed here" (both built and timed side by side)
    median_ms: dict[str, float] | None = omitted()  # precision -> median latency, when timed


def build_chosen_engine(bundle: Path, opts: trt_backend.EngineOptions, precision: str | None = None, *,
                        iters: int = 200, log=lambda msg: None) -> Path:
    choice = trt_backend.resolve_precision(precision, opts)
    variants = trt_backend.engine_variants(opts)
    if choice != "auto":
        path = trt_backend.build_engine(bundle, replace(variants[choice], engine=opts.engine), log=log)
        return _record(path, EngineDecision(choice, "asked"))
    built = {name: trt_backend.build_engine(bundle, v, log=log) for name, v in variants.items()}
    runners = {name: create_runner("tensorrt", path) for name, path in built.items()}
    timed = compare_latency(runners, opts.input_shape, batch=opts.batch, iters=iters)
    medians = {name: round(r.latency_ms_p50, 4) for name, r in timed.items()}
    choice = min(medians, key=medians.get)
    log(f"INT8 {medians['int8']} ms vs FP16 {medians['fp16']} ms (median, side by side): keeping {choice}")
    for name, path in built.items():
        if name != choice:
            path.unlink()
            path.with_name(path.name + ".json").unlink(missing_ok=True)
    kept = built[choice].replace(bundle / opts.engine)
    built[choice].with_name(built[choice].name + ".json").replace(kept.with_name(kept.name + ".json"))
    return _record(kept, EngineDecision(choice, "timed here", medians))


def _record(engine: Path, decision: EngineDecision) -> Path:
    meta_path = engine.with_name(engine.name + ".json")
    write_json(meta_path, {**json.loads(meta_path.read_text(encoding="utf-8")), "decision": to_data(decision)})
    return engine
