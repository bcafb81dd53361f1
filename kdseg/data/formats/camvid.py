"""CamVid as distributed with SegNet: ``ROOT/{train,val,test}`` + ``ROOT/{trainannot,valannot,testannot}``.

Labels are single-channel PNGs with ids 0..10; 11 (unlabelled) becomes the ignore index. Without
``val/`` the train pairs are split with ``val_fraction``. The test split (``test/`` + ``testannot/``,
in ``data.test_root`` when set) is read only by ``kdseg eval`` and ``sweep.final_eval``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdseg.config import DataConfig
from kdseg.data.decode import open_image
from kdseg.data.folders import Layout, Pair, no_test_split, pair_folders, random_split, require_dir, test_base
from kdseg.data.registry import register
from kdseg.errors import DatasetError

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


def read_camvid_label(path: Path, ignore_index: int) -> np.ndarray:
    with open_image(path) as im:
        if im.mode in ("L", "P"):
            ids = np.array(im)
        elif im.mode in ("RGB", "RGBA"):
            ids = np.array(im.getchannel("R"))
        else:
            raise DatasetError(f"{path}: unsupported label PNG mode {im.mode!r} (expected 8-bit grey)")
    if ignore_index != CAMVID_UNLABELLED:
        ids[ids == CAMVID_UNLABELLED] = ignore_index
    return ids


@register("camvid", classes=CAMVID_CLASSES, palette=CAMVID_PALETTE, reader=read_camvid_label)
def camvid(cfg: DataConfig) -> Layout:
    assert cfg.root is not None
    root = require_dir(Path(cfg.root).expanduser().resolve())
    if not (root / "train").is_dir():
        raise DatasetError(f"{root}: not a CamVid dataset: expected train/ and trainannot/ folders")
    train = pair_folders(root / "train", root / "trainannot")
    if (root / "val").is_dir():
        val = pair_folders(root / "val", root / "valannot")
    else:
        train, val = random_split(train, cfg.val_fraction, cfg.seed, root)

    def test() -> list[Pair]:
        base = test_base(root, cfg.test_root)
        if not (base / "test").is_dir():
            raise no_test_split(base / "test", "test/ and testannot/ folders", cfg.test_root)
        return pair_folders(base / "test", base / "testannot")

    return Layout(train, val, CAMVID_CLASSES, CAMVID_PALETTE, read_camvid_label, f"camvid:{root}", test)
