"""Validation of a network, and the flat per-epoch metrics a run logs and reports."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from kdseg.train.setup import Models


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, ignore_index: int, accelerator) -> dict[str, Any]:
    """Dataset-level mIoU, per-image mIoU, per-class IoU and pixel accuracy of ``model`` on ``loader``.

    Keys: ``miou``, ``per_image_miou``, ``pixel_acc``, ``per_class_iou`` (see :mod:`kdseg.metrics`).
    With several processes every one returns the numbers of the whole split: each batch's per-image
    confusion matrices are gathered with ``accelerator.gather_for_metrics``, which drops the samples
    accelerate repeats to pad the last batch, so every validation pixel counts exactly once.
    """
    from kdseg.metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=accelerator.device, per_image=True)
    for x, y in loader:
        with accelerator.autocast():
            logits = model(x)
        cm.add_image_counts(accelerator.gather_for_metrics(cm.image_counts(logits.argmax(1), y)))
    model.train(was_training)
    return cm.compute()


def epoch_metrics(
    epoch, sums, n_steps, s_eval, t_eval, m: Models, opt_s, metric: str = "miou"
) -> dict[str, Any]:
    """The epoch's flat metrics; ``val_miou`` (and student/teacher_val_miou, iou_per_mparam) follow
    ``train.metric``; ``*_val_miou_dataset`` and ``*_val_miou_per_image`` hold both numbers."""

    def mean(key: str) -> float | None:
        return sums[key] / n_steps if key in sums and n_steps else None

    s_miou = s_eval[metric]
    t_miou = t_eval[metric] if t_eval else None

    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": mean("total"),
        "train_loss_hard": mean("hard"),
        "train_loss_soft": mean("soft"),
        "train_loss_feature": mean("feature"),
        "teacher_train_loss": mean("teacher_total"),
        "student_val_miou": s_miou,
        "val_miou": s_miou,
        "val_miou_dataset": s_eval["miou"],
        "val_miou_per_image": s_eval["per_image_miou"],
        "student_pixel_acc": s_eval["pixel_acc"],
        "student_per_class_iou": s_eval["per_class_iou"],
        "teacher_val_miou": t_miou,
        "teacher_val_miou_dataset": t_eval["miou"] if t_eval else None,
        "teacher_val_miou_per_image": t_eval["per_image_miou"] if t_eval else None,
        "teacher_pixel_acc": t_eval["pixel_acc"] if t_eval else None,
        "teacher_per_class_iou": t_eval["per_class_iou"] if t_eval else None,
        "student_params": m.student_params,
        "teacher_params": m.teacher_params,
        "iou_per_mparam": s_miou / (m.student_params / 1e6),
        "lr": opt_s.param_groups[0]["lr"],
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
