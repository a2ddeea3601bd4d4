"""What a model is, in numbers: the spec, parameters and multiply-accumulates (for reports and tables)."""
from __future__ import annotations

from typing import Any

from edgevision.models.loading import LoadedModel
from edgevision.models.zoo import count_gmacs


def params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def describe_model(loaded: LoadedModel) -> dict[str, Any]:
    """The spec plus params (M) and GMACs; an exported artifact (a path) has neither."""
    model = loaded.model
    if not hasattr(model, "parameters"):
        return {**loaded.spec.to_dict(), "artifact": str(model), "params_m": None, "gmacs": None}
    return {**loaded.spec.to_dict(), "params_m": round(params_m(model), 3),
            "gmacs": round(count_gmacs(model, loaded.spec.input_size), 4)}
