"""The distillation objective: the student's and the teacher's losses, built from ``DistillConfig``.

Student loss (``student_loss``), with ``CE`` the hard cross-entropy, ``KL`` the logit-site loss
``distill.logit_loss`` (:mod:`kdseg.distill.logit_losses`; ``kl`` is :func:`soft_kl`) against the
*detached* teacher logits, and ``F`` the feature loss of the adapted student features against the
*detached* teacher features::

    L_s = w_hard * CE + w_distill * (alpha * KL  +  feature_weight * F)

- ``KL`` is present only when ``"logits"`` is in ``distill.sites``; ``F`` only when a feature site
  (``encoder``, ``bottleneck``, ``decoder``) is. ``F`` is the mean over the configured feature sites
  of the mean over that site's paired tensors (so each site weighs the same, whatever its number of
  stages; see :mod:`kdseg.distill.adapters` for the pairing).
- Combined step (``phase.student_hard and phase.student_distill``, e.g. ``alternation: none``):
  ``w_distill = 1`` and ``w_hard = 1 - alpha`` if ``"logits"`` is a site, else ``1``.
- Hard-only step (alternation): ``w_hard = 1``, ``w_distill = 0`` (plain CE, no ``1 - alpha``).
- Distillation-only step (alternation): ``w_hard = 0``, ``w_distill = 1`` (``alpha * KL +
  feature_weight * F``).
- Neither (the teacher's step of ``teacher_student``): a zero loss that is still differentiable.
- ``mode: none``: ``CE`` only, whatever the phase and sites; no teacher inputs are needed.

Teacher loss (``teacher_loss``)::

    L_t = CE(t) [+ alpha * KL(student.detach() || teacher) if mode == "mutual"] - beta * H_T(t)

where the mutual term is the same logit-site loss with the roles swapped, e.g.
``soft_kl(t_logits, s_logits.detach(), T)`` (Deep Mutual Learning: the teacher also imitates the
student) and ``H_T`` is :func:`softmax_entropy` at temperature ``T``,
``beta = distill.teacher_entropy`` (a positive beta rewards softer teacher outputs).

Both return ``(loss, parts)``; ``parts`` holds plain floats of the *unweighted* components and the
weighted ``total``: student ``hard, soft, feature, total``; teacher ``hard, soft, entropy, total``
(components not computed this step are 0.0).

With ``distill.kd_ignore_index`` the logit-site terms (student's and mutual) leave out the pixels
whose label is ``ignore_index`` (the labels resized to the logits by nearest neighbour when the
sizes differ); CE always does, the feature terms and the entropy never do.

The feature adapters live in ``self.adapters`` (an empty module when no feature site is used), so
``objective.parameters()`` belongs in the student's optimiser; they are not student parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # kdseg.config imports the loss registries of this package: no import at run time
    from kdseg.config import DistillConfig
from kdseg.distill.adapters import FEATURE_SITES, FeatureAdapters, Shapes
from kdseg.distill.entropy import entropy_from_log_probs, softmax_entropy
from kdseg.distill.features import FEATURE_LOSSES
from kdseg.distill.hard import hard_loss
from kdseg.distill.logit_losses import LOGIT_LOSSES, LogitPair
from kdseg.distill.schedule import Phase
from kdseg.distill.soft import log_probs

Features = Mapping[str, Sequence[Tensor] | Tensor]

FULL_PHASE = Phase(update_teacher=True, update_student=True, student_hard=True, student_distill=True)


def _as_list(feats: Features | None, site: str, who: str) -> list[Tensor]:
    if feats is None or site not in feats:
        raise ValueError(f"student_loss: {who} features for site {site!r} are missing")
    value = feats[site]
    return [value] if isinstance(value, Tensor) else list(value)


def _floats(parts: dict[str, Tensor | float]) -> dict[str, float]:
    # One host sync for all components.
    keys = list(parts)
    tensors = [
        v.detach().float().reshape(()) if isinstance(v, Tensor) else torch.tensor(float(v))
        for v in parts.values()
    ]
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    values = torch.stack([t.to(device) for t in tensors]).tolist()
    return dict(zip(keys, values, strict=True))


class _SoftTerms:
    """One batch's ``log_softmax(logits / T)`` (and its ``exp``) per network, each computed once.

    The student's logit loss (``kl``, ``dist``), the teacher's mutual term and its entropy all need
    the same temperature-softened distributions; :meth:`KDObjective.step_loss` shares them through
    this (lazily: ``affinity`` needs none). ``teacher_grad``: the teacher's are kept differentiable
    (its own loss uses them); the student's term then reads them detached, which gives the same
    values and gradients as computing them again.
    """

    def __init__(self, s_logits: Tensor, t_logits: Tensor | None, temperature: float, teacher_grad: bool):
        self.s_logits, self.t_logits = s_logits, t_logits
        self.temperature = temperature
        self.teacher_grad = teacher_grad
        self._s: tuple[Tensor, Tensor] | None = None
        self._t: tuple[Tensor, Tensor] | None = None

    def student(self) -> tuple[Tensor, Tensor]:
        if self._s is None:
            lp = log_probs(self.s_logits, self.temperature)
            self._s = (lp, lp.exp())
        return self._s

    def teacher(self) -> tuple[Tensor, Tensor]:
        if self._t is None:
            assert self.t_logits is not None
            t = self.t_logits if self.teacher_grad else self.t_logits.detach()
            lp = log_probs(t, self.temperature)
            self._t = (lp, lp.exp())
        return self._t

    def same_size(self) -> bool:
        return self.t_logits is not None and self.s_logits.shape == self.t_logits.shape


class KDObjective(nn.Module):
    """Student and teacher losses for one :class:`~kdseg.config.DistillConfig`.

    ``student_shapes`` / ``teacher_shapes`` (``{site: [(C, H, W), ...]}``, from
    ``kdseg.models.feature_shapes``) are required when ``cfg.sites`` names a feature site and the
    mode has a teacher. ``class_weights`` [num_classes] weights the cross-entropy of both networks.
    The losses' options come from ``cfg`` (``cwd_temperature``, ``dist_beta``, ...: the registries'
    option keys); ``feature_loss_kwargs`` override the feature loss's (e.g. ``{"tau": 2.0}`` for ``cwd``).
    """

    def __init__(
        self,
        cfg: DistillConfig,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: Tensor | None = None,
        student_shapes: Shapes | None = None,
        teacher_shapes: Shapes | None = None,
        feature_loss_kwargs: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.mode = cfg.mode
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.temperature = float(cfg.temperature)
        self.alpha = float(cfg.alpha)
        self.feature_weight = float(cfg.feature_weight)
        self.teacher_entropy = float(cfg.teacher_entropy)
        self.uses_teacher = cfg.mode != "none"
        self.distills_logits = self.uses_teacher and "logits" in cfg.sites
        self.feature_sites: tuple[str, ...] = (
            tuple(s for s in cfg.sites if s in FEATURE_SITES) if self.uses_teacher else ()
        )
        self.feature_loss = FEATURE_LOSSES.get_loss(cfg.feature_loss)
        self.feature_loss_kwargs = {
            **FEATURE_LOSSES.config_kwargs(cfg.feature_loss, cfg),
            **dict(feature_loss_kwargs or {}),
        }
        self.logit_loss = LOGIT_LOSSES.get_loss(cfg.logit_loss)
        self.logit_loss_kwargs = LOGIT_LOSSES.config_kwargs(cfg.logit_loss, cfg)
        self.kd_ignore_index = bool(cfg.kd_ignore_index)
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
            if class_weights.numel() != self.num_classes:
                raise ValueError(
                    f"class_weights has {class_weights.numel()} entries; expected num_classes={num_classes}"
                )
        self.register_buffer("class_weights", class_weights, persistent=False)
        if self.feature_sites:
            if student_shapes is None or teacher_shapes is None:
                raise ValueError(
                    f"distill.sites {list(self.feature_sites)} need student_shapes and teacher_shapes "
                    "(kdseg.models.feature_shapes) to build the feature adapters"
                )
            self.adapters: nn.Module = FeatureAdapters(student_shapes, teacher_shapes, self.feature_sites)
        else:
            self.adapters = nn.Module()

    # ------------------------------------------------------------------------------------ helpers

    def _ce(self, logits: Tensor, target: Tensor) -> Tensor:
        return hard_loss(logits, target, self.ignore_index, self.class_weights)

    def _kd_mask(self, target: Tensor, logits: Tensor) -> Tensor | None:
        """The pixels the logit-site losses count, at ``logits``' size; None: all of them."""
        if not self.kd_ignore_index:
            return None
        valid = target != self.ignore_index
        if valid.shape[-2:] != logits.shape[-2:]:
            valid = F.interpolate(valid[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0] > 0.5
        return valid

    def _logit_term(
        self,
        learner: Tensor,
        target_logits: Tensor,
        target: Tensor,
        learner_soft=None,
        target_soft=None,
    ) -> Tensor:
        """``distill.logit_loss`` of ``learner`` against the detached ``target_logits``."""
        pair = LogitPair(
            learner,
            target_logits,
            self.temperature,
            self._kd_mask(target, target_logits),
            learner_soft=learner_soft,
            target_soft=target_soft,
        )
        return self.logit_loss(pair, **self.logit_loss_kwargs)

    def _features(self, s_feats: Features | None, t_feats: Features | None) -> Tensor:
        assert isinstance(self.adapters, FeatureAdapters)
        per_site = []
        for site in self.feature_sites:
            s_list = _as_list(s_feats, site, "student")
            t_list = _as_list(t_feats, site, "teacher")
            n_s, n_t = len(self.adapters.student_shapes[site]), len(self.adapters.teacher_shapes[site])
            if len(s_list) != n_s or len(t_list) != n_t:
                raise ValueError(
                    f"student_loss: site {site!r} got {len(s_list)} student and {len(t_list)} teacher "
                    f"tensors; the adapters were built for {n_s} and {n_t}"
                )
            losses = []
            for k, (i, j) in enumerate(self.adapters.pairs(site)):
                t = t_list[j].detach()
                s = self.adapters(site, k, s_list[i], t)
                losses.append(self.feature_loss(s, t, **self.feature_loss_kwargs))
            per_site.append(torch.stack(losses).mean())
        return torch.stack(per_site).mean()

    # ------------------------------------------------------------------------------------- losses

    def student_loss(
        self,
        s_logits: Tensor,
        s_feats: Features | None,
        t_logits: Tensor | None,
        t_feats: Features | None,
        target: Tensor,
        phase: Phase | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The student's loss for one batch (module docstring); teacher inputs are detached here.

        ``phase`` defaults to the combined phase (``alternation: none``). ``t_logits`` / ``t_feats``
        may be None with ``mode: none`` or when the phase has no distillation term.
        """
        loss, parts = self._student_loss(s_logits, s_feats, t_logits, t_feats, target, phase, None)
        return loss, _floats(parts)

    def _student_loss(
        self,
        s_logits: Tensor,
        s_feats: Features | None,
        t_logits: Tensor | None,
        t_feats: Features | None,
        target: Tensor,
        phase: Phase | None,
        soft_terms: _SoftTerms | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        phase = phase or FULL_PHASE
        zero = s_logits.float().sum() * 0.0 + 0.0  # differentiable +0.0 on the right device
        hard_on = phase.student_hard or not self.uses_teacher
        distill_on = phase.student_distill and self.uses_teacher
        has_distill_terms = self.distills_logits or bool(self.feature_sites)
        if hard_on and distill_on and self.distills_logits:
            w_hard = 1.0 - self.alpha
        else:
            w_hard = 1.0

        hard = soft = feat = zero
        total = zero
        if hard_on:
            hard = self._ce(s_logits, target)
            total = total + w_hard * hard
        if distill_on and has_distill_terms:
            if self.distills_logits:
                if t_logits is None:
                    raise ValueError("student_loss: teacher logits are needed to distil at site 'logits'")
                if soft_terms is not None and soft_terms.same_size():
                    soft = self._logit_term(
                        s_logits, t_logits, target, soft_terms.student, soft_terms.teacher
                    )
                else:
                    soft = self._logit_term(s_logits, t_logits, target)
                total = total + self.alpha * soft
            if self.feature_sites:
                feat = self._features(s_feats, t_feats)
                total = total + self.feature_weight * feat
        return total, {"hard": hard, "soft": soft, "feature": feat, "total": total}

    def teacher_loss(
        self,
        t_logits: Tensor,
        target: Tensor,
        s_logits: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The teacher's loss: CE (+ alpha * KL to the detached student if mutual) - beta * entropy."""
        loss, parts = self._teacher_loss(t_logits, target, s_logits, None)
        return loss, _floats(parts)

    def _teacher_loss(
        self, t_logits: Tensor, target: Tensor, s_logits: Tensor | None, soft_terms: _SoftTerms | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        shared = soft_terms is not None and soft_terms.same_size()
        zero = t_logits.float().sum() * 0.0 + 0.0
        hard = self._ce(t_logits, target)
        total = hard
        soft = entropy = zero
        if self.mode == "mutual":
            if s_logits is None:
                raise ValueError("teacher_loss: mode 'mutual' needs the student's logits (s_logits)")
            if shared:
                soft = self._logit_term(t_logits, s_logits, target, soft_terms.teacher, soft_terms.student)
            else:
                soft = self._logit_term(t_logits, s_logits, target)
            total = total + self.alpha * soft
        if self.teacher_entropy > 0.0:
            if shared:
                entropy = entropy_from_log_probs(*soft_terms.teacher())
            else:
                entropy = softmax_entropy(t_logits, self.temperature)
            total = total - self.teacher_entropy * entropy
        return total, {"hard": hard, "soft": soft, "entropy": entropy, "total": total}

    def step_loss(
        self,
        s_logits: Tensor,
        s_feats: Features | None,
        t_logits: Tensor | None,
        t_feats: Features | None,
        target: Tensor,
        phase: Phase | None = None,
        *,
        student_learns: bool = True,
        teacher_learns: bool = False,
    ) -> tuple[Tensor | None, dict[str, float]]:
        """Both losses of one training step, summed: what ``student_loss`` + ``teacher_loss`` give.

        Each network's ``log_softmax(logits / T)`` is computed once and shared by the student's KL,
        the teacher's mutual KL and its entropy term, and all parts reach the host in one sync.
        Returns ``(loss, parts)``: ``loss`` is None when neither network learns; ``parts`` holds the
        student's parts and the teacher's prefixed ``teacher_``.
        """
        phase = phase or FULL_PHASE
        teacher_learns = teacher_learns and t_logits is not None
        teacher_needs_soft = teacher_learns and (self.mode == "mutual" or self.teacher_entropy > 0.0)
        terms = _SoftTerms(s_logits, t_logits, self.temperature, teacher_grad=teacher_needs_soft)
        loss = None
        parts: dict[str, Tensor] = {}
        if student_learns:
            loss, parts = self._student_loss(s_logits, s_feats, t_logits, t_feats, target, phase, terms)
        if teacher_learns:
            assert t_logits is not None
            loss_t, parts_t = self._teacher_loss(t_logits, target, s_logits, terms)
            parts.update({f"teacher_{k}": v for k, v in parts_t.items()})
            loss = loss_t if loss is None else loss + loss_t
        return loss, (_floats(parts) if parts else {})

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, sites={list(self.cfg.sites)}, T={self.temperature}, alpha={self.alpha}, "
            f"logit_loss={self.cfg.logit_loss}, kd_ignore_index={self.kd_ignore_index}, "
            f"feature_loss={self.cfg.feature_loss}, feature_weight={self.feature_weight}, "
            f"teacher_entropy={self.teacher_entropy}"
        )
