"""The Ray Tune function trainable: one sweep trial = one call of :func:`kdseg.train.train_kd`.

The decoded dataset arrives through ``tune.with_parameters`` (the object store: one copy per node,
shared read-only by that node's trials). Each epoch's metrics go to ``tune.report`` with the epoch's
checkpoint folder as a ``tune.Checkpoint``; a restarted trial resumes from ``tune.get_checkpoint()``.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from kdseg.checkpoint import FULL_CHECKPOINT, STUDENT_CHECKPOINT
from kdseg.export import trial_run_dir
from kdseg.train import Diverged, train_kd

# Lists (per-class IoU) stay in metrics.jsonl; Tune gets scalars.
_SCALARS = (int, float, bool, str)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, _SCALARS) or v is None}


def kd_trainable(params: dict[str, Any], spec=None, data=None, sweep_dir: str | None = None) -> None:
    from kdseg.space import trial_config

    cfg = trial_config(spec, params)
    # The run folder lives in the sweep folder (shared storage on a cluster), not Ray's local staging dir.
    run_dir = trial_run_dir(Path(sweep_dir), tune.get_context().get_trial_id())
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restored = Path(tempfile.mkdtemp(prefix="kdseg-restore-"))
        checkpoint.to_directory(str(restored))
        resume = restored / "checkpoint.pt"
        # metrics.jsonl of the restored attempt continues from the checkpoint's epochs
        if (restored / "metrics.jsonl").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").write_text((restored / "metrics.jsonl").read_text())

    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        nonlocal last
        last = scalar_metrics(metrics)
        if ckpt_dir is None:
            tune.report(last)
            return
        tune.report(last, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
        # Tune has persisted its copy; the run folder keeps the small files, not a second full checkpoint.
        (Path(ckpt_dir) / FULL_CHECKPOINT).unlink(missing_ok=True)

    try:
        train_kd(cfg, data, report, run_dir=run_dir, resume=resume)
    except Diverged as e:
        # A NaN/inf loss ends this trial as 'diverged': reported, not retried, not a crash.
        final = {k: v for k, v in last.items() if not (isinstance(v, float) and math.isnan(v))}
        # ASHA compares numbers: a diverged student scores 0; the leaderboard shows it as 'diverged'.
        final.update(diverged=True, error=str(e)[:500], val_miou=0.0, iou_per_mparam=0.0)
        tune.report(final)


class PruneFinishedCheckpoints(tune.Callback):
    """Drop the full (teacher + student + optimiser) checkpoints of every trial that has finished.

    Only an unfinished trial can be resumed, and a full checkpoint of two UNets with Adam state is
    hundreds of MB. A finished trial keeps its run folder: config.yaml, metrics.jsonl, student.pt.
    """

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir

    def _prune(self, trial) -> None:
        ckpt = trial.checkpoint
        if ckpt is not None and ckpt.path and Path(ckpt.path).is_dir():
            for name in (FULL_CHECKPOINT, STUDENT_CHECKPOINT):  # run/ keeps the student
                (Path(ckpt.path) / name).unlink(missing_ok=True)
        (trial_run_dir(Path(self.sweep_dir), trial.trial_id) / FULL_CHECKPOINT).unlink(missing_ok=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._prune(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._prune(trial)
