"""Model zoo, weights resolution and checkpoints."""
from edgevision.models.checkpoint import read_checkpoint, write_checkpoint
from edgevision.models.loading import LoadedModel, ModelSpec, load_model
from edgevision.models.zoo import ZOO, count_gmacs, family_of, resolve_name, zoo_table

__all__ = ["ZOO", "LoadedModel", "ModelSpec", "count_gmacs", "family_of", "load_model", "read_checkpoint",
           "resolve_name", "write_checkpoint", "zoo_table"]
