"""edgevision: compress timm vision models for edge devices and measure what it cost.

The Python API mirrors the CLI (edgevision/api.py):

    import edgevision
    result = edgevision.compress("convnext_t", int8=True, data="builtin:photos", target="cpu")

and the parts it is made of stay public for finer work:

    from edgevision import load_model, open_source, train, TrainConfig
    loaded = load_model("convnext_mini", weights="random", num_classes=10)
    train(loaded, open_source("builtin:fashion-mnist:train"), "convnext_mini.pt", TrainConfig(epochs=3))
"""
from edgevision._version import __version__
from edgevision.api import (
                            benchmark,
                            build_engine,
                            compare,
                            compress,
                            deploy_check,
                            device,
                            distill_models,
                            evaluate,
                            export,
                            list_models,
                            open_model,
                            prune,
                            recommend,
                            sweep,
                            train_model,
)
from edgevision.compression.distill import DistillConfig, distill
from edgevision.compression.prune import prune_model
from edgevision.data import open_source
from edgevision.errors import EdgevisionError
from edgevision.measure import benchmark_model, evaluate_model
from edgevision.models import load_model
from edgevision.pipeline.export import EngineFlags, export_model, export_run, open_run
from edgevision.pipeline.run import compress_model
from edgevision.training import TrainConfig, train

__all__ = ["DistillConfig", "EdgevisionError", "EngineFlags", "TrainConfig", "__version__", "benchmark", "benchmark_model",
           "build_engine", "compare", "compress", "compress_model", "deploy_check", "device", "distill", "distill_models", "evaluate",
           "evaluate_model", "export", "export_model", "export_run", "list_models", "load_model", "open_model",
           "open_run", "open_source", "prune", "prune_model", "recommend", "sweep", "train", "train_model"]
