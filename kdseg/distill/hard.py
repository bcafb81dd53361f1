"""The hard loss: pixel-wise cross-entropy against the ground-truth labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hard_loss(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of ``logits`` [B, C, H, W] against ``target`` [B, H, W], ignoring ``ignore_index``.

    The mean is over the labelled pixels, weighted as :func:`torch.nn.functional.cross_entropy` does
    (``sum_i w[y_i] * l_i / sum_i w[y_i]``) when ``class_weights`` [C] is given. If every pixel is
    ignored the loss is a zero that still carries a gradient (never NaN), so a batch of unlabelled
    crops does not poison training. Logits whose spatial size differs from the target's are resized
    bilinearly to it. Computed in float32 whatever the input precision.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()
    target = target.long()
    weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=logits.dtype)
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum().to(total.dtype)
    else:
        denom = (weight[target.masked_fill(~valid, 0)] * valid).sum()
    # No host sync: an all-ignored batch gives 0 / eps = 0 with a (zero) gradient.
    return total / denom.clamp_min(torch.finfo(total.dtype).tiny)
