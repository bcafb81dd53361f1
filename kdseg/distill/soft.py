"""The soft loss: temperature-scaled KL divergence between teacher and student class distributions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """Per-pixel ``KL(p_T || q_T)``, summed over classes, averaged over pixels, times ``T**2``.

    ``p_T = softmax(teacher_logits / T)`` and ``q_T = softmax(student_logits / T)`` over dim 1 (the
    classes) of [B, C, H, W] tensors (any number of trailing dims works). The average is over the
    ``B * H * W`` pixels only; this is *not* ``KLDivLoss(reduction="mean")``, which also divides by
    the number of classes. The ``T**2`` factor keeps the gradient scale independent of ``T``
    (Hinton et al., 2015).

    If the spatial sizes differ, the student's logits are resized bilinearly to the teacher's.
    Nothing is detached here: the caller decides which side learns (``online``: pass the teacher
    detached; ``mutual``: the teacher's term passes the student detached). Computed in float32 with
    ``log_softmax`` for stability. ``mask`` [B, H, W] (bool, at the teacher's size): average over the
    pixels where it is True only (:func:`masked_mean`).
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
    return kl_from_log_probs(log_probs(teacher_logits, t), log_probs(student_logits, t), t, mask=mask)


def log_probs(logits: Tensor, temperature: float) -> Tensor:
    """``log_softmax(logits / T)`` over dim 1 (the classes), in float32."""
    return F.log_softmax(logits.float() / float(temperature), dim=1)


def kl_from_log_probs(
    log_p: Tensor, log_q: Tensor, temperature: float, p: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """:func:`soft_kl` from log-probabilities already computed by :func:`log_probs` (same shapes).

    ``log_p`` is the target (teacher) side, ``log_q`` the learning side; ``p`` may pass
    ``log_p.exp()`` when the caller has it already. Lets one batch's objective compute each
    ``log_softmax(logits / T)`` once and share it between terms (student KL, mutual KL, entropy).
    """
    t = float(temperature)
    if p is None:
        p = log_p.exp()
    kl = (p * (log_p - log_q)).sum(dim=1)  # [B, H, W]
    return masked_mean(kl, mask) * (t * t)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """``values.mean()``, or the mean over the entries where ``mask`` (same shape, bool) is True.

    No host sync: where the mask is all False the result is a zero that still carries a (zero)
    gradient, as for an all-ignored batch in :func:`~kdseg.distill.hard.hard_loss`.
    """
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)
