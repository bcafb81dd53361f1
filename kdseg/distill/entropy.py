"""Entropy of predicted class distributions (the teacher-entropy regulariser)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def softmax_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over pixels of the entropy (in nats) of ``softmax(logits / T)`` over dim 1 (classes).

    Uniform logits give ``log(C)``; confident one-hot-like logits give about 0.
    """
    log_p = F.log_softmax(logits.float() / float(temperature), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()
