"""edgevision: compress timm vision models for edge devices and measure what it cost.

The Python API mirrors the CLI:

    from edgevision import load_model, open_source, train, evaluate_model, benchmark_model
    loaded = load_model("convnext_mini", weights="random", num_classes=10)
    train(loaded, open_source("builtin:fashion-mnist:train"), "convnext_mini.pt", TrainConfig(epochs=3))
"""
from edgevision.api import benchmark_model, evaluate_model
from edgevision.compress.distill import DistillConfig, distill
from edgevision.compress.export import export_model, export_run, open_run
from edgevision.compress.pipeline import compress
from edgevision.compress.prune import prune_model
from edgevision.data import open_source
from edgevision.errors import EdgevisionError
from edgevision.models import load_model
from edgevision.training import TrainConfig, train

__version__ = "0.1.0"
__all__ = ["DistillConfig", "EdgevisionError", "TrainConfig", "benchmark_model", "compress", "distill",
           "evaluate_model", "export_model",
           "export_run", "load_model", "open_run", "open_source", "prune_model", "train", "__version__"]
