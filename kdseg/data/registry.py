"""Dataset formats by name: each format is one small module in ``kdseg.data.formats``.

A format module holds its class names and palette and registers its layout function with them::

    @register("camvid", classes=CAMVID_CLASSES, palette=CAMVID_PALETTE, reader=read_camvid_label)
    def camvid(cfg: DataConfig) -> Layout: ...

The layout function ``(DataConfig) -> Layout`` finds the image/label pairs of each split; ``reader``
(``(path, ignore_index) -> ids``) is how its label files map to class ids. Decoding, resizing and
validation are shared (``kdseg.data.load``). ``data.format`` accepts every registered name, and the
report names classes from here when a sweep recorded none. A new format: one module in
``kdseg/data/formats/``, imported by ``kdseg/data/formats/__init__.py``. The format modules import numpy
and PIL, never torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kdseg.errors import DatasetError

if TYPE_CHECKING:
    from kdseg.config import DataConfig
    from kdseg.data.folders import Layout, MaskReader

FormatFn = Callable[["DataConfig"], "Layout"]


@dataclass(frozen=True)
class FormatInfo:
    """A registered format: its layout function, class names, palette (uint8 ``[C, 3]``) and label reader."""

    name: str
    layout: FormatFn
    classes: tuple[str, ...]
    palette: np.ndarray
    reader: MaskReader | None = None


_FORMATS: dict[str, FormatInfo] = {}


def register(
    name: str, *, classes: tuple[str, ...], palette: np.ndarray, reader: MaskReader | None = None
) -> Callable[[FormatFn], FormatFn]:
    """Decorator: register a layout function as dataset format ``name`` with its classes."""

    def deco(fn: FormatFn) -> FormatFn:
        if name in _FORMATS and _FORMATS[name].layout is not fn:
            raise ValueError(f"dataset format {name!r} registered twice")
        if len(palette) != len(classes):
            raise ValueError(f"dataset format {name!r}: {len(classes)} classes but {len(palette)} colours")
        _FORMATS[name] = FormatInfo(name, fn, tuple(classes), np.asarray(palette, np.uint8), reader)
        return fn

    return deco


def available_formats() -> list[str]:
    import kdseg.data.formats  # noqa: F401  (registers the built-in formats)

    return sorted(_FORMATS)


def format_info(name: str) -> FormatInfo:
    import kdseg.data.formats  # noqa: F401

    try:
        return _FORMATS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset format {name!r}; known: {', '.join(sorted(_FORMATS))}") from None


def get_format(name: str) -> FormatFn:
    return format_info(name).layout
