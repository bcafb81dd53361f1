"""torchvision's FCN-ResNet50 as a plain module whose ``forward`` returns the logits tensor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.registry import register_arch
from kdseg.models.taps import torchvision_taps

if TYPE_CHECKING:
    from kdseg.config import ModelConfig

__all__ = ["FCNResNet50", "build_fcn", "build_fcn_resnet50"]


class FCNResNet50(nn.Module):
    """torchvision ``fcn_resnet50`` (no auxiliary head) returning ``[B, C, H, W]`` logits.

    The submodules keep torchvision's names (``backbone`` = ResNet-50 with dilated layer3/layer4,
    output stride 8; ``classifier`` = ``FCNHead``), so the state dict is the same as
    torchvision's ``fcn_resnet50(aux_loss=False)``.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.backbone(x)["out"]
        x = self.classifier(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def build_fcn_resnet50(num_classes: int, imagenet_backbone: bool = False) -> FCNResNet50:
    """Build the model; ``imagenet_backbone`` downloads torchvision's ImageNet ResNet-50 weights."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.segmentation import fcn_resnet50

    net = fcn_resnet50(
        weights=None,
        weights_backbone=ResNet50_Weights.IMAGENET1K_V1 if imagenet_backbone else None,
        num_classes=num_classes,
        aux_loss=False,
    )
    return FCNResNet50(net.backbone, net.classifier)


@register_arch(
    "fcn_resnet50",
    model_type=FCNResNet50,
    taps=torchvision_taps,
    encoder="backbone",
    weights_label="resnet50 (fcn_resnet50)",
)
def build_fcn(cfg: ModelConfig, num_classes: int) -> FCNResNet50:
    """``arch: fcn_resnet50``: ``weights: imagenet`` downloads torchvision's ImageNet ResNet-50."""
    return build_fcn_resnet50(num_classes, imagenet_backbone=cfg.weights == "imagenet")
