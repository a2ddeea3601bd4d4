"""Data sources and the model's own preprocessing."""
from edgevision.data.loader import eval_transform, train_transform
from edgevision.data.open import open_source
from edgevision.data.sources import ImageSource, align_classes, balanced_indices, sample

__all__ = ["ImageSource", "align_classes", "balanced_indices", "eval_transform", "open_source", "sample",
           "train_transform"]
