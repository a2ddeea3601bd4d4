"""Latency and throughput of any Runner: warm-up, then medians and percentiles of timed calls."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from edgevision.models.loading import LoadedModel
from edgevision.runtimes import Runner, RunnerInfo, create_runner


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class BenchResult:
    input_shape: list[int]  # C, H, W
    batch: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_mean: float
    iterations: int
    throughput_batch: int | None
    throughput_ips: float | None  # images per second at throughput_batch (median of calls)
    runner: RunnerInfo
    cpu: str
    warmup: int

    @classmethod
    def from_times(cls, ms: np.ndarray, runner: Runner, input_shape, batch: int, warmup: int,
                   throughput_batch: int | None = None, throughput_ips: float | None = None) -> "BenchResult":
        """Percentiles of per-call wall times in milliseconds."""
        return cls(
            input_shape=list(input_shape), batch=batch,
            latency_ms_p50=float(np.percentile(ms, 50)), latency_ms_p90=float(np.percentile(ms, 90)),
            latency_ms_p99=float(np.percentile(ms, 99)), latency_ms_mean=float(ms.mean()),
            iterations=len(ms), throughput_batch=throughput_batch, throughput_ips=throughput_ips,
            runner=runner.info(), cpu=cpu_name(), warmup=warmup,
        )


def _time_calls(runner: Runner, x: np.ndarray, warmup: int, iters: int, min_seconds: float) -> np.ndarray:
    for _ in range(warmup):
        runner(x)
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t0)
        if len(times) >= 100 * iters:  # a bound, in case min_seconds is large and calls are tiny
            break
    return np.array(times) * 1000.0


def benchmark(
    runner: Runner,
    input_shape: tuple[int, int, int],
    *,
    batch: int = 1,
    warmup: int = 10,
    iters: int = 50,
    min_seconds: float = 0.0,
    throughput_batch: int | None = 32,
    seed: int = 0,
) -> BenchResult:
    """Latency percentiles at `batch` and throughput at `throughput_batch` (None to skip)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_shape), dtype=np.float32)
    ms = _time_calls(runner, x, warmup, iters, min_seconds)
    ips = None
    if throughput_batch:
        xb = rng.standard_normal((throughput_batch, *input_shape), dtype=np.float32)
        tms = _time_calls(runner, xb, max(2, warmup // 5), max(5, iters // 5), 0.0)
        ips = throughput_batch / (float(np.median(tms)) / 1000.0)
    return BenchResult.from_times(ms, runner, input_shape, batch, warmup, throughput_batch, ips)


def compare_latency(
    runners: dict[str, Runner],
    input_shape: tuple[int, int, int] | dict[str, tuple[int, int, int]],
    *,
    batch: int = 1,
    warmup: int = 10,
    iters: int = 50,
    rounds: int = 5,
    seed: int = 0,
) -> dict[str, BenchResult]:
    """Latency of several runners measured side by side: `rounds` interleaved rounds of iters/rounds
    calls each, so that drift on a shared machine (other jobs, clocks, heat) hits every runner alike.
    Speedups are then ratios of medians taken in the same run. `input_shape` is one (C, H, W) for all, or
    a dict of them by runner name (a teacher and a student may take different sizes).

    Each runner's calls in a round start with one untimed call: the runner before it may leave threads
    spinning (PyTorch's OpenMP threads do after a call: the OpenVINO GEMM called next ran at 146 GOP/s instead
    of 201, the call after that at full speed; benchmarks/ort_spinning.py), and with few calls a round that
    first call would be most of what is timed."""
    shapes = input_shape if isinstance(input_shape, dict) else {name: input_shape for name in runners}
    rng = np.random.default_rng(seed)
    xs = {name: rng.standard_normal((batch, *shapes[name]), dtype=np.float32) for name in runners}
    per_round = max(1, iters // rounds)
    times: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    for name, runner in runners.items():
        for _ in range(warmup):
            runner(xs[name])
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(_time_calls(runner, xs[name], 1, per_round, 0.0))
    return {name: BenchResult.from_times(np.concatenate(times[name]), runner, shapes[name], batch, warmup)
            for name, runner in runners.items()}


def model_runner(loaded: LoadedModel, runtime: str = "pytorch", threads: int | None = None) -> Runner:
    """A runner of the loaded model (or artifact) in `runtime`, at `threads` (default: every core here)."""
    return create_runner(runtime, loaded.model, threads=threads or available_cores(),
                         input_size=loaded.spec.input_size, **loaded.runner_options)


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
    return benchmark(model_runner(loaded, runtime, threads), loaded.spec.input_size, batch=batch, warmup=warmup,
                     iters=iters, min_seconds=min_seconds, throughput_batch=throughput_batch)
