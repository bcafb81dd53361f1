"""Training one teacher/student pair: :func:`train_kd`, the one training function of kdseg.

- :mod:`kdseg.train.loop`: ``train_kd``, the epoch loop (report, hooks, files, resume);
- :mod:`kdseg.train.step`: one optimisation step, and what ties it to several processes;
- :mod:`kdseg.train.setup`: seeds, the ``Accelerator``, models and objective, optimisers, schedules;
- :mod:`kdseg.train.validation`: ``evaluate`` and the per-epoch metrics;
- :mod:`kdseg.train.state`: what a full checkpoint holds, and restoring it;
- :mod:`kdseg.train.heap`: glibc's mmap threshold fixed, so that freed tensors leave the process.
"""

from kdseg.config import config_to_dict
from kdseg.train.loop import EpochContext, EpochHook, Report, SaveCheckpoint, train_kd
from kdseg.train.setup import make_accelerator, seed_everything
from kdseg.train.step import Diverged
from kdseg.train.validation import evaluate

__all__ = [
    "Diverged",
    "EpochContext",
    "EpochHook",
    "Report",
    "SaveCheckpoint",
    "config_to_dict",
    "evaluate",
    "make_accelerator",
    "seed_everything",
    "train_kd",
]
