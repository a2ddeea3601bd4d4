"""Deployment targets, registered by name: the one place that says what a target is.

Each module here defines one target's stages and registers one Target (pipeline/targets/registry.py).
Adding a target is one new module, imported below.
"""
# each registers its target; the order is the order users see (--target help, errors)
from edgevision.pipeline.targets import cpu  # noqa: F401, I001
from edgevision.pipeline.targets import onnx  # noqa: F401
from edgevision.pipeline.targets import jetson  # noqa: F401
from edgevision.pipeline.targets.registry import (TARGETS, RecipeSection, Target, get_target, register_target,
                                                  target_names)

__all__ = ["TARGETS", "RecipeSection", "Target", "get_target", "register_target", "target_names"]
