"""What a model is, in numbers: the spec, parameters and multiply-accumulates (for reports and tables)."""
from __future__ import annotations

from dataclasses import dataclass

from edgevision.models.loading import LoadedModel, ModelSpec
from edgevision.models.zoo import count_gmacs
from edgevision.typed import flattened, omitted


def params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@dataclass
class ModelDescription:
    """A model's spec (its keys in place) with its size in numbers; an exported artifact has neither number."""

    params_m: float | None
    gmacs: float | None  # at the spec's input size
    spec: ModelSpec = flattened()
    artifact: str | None = omitted()  # the artifact's path


def describe_model(loaded: LoadedModel) -> ModelDescription:
    """The spec plus params (M) and GMACs; an exported artifact (a path) has neither."""
    model = loaded.model
    if not hasattr(model, "parameters"):
        return ModelDescription(None, None, loaded.spec, str(model))
    return ModelDescription(round(params_m(model), 3), round(count_gmacs(model, loaded.spec.input_size), 4),
                            loaded.spec)
