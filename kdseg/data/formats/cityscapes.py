"""Cityscapes fine annotations, in the layout of the official ``leftImg8bit`` and ``gtFine`` zips::

    ROOT/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Images and labels are paired by ``<city>_<seq>_<frame>`` (the pair's name). Labels are the
``labelIds`` PNGs (ids 0..33); they are mapped to the 19 train ids of cityscapesScripts
(:data:`~kdseg.data.classes.CITYSCAPES_LABELID_TO_TRAINID`); every other id becomes
``ignore_index``. The other ``gtFine`` files (``_color``, ``_instanceIds``, ``_labelTrainIds``,
``_polygons.json``) are not read, nor is ``train_extra/``. Without ``val/`` the train pairs are split
with ``val_fraction``.

Test split: the official ``test/`` labels are not public, so the test split is ``val/``, which a sweep
also selects on: it is not held out. With ``data.test_root``, the test split is
``TEST_ROOT/leftImg8bit/test`` + ``TEST_ROOT/gtFine/test`` (a labelled test set kept apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdseg.config import DataConfig
from kdseg.data.decode import open_image
from kdseg.data.folders import (
    Layout,
    Pair,
    no_test_split,
    pair_maps,
    random_split,
    require_dir,
    test_base,
    test_is_val,
)
from kdseg.data.registry import register
from kdseg.errors import DatasetError

# Cityscapes: the 19 evaluated classes (BDD100K uses the same classes and train ids).
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


IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def read_cityscapes_label(path: Path, ignore_index: int) -> np.ndarray:
    """Train ids of a ``*_gtFine_labelIds.png`` (8-bit grey labelIds)."""
    with open_image(path) as im:
        if im.mode not in ("L", "P"):
            raise DatasetError(
                f"{path}: unsupported label PNG mode {im.mode!r} (expected the 8-bit grey *{LABEL_SUFFIX})"
            )
        ids = np.asarray(im)
    return cityscapes_lut(ignore_index)[ids]


def _collect(split_dir: Path, suffix: str, strict: bool) -> dict[str, Path]:
    """``{<city>_<seq>_<frame>: path}`` of the ``*suffix`` files in the city folders of ``split_dir``.

    With ``strict``, any other PNG there is an error (it would be silently skipped otherwise).
    """
    require_dir(split_dir)
    out: dict[str, Path] = {}
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if strict and entry.suffix.lower() == ".png":
                raise DatasetError(
                    f"{entry}: expected city folders in {split_dir} "
                    f"(<city>/<city>_<seq>_<frame>{suffix}), found a file"
                )
            continue
        for f in entry.iterdir():
            if f.name.startswith(".") or not f.is_file():
                continue
            if not f.name.endswith(suffix):
                if strict and f.suffix.lower() == ".png":
                    raise DatasetError(
                        f"{f}: does not follow the Cityscapes file-name pattern <city>_<seq>_<frame>{suffix}"
                    )
                continue
            key = f.name[: -len(suffix)]
            if key in out:
                raise DatasetError(f"{f}: {key} appears twice (also {out[key]})")
            out[key] = f
    return out


def split_pairs(root: Path, split: str) -> list[Pair]:
    image_dir, label_dir = root / IMAGE_DIR / split, root / LABEL_DIR / split
    images = _collect(image_dir, IMAGE_SUFFIX, strict=True)
    labels = _collect(label_dir, LABEL_SUFFIX, strict=False)
    if not images:
        raise DatasetError(
            f"{image_dir}: no images found (expected <city>/<city>_<seq>_<frame>{IMAGE_SUFFIX})"
        )
    return pair_maps(images, labels, image_dir, label_dir, root, hint=f" (labels are *{LABEL_SUFFIX})")


@register("cityscapes", classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, reader=read_cityscapes_label)
def cityscapes(cfg: DataConfig) -> Layout:
    assert cfg.root is not None
    root = require_dir(Path(cfg.root).expanduser().resolve())
    if not (root / IMAGE_DIR).is_dir() or not (root / LABEL_DIR).is_dir():
        raise DatasetError(
            f"{root}: not a Cityscapes dataset: expected {IMAGE_DIR}/ and {LABEL_DIR}/ folders "
            f"(from leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip)"
        )
    train = split_pairs(root, "train")
    if (root / IMAGE_DIR / "val").is_dir():
        val = split_pairs(root, "val")
    else:
        train, val = random_split(train, cfg.val_fraction, cfg.seed, root)

    def test() -> list[Pair]:
        base, split = (test_base(root, cfg.test_root), "test") if cfg.test_root else (root, "val")
        if not (base / IMAGE_DIR / split).is_dir():
            raise no_test_split(
                base / IMAGE_DIR / split, f"{IMAGE_DIR}/{split}/ and {LABEL_DIR}/{split}/", cfg.test_root
            )
        return split_pairs(base, split)

    return Layout(
        train,
        val,
        CITYSCAPES_CLASSES,
        CITYSCAPES_PALETTE,
        read_cityscapes_label,
        f"cityscapes:{root}",
        test,
        "" if cfg.test_root else test_is_val("Cityscapes", f"{IMAGE_DIR}/val"),
    )
