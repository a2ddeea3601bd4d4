"""Losses for training a student from a teacher (distillation, pruning recovery).

loss = alpha * KL(softmax(t / T) || softmax(s / T)) * T^2 + (1 - alpha) * CE(s, labels)
       [+ feature_weight * MSE(norm(P(student features)), norm(teacher features))]
The T^2 keeps the gradient scale of the soft term independent of T (Hinton et al.).
"""
from __future__ import annotations

from typing import Callable


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float,
            label_smoothing: float = 0.0):
    """alpha * KL at temperature T (x T^2) + (1 - alpha) * cross-entropy; alpha 1 needs no labels."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t
    if alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1 - alpha) * hard


def feature_loss(student_features, teacher_features):
    """MSE between layer-normalised features: the scales of two networks' features need not agree."""
    import torch.nn.functional as F

    s, t = student_features.float(), teacher_features.float()
    return F.mse_loss(F.layer_norm(s, s.shape[-1:]), F.layer_norm(t, t.shape[-1:]))


def distillation_loss(teacher, temperature: float = 2.0, alpha: float = 0.7,
                      label_smoothing: float = 0.0) -> Callable:
    """A `loss_fn(logits, labels, images)` for training.train: the teacher runs on the student's images."""
    import torch

    teacher.eval()

    def loss_fn(logits, labels, images):
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        with torch.no_grad():
            target = teacher(images).float()
        return kd_loss(logits, target, labels, temperature, alpha, label_smoothing)

    return loss_fn


