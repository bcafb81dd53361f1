"""User-facing errors.

Anything a user can fix (a config key, a dataset folder, a storage URL, a checkpoint) raises a
:class:`KdsegError`. The command line prints its message on one line and exits with status 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KdsegError(Exception):
    """An error caused by the user's input; its message says what to fix."""

    exit_code = 2


class ConfigError(KdsegError):
    """A configuration or search-space file is malformed or invalid."""


class DatasetError(KdsegError):
    """A dataset folder is missing, malformed, or inconsistent with the config."""


class CheckpointError(KdsegError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model."""


class WeightsError(KdsegError):
    """Pretrained weights could not be obtained (offline machine, missing file)."""


class DiskFullError(KdsegError, OSError):
    """A write failed because the file system is full (ENOSPC) or over quota; names the path."""

    exit_code = 1  # not bad input: free space, then `kdseg resume` continues

    def __init__(self, path):
        import errno

        OSError.__init__(self, errno.ENOSPC, "no space left on device", str(path))
        self.path = str(path)

    def __str__(self) -> str:
        return f"no space left on device: {self.path}"

    def __reduce__(self):  # copied and pickled as itself (Ray copies a trial's exception to report it)
        return (type(self), (self.path,))
