"""Tiny datasets in the exact upstream layouts and file-name patterns, for tests.

Each ``write_*`` returns the dataset root (what ``data.root`` points at). Images are random noise;
labels are random blocks of the format's *on-disk* ids (Cityscapes labelIds, BDD100K train ids with
255 unlabelled, CamVid ids 0..11 with 11 unlabelled), so the loaders' id mapping is exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# labelIds that appear in real gtFine_labelIds.png files: 0..33 (license plate, id -1, is stored as
# 0 by createLabelImage... and some tools write it as 255, so both are used).
CITYSCAPES_LABEL_IDS = (*range(34), 255)
CITYSCAPES_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}


def blocks(rng: np.random.Generator, size: tuple[int, int], ids: Sequence[int], block: int = 8) -> np.ndarray:
    """uint8 [H, W] label of ``block``-sized squares drawn from ``ids``."""
    h, w = size
    small = rng.choice(np.asarray(ids, np.uint8), ((h + block - 1) // block, (w + block - 1) // block))
    return np.kron(small, np.ones((block, block), np.uint8))[:h, :w].astype(np.uint8)


def noise(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def write_cityscapes(
    root: Path,
    splits: dict[str, int] | None = None,
    cities: dict[str, Sequence[str]] | None = None,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
    label_ids: Sequence[int] = CITYSCAPES_LABEL_IDS,
) -> Path:
    """``root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and the matching
    ``root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_{labelIds,color,instanceIds}.png``
    plus ``_polygons.json`` (the extra gtFine files a real download has, which must be ignored).

    ``splits`` maps a split to its number of images (default 3 train, 2 val), spread over the split's
    ``cities`` (default: real train and val cities).
    """
    rng = np.random.default_rng(seed)
    for split, n in (splits or {"train": 3, "val": 2}).items():
        for i in range(n):
            names = (cities or CITYSCAPES_CITIES).get(split, ("aachen",))
            city = names[i % len(names)]
            stem = f"{city}_{i:06d}_{19 + i:06d}"
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(noise(rng, size)).save(img_dir / f"{stem}_leftImg8bit.png")
            label = blocks(rng, size, label_ids)
            Image.fromarray(label).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(noise(rng, size)).save(gt_dir / f"{stem}_gtFine_color.png")
            Image.fromarray(label.astype(np.uint16) * 1000).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text("{}")
    return root


def write_bdd100k(
    root: Path,
    splits: dict[str, int] | None = None,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    label_ids: Sequence[int] = (*range(19), 255),
) -> Path:
    """``root/images/10k/<split>/<name>.jpg`` + ``root/labels/sem_seg/masks/<split>/<name>.png``
    (names like ``7d2f7975-e0c1c5a7``), plus an unlabelled ``images/10k/test`` and RGB
    ``labels/sem_seg/colormaps`` that must be ignored."""
    rng = np.random.default_rng(seed)
    for split, n in (splits or {"train": 3, "val": 2}).items():
        img_dir = root / "images" / "10k" / split
        mask_dir = root / "labels" / "sem_seg" / "masks" / split
        color_dir = root / "labels" / "sem_seg" / "colormaps" / split
        for d in (img_dir, mask_dir, color_dir):
            d.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            name = f"{rng.integers(16**8):08x}-{rng.integers(16**8):08x}"
            Image.fromarray(noise(rng, size)).save(img_dir / f"{name}.jpg", quality=90)
            Image.fromarray(blocks(rng, size, label_ids)).save(mask_dir / f"{name}.png")
            Image.fromarray(noise(rng, size)).save(color_dir / f"{name}.png")
    test_dir = root / "images" / "10k" / "test"
    test_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(rng, size)).save(test_dir / "ffffffff-00000000.jpg")
    return root


def write_camvid(
    root: Path,
    splits: dict[str, int] | None = None,
    size: tuple[int, int] = (72, 96),
    seed: int = 0,
) -> Path:
    """SegNet's CamVid layout: ``root/{train,val}/*.png`` + ``root/{trainannot,valannot}/*.png``
    (names like ``0001TP_006690.png``), ids 0..10 and 11 = unlabelled."""
    rng = np.random.default_rng(seed)
    for split, n in (splits or {"train": 3, "val": 2}).items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"0001TP_{6690 + 30 * i:06d}.png"
            Image.fromarray(noise(rng, size)).save(root / split / name)
            Image.fromarray(blocks(rng, size, range(12))).save(root / f"{split}annot" / name)
    return root


def one_torch_thread():
    """Generator body of a fixture: run with one intra-op thread, then restore the setting.

    Tiny CPU models are faster on one thread, and much faster when the machine is shared (two
    spinning OpenMP threads on two busy cores can make a step five times slower).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
