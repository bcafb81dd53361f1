"""The exclusive claim a driver holds on its sweep folder (a second driver, or a resume, is refused)."""

from __future__ import annotations

import os
from pathlib import Path

from kdseg.errors import KdsegError
from kdseg.layout import LOCK_FILE


class SweepClaim:
    """An exclusive ``flock`` on ``SWEEP_DIR/.driver.lock``, held while a driver runs the sweep.

    The kernel drops it when the driver dies (even SIGKILL), so a crashed sweep can be resumed, and
    a sweep whose driver is alive cannot be run or resumed a second time.
    """

    def __init__(self, fd: int, path: Path):
        self._fd, self.path = fd, path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def claim_sweep(sweep_dir: Path, *, new: bool) -> SweepClaim:
    """Claim ``sweep_dir`` for this driver, or refuse (exit 2) without changing anything in it.

    ``new``: the folder is created (``mkdir``) and must hold nothing but the lock once claimed; a
    second driver that started at the same moment loses the lock and stops.
    """
    import fcntl

    if new:
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            sweep_dir.mkdir()
        except FileExistsError:
            pass  # maybe empty; the lock below decides
    lock = sweep_dir / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise KdsegError(f"{lock}: cannot open the sweep's lock file ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise KdsegError(
            f"{sweep_dir}: another kdseg driver{holder} is running this sweep; wait for it to end "
            f"(or stop it), then `kdseg resume {sweep_dir}`"
        ) from None
    if new and any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
        os.close(fd)
        raise KdsegError(
            f"{sweep_dir}: a sweep named {sweep_dir.name!r} exists already; `kdseg resume {sweep_dir}` "
            f"continues it, or pass --name to start another"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
    return SweepClaim(fd, lock)


def _lock_holder(fd: int) -> str:
    try:
        pid, host = os.pread(fd, 200, 0).decode().split()[:2]
        return f" (pid {int(pid)} on {host})"
    except (OSError, ValueError, UnicodeDecodeError):
        return ""
