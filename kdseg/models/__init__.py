"""Networks for kdseg: smp models, torchvision's FCN-ResNet50 and the lightweight UNet student.

Public API: :func:`build_model`, :func:`count_params`, :class:`FeatureTaps`,
:func:`feature_shapes`, :class:`LightweightUNet`; :data:`~kdseg.models.registry.ARCHS` for
architectures of our own. The names load on first use, so ``kdseg.models.registry`` (which the
config imports) stays free of torch.
"""

from kdseg.registry import lazy_exports

_HOMES = {
    "ARCHS": "registry",
    "register_arch": "registry",
    "FCNResNet50": "fcn",
    "FeatureTaps": "taps",
    "LightweightUNet": "lightweight_unet",
    "build_model": "factory",
    "count_params": "factory",
    "encoder_of": "factory",
    "feature_shapes": "taps",
    "load_model_checkpoint": "pretrained",
    "load_encoder_weights": "pretrained",
    "tap_modules": "taps",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

__all__ = sorted(_HOMES)  # noqa: PLE0605
