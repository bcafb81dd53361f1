"""Losses at the ``logits`` site, selected by ``distill.logit_loss``: ``kl``, ``dist``, ``affinity``.

Each is registered in :data:`LOGIT_LOSSES` with :func:`register_logit_loss` and called as
``fn(pair, **options)`` with a :class:`LogitPair` (the learning network's logits and its detached
target's) and the options read from the config (``register_logit_loss(name, kw="config_key")``).
With ``T`` the temperature, ``p = softmax(target / T)`` and ``q = softmax(learner / T)`` over the
classes of [B, C, H, W] logits, and the ``P = B * H * W`` pixels as the samples:

- ``kl``: ``T^2 * mean_i sum_c p_ic log(p_ic / q_ic)`` (:func:`~kdseg.distill.soft.soft_kl`).
- ``dist`` (DIST, Huang et al., NeurIPS 2022): ``T^2 * (beta * inter + gamma * intra)`` with
  ``inter = mean_i (1 - r(q_i., p_i.))`` (each pixel's class vector) and
  ``intra = mean_c (1 - r(q_.c, p_.c))`` (each class's vector over all pixels of the batch), where
  ``r(a, b) = <a - mean(a), b - mean(b)> / (|a - mean(a)| |b - mean(b)| + 1e-8)`` is the Pearson
  correlation. The official code's form (hunto/DIST_KD: ``T^2`` from its classification loss, pixels
  as samples from its segmentation loss, which uses ``T = 1``).
- ``affinity`` (pair-wise distillation, Liu et al., CVPR 2019): :func:`affinity_loss` of the logit
  maps. Independent of ``T`` (cosine similarities do not change when logits are scaled).

``mask`` (``distill.kd_ignore_index``): [B, H, W] bool, True where a pixel counts. ``kl`` and
``inter`` average over the counted pixels, ``intra`` correlates over them only, ``affinity`` pools
them only. Everything is computed in float32; where no pixel counts the loss is a differentiable 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kdseg.distill.registry import LOGIT_LOSSES, register_logit_loss
from kdseg.distill.soft import kl_from_log_probs, log_probs, masked_mean

SoftPair = tuple[Tensor, Tensor]  # (log_softmax(x / T), softmax(x / T)) over the classes


class LogitPair:
    """The logits a logit-site loss compares: ``learner`` learns from the detached ``target``.

    The learner's logits are resized bilinearly to the target's spatial size when they differ.
    :meth:`learner_soft` / :meth:`target_soft` give ``(log_softmax(x / T), softmax(x / T))``, each
    computed once; the objective may hand in ones it has already computed (``learner_soft=`` /
    ``target_soft=``: callables returning that pair) to share them with other terms. The target's
    are returned detached.
    """

    def __init__(
        self,
        learner: Tensor,
        target: Tensor,
        temperature: float,
        mask: Tensor | None = None,
        learner_soft: Callable[[], SoftPair] | None = None,
        target_soft: Callable[[], SoftPair] | None = None,
    ) -> None:
        if learner.shape[1] != target.shape[1]:
            raise ValueError(
                f"logit loss: the learner has {learner.shape[1]} classes, its target {target.shape[1]}"
            )
        if learner.shape[2:] != target.shape[2:]:
            learner = F.interpolate(learner, size=target.shape[2:], mode="bilinear", align_corners=False)
            learner_soft = None
        if mask is not None and mask.shape != (target.shape[0], *target.shape[2:]):
            raise ValueError(
                f"logit loss: mask {tuple(mask.shape)} does not match logits {tuple(target.shape)}"
            )
        self.learner, self.target = learner, target.detach()
        self.temperature = float(temperature)
        self.mask = mask
        self._learner_soft, self._target_soft = learner_soft, target_soft
        self._ls: SoftPair | None = None
        self._ts: SoftPair | None = None

    def learner_soft(self) -> SoftPair:
        if self._ls is None:
            self._ls = self._learner_soft() if self._learner_soft else _soft(self.learner, self.temperature)
        return self._ls

    def target_soft(self) -> SoftPair:
        if self._ts is None:
            pair = self._target_soft() if self._target_soft else _soft(self.target, self.temperature)
            self._ts = (pair[0].detach(), pair[1].detach())
        return self._ts


def _soft(logits: Tensor, temperature: float) -> SoftPair:
    lp = log_probs(logits, temperature)
    return lp, lp.exp()


def get_logit_loss(name: str) -> Callable[..., Tensor]:
    """The logit loss registered as ``name``; a ValueError listing the known names otherwise."""
    return LOGIT_LOSSES.get_loss(name)


# ------------------------------------------------------------------------------------------ kl


@register_logit_loss("kl")
def kl_logit_loss(pair: LogitPair) -> Tensor:
    """``T^2 * KL(p || q)`` per pixel, summed over classes, averaged over the (counted) pixels."""
    log_q, _ = pair.learner_soft()
    log_p, p = pair.target_soft()
    return kl_from_log_probs(log_p, log_q, pair.temperature, p, mask=pair.mask)


# ---------------------------------------------------------------------------------------- dist


def pearson(a: Tensor, b: Tensor, dim: int, weight: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``: cosine similarity of the centred vectors.

    ``weight`` (0/1, broadcastable to ``a``): only the entries with weight 1 take part (the mean is
    theirs and the others are zeroed after centring), as if the others were not there.
    """
    if weight is None:
        a = a - a.mean(dim, keepdim=True)
        b = b - b.mean(dim, keepdim=True)
    else:
        n = weight.sum(dim, keepdim=True).clamp_min(1.0)
        a = (a - (a * weight).sum(dim, keepdim=True) / n) * weight
        b = (b - (b * weight).sum(dim, keepdim=True) / n) * weight
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


@register_logit_loss("dist", beta="dist_beta", gamma="dist_gamma")
def dist_loss(pair: LogitPair, beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """DIST: ``T^2 * (beta * inter + gamma * intra)`` (module docstring), pixels as the samples."""
    _, q = pair.learner_soft()
    _, p = pair.target_soft()
    c = q.shape[1]
    q = q.transpose(0, 1).reshape(c, -1)  # [C, P]
    p = p.transpose(0, 1).reshape(c, -1)
    mask = None if pair.mask is None else pair.mask.reshape(1, -1)
    inter = masked_mean(1.0 - pearson(q, p, dim=0), None if mask is None else mask[0])
    if mask is None:
        intra = (1.0 - pearson(q, p, dim=1)).mean()
    else:
        w = mask.to(q.dtype)
        intra = (1.0 - pearson(q, p, dim=1, weight=w)).mean() * (w.sum() > 0)  # 0 when nothing counts
    t = pair.temperature
    return (beta * inter + gamma * intra) * (t * t)


# ------------------------------------------------------------------------------------ affinity


def pooled_affinity(x: Tensor, grid: int, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Cosine similarities between all pairs of cells of ``x`` [B, C, H, W] max-pooled to a grid.

    The map is max-pooled (adaptively) to ``min(grid, H) x min(grid, W)`` cells, each cell's
    C-vector is L2-normalised, and ``A[b, i, j] = <f_bi, f_bj>`` over the ``L`` cells: [B, L, L].
    With ``mask`` [B, H, W] only the counted pixels are pooled; the second value is then the [B, L]
    bool of the cells holding at least one (a cell without one gets a zero vector), else None.
    """
    x = x.float()
    size = (min(grid, x.shape[2]), min(grid, x.shape[3]))
    cells = None
    if mask is not None:
        m = mask[:, None].to(x.dtype)
        x = x.masked_fill(~mask[:, None], float("-inf"))
        cells = F.adaptive_max_pool2d(m, size) > 0  # [B, 1, h, w]
    f = F.adaptive_max_pool2d(x, size)
    if cells is not None:
        f = torch.where(cells, f, torch.zeros((), dtype=f.dtype, device=f.device))
        cells = cells.flatten(1)
    f = F.normalize(f.flatten(2), p=2, dim=1, eps=1e-8)  # [B, C, L]
    return f.transpose(1, 2) @ f, cells


def affinity_loss(student: Tensor, teacher: Tensor, grid: int = 16, mask: Tensor | None = None) -> Tensor:
    """Pair-wise distillation: ``mean_{b,i,j} (A_s[b, i, j] - A_t[b, i, j])^2`` (:func:`pooled_affinity`).

    ``student`` and ``teacher`` [B, C, H, W] need the same batch and spatial size, not the same C.
    With ``mask``, the mean is over the pairs of cells that both hold a counted pixel.
    """
    if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            f"affinity loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
            "need the same batch and spatial size"
        )
    a_s, cells = pooled_affinity(student, grid, mask)
    a_t, _ = pooled_affinity(teacher, grid, mask)
    sq = (a_s - a_t) ** 2
    if cells is None:
        return sq.mean()
    return masked_mean(sq, cells[:, :, None] & cells[:, None, :])


@register_logit_loss("affinity", grid="affinity_grid")
def affinity_logit_loss(pair: LogitPair, grid: int = 16) -> Tensor:
    """:func:`affinity_loss` of the learner's and the target's logit maps (no temperature)."""
    return affinity_loss(pair.learner, pair.target, grid, pair.mask)
