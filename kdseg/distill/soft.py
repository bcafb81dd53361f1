"""The soft loss: temperature-scaled KL divergence between teacher and student class distributions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-pixel ``KL(p_T || q_T)``, summed over classes, averaged over pixels, times ``T**2``.

    ``p_T = softmax(teacher_logits / T)`` and ``q_T = softmax(student_logits / T)`` over dim 1 (the
    classes) of [B, C, H, W] tensors (any number of trailing dims works). The average is over the
    ``B * H * W`` pixels only; this is *not* ``KLDivLoss(reduction="mean")``, which also divides by
    the number of classes. The ``T**2`` factor keeps the gradient scale independent of ``T``
    (Hinton et al., 2015).

    If the spatial sizes differ, the student's logits are resized bilinearly to the teacher's.
    Nothing is detached here: the caller decides which side learns (``online``: pass the teacher
    detached; ``mutual``: the teacher's term passes the student detached). Computed in float32 with
    ``log_softmax`` for stability.
    """
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(
            f"soft_kl: student has {student_logits.shape[1]} classes, teacher {teacher_logits.shape[1]}"
        )
    if student_logits.shape[2:] != teacher_logits.shape[2:]:
        student_logits = F.interpolate(
            student_logits, size=teacher_logits.shape[2:], mode="bilinear", align_corners=False
        )
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=1)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # [B, H, W]
    return kl.mean() * (t * t)
