"""Class names and palettes for a config: a format's own (each format module holds its table and
registers it, :mod:`kdseg.data.registry`), fitted to ``data.num_classes``."""

from __future__ import annotations

import numpy as np


def fit_classes(
    names: tuple[str, ...], palette: np.ndarray, num_classes: int
) -> tuple[list[str], np.ndarray]:
    """Names and palette for exactly ``num_classes`` classes.

    A config may declare more classes than the format defines (extra ids get generic names and
    seeded colours) or fewer (the list is cut; the loader has already checked that no label uses
    an id beyond ``num_classes``).
    """
    out_names = [*names[:num_classes], *(f"class_{i}" for i in range(len(names), num_classes))]
    extra = max(0, num_classes - len(palette))
    rng = np.random.default_rng(num_classes)
    more = rng.integers(0, 256, size=(extra, 3), dtype=np.uint8)
    out_palette = np.concatenate([palette[:num_classes], more]).astype(np.uint8)
    return out_names, out_palette


def classes_for(format_name: str, num_classes: int) -> tuple[list[str], np.ndarray]:
    """Names and palette of the registered ``format_name`` fitted to ``num_classes`` (no dataset read)."""
    from kdseg.data.registry import format_info

    info = format_info(format_name)
    return fit_classes(info.classes, info.palette, num_classes)
