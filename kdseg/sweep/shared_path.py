"""Where a sweep folder may live: a filesystem path, on a cluster one that every node mounts at that path.

Trials write their own folders (``run/metrics.jsonl``, ``student.pt``, W&B offline runs, Ray Train's
checkpoints of ``workers`` trials) with ordinary file operations from whatever node they run on, the
driver holds an ``flock`` on the folder and the default Optuna storage is SQLite inside it. So the sweep
root (``--out``) is a path: local for one machine; on a cluster a shared filesystem (NFS, EFS,
Filestore, Azure Files, Lustre/GPFS, a ReadWriteMany volume, or object storage mounted at the same path
on every node with mountpoint-s3 or gcsfuse). A URI (``s3://``, ``gs://``, ``file://``, ...), which Ray's
own ``storage_path`` would take, is refused with that reason before anything is written.
"""

from __future__ import annotations

import os
import re

from kdseg.errors import ConfigError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_sweep_root(out: str | os.PathLike, where: str = "--out") -> None:
    """Refuse a URI as the sweep root (exit 2, naming ``where``)."""
    text = os.fspath(out)
    if _URI.match(text):
        raise ConfigError(
            f"{where} {text}: a URI; kdseg writes the sweep folder with file operations from every node, "
            f"so --out is a path every node mounts at that path (NFS, EFS, Filestore, Lustre; object "
            f"storage through a mount such as mountpoint-s3 or gcsfuse)"
        )
