"""NNCF post-training INT8 quantization of an OpenVINO model (plain, and with NNCF's accuracy control)."""
from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import numpy as np


@dataclass
class IgnoredScope:
    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)


@dataclass
class NNCFSettings:
    """The recipe's `quantization` section: NNCF's post-training quantization of the OpenVINO candidate (per-family
    picks: pipeline/presets.py). The guard's ladder tries others (openvino_guard.py)."""

    preset: Literal["performance", "mixed"] = "performance"
    model_type: Literal["transformer"] | None = None
    smooth_quant_alpha: float | None = None
    bias_correction: Literal["fast", "full", "off"] = "fast"
    ignored_scope: IgnoredScope = field(default_factory=IgnoredScope)

    def nncf_kwargs(self) -> dict[str, Any]:
        """What nncf.quantize is told."""
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        advanced = AdvancedQuantizationParameters(disable_bias_correction=self.bias_correction == "off")
        if self.smooth_quant_alpha is not None:  # None: NNCF's default for the model type; < 0: off
            advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(matmul=self.smooth_quant_alpha)
        kwargs: dict[str, Any] = {
            "preset": nncf.QuantizationPreset(self.preset),
            "fast_bias_correction": self.bias_correction != "full",
            "advanced_parameters": advanced,
        }
        if self.model_type:
            kwargs["model_type"] = nncf.ModelType(self.model_type)
        scope = self.ignored_scope
        if scope.names or scope.patterns or scope.types:
            kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(scope.names), patterns=list(scope.patterns),
                                                        types=list(scope.types), validate=False)
        return kwargs


def _not_per_ignored_node(record: logging.LogRecord) -> bool:
    """NNCF logs each node of an ignored scope at INFO, one line apiece (18 for ConvNeXt-T's depthwise convolutions
    left in float by the latency-aware candidate, which logs its own one-line summary)."""
    return not record.getMessage().startswith("Not adding activation input quantizer")


@contextlib.contextmanager
def _nncf_output_to_stderr():
    """NNCF draws its progress bars on stdout and its logger (`nncf`, INFO, accuracy control's report) writes
    to stdout too; stdout belongs to `--json`. Both go to stderr while NNCF works, then back as they were, and
    its per-node ignored-scope lines are left out."""
    nncf_logger = logging.getLogger("nncf")
    handlers = [h for h in nncf_logger.handlers
                if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(sys.stderr)
    nncf_logger.addFilter(_not_per_ignored_node)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.removeFilter(_not_per_ignored_node)
        for handler, stream in zip(handlers, streams):
            handler.setStream(stream)


def quantize(ov_model, calibration: list[np.ndarray], settings: NNCFSettings):
    """INT8 post-training quantization of an OpenVINO model with NNCF, on preprocessed batch-1 inputs."""
    import nncf

    with _nncf_output_to_stderr():
        return nncf.quantize(ov_model, nncf.Dataset(calibration), subset_size=len(calibration),
                             **settings.nncf_kwargs())


def quantize_with_accuracy_control(ov_model, calibration: list[np.ndarray], validation: Iterable,
                                   validation_fn, max_drop: float, settings: NNCFSettings):
    """NNCF's accuracy-aware quantization: returns the most sensitive layers to float until the drop
    measured by `validation_fn(compiled_model, items) -> metric` is within `max_drop` (absolute)."""
    import nncf

    kwargs = settings.nncf_kwargs()
    advanced = kwargs.pop("advanced_parameters")
    with _nncf_output_to_stderr():
        return nncf.quantize_with_accuracy_control(
            ov_model, nncf.Dataset(calibration), nncf.Dataset(list(validation)), validation_fn,
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
            advanced_quantization_parameters=advanced, **kwargs)


def fake_quantized_layers(ov_model) -> list[str]:
    """Names of the layers whose inputs NNCF quantized (consumers of FakeQuantize outputs)."""
    names = set()
    for op in ov_model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        for output in op.outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                if consumer.get_type_name() != "FakeQuantize":
                    names.add(consumer.get_friendly_name())
    return sorted(names)
