"""Segmentation metrics from a confusion matrix.

mIoU in kdseg is dataset-level: one :class:`ConfusionMatrix` is accumulated over the whole
validation split, IoU is computed per class from it, and the mean is over the classes present
(ground truth or prediction, i.e. union > 0). Pixels labelled ``ignore_index`` are excluded. This is
not the mean of per-image mIoUs.

Typical use::

    cm = ConfusionMatrix(num_classes, ignore_index)
    for images, target in val_loader:
        cm.update(model(images), target)  # logits [B, C, H, W] or predictions [B, H, W]
    metrics = cm.compute()  # {"miou", "pixel_acc", "per_class_iou"}

Under data parallelism, sum ``cm.matrix`` across processes (e.g. ``accelerator.reduce(cm.matrix,
"sum")``) before computing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class ConfusionMatrix:
    """An int64 [C, C] confusion matrix: rows are ground truth, columns are predictions.

    ``update`` counts with :func:`torch.bincount` on the inputs' device (the matrix follows the
    inputs there); ``ignore_index`` pixels are excluded; a label outside ``[0, C)`` that is not the
    ignore index is an error.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device=None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    # -------------------------------------------------------------------------------- accumulate

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` is a LongTensor [B, H, W] of classes or logits [B, C, H, W]."""
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits have {pred.shape[1]} classes; the confusion matrix has {self.num_classes}"
                )
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
        if pred.is_floating_point():
            raise ValueError("pred must hold integer class indices (or be logits with a class dim)")
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).to(pred.device).long()
        if self.matrix.device != pred.device:
            self.matrix = self.matrix.to(pred.device)
        c = self.num_classes
        keep = (
            target != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(target, dtype=torch.bool)
        )
        target, pred = target[keep], pred[keep]
        if target.numel() == 0:
            return
        # One host sync per batch: labels outside the classes must not be counted silently.
        lo, hi = torch.stack(
            [torch.minimum(target.min(), pred.min()), torch.maximum(target.max(), pred.max())]
        ).tolist()
        if lo < 0 or hi >= c:
            raise ValueError(
                f"labels/predictions must lie in [0, {c}) or equal ignore_index={self.ignore_index}; "
                f"found values in [{lo}, {hi}]"
            )
        self.matrix += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts into this matrix (in place); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.matrix.device)
        out.matrix = self.matrix.clone()
        return out.merge(other)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    # ----------------------------------------------------------------------------------- metrics

    def iou(self) -> Tensor:
        """Per-class IoU [C] (float64, CPU): TP / (TP + FP + FN); NaN where the union is 0."""
        m = self.matrix.detach().to("cpu", torch.float64)
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))

    def miou(self) -> float:
        """Mean IoU over the classes present (union > 0); NaN if nothing was counted."""
        iou = self.iou()
        present = ~iou.isnan()
        return float(iou[present].mean()) if present.any() else math.nan

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels; NaN if nothing was counted."""
        total = int(self.matrix.sum())
        return float(int(self.matrix.diagonal().sum()) / total) if total else math.nan

    def compute(self) -> dict[str, float | list[float | None]]:
        """``{"miou": float, "pixel_acc": float, "per_class_iou": [float or None per class]}``.

        ``per_class_iou`` holds None for classes absent from both ground truth and prediction (so it
        serialises to JSON ``null``).
        """
        return {
            "miou": self.miou(),
            "pixel_acc": self.pixel_accuracy(),
            "per_class_iou": [None if math.isnan(v) else v for v in self.iou().tolist()],
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"
