"""The Lyft-Udacity Perception Challenge layout (CARLA 0.8).

``ROOT/CameraRGB/*.png`` + ``ROOT/CameraSeg/*.png`` paired by file name, the class id in the RED
channel of ``CameraSeg``; or ``ROOT/{train,val}/{CameraRGB,CameraSeg}`` for a fixed split. The test
split is ``ROOT/test/{CameraRGB,CameraSeg}``; with ``data.test_root``, ``TEST_ROOT/test/...`` or
``TEST_ROOT/{CameraRGB,CameraSeg}`` (the whole folder is the test set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdseg.config import DataConfig
from kdseg.data.decode import open_image
from kdseg.data.folders import Layout, Pair, no_test_split, pair_folders, random_split, require_dir, test_base
from kdseg.data.registry import register
from kdseg.errors import DatasetError

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

RGB_DIR, SEG_DIR = "CameraRGB", "CameraSeg"


def read_red_channel(path: Path, ignore_index: int) -> np.ndarray:
    """Class ids of a CameraSeg PNG: its red channel (a grey PNG is its own red channel)."""
    with open_image(path) as im:
        if im.mode in ("RGB", "RGBA"):
            return np.asarray(im.getchannel("R"))
        if im.mode == "L":
            return np.asarray(im)
        if im.mode == "P":
            return np.asarray(im.convert("RGB").getchannel("R"))
        raise DatasetError(f"{path}: unsupported label PNG mode {im.mode!r} (expected 8-bit RGB)")


def carla_layout(root: Path, cfg: DataConfig, name: str = "carla") -> Layout:
    require_dir(root)
    if (root / "train" / RGB_DIR).is_dir() and (root / "val" / RGB_DIR).is_dir():
        train = pair_folders(root / "train" / RGB_DIR, root / "train" / SEG_DIR)
        val = pair_folders(root / "val" / RGB_DIR, root / "val" / SEG_DIR)
    elif (root / RGB_DIR).is_dir():
        pairs = pair_folders(root / RGB_DIR, root / SEG_DIR)
        train, val = random_split(pairs, cfg.val_fraction, cfg.seed, root)
    else:
        raise DatasetError(
            f"{root}: not a {name} dataset: expected {RGB_DIR}/ and {SEG_DIR}/ folders "
            f"(or train/ and val/ each holding them)"
        )

    def test() -> list[Pair]:
        base = test_base(root, cfg.test_root)
        # in data.test_root, a folder holding CameraRGB/ itself is the whole test set
        for folder in (base / "test", base) if cfg.test_root is not None else (base / "test",):
            if (folder / RGB_DIR).is_dir():
                return pair_folders(folder / RGB_DIR, folder / SEG_DIR)
        where = f" in {base} or in {base / 'test'}" if cfg.test_root is not None else ""
        raise no_test_split(base / "test", f"{RGB_DIR}/ and {SEG_DIR}/ folders{where}", cfg.test_root)

    return Layout(train, val, CARLA_CLASSES, CARLA_PALETTE, read_red_channel, f"{name}:{root}", test)


@register("carla", classes=CARLA_CLASSES, palette=CARLA_PALETTE, reader=read_red_channel)
def carla(cfg: DataConfig) -> Layout:
    assert cfg.root is not None  # the config requires a root for this format
    return carla_layout(Path(cfg.root).expanduser().resolve(), cfg)
