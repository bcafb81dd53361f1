"""Segmentation metrics from a confusion matrix.

mIoU in kdseg is dataset-level: one :class:`ConfusionMatrix` is accumulated over the whole
validation split, IoU is computed per class from it, and the mean is over the classes present
(ground truth or prediction, i.e. union > 0). Pixels labelled ``ignore_index`` are excluded. This is
not the mean of per-image mIoUs.

With ``per_image=True`` the same pass also gives the *per-image mIoU* (``train.metric:
per_image_miou``, the number many papers and Kaggle kernels report): for each image, a confusion
matrix over its labelled pixels (``ignore_index`` excluded), IoU = TP / (TP + FP + FN) for each class
present in that image's label or prediction (union > 0), the mean over those classes; then the mean
over the images that have at least one labelled pixel. It weighs every image equally, so small
objects in one image count as much as a whole road in another, and it can differ noticeably from the
dataset-level number on the same predictions (in either direction).

Typical use::

    cm = ConfusionMatrix(num_classes, ignore_index)
    for images, target in val_loader:
        cm.update(model(images), target)  # logits [B, C, H, W] or predictions [B, H, W]
    metrics = cm.compute()  # {"miou", "pixel_acc", "per_class_iou"} (+ "per_image_miou")

Under data parallelism, gather each batch's :meth:`ConfusionMatrix.image_counts` across processes
with ``accelerator.gather_for_metrics`` (it drops the samples accelerate repeats to pad the last
batch) and :meth:`ConfusionMatrix.add_image_counts` them, so every validation pixel counts once.
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

    ``per_image=True`` also accumulates ``image_stats`` = float64 ``[sum of per-image mIoUs, number of
    images]`` (module docstring), from the same per-image counts (one ``bincount`` per batch).
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, device=None, per_image: bool = False
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.per_image = bool(per_image)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)
        self.image_stats = torch.zeros(2, dtype=torch.float64, device=device)

    # -------------------------------------------------------------------------------- accumulate

    def reset(self) -> None:
        self.matrix.zero_()
        self.image_stats.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` is a LongTensor [B, H, W] of classes or logits [B, C, H, W]."""
        if self.per_image:
            self.add_image_counts(self.image_counts(pred, target))
            return
        pred, target, _, _ = self._labelled(pred, target, per_image=False)
        if target.numel() == 0:
            return
        self._follow(pred.device)
        c = self.num_classes
        self.matrix += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    @torch.no_grad()
    def image_counts(self, pred: Tensor, target: Tensor) -> Tensor:
        """One confusion matrix per image of a batch, int64 [B, C, C]; nothing is accumulated.

        Same inputs as :meth:`update` (an [H, W] pair is one image). Under data parallelism, gather
        these across processes (``accelerator.gather_for_metrics``, which drops the samples repeated
        to pad the last batch) and :meth:`add_image_counts` the result: every pixel counts once.
        """
        pred, target, image, n_images = self._labelled(pred, target, per_image=True)
        c = self.num_classes
        per = torch.bincount(image * (c * c) + target * c + pred, minlength=n_images * c * c)
        return per.reshape(n_images, c, c)

    @torch.no_grad()
    def add_image_counts(self, counts: Tensor) -> None:
        """Add per-image confusion matrices [B, C, C] (from :meth:`image_counts`)."""
        c = self.num_classes
        if counts.dim() != 3 or counts.shape[1:] != (c, c):
            raise ValueError(f"image counts must be [B, {c}, {c}], got {tuple(counts.shape)}")
        per = counts.long()
        self._follow(per.device)
        self.matrix += per.sum(0)
        if not self.per_image:
            return
        tp = per.diagonal(dim1=1, dim2=2).double()
        union = per.sum(1).double() + per.sum(2).double() - tp
        present = union > 0
        n_present = present.sum(1)
        miou = torch.where(present, tp / union.clamp_min(1), 0.0).sum(1) / n_present.clamp_min(1)
        counted = n_present > 0  # images with at least one labelled pixel
        self.image_stats += torch.stack([miou[counted].sum(), counted.sum().double()])

    def _follow(self, device) -> None:
        if self.matrix.device != device:
            self.matrix = self.matrix.to(device)
            self.image_stats = self.image_stats.to(device)

    def _labelled(self, pred: Tensor, target: Tensor, per_image: bool):
        """Flat (pred, target, image index or None, number of images) of the labelled pixels, checked."""
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
        n_images = pred.shape[0] if pred.dim() >= 3 else 1
        image = None
        if per_image:
            # [B, H, W]: one image per leading index; [H, W]: a single image
            image = torch.arange(n_images, device=pred.device).repeat_interleave(pred.numel() // n_images)
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).to(pred.device).long()
        c = self.num_classes
        keep = (
            target != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(target, dtype=torch.bool)
        )
        target, pred = target[keep], pred[keep]
        image = image[keep] if image is not None else None
        if target.numel() > 0:
            # One host sync per batch: labels outside the classes must not be counted silently.
            lo, hi = torch.stack(
                [torch.minimum(target.min(), pred.min()), torch.maximum(target.max(), pred.max())]
            ).tolist()
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"labels/predictions must lie in [0, {c}) or equal ignore_index={self.ignore_index}; "
                    f"found values in [{lo}, {hi}]"
                )
        return pred, target, image, n_images

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts into this matrix (in place); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix.to(self.matrix.device)
        self.image_stats += other.image_stats.to(self.image_stats.device)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(
            self.num_classes, self.ignore_index, device=self.matrix.device, per_image=self.per_image
        )
        out.matrix = self.matrix.clone()
        out.image_stats = self.image_stats.clone()
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

    def per_image_miou(self) -> float:
        """Mean over images of each image's mIoU (module docstring); NaN if no image was counted.

        Only accumulated with ``per_image=True``.
        """
        if not self.per_image:
            raise ValueError("per-image mIoU needs ConfusionMatrix(..., per_image=True)")
        total, n = self.image_stats.detach().cpu().tolist()
        return total / n if n else math.nan

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels; NaN if nothing was counted."""
        total = int(self.matrix.sum())
        return float(int(self.matrix.diagonal().sum()) / total) if total else math.nan

    def compute(self) -> dict[str, float | list[float | None]]:
        """``{"miou": float, "pixel_acc": float, "per_class_iou": [float or None per class]}``.

        ``per_class_iou`` holds None for classes absent from both ground truth and prediction (so it
        serialises to JSON ``null``). With ``per_image=True`` also ``"per_image_miou": float``.
        """
        out: dict[str, float | list[float | None]] = {
            "miou": self.miou(),
            "pixel_acc": self.pixel_accuracy(),
            "per_class_iou": [None if math.isnan(v) else v for v in self.iou().tolist()],
        }
        if self.per_image:
            out["per_image_miou"] = self.per_image_miou()
        return out

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"
