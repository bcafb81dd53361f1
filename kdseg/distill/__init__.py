"""Distillation losses, feature adapters, alternation schedules and the combined objective.

See :mod:`kdseg.distill.logit_losses` for the losses at the logits site (``distill.logit_loss``),
:mod:`kdseg.distill.features` for the feature losses, :mod:`kdseg.distill.registry` for the two loss
registries, :mod:`kdseg.distill.objective` for how the terms combine and :mod:`kdseg.distill.schedule`
for the alternation semantics. The names below load on first use, so ``kdseg.distill.registry``
(which the config imports) stays free of torch.
"""

from kdseg.registry import lazy_exports

_HOMES = {
    "FEATURE_SITES": "adapters",
    "FeatureAdapters": "adapters",
    "pair_indices": "adapters",
    "softmax_entropy": "entropy",
    "FEATURE_LOSSES": "features",
    "cosine_loss": "features",
    "cwd_loss": "features",
    "get_feature_loss": "features",
    "mse_loss": "features",
    "register_feature_loss": "registry",
    "hard_loss": "hard",
    "LOGIT_LOSSES": "logit_losses",
    "LogitPair": "logit_losses",
    "affinity_loss": "logit_losses",
    "dist_loss": "logit_losses",
    "get_logit_loss": "logit_losses",
    "register_logit_loss": "registry",
    "KDObjective": "objective",
    "ALTERNATIONS": "schedule",
    "Phase": "schedule",
    "alpha_at": "schedule",
    "phase_for": "schedule",
    "soft_kl": "soft",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

__all__ = sorted(_HOMES)  # noqa: PLE0605
