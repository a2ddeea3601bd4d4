"""Measuring models: accuracy and fidelity (evaluate), latency and throughput (bench), size (describe)."""
from edgevision.measure.bench import BenchResult, benchmark, benchmark_model, compare_latency
from edgevision.measure.describe import describe_model
from edgevision.measure.evaluate import EvalResult, evaluate, evaluate_model, evaluate_runners, fidelity

__all__ = ["BenchResult", "EvalResult", "benchmark", "benchmark_model", "compare_latency", "describe_model",
           "evaluate", "evaluate_model", "evaluate_runners", "fidelity"]
