"""Albumentations 2 pipelines built from ``data.augment``.

Train: random resized crop (crop mode) or a resize to ``image_size`` (a no-op when the arrays are
already that size), horizontal flip, colour jitter, normalisation, tensor. Validation: resize if
needed, normalise, tensor; nothing random. Masks always use nearest-neighbour interpolation.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from kdseg.config import DataConfig  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Colour jitter strengths (applied with probability augment.color_jitter).
JITTER = {"brightness": 0.25, "contrast": 0.25, "saturation": 0.25, "hue": 0.04}


def build_transforms(cfg: DataConfig, train: bool, seed: int | None = None) -> A.Compose:
    """The train or validation pipeline; ``seed`` seeds the pipeline's own random state.

    Called as ``t(image=uint8 [H, W, 3], mask=uint8 [H, W])`` it returns ``image`` float32
    ``[3, H, W]`` and ``mask`` uint8 ``[H, W]`` tensors at ``cfg.image_size``.
    """
    h, w = cfg.image_size
    aug = cfg.augment
    augment = train and aug.enabled
    ops: list[A.BasicTransform] = []
    if augment and aug.mode == "crop":
        aspect = w / h
        ops.append(
            A.RandomResizedCrop(
                size=(h, w),
                scale=tuple(aug.crop_scale),
                ratio=(aspect * 3 / 4, aspect * 4 / 3),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                area_for_downscale="image",
            )
        )
    else:
        # Identity (OpenCV copies) when the stored arrays are already image_size.
        ops.append(A.Resize(h, w, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST))
    if augment and aug.hflip > 0:
        ops.append(A.HorizontalFlip(p=aug.hflip))
    if augment and aug.color_jitter > 0:
        ops.append(A.ColorJitter(**JITTER, p=aug.color_jitter))
    if aug.normalize == "imagenet":
        ops.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0))
    else:
        ops.append(A.Normalize(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), max_pixel_value=255.0))
    ops.append(ToTensorV2())
    return A.Compose(ops, seed=seed)
