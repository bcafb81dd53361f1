"""Feature losses between a student feature map and a teacher feature map.

Every loss takes ``(student, teacher)`` tensors of the same shape [B, C, H, W]; the student feature
has already been mapped to the teacher's channels and size by
:class:`~kdseg.distill.adapters.FeatureAdapters`. Nothing is detached here. All are computed in
float32.

- ``mse``: mean squared error over every element.
- ``cosine``: ``1 - cos(s, t)`` of the channel vectors at each pixel, averaged over B*H*W.
- ``cwd``: channel-wise distillation (Shu et al., ICCV 2021). Each channel's map is turned into a
  distribution over its H*W locations, ``softmax(x / tau)``; the loss is
  ``tau**2 * KL(teacher || student)`` summed over locations and averaged over channels and batch
  (the normalisation of the reference implementation in mmrazor). ``tau`` is
  ``distill.cwd_temperature`` (default 1.0, the reference default for intermediate features).
- ``affinity``: pair-wise distillation (Liu et al., CVPR 2019),
  :func:`~kdseg.distill.logit_losses.affinity_loss` with ``grid = distill.affinity_grid``.

The losses are registered in :data:`~kdseg.distill.registry.FEATURE_LOSSES` with the config keys of
their options; ``distill.feature_loss`` accepts every registered name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from kdseg.distill.logit_losses import affinity_loss
from kdseg.distill.registry import FEATURE_LOSSES, register_feature_loss


def _check(student: Tensor, teacher: Tensor, name: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{name} feature loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
            "must have the same shape (adapt the student first)"
        )


@register_feature_loss("mse")
def mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error over all elements."""
    _check(student, teacher, "mse")
    return F.mse_loss(student.float(), teacher.float())


@register_feature_loss("cosine")
def cosine_loss(student: Tensor, teacher: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cosine similarity`` along the channel dim (1), averaged over every other position."""
    _check(student, teacher, "cosine")
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=1, eps=eps)).mean()


@register_feature_loss("cwd", tau="cwd_temperature")
def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """Channel-wise distillation: per-channel spatial-softmax KL(teacher || student), times ``tau**2``.

    With ``N = B * C`` channel maps of ``L = H * W`` locations,
    ``loss = tau**2 / N * sum_n sum_l p_nl * (log p_nl - log q_nl)`` where
    ``p_n = softmax(teacher_n / tau)`` and ``q_n = softmax(student_n / tau)`` over the locations.
    """
    _check(student, teacher, "cwd")
    if student.dim() < 3:
        raise ValueError(f"cwd feature loss needs [B, C, ...] maps, got shape {tuple(student.shape)}")
    b, c = student.shape[:2]
    s = student.float().reshape(b * c, -1) / tau
    t = teacher.float().reshape(b * c, -1) / tau
    log_p = F.log_softmax(t, dim=1)
    log_q = F.log_softmax(s, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # [B*C]
    return kl.mean() * (tau * tau)


@register_feature_loss("affinity", grid="affinity_grid")
def affinity_feature_loss(student: Tensor, teacher: Tensor, grid: int = 16) -> Tensor:
    """Pair-wise distillation of the feature maps (:func:`~kdseg.distill.logit_losses.affinity_loss`)."""
    _check(student, teacher, "affinity")
    return affinity_loss(student, teacher, grid)


FeatureLoss = Callable[..., Tensor]


def get_feature_loss(name: str) -> FeatureLoss:
    """The feature loss registered as ``name``; a ValueError listing the known names otherwise."""
    return FEATURE_LOSSES.get_loss(name)
