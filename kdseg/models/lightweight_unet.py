"""The lightweight student: a residual depthwise-separable UNet.

Layout (channels at ``width=1.0``; every count is multiplied by ``width`` and rounded to a
multiple of 8)::

    input ─► stage1 (64) ─► pool ─► stage2 (128) ─► pool ─► stage3 (256) ─► pool ─► bottleneck (256,
             │ skip1                │ skip2                 │ skip3                   dilations 2, 4,
             ▼                      ▼                       ▼                         dropout 0.5)
    head ◄─ up1 (64) ◄──────────── up2 (128) ◄───────────── up3 (256) ◄────────────────┘
    (1x1 conv, then bilinear resize to the input size)

Every stage and decoder block is a :class:`ResidualDSBlock` (two depthwise-separable 3x3 convs with
BatchNorm + ReLU and a residual connection); decoder blocks upsample with a 2x2 transposed conv and
concatenate the encoder skip before their residual block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from kdseg.models.registry import register_arch
from kdseg.models.taps import TapPoint, output_tap

if TYPE_CHECKING:
    from kdseg.config import ModelConfig

__all__ = ["LightweightUNet", "ResidualDSBlock", "DSConv", "scaled_channels"]


def scaled_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(channels * width / divisor + 0.5) * divisor)


class DSConv(nn.Sequential):
    """Depthwise 3x3 conv (optionally dilated) + pointwise 1x1 conv + BatchNorm (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                3,
                padding=dilation,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ResidualDSBlock(nn.Module):
    """``relu(DS(relu(DS(x))) [-> dropout between them] + shortcut(x))``.

    The shortcut is the identity when the channel count is unchanged, else a 1x1 conv + BatchNorm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: tuple[int, int] = (1, 1),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.conv1 = DSConv(in_channels, out_channels, dilations[0])
        self.act1 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = DSConv(out_channels, out_channels, dilations[1])
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.conv2(self.dropout(y))
        return self.act2(y + self.shortcut(x))


class EncoderStage(nn.Sequential):
    """``blocks`` residual depthwise-separable blocks at one resolution (pooling happens outside)."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int = 1):
        layers = [ResidualDSBlock(in_channels, out_channels)]
        layers += [ResidualDSBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        super().__init__(*layers)


class DecoderBlock(nn.Module):
    """2x2 transposed-conv upsampling, concatenation with the skip, residual DS block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.block = ResidualDSBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # inputs not divisible by 8
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class LightweightUNet(nn.Module):
    """Residual depthwise-separable UNet for distillation students.

    Args:
        num_classes: output channels of the 1x1 head.
        in_channels: image channels.
        width: width multiplier applied to every channel count (rounded to a multiple of 8).
        channels: encoder stage channels at ``width=1.0``.
        blocks_per_stage: residual blocks in each encoder stage.
        dilations: dilation rates of the bottleneck's two depthwise-separable convs.
        dropout: dropout (channel-wise) inside the bottleneck.

    Attributes used by :mod:`kdseg.models.taps`: ``encoder`` (one module per stage, outputs taken
    before pooling), ``bottleneck``, ``decoder`` (deepest block first; the last one's output is the
    ``decoder`` site) and ``head``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        channels: Sequence[int] = (64, 128, 256),
        blocks_per_stage: int = 1,
        dilations: tuple[int, int] = (2, 4),
        dropout: float = 0.5,
    ):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        chs = [scaled_channels(c, width) for c in channels]
        self.width = width
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(chs)

        stages, prev = [], in_channels
        for c in chs:
            stages.append(EncoderStage(prev, c, blocks_per_stage))
            prev = c
        self.encoder = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ResidualDSBlock(chs[-1], chs[-1], dilations=dilations, dropout=dropout)

        blocks, prev = [], chs[-1]
        for c in reversed(chs):
            blocks.append(DecoderBlock(prev, c, c))
            prev = c
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(chs[0], num_classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            x = block(x, skip)
        x = self.head(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def lightweight_unet_taps(model: LightweightUNet) -> dict[str, list[TapPoint]]:
    """Feature sites: each encoder stage's output before pooling, the bottleneck, the last decoder block."""
    last = len(model.decoder) - 1
    return {
        "encoder": [output_tap(m, f"encoder.{i}") for i, m in enumerate(model.encoder)],
        "bottleneck": [output_tap(model.bottleneck, "bottleneck")],
        "decoder": [output_tap(model.decoder[-1], f"decoder.{last}")],
    }


@register_arch("lightweight_unet", model_type=LightweightUNet, taps=lightweight_unet_taps, imagenet=False)
def build_lightweight_unet(cfg: ModelConfig, num_classes: int) -> LightweightUNet:
    """``arch: lightweight_unet``: ``width`` scales every channel count; ``encoder`` is ignored."""
    return LightweightUNet(num_classes, width=cfg.width)
