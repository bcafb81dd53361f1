"""Distillation losses, feature adapters, alternation schedules and the combined objective.

See :mod:`kdseg.distill.logit_losses` for the losses at the logits site (``distill.logit_loss``),
:mod:`kdseg.distill.features` for the feature losses, :mod:`kdseg.distill.objective` for how the
terms combine and :mod:`kdseg.distill.schedule` for the alternation semantics.
"""

from kdseg.distill.adapters import FEATURE_SITES, FeatureAdapters, pair_indices
from kdseg.distill.entropy import softmax_entropy
from kdseg.distill.features import (
    FEATURE_LOSSES,
    cosine_loss,
    cwd_loss,
    get_feature_loss,
    mse_loss,
    register_feature_loss,
)
from kdseg.distill.hard import hard_loss
from kdseg.distill.logit_losses import (
    LOGIT_LOSSES,
    LogitPair,
    affinity_loss,
    dist_loss,
    get_logit_loss,
    register_logit_loss,
)
from kdseg.distill.objective import KDObjective
from kdseg.distill.schedule import ALTERNATIONS, Phase, alpha_at, phase_for
from kdseg.distill.soft import soft_kl

__all__ = [
    "ALTERNATIONS",
    "FEATURE_LOSSES",
    "FEATURE_SITES",
    "LOGIT_LOSSES",
    "FeatureAdapters",
    "KDObjective",
    "LogitPair",
    "Phase",
    "affinity_loss",
    "alpha_at",
    "cosine_loss",
    "cwd_loss",
    "dist_loss",
    "get_feature_loss",
    "get_logit_loss",
    "hard_loss",
    "mse_loss",
    "pair_indices",
    "phase_for",
    "register_feature_loss",
    "register_logit_loss",
    "soft_kl",
    "softmax_entropy",
]
