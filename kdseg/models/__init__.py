"""Networks for kdseg: smp models, torchvision's FCN-ResNet50 and the lightweight UNet student.

Public API: :func:`build_model`, :func:`count_params`, :class:`FeatureTaps`,
:func:`feature_shapes`, :class:`LightweightUNet`.
"""

from kdseg.models.factory import build_model, count_params, encoder_of
from kdseg.models.fcn import FCNResNet50
from kdseg.models.lightweight_unet import LightweightUNet
from kdseg.models.pretrained import load_checkpoint, load_encoder_weights
from kdseg.models.taps import FeatureTaps, feature_shapes, tap_modules

__all__ = [
    "FCNResNet50",
    "FeatureTaps",
    "LightweightUNet",
    "build_model",
    "count_params",
    "encoder_of",
    "feature_shapes",
    "load_checkpoint",
    "load_encoder_weights",
    "tap_modules",
]
