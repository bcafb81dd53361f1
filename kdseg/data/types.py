"""The decoded dataset: plain numpy arrays, picklable, shared zero-copy through Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Split:
    """One split of a dataset, decoded and resized once.

    ``images`` is uint8 ``[N, H, W, 3]`` in RGB order; ``masks`` is uint8 ``[N, H, W]`` holding class
    ids, with unlabelled pixels equal to the config's ``ignore_index``; ``names`` are file stems in
    the same order.
    """

    images: np.ndarray
    masks: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}"
            )
        if self.masks.ndim != 3 or self.masks.dtype != np.uint8:
            raise ValueError(f"masks must be uint8 [N, H, W], got {self.masks.dtype} {self.masks.shape}")
        if self.images.shape[:3] != self.masks.shape or len(self.images) != n:
            raise ValueError(
                f"images {self.images.shape}, masks {self.masks.shape} and {n} names do not agree"
            )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored arrays."""
        return int(self.images.shape[1]), int(self.images.shape[2])


def class_pixels(hist: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Pixels per class, int64 ``[num_classes]``, from a ``[256]`` histogram of label ids.

    Ids at or above ``num_classes`` (the ignore index) are not counted; neither is ``ignore_index``
    should it be below ``num_classes``.
    """
    counts = np.zeros(num_classes, np.int64)
    n = min(num_classes, len(hist))
    counts[:n] = hist[:n]
    if ignore_index < num_classes:
        counts[ignore_index] = 0
    return counts


@dataclass
class SegData:
    """A whole dataset as kdseg trains on it: decoded once per node, then shared by trials."""

    train: Split
    val: Split
    num_classes: int
    ignore_index: int
    class_names: list[str]
    palette: np.ndarray  # uint8 [num_classes, 3], for colourising masks
    source: str  # e.g. "carla:/abs/path"
    # Labelled pixels per class over the training split's label files (int64 [num_classes]);
    # load_data fills it while decoding, class_pixels() computes it for hand-built data.
    train_class_pixels: np.ndarray | None = field(default=None, repr=False)

    def class_pixels(self) -> np.ndarray:
        """int64 ``[num_classes]``: training pixels per class, ``ignore_index`` excluded.

        Counted once and kept on this object (so a sweep's trials, which share one SegData, never
        recount). :func:`~kdseg.data.load_data` counts on the label files at their native size,
        before resizing; for a SegData built by hand it is counted on ``train.masks``.
        """
        if self.train_class_pixels is None:
            hist = np.bincount(self.train.masks.ravel(), minlength=256)
            self.train_class_pixels = class_pixels(hist, self.num_classes, self.ignore_index)
        return self.train_class_pixels

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """RGB uint8 image of a class-id mask; ignore (and unknown ids) are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(self.palette)] = self.palette
        lut[self.ignore_index] = 0
        return lut[np.asarray(mask, dtype=np.uint8)]

    def nbytes(self) -> int:
        return sum(a.nbytes for s in (self.train, self.val) for a in (s.images, s.masks))


@dataclass
class HeldOutSplit:
    """One split decoded on its own for evaluation (:func:`~kdseg.data.load.load_split`)."""

    name: str  # train, val or test
    data: Split
    num_classes: int
    ignore_index: int
    class_names: list[str]
    palette: np.ndarray
    source: str  # e.g. "camvid:/abs/path"
    note: str = ""  # where the split comes from when that is not obvious (Layout.test_note)
