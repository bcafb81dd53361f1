"""BDD100K semantic segmentation (the 10K images), in the layout of the official zips::

    ROOT/images/10k/{train,val}/<name>.jpg
    ROOT/labels/sem_seg/masks/{train,val}/<name>.png

Images are JPEG; labels are 8-bit grey PNGs holding the 19 Cityscapes train ids (0..18) directly,
255 = unlabelled (mapped to ``ignore_index`` if that differs). The ``colormaps/`` / ``polygons/``
label folders are not read. Without ``val/`` the train pairs are split with ``val_fraction``.

Test split: ``images/10k/test`` has no public labels, so the test split is ``val/``, which a sweep also
selects on: it is not held out. With ``data.test_root``, the test split is
``TEST_ROOT/images/10k/test`` + ``TEST_ROOT/labels/sem_seg/masks/test`` (a labelled test set kept apart).
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
    pair_folders,
    random_split,
    require_dir,
    test_base,
    test_is_val,
)
from kdseg.data.formats.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from kdseg.data.registry import register
from kdseg.errors import DatasetError

# BDD100K uses the 19 Cityscapes evaluation classes and train ids.
BDD100K_CLASSES: tuple[str, ...] = CITYSCAPES_CLASSES
BDD100K_PALETTE = CITYSCAPES_PALETTE

IMAGE_DIR = Path("images", "10k")
LABEL_DIR = Path("labels", "sem_seg", "masks")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
UNLABELLED = 255
# bdd100k/bdd100k#103: 10K image zips published before June 2021 had 6 images without a mask
# (and 6 masks without an image); the current zip matches the labels.
UNPAIRED_HINT = (
    " (an old bdd100k_images_10k.zip has a few unpaired files, bdd100k/bdd100k#103: download the current one)"
)


def read_bdd100k_label(path: Path, ignore_index: int) -> np.ndarray:
    """Train ids of a ``labels/sem_seg/masks`` PNG (8-bit grey)."""
    with open_image(path) as im:
        if im.mode not in ("L", "P"):
            raise DatasetError(
                f"{path}: unsupported label PNG mode {im.mode!r} (expected 8-bit grey train ids from "
                f"{LABEL_DIR.as_posix()}/, not the RGB colormaps/)"
            )
        ids = np.array(im)
    if ignore_index != UNLABELLED:
        ids[ids == UNLABELLED] = ignore_index
    return ids


@register("bdd100k", classes=BDD100K_CLASSES, palette=BDD100K_PALETTE, reader=read_bdd100k_label)
def bdd100k(cfg: DataConfig) -> Layout:
    assert cfg.root is not None
    root = require_dir(Path(cfg.root).expanduser().resolve())
    if not (root / IMAGE_DIR).is_dir() or not (root / LABEL_DIR).is_dir():
        nested = (
            " (it holds a bdd100k/ folder: point data.root at that)" if (root / "bdd100k").is_dir() else ""
        )
        raise DatasetError(
            f"{root}: not a BDD100K dataset: expected {IMAGE_DIR.as_posix()}/ and "
            f"{LABEL_DIR.as_posix()}/ folders{nested}"
        )

    def split(name: str, base: Path = root):
        return pair_folders(
            base / IMAGE_DIR / name, base / LABEL_DIR / name, IMAGE_SUFFIXES, (".png",), UNPAIRED_HINT
        )

    train = split("train")
    if (root / IMAGE_DIR / "val").is_dir():
        val = split("val")
    else:
        train, val = random_split(train, cfg.val_fraction, cfg.seed, root)

    def test() -> list[Pair]:
        base, name = (test_base(root, cfg.test_root), "test") if cfg.test_root else (root, "val")
        if not (base / IMAGE_DIR / name).is_dir():
            raise no_test_split(
                base / IMAGE_DIR / name, f"{IMAGE_DIR}/{name}/ and {LABEL_DIR}/{name}/", cfg.test_root
            )
        return split(name, base)

    note = "" if cfg.test_root else test_is_val("BDD100K", f"{IMAGE_DIR.as_posix()}/val")
    return Layout(
        train, val, BDD100K_CLASSES, BDD100K_PALETTE, read_bdd100k_label, f"bdd100k:{root}", test, note
    )
