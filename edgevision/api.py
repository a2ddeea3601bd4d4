"""Functions behind the CLI commands that combine several modules; the CLI only parses and prints."""
from __future__ import annotations

from typing import Any

from edgevision.backends import create_runner
from edgevision.bench import BenchResult, available_cores, benchmark
from edgevision.data.loader import balanced_indices
from edgevision.data.sources import ImageSource, align_classes
from edgevision.evaluate import EvalResult, evaluate
from edgevision.models.loading import LoadedModel


def evaluate_model(
    loaded: LoadedModel,
    source: ImageSource,
    *,
    runtime: str = "pytorch",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    threads: int | None = None,
    workers: int = 0,
    progress: bool = True,
    device: str | None = None,
) -> EvalResult:
    """Top-1/top-5 of a model on a source, optionally on a seeded, class-balanced subset of `limit`.

    `device` (pytorch runtime only): where the model runs, e.g. the GPU it is training on."""
    source = align_classes(source, loaded.spec.classes)
    if limit is not None and limit < len(source):
        source = source.subset(balanced_indices(len(source), limit, source.labels, seed))
    placement = {"device": device} if device is not None else {}
    runner = create_runner(runtime, loaded.model, threads=threads, input_size=loaded.spec.input_size, **placement)
    return evaluate(runner, source, loaded.spec.data_config, batch_size=batch_size, workers=workers,
                    progress=progress)


def benchmark_model(
    loaded: LoadedModel,
    *,
    runtime: str = "pytorch",
    threads: int | None = None,
    batch: int = 1,
    throughput_batch: int | None = 32,
    warmup: int = 10,
    iters: int = 50,
    min_seconds: float = 0.0,
) -> BenchResult:
    """Latency at `batch` and throughput at `throughput_batch` at a stated thread count."""
    threads = threads or available_cores()
    runner = create_runner(runtime, loaded.model, threads=threads, input_size=loaded.spec.input_size)
    return benchmark(runner, loaded.spec.input_size, batch=batch, warmup=warmup, iters=iters,
                     min_seconds=min_seconds, throughput_batch=throughput_batch)


def describe_model(loaded: LoadedModel) -> dict[str, Any]:
    from edgevision.models.zoo import count_gmacs

    model = loaded.model
    if not hasattr(model, "parameters"):  # an exported artifact (edgevision.artifacts)
        return {**loaded.spec.to_dict(), "artifact": str(model), "params_m": None, "gmacs": None}
    return {**loaded.spec.to_dict(),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "gmacs": round(count_gmacs(model, loaded.spec.input_size), 4)}
