"""A frozen backbone first: the classifier alone for the first epochs, then every layer, the backbone at a
lower learning rate, as fine-tuning on little data is done (train --freeze-backbone-epochs N,
--backbone-lr-scale F, --freeze backbone for a linear probe).

The classifier is the module timm names with `get_classifier()` (its pretrained config's `classifier` entry
otherwise). While the backbone is frozen its parameters take no gradient (AdamW leaves them untouched, weight
decay included) and it runs in eval mode, so BatchNorm statistics and dropout stay as they were. The phase of
an epoch is a function of the epoch alone, so a resumed run is in the same phase as the run it continues.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgevision.errors import EdgevisionError


@dataclass(frozen=True)
class FreezeSchedule:
    backbone_epochs: int = 0  # epochs with the backbone frozen; all epochs: a linear probe
    backbone_lr_scale: float = 1.0  # backbone learning rate / classifier learning rate once unfrozen

    @property
    def active(self) -> bool:
        return self.backbone_epochs > 0 or self.backbone_lr_scale != 1.0

    def trained_at(self, epoch: int) -> str:
        """'classifier' or 'all': what epoch `epoch` (0-based) trains."""
        return "classifier" if epoch < self.backbone_epochs else "all"


def classifier_module(model):
    """The model's classifier (timm's get_classifier, else its pretrained config's `classifier` name)."""
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if head is None or not list(head.parameters()):
        name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        head = model.get_submodule(name) if name else None
    if head is None or not list(head.parameters()):
        raise EdgevisionError(f"{type(model).__name__} names no classifier to train alone",
                              "drop --freeze-backbone-epochs / --freeze / --backbone-lr-scale for this model")
    return head


def backbone_parameters(model) -> list:
    """The trainable parameters outside the classifier, in the model's own order."""
    ids = {id(p) for p in classifier_module(model).parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in ids]


def enter_phase(model, schedule: FreezeSchedule, epoch: int, backbone: list) -> str:
    """Freeze or unfreeze the backbone for `epoch`; the model is in train mode, all but a frozen backbone."""
    trained = schedule.trained_at(epoch)
    frozen = trained == "classifier"
    for p in backbone:
        p.requires_grad_(not frozen)
    model.train(not frozen)
    if frozen:
        classifier_module(model).train()
    return trained


def unfreeze(backbone: list) -> None:
    """The backbone trainable again, as the caller handed the model over."""
    for p in backbone:
        p.requires_grad_(True)


FREEZE_CHOICES = ("backbone",)


def frozen_backbone_epochs(freeze: str | None, freeze_backbone_epochs: int, epochs: int) -> int:
    """Epochs with the backbone frozen, from `--freeze backbone` (all of them) or `--freeze-backbone-epochs`."""
    if freeze is None:
        return freeze_backbone_epochs
    if freeze not in FREEZE_CHOICES:
        raise EdgevisionError(f"unknown --freeze '{freeze}'", f"use {' or '.join(FREEZE_CHOICES)}")
    if freeze_backbone_epochs:
        raise EdgevisionError("--freeze backbone and --freeze-backbone-epochs both given",
                              "use --freeze backbone for a linear probe, or --freeze-backbone-epochs N alone")
    return epochs


def check_schedule(model, schedule: FreezeSchedule, epochs: int) -> None:
    """The one-line refusals of a schedule, before any work starts."""
    if not schedule.active:
        return
    if not 0 <= schedule.backbone_epochs <= epochs:
        raise EdgevisionError(f"--freeze-backbone-epochs {schedule.backbone_epochs} is outside 0..--epochs {epochs}",
                              "use at most --epochs (or --freeze backbone for a linear probe)")
    if schedule.backbone_lr_scale <= 0:
        raise EdgevisionError(f"--backbone-lr-scale {schedule.backbone_lr_scale} must be above 0",
                              "use --freeze backbone to keep the backbone fixed")
    classifier_module(model)
