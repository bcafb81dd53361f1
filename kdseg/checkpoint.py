"""Atomic checkpoint files.

A checkpoint is written to a temporary file in the same folder and renamed over the old one, so a
crash mid-write never leaves a truncated file where a good one was. Loading uses
``torch.load(..., weights_only=True)``: a checkpoint holds tensors, numbers, strings and containers,
never pickled code.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from kdseg.errors import CheckpointError
from kdseg.fileio import atomic_write


def save_atomic(obj: Any, path: str | os.PathLike, fsync: bool = True, crc32: bool = True) -> Path:
    """``torch.save`` through :func:`kdseg.fileio.atomic_write` (temp file, fsync, rename).

    ``fsync=False`` for a file that is copied elsewhere at once (a sweep trial's checkpoint, which
    Tune copies into its storage): the copy is the one that must survive. ``crc32=False`` leaves out
    the zip records' CRC32s, most of ``torch.save``'s time for large states (measured: about 4x
    faster for 444 MB); ``torch.load`` never checks them, and a truncated file still fails to load.
    """
    with atomic_write(path, "wb", fsync=fsync) as f, _crc32(crc32):
        torch.save(obj, f)
    return Path(path)


@contextmanager
def _crc32(enabled: bool) -> Iterator[None]:
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(enabled)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint safely; a missing, truncated or foreign file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". ", 1)[0].rstrip(".")  # torch goes on with advice for its own developers
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupted?): {first}"
        ) from None
    except Exception as e:  # pickle.UnpicklingError and friends for files that hold more than weights
        raise CheckpointError(f"{path}: refused to load: {type(e).__name__}: {str(e)[:200]}") from None
