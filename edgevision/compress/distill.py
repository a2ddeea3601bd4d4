"""Logit distillation: the student learns the teacher's softened outputs (and the labels).

loss = alpha * KL(softmax(t / T) || softmax(s / T)) * T^2 + (1 - alpha) * CE(s, labels)
The T^2 keeps the gradient scale of the soft term independent of T (Hinton et al.). Used by pruning
recovery; the teacher runs without gradients, on the student's device.
"""
from __future__ import annotations

from typing import Callable


def distillation_loss(teacher, temperature: float = 2.0, alpha: float = 0.7,
                      label_smoothing: float = 0.0) -> Callable:
    import torch
    import torch.nn.functional as F

    teacher.eval()

    def loss_fn(logits, labels, images):
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        with torch.no_grad():
            target = teacher(images).float()
        t = temperature
        soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(target / t, dim=1), log_target=True,
                        reduction="batchmean") * t * t
        if alpha >= 1.0:
            return soft
        hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        return alpha * soft + (1 - alpha) * hard

    return loss_fn
