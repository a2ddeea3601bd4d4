"""Data sources and the model's own preprocessing."""
from edgevision.data.loader import balanced_indices, eval_transform, train_transform
from edgevision.data.sources import ImageSource, align_classes, open_source

__all__ = ["ImageSource", "align_classes", "balanced_indices", "eval_transform", "open_source", "train_transform"]
