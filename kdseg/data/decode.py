"""Reading images (PNG, JPEG): header checks, decoding, resizing and label validation, in threads.

PIL and OpenCV release the GIL while they decode and resize, so a thread pool scales with cores
and needs no pickling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from kdseg.data.folders import kind_of
from kdseg.errors import DatasetError

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked after the parent
# used it can hang (seen in cv2.setNumThreads). kdseg parallelises with its own threads and
# loader workers instead, so OpenCV runs single-threaded in every process that imports kdseg.data.
cv2.setNumThreads(0)

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def open_image(path: Path, header_only: bool = False) -> Iterator[Image.Image]:
    """A PIL image, fully decoded unless ``header_only``; any failure is a DatasetError naming it.

    Any format PIL reads is accepted (the dataset formats pick PNG or JPEG files by suffix); a
    truncated file is an error, never silently padded (PIL's ``LOAD_TRUNCATED_IMAGES`` stays off).
    """
    kind = file_kind(path)
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable {kind} ({e})") from None
    try:
        if not header_only:
            try:
                im.load()
            except Exception as e:  # truncated data, zlib/huffman errors, bad CRCs...
                raise DatasetError(f"{path}: corrupt or truncated {kind} ({e})") from None
        yield im
    finally:
        im.close()


def file_kind(path: Path) -> str:
    """``"PNG"``, ``"JPEG"`` or ``"image"``, from the file name (for messages)."""
    return kind_of([Path(path).suffix])


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the header alone."""
    with open_image(path, header_only=True) as im:
        w, h = im.size
    return h, w


def read_rgb(path: Path) -> np.ndarray:
    """uint8 ``[H, W, 3]`` in RGB order (alpha dropped, grey and palettes expanded)."""
    with open_image(path) as im:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im)


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def label_histogram(mask: np.ndarray) -> np.ndarray:
    """int64 [256]: pixels per id of a uint8 label."""
    return np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=256).astype(np.int64)


def bad_label_ids(
    mask: np.ndarray, num_classes: int, ignore_index: int, hist: np.ndarray | None = None
) -> list[int]:
    """Ids present in ``mask`` that are neither a class (< num_classes) nor the ignore index.

    ``hist`` (from :func:`label_histogram`) saves counting again.
    """
    counts = label_histogram(mask) if hist is None else hist
    present = np.flatnonzero(counts)
    return [int(i) for i in present if i >= num_classes and i != ignore_index]


def default_threads() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    desc: str = "",
    progress: bool = False,
    threads: int | None = None,
) -> list[R]:
    """``[fn(x) for x in items]`` on a thread pool, in order.

    Every item is attempted; if any raised a DatasetError, the first (in item order) is re-raised,
    saying how many other items failed too. Other exceptions are bugs and propagate unchanged.
    """
    results: list[R | None] = [None] * len(items)
    errors: dict[int, DatasetError] = {}

    def task(i: int) -> None:
        try:
            results[i] = fn(items[i])
        except DatasetError as e:
            errors[i] = e

    threads = threads or default_threads()
    with _progress(len(items), desc, progress) as advance:
        if threads == 1 or len(items) <= 1:
            for i in range(len(items)):
                task(i)
                advance()
        else:
            with ThreadPoolExecutor(threads) as pool:
                for fut in [pool.submit(task, i) for i in range(len(items))]:
                    fut.result()
                    advance()
    if errors:
        first = min(errors)
        more = len(errors) - 1
        msg = str(errors[first]) + (f" (and {more} more file(s) with problems)" if more else "")
        raise DatasetError(msg)
    return results  # type: ignore[return-value]


@contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Callable[[], None]]:
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(desc or "reading", total=total)
        yield lambda: bar.advance(task)
