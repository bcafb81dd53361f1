"""The two loss registries (as torchdistill's ``register_*_loss``), importable without torch.

:data:`LOGIT_LOSSES` (``distill.logit_loss``) is filled by ``@register_logit_loss`` in
:mod:`kdseg.distill.logit_losses`, :data:`FEATURE_LOSSES` (``distill.feature_loss``) by
``@register_feature_loss`` in :mod:`kdseg.distill.features`. ``register(name, **options)``: ``options``
maps the loss's keyword arguments to :class:`~kdseg.config.DistillConfig` keys
(``register_logit_loss("dist", beta="dist_beta")``), so the objective passes ``beta=cfg.dist_beta``
without a second table. The config checks names with :meth:`~kdseg.registry.LazyRegistry.names`,
which reads them without importing torch; the losses themselves load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdseg.registry import LazyRegistry


class LossRegistry(LazyRegistry):
    """``{name: loss}``, plus ``options[name]``: ``{keyword: config key}``."""

    def __init__(self, kind: str, home: str | None = None, decorator: str = "") -> None:
        super().__init__(f"{kind} loss", (home,) if home else (), decorator)

    def get_loss(self, name: str) -> Callable[..., Any]:
        """The loss registered as ``name``; a ValueError listing the known names otherwise."""
        return self.lookup(name)

    def config_kwargs(self, name: str, cfg: Any) -> dict[str, Any]:
        """The keyword arguments of loss ``name`` read from ``cfg`` (a DistillConfig)."""
        self.get_loss(name)
        return {kw: getattr(cfg, key) for kw, key in self.options[name].items()}


LOGIT_LOSSES = LossRegistry("logit", "kdseg.distill.logit_losses", "register_logit_loss")
FEATURE_LOSSES = LossRegistry("feature", "kdseg.distill.features", "register_feature_loss")
register_logit_loss = LOGIT_LOSSES.register
register_feature_loss = FEATURE_LOSSES.register
