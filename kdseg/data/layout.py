"""What a dataset format finds on disk: image/label file pairs per split, before any decoding."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdseg.errors import DatasetError

IMAGE_SUFFIXES = (".png",)
MaskReader = Callable[[Path, int], np.ndarray]  # (label file, ignore_index) -> uint8 [H, W] class ids


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    name: str  # the file stem both share


@dataclass(frozen=True)
class Layout:
    """A format's answer: the pairs of each split, its classes, and how to read its label files."""

    train: list[Pair]
    val: list[Pair]
    class_names: tuple[str, ...]
    palette: np.ndarray
    read_mask: MaskReader
    source: str


def natural_key(name: str) -> tuple:
    """Sort ``2.png`` before ``10.png``; ties broken by the plain string."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p), name


def require_dir(path: Path, what: str = "dataset folder") -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} is not a folder")
    return path


def list_images(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the image files directly in ``folder``."""
    require_dir(folder)
    out: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."):
            out[p.stem] = p
    return out


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(sorted(names, key=natural_key)[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def pair_folders(image_dir: Path, mask_dir: Path) -> list[Pair]:
    """Pairs of same-named PNGs in two folders, naturally sorted; unpaired files are an error."""
    images = list_images(image_dir)
    masks = list_images(mask_dir)
    if not images:
        raise DatasetError(f"{image_dir}: no PNG images found")
    only_img = sorted(set(images) - set(masks))
    only_mask = sorted(set(masks) - set(images))
    if only_img or only_mask:
        lines = []
        if only_img:
            lines.append(f"images without a label in {mask_dir}: {_few(only_img)}")
        if only_mask:
            lines.append(f"labels without an image in {image_dir}: {_few(only_mask)}")
        raise DatasetError(f"{image_dir.parent}: unpaired files: " + "; ".join(lines))
    return [Pair(images[s], masks[s], s) for s in sorted(images, key=natural_key)]


def random_split(
    pairs: list[Pair], val_fraction: float, seed: int, where: Path
) -> tuple[list[Pair], list[Pair]]:
    """A seeded train/val split with at least one pair on each side; each side keeps file order."""
    n = len(pairs)
    if n < 2:
        raise DatasetError(
            f"{where}: {n} image/label pair(s); a train/val split needs at least 2 "
            "(or provide train/ and val/ folders)"
        )
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [p for i, p in enumerate(pairs) if i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    return train, val
