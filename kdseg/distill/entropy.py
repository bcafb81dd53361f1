"""Entropy of predicted class distributions (the teacher-entropy regulariser)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def softmax_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over pixels of the entropy (in nats) of ``softmax(logits / T)`` over dim 1 (classes).

    Uniform logits give ``log(C)``; confident one-hot-like logits give about 0.
    """
    return entropy_from_log_probs(F.log_softmax(logits.float() / float(temperature), dim=1))


def entropy_from_log_probs(log_p: Tensor, p: Tensor | None = None) -> Tensor:
    """:func:`softmax_entropy` from ``log_p = log_softmax(logits / T)`` (and ``p = log_p.exp()``, if known)."""
    if p is None:
        p = log_p.exp()
    return -(p * log_p).sum(dim=1).mean()
