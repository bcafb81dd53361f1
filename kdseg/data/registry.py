"""Dataset formats by name: each format is one small module in ``kdseg.data.formats``.

A format is a function ``(DataConfig) -> Layout`` registered with :func:`register`; it finds
the image/label pairs of each split and says how its label files map to class ids. Decoding,
resizing and validation are shared (``kdseg.data.load``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kdseg.errors import DatasetError

if TYPE_CHECKING:
    from kdseg.config import DataConfig
    from kdseg.data.folders import Layout

FormatFn = Callable[["DataConfig"], "Layout"]
_FORMATS: dict[str, FormatFn] = {}


def register(name: str) -> Callable[[FormatFn], FormatFn]:
    def deco(fn: FormatFn) -> FormatFn:
        if name in _FORMATS and _FORMATS[name] is not fn:
            raise ValueError(f"dataset format {name!r} registered twice")
        _FORMATS[name] = fn
        return fn

    return deco


def available_formats() -> list[str]:
    import kdseg.data.formats  # noqa: F401  (registers the built-in formats)

    return sorted(_FORMATS)


def get_format(name: str) -> FormatFn:
    import kdseg.data.formats  # noqa: F401

    try:
        return _FORMATS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset format {name!r}; known: {', '.join(sorted(_FORMATS))}") from None
