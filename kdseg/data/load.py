"""``load_data``: find a dataset's files, check them, decode every PNG once, resize, validate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdseg.config import DataConfig
from kdseg.data.classes import fit_classes
from kdseg.data.decode import (
    bad_label_ids,
    image_size,
    label_histogram,
    parallel_map,
    read_rgb,
    resize_image,
    resize_mask,
)
from kdseg.data.folders import Layout, Pair
from kdseg.data.registry import get_format
from kdseg.data.types import HeldOutSplit, SegData, Split, class_pixels
from kdseg.errors import DatasetError

SPLITS = ("train", "val", "test")
# In crop mode, train images are kept at (up to) this multiple of image_size so that a random
# resized crop has real detail to zoom into.
CROP_DECODE_FACTOR = 2.0


def load_data(cfg: DataConfig, progress: bool = False) -> SegData:
    """Decode a dataset described by ``cfg`` into memory (see :class:`SegData`).

    Fails fast with a :class:`~kdseg.errors.DatasetError` naming the file or folder: a missing
    root, an empty split, unpaired files, unreadable PNGs or image/label size mismatches are found
    from file names and PNG headers before any pixel is decoded; label ids that are neither a
    class (< ``num_classes``) nor ``ignore_index`` are found while decoding.

    Validation images are resized to ``image_size``; so are training images in ``resize`` mode.
    In ``crop`` mode (with augmentation enabled) training images keep their aspect ratio, each
    side at least twice ``image_size`` where the original allows, never upscaled.
    """
    if cfg.format != "synthetic" and cfg.root is not None and not Path(cfg.root).expanduser().exists():
        root = Path(cfg.root).expanduser().resolve()
        raise DatasetError(f"{root}: dataset folder not found; point data.root at it: --set data.root=PATH")
    layout: Layout = get_format(cfg.format)(cfg)
    train_pairs = _cap(layout.train, cfg.max_samples)
    val_pairs = _cap(layout.val, cfg.max_samples)
    for split, pairs in (("train", train_pairs), ("val", val_pairs)):
        if not pairs:
            raise DatasetError(f"{layout.source}: the {split} split is empty")

    # Headers first: cheap, and catches most problems before the expensive decode.
    sizes = parallel_map(_pair_size, train_pairs + val_pairs, "checking", progress)
    train_size = train_decode_size(cfg, sizes[0])

    train, train_hist = _decode(train_pairs, train_size, layout, cfg, progress, "train")
    val, _ = _decode(val_pairs, tuple(cfg.image_size), layout, cfg, progress, "val")
    names, palette = fit_classes(layout.class_names, layout.palette, cfg.num_classes)
    return SegData(
        train=train,
        val=val,
        num_classes=cfg.num_classes,
        ignore_index=cfg.ignore_index,
        class_names=names,
        palette=palette,
        source=layout.source,
        train_class_pixels=class_pixels(train_hist, cfg.num_classes, cfg.ignore_index),
    )


def find_split(cfg: DataConfig, split: str) -> tuple[Layout, list[Pair]]:
    """The format's layout and the pairs of one split (``train``, ``val`` or ``test``), capped by
    ``max_samples``; nothing is decoded. A missing or empty split is a DatasetError naming the folder."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    layout: Layout = get_format(cfg.format)(cfg)
    if split == "test":
        if layout.test is None:
            raise DatasetError(f"{layout.source}: the {cfg.format} format has no test split")
        pairs = layout.test()
    else:
        pairs = layout.train if split == "train" else layout.val
    pairs = _cap(pairs, cfg.max_samples)
    if not pairs:
        raise DatasetError(f"{layout.source}: the {split} split is empty")
    return layout, pairs


def load_split(cfg: DataConfig, split: str, progress: bool = False) -> HeldOutSplit:
    """One split decoded at ``image_size`` as validation is (what ``kdseg eval`` measures on).

    Same checks as :func:`load_data` (headers first, then label ids while decoding); a split with no
    labelled pixel at all (every label ``ignore_index``, e.g. unpublished test labels) is an error too.
    """
    layout, pairs = find_split(cfg, split)
    parallel_map(_pair_size, pairs, "checking", progress)
    decoded, hist = _decode(pairs, tuple(cfg.image_size), layout, cfg, progress, split)
    if not class_pixels(hist, cfg.num_classes, cfg.ignore_index).any():
        folder = pairs[0].mask.parent
        raise DatasetError(
            f"{folder}: the {split} split has no labelled pixel (every label is data.ignore_index="
            f"{cfg.ignore_index}); its labels are not published?"
        )
    names, palette = fit_classes(layout.class_names, layout.palette, cfg.num_classes)
    note = layout.test_note if split == "test" else ""
    return HeldOutSplit(
        split, decoded, cfg.num_classes, cfg.ignore_index, names, palette, layout.source, note
    )


def train_decode_size(cfg: DataConfig, native: tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` at which training images are stored (see :func:`load_data`)."""
    th, tw = cfg.image_size
    if not (cfg.augment.enabled and cfg.augment.mode == "crop"):
        return th, tw
    h, w = native
    scale = min(1.0, max(CROP_DECODE_FACTOR * th / h, CROP_DECODE_FACTOR * tw / w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _cap(pairs: list[Pair], n: int | None) -> list[Pair]:
    return pairs if n is None else pairs[:n]


def _pair_size(pair: Pair) -> tuple[int, int]:
    hi = image_size(pair.image)
    hm = image_size(pair.mask)
    if hi != hm:
        raise DatasetError(
            f"{pair.image} is {hi[1]}x{hi[0]} (WxH) but its label {pair.mask} is {hm[1]}x{hm[0]}"
        )
    return hi


def _decode(
    pairs: Sequence[Pair],
    size: tuple[int, int],
    layout: Layout,
    cfg: DataConfig,
    progress: bool,
    split: str,
) -> tuple[Split, np.ndarray]:
    """The decoded split and the [256] histogram of label ids over its label files (native size)."""
    h, w = size
    images = np.empty((len(pairs), h, w, 3), dtype=np.uint8)
    masks = np.empty((len(pairs), h, w), dtype=np.uint8)
    hists = np.zeros((len(pairs), 256), dtype=np.int64)

    def one(i: int) -> None:
        pair = pairs[i]
        img = read_rgb(pair.image)
        mask = layout.read_mask(pair.mask, cfg.ignore_index)
        if img.shape[:2] != mask.shape[:2]:
            raise DatasetError(
                f"{pair.image} is {img.shape[1]}x{img.shape[0]} (WxH) but its label "
                f"{pair.mask} is {mask.shape[1]}x{mask.shape[0]}"
            )
        hists[i] = label_histogram(mask)
        bad = bad_label_ids(mask, cfg.num_classes, cfg.ignore_index, hists[i])
        if bad:
            raise DatasetError(
                f"{pair.mask}: label ids {bad} are not classes (data.num_classes={cfg.num_classes}) "
                f"nor the ignore index (data.ignore_index={cfg.ignore_index})"
            )
        images[i] = resize_image(img, size)
        masks[i] = resize_mask(mask, size)

    parallel_map(one, range(len(pairs)), f"decoding {split}", progress)
    return Split(images=images, masks=masks, names=[p.name for p in pairs]), hists.sum(0)
