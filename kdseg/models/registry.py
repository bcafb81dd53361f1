"""Architectures kdseg builds itself, by name (as smp's ``MODEL_ARCHITECTURES_MAPPING``).

``model.arch`` is either a name registered here or an smp architecture (``Unet``, ``FPN``, ...). An
architecture of our own is one module in ``kdseg/models/`` whose builder carries the decorator::

    @register_arch("lightweight_unet", model_type=LightweightUNet, taps=lightweight_unet_taps,
                   imagenet=False)
    def build_lightweight_unet(cfg: ModelConfig, num_classes: int) -> nn.Module: ...

Options: ``model_type`` (the class the builder returns: how a built model finds its entry), ``taps``
(``model -> {site: [TapPoint, ...]}``, see :mod:`kdseg.models.taps`), ``encoder`` (the attribute that
encoder weights files load into; default ``encoder``), ``imagenet`` (whether ``weights: imagenet``
exists) and ``weights_label`` (what a failed download names). Add the module to :data:`ARCHS`'s homes.
The names are read without importing torch (:class:`~kdseg.registry.LazyRegistry`), so the config
checks ``arch`` at once; the builders load on first use.
"""

from __future__ import annotations

from typing import Any

from kdseg.registry import LazyRegistry

ARCHS = LazyRegistry(
    "architecture", ("kdseg.models.lightweight_unet", "kdseg.models.fcn"), decorator="register_arch"
)
register_arch = ARCHS.register


def own_archs() -> tuple[str, ...]:
    """Names of the architectures kdseg builds itself (torch-free)."""
    return ARCHS.names()


def arch_of(model: Any) -> str | None:
    """The registered architecture ``model`` is an instance of, or None (an smp or foreign model)."""
    ARCHS.load()
    for name, opts in ARCHS.options.items():
        model_type = opts.get("model_type")
        if model_type is not None and isinstance(model, model_type):
            return name
    return None
