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
    """A format's answer: the pairs of each split, its classes, and how to read its label files.

    ``test`` finds the test split's pairs when called (only ``kdseg eval`` and ``sweep.final_eval``
    ask; training never does), raising a DatasetError that names the folder it looked for; None when
    the format has no test split. ``test_note`` says where the test split comes from when that is not
    obvious (Cityscapes and BDD100K use ``val``: their test labels are not public).
    """

    train: list[Pair]
    val: list[Pair]
    class_names: tuple[str, ...]
    palette: np.ndarray
    read_mask: MaskReader
    source: str
    test: Callable[[], list[Pair]] | None = None
    test_note: str = ""


def test_base(root: Path, test_root: Path | None) -> Path:
    """The folder a format looks for its test split in: ``data.test_root`` when set, else ``data.root``."""
    if test_root is None:
        return root
    return require_dir(Path(test_root).expanduser().resolve(), "data.test_root folder")


def no_test_split(folder: Path, expected: str, test_root: Path | None) -> DatasetError:
    """The error for a missing test split: the folder looked for, what belongs there, how to fix it."""
    fix = "" if test_root is not None else "; or set data.test_root to a folder that holds one"
    return DatasetError(f"{folder}: no test split here (expected {expected}){fix}")


def test_is_val(name: str, folder: str) -> str:
    """``Layout.test_note`` of a format whose test labels are not public, so that its test split is val."""
    return (
        f"the test split is {folder}/ ({name} test labels are not public): the data a sweep selects on, "
        "not held out; set data.test_root to a labelled test set kept apart"
    )


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


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """``{stem: path}`` of the image files (``suffixes``, any case) directly in ``folder``."""
    require_dir(folder)
    out: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in suffixes and p.is_file() and not p.name.startswith("."):
            out[p.stem] = p
    return out


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(sorted(names, key=natural_key)[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def kind_of(suffixes: Sequence[str]) -> str:
    """``"PNG"``, ``"JPEG"`` or ``"image"``: how messages name the files a folder should hold."""
    kinds = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
    names = {kinds.get(s.lower(), "image") for s in suffixes}
    return names.pop() if len(names) == 1 else "image"


def pair_maps(
    images: dict[str, Path],
    masks: dict[str, Path],
    image_dir: Path,
    mask_dir: Path,
    where: Path,
    image_kind: str = "PNG",
    hint: str = "",
) -> list[Pair]:
    """Pairs of images and labels that share a key, naturally sorted by key.

    ``images`` / ``masks`` map a pair's key (its name) to the file. No image, or a key on one side
    only, is a DatasetError naming the folders and the first few files (relative to their folder);
    ``hint`` is appended to the unpaired-files message.
    """
    if not images:
        raise DatasetError(f"{image_dir}: no {image_kind} images found")
    only_img = sorted(set(images) - set(masks))
    only_mask = sorted(set(masks) - set(images))
    if only_img or only_mask:

        def rel(paths: dict[str, Path], keys: list[str], folder: Path) -> list[str]:
            return [str(paths[k].relative_to(folder)) if paths[k].is_relative_to(folder) else k for k in keys]

        lines = []
        if only_img:
            lines.append(f"images without a label in {mask_dir}: {_few(rel(images, only_img, image_dir))}")
        if only_mask:
            lines.append(f"labels without an image in {image_dir}: {_few(rel(masks, only_mask, mask_dir))}")
        raise DatasetError(f"{where}: unpaired files: " + "; ".join(lines) + hint)
    return [Pair(images[k], masks[k], k) for k in sorted(images, key=natural_key)]


def pair_folders(
    image_dir: Path,
    mask_dir: Path,
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    mask_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    hint: str = "",
) -> list[Pair]:
    """Pairs of same-stem files in two folders, naturally sorted; unpaired files are an error."""
    images = list_images(image_dir, image_suffixes)
    masks = list_images(mask_dir, mask_suffixes)
    return pair_maps(images, masks, image_dir, mask_dir, image_dir.parent, kind_of(image_suffixes), hint)


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
