"""Training: the shared loop, supervised training, distillation losses, data parallel, trained weights."""
from edgevision.training import fashion_mnist  # noqa: F401 - registers the `fashion-mnist` weight source
from edgevision.training.loop import LoopResult, TrainConfig, fit, lr_at, state_path
from edgevision.training.supervised import TrainResult, train

__all__ = ["LoopResult", "TrainConfig", "TrainResult", "fit", "lr_at", "state_path", "train"]
