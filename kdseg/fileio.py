"""Small file-system helpers shared by every writer: atomic writes and writability checks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kdseg.errors import KdsegError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", fsync: bool = True, **open_kwargs) -> Iterator[IO]:
    """Write ``path`` through a temporary sibling renamed into place on success.

    Readers never see a half-written file, and a crash leaves the previous version intact.
    Binary files are fsynced before the rename (checkpoints must survive a power cut) unless ``fsync``
    is false (a file that is copied elsewhere at once).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; these are ordinary files
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            if "b" in mode and fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, Path(tmp))  # before the unlink frees the space again
        Path(tmp).unlink(missing_ok=True)
        if full:
            from kdseg.errors import DiskFullError

            raise DiskFullError(path) from e
        raise


def _disk_full(err: BaseException, tmp: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC/EDQUOT anywhere in the exception chain, or a
    library's own write error (torch.save: ``[enforce fail at inline_container.cc] ...``) on a file
    system with no room left."""
    import errno

    e: BaseException | None = err
    for _ in range(10):
        if e is None:
            break
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    if not isinstance(err, RuntimeError):
        return False
    try:
        st = os.statvfs(tmp.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20  # under 1 MiB left: the write failed for want of space


def require_writable(folder: str | os.PathLike, what: str = "output") -> None:
    """Fail before any work starts if ``folder`` cannot be created or written."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise KdsegError(f"{folder}: cannot write the {what} here ({probe} is not a writable folder)")
    # Permission bits do not tell the whole story (root, read-only mounts, full disks): try it.
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".kdseg-probe-"):
            pass
    except OSError as e:
        raise KdsegError(
            f"{folder}: cannot write the {what} here ({probe}: {e.strerror or type(e).__name__})"
        ) from None
