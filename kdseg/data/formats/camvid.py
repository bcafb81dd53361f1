"""CamVid as distributed with SegNet: ``ROOT/{train,val}`` + ``ROOT/{trainannot,valannot}``.

Labels are single-channel PNGs with ids 0..10; 11 (unlabelled) becomes the ignore index. Without
``val/`` the train pairs are split with ``val_fraction``. The ``test`` split is never read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdseg.config import DataConfig
from kdseg.data.classes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_UNLABELLED
from kdseg.data.decode import open_image
from kdseg.data.layout import Layout, pair_folders, random_split, require_dir
from kdseg.data.registry import register
from kdseg.errors import DatasetError


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


@register("camvid")
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
    return Layout(train, val, CAMVID_CLASSES, CAMVID_PALETTE, read_camvid_label, f"camvid:{root}")
