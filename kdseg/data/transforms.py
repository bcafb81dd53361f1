"""Albumentations 2 pipelines built from ``data.augment``.

Train: random resized crop (crop mode) or a resize to ``image_size`` (a no-op when the arrays are
already that size), horizontal flip, colour jitter, normalisation, tensor. Validation: resize if
needed, normalise, tensor; nothing random. Masks always use nearest-neighbour interpolation.

A pipeline with nothing random (validation, or training with ``augment.enabled: false``) is
:class:`Plain`: the same resize, normalisation and tensor, without importing albumentations (whose
import a trial would otherwise pay for nothing); ``tests/test_data.py`` checks it against albumentations.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from kdseg.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Colour jitter strengths (applied with probability augment.color_jitter).
JITTER = {"brightness": 0.25, "contrast": 0.25, "saturation": 0.25, "hue": 0.04}


class Plain:
    """Resize to ``size`` when needed (INTER_AREA; masks nearest), normalise, to tensors: what the
    albumentations pipeline does when nothing in it is random, called the same way."""

    def __init__(self, size: tuple[int, int], normalize: str) -> None:
        self.h, self.w = size
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize == "imagenet" else ((0.0,) * 3, (1.0,) * 3)
        # albucore's uint8 normalisation: a float32 look-up table per channel, (v - 255 mean) / (255 std)
        mean_px = np.asarray(mean, np.float32) * 255.0
        denominator = np.reciprocal(np.asarray(std, np.float32) * 255.0)
        self.lut = (np.arange(256, dtype=np.float32)[None, :] - mean_px[:, None]) * denominator[:, None]

    def set_random_seed(self, seed: int | None) -> None:
        """Nothing here is random (the albumentations pipeline's interface)."""

    def __call__(self, *, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        import torch

        if image.shape[:2] != (self.h, self.w):
            image = cv2.resize(image, (self.w, self.h), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (self.w, self.h), interpolation=cv2.INTER_NEAREST)
        x = np.stack([cv2.LUT(image[:, :, c], self.lut[c]) for c in range(3)])  # float32 [3, H, W]
        return {"image": torch.from_numpy(x), "mask": torch.from_numpy(np.ascontiguousarray(mask))}


def build_transforms(cfg: DataConfig, train: bool, seed: int | None = None):
    """The train or validation pipeline; ``seed`` seeds the pipeline's own random state.

    Called as ``t(image=uint8 [H, W, 3], mask=uint8 [H, W])`` it returns ``image`` float32
    ``[3, H, W]`` and ``mask`` uint8 ``[H, W]`` tensors at ``cfg.image_size``.
    """
    h, w = cfg.image_size
    aug = cfg.augment
    augment = train and aug.enabled
    if not augment:
        return Plain((h, w), aug.normalize)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home on import
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

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
