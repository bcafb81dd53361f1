"""Class names and colour palettes of the label sets kdseg reads (index = class id)."""

from __future__ import annotations

import numpy as np

# Lyft-Udacity Perception Challenge / CARLA 0.8: the class id is the RED channel of CameraSeg.
CARLA_CLASSES: tuple[str, ...] = (
    "None",
    "Buildings",
    "Fences",
    "Other",
    "Pedestrians",
    "Poles",
    "RoadLines",
    "Roads",
    "Sidewalks",
    "Vegetation",
    "Vehicles",
    "Walls",
    "TrafficSigns",
)
CARLA_PALETTE = np.array(
    [
        (0, 0, 0),
        (70, 70, 70),
        (190, 153, 153),
        (250, 170, 160),
        (220, 20, 60),
        (153, 153, 153),
        (157, 234, 50),
        (128, 64, 128),
        (244, 35, 232),
        (107, 142, 35),
        (0, 0, 142),
        (102, 102, 156),
        (220, 220, 0),
    ],
    dtype=np.uint8,
)

# CamVid as distributed with SegNet: ids 0..10, 11 = unlabelled (mapped to the ignore index).
CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_UNLABELLED = 11
CAMVID_PALETTE = np.array(
    [
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ],
    dtype=np.uint8,
)


# Cityscapes (and BDD100K, which uses the same 19 evaluation classes and train ids).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ],
    dtype=np.uint8,
)
# cityscapesScripts (helpers/labels.py): labelId -> trainId of the 19 evaluated classes. Every
# other labelId (0-6 unlabeled/ego vehicle/rectification border/out of roi/static/dynamic/ground,
# 9 parking, 10 rail track, 14 guard rail, 15 bridge, 16 tunnel, 18 polegroup, 29 caravan,
# 30 trailer, and -1 license plate, stored as 255) has trainId 255 and becomes the ignore index.
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def cityscapes_lut(ignore_index: int) -> np.ndarray:
    """uint8 [256] lookup table: labelId -> trainId, everything else -> ``ignore_index``."""
    lut = np.full(256, ignore_index, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        lut[label_id] = train_id
    return lut


BDD100K_CLASSES: tuple[str, ...] = CITYSCAPES_CLASSES
BDD100K_PALETTE = CITYSCAPES_PALETTE


def fit_classes(
    names: tuple[str, ...], palette: np.ndarray, num_classes: int
) -> tuple[list[str], np.ndarray]:
    """Names and palette for exactly ``num_classes`` classes.

    A config may declare more classes than the format defines (extra ids get generic names and
    seeded colours) or fewer (the list is cut; the loader has already checked that no label uses
    an id beyond ``num_classes``).
    """
    out_names = [*names[:num_classes], *(f"class_{i}" for i in range(len(names), num_classes))]
    extra = max(0, num_classes - len(palette))
    rng = np.random.default_rng(num_classes)
    more = rng.integers(0, 256, size=(extra, 3), dtype=np.uint8)
    out_palette = np.concatenate([palette[:num_classes], more]).astype(np.uint8)
    return out_names, out_palette
