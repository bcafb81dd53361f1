"""Atomic checkpoint files, and the pointers a sweep reports to Ray Tune instead of copies.

A checkpoint is written to a temporary file in the same folder and renamed over the old one, so a
crash mid-write never leaves a truncated file where a good one was. Loading uses
``torch.load(..., weights_only=True)``: a checkpoint holds tensors, numbers, strings and containers,
never pickled code.

A sweep trial writes its full checkpoint once, to its final place: ``checkpoint-eNNNN.pt`` in the trial's
run folder (on the sweep's storage, which every node mounts), and reports to Tune (or Ray Train) a folder
holding only ``checkpoint.json``, a :class:`Pointer` to it (file name, epoch, size, and a random id also
stored in the file), so Ray copies a few hundred bytes instead of the file. Resuming follows the
pointer; a pointer whose file is missing, of another size, unreadable or holding another id is a
:class:`~kdseg.errors.CheckpointError` naming both.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.errors import CheckpointError
from kdseg.fileio import atomic_write
from kdseg.layout import CHECKPOINT_POINTER, EPOCH_CHECKPOINT_GLOB, epoch_checkpoint

if TYPE_CHECKING:  # torch is imported by the functions that save and load: a sweep's driver needs none
    import torch


def save_atomic(obj: Any, path: str | os.PathLike, fsync: bool = True, crc32: bool = True) -> Path:
    """``torch.save`` through :func:`kdseg.fileio.atomic_write` (temp file, fsync, rename).

    ``fsync=False`` for a file that is copied elsewhere at once (a sweep trial's checkpoint, which
    Tune copies into its storage): the copy is the one that must survive. ``crc32=False`` leaves out
    the zip records' CRC32s, most of ``torch.save``'s time for large states (measured: about 4x
    faster for 444 MB); ``torch.load`` never checks them, and a truncated file still fails to load.
    """
    import torch

    with atomic_write(path, "wb", fsync=fsync) as f, _crc32(crc32):
        torch.save(obj, f)
    return Path(path)


@contextmanager
def _crc32(enabled: bool) -> Iterator[None]:
    import torch

    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(enabled)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint safely; a missing, truncated or foreign file is a CheckpointError."""
    import torch

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


@dataclass(frozen=True)
class Pointer:
    """A full checkpoint in a run folder, as a sweep's reported checkpoint folder names it.

    ``path``: the file (its folder is the trial's run folder; the pointer stores the name only);
    ``source``: the ``checkpoint.json`` it was read from (for messages), None before it is written.
    """

    path: Path
    epoch: int
    size: int
    id: str
    source: Path | None = None

    def load(self) -> Any:
        """The checkpoint's state, once the file is shown to be the one the pointer names."""
        where = self.source or "the reported checkpoint"
        if not self.path.is_file():
            raise CheckpointError(f"{where}: names {self.path}, which does not exist")
        size = self.path.stat().st_size
        if size != self.size:
            raise CheckpointError(
                f"{self.path}: not a readable checkpoint (truncated or corrupted?): {size} bytes, "
                f"{where} says {self.size}"
            )
        state = load_checkpoint(self.path)
        if not isinstance(state, dict) or state.get("checkpoint_id") != self.id:
            raise CheckpointError(
                f"{self.path}: not the checkpoint {where} names (its id differs: another attempt's file)"
            )
        return state


def save_epoch_checkpoint(state: dict[str, Any], run_dir: str | os.PathLike, epoch: int) -> Pointer:
    """Write ``state`` once to ``run_dir/checkpoint-eNNNN.pt`` (atomic; no fsync and no CRC32s, as the
    copy Ray Tune made of it before was neither) with a fresh id; the :class:`Pointer` to it."""
    token = uuid.uuid4().hex
    path = save_atomic(
        {**state, "checkpoint_id": token}, Path(run_dir) / epoch_checkpoint(epoch), fsync=False, crc32=False
    )
    return Pointer(path=path, epoch=epoch, size=path.stat().st_size, id=token)


def write_pointer(folder: str | os.PathLike, pointer: Pointer) -> Path:
    """``folder/checkpoint.json``: the pointer, with the file's name only (the run folder may move)."""
    path = Path(folder) / CHECKPOINT_POINTER
    fields = {"file": pointer.path.name, "epoch": pointer.epoch, "size": pointer.size, "id": pointer.id}
    path.write_text(json.dumps(fields) + "\n")
    return path


def read_pointer(folder: str | os.PathLike, run_dir: str | os.PathLike) -> Pointer | None:
    """The pointer in a restored checkpoint folder, resolved in ``run_dir``; None when it holds none."""
    path = Path(folder) / CHECKPOINT_POINTER
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text())
        name = str(fields["file"])
        if Path(name).name != name or not Path(name).match(EPOCH_CHECKPOINT_GLOB):
            raise ValueError(f"file {name!r} is not a checkpoint's name")
        return Pointer(
            Path(run_dir) / name, int(fields["epoch"]), int(fields["size"]), str(fields["id"]), source=path
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint pointer ({type(e).__name__}: {e})"
        ) from None


def prune_epoch_checkpoints(run_dir: str | os.PathLike, keep: Collection[str] = ()) -> None:
    """Remove the ``checkpoint-eNNNN.pt`` files of ``run_dir`` but those named in ``keep``."""
    for path in Path(run_dir).glob(EPOCH_CHECKPOINT_GLOB):
        if path.name not in keep:
            path.unlink(missing_ok=True)
