"""The driver-side Ray Tune callbacks of a sweep's trials: :class:`PruneFinishedCheckpoints` drops what only
an unfinished trial needs, :class:`ReportRecoveries` tells the console about trials that survived a fault."""

from __future__ import annotations

import shutil
from pathlib import Path

from ray import tune

from kdseg.checkpoint import prune_epoch_checkpoints
from kdseg.layout import (
    CHECKPOINT_POINTER,
    FULL_CHECKPOINT,
    REPORT_STAGING_DIR,
    STUDENT_CHECKPOINT,
    trial_run_dir,
)


class PruneFinishedCheckpoints(tune.Callback):
    """Drop the full (teacher + student + optimiser) checkpoints of every trial that has finished, and
    the pointers to them (a trial a driver crash makes Tune run again then starts from scratch).

    Only an unfinished trial can be resumed, and a full checkpoint of two UNets with Adam state is
    hundreds of MB. A finished trial keeps its run folder: config.yaml, metrics.jsonl, student.pt.
    """

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir

    def _prune(self, trial) -> None:
        ckpt = trial.checkpoint
        if ckpt is not None and ckpt.path and Path(ckpt.path).is_dir():
            for name in (CHECKPOINT_POINTER, FULL_CHECKPOINT, STUDENT_CHECKPOINT):  # run/ keeps the student
                (Path(ckpt.path) / name).unlink(missing_ok=True)
        run_dir = trial_run_dir(Path(self.sweep_dir), trial.trial_id)
        (run_dir / FULL_CHECKPOINT).unlink(missing_ok=True)
        prune_epoch_checkpoints(run_dir)
        shutil.rmtree(run_dir / REPORT_STAGING_DIR, ignore_errors=True)  # left by a trial stopped in a report
        from kdseg.sweep.workers import prune_train_checkpoints

        prune_train_checkpoints(Path(self.sweep_dir), trial.trial_id)  # a workers trial's (Ray Train's)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._prune(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._prune(trial)


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error"


class ReportRecoveries(tune.Callback):
    """Tell the user, on the driver's console, about trials that survived a fault.

    A failed attempt that Tune retries (``sweep.max_failures``) and a trial that found its checkpoint
    damaged and started again from scratch leave no trace in the live table otherwise.
    """

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
        self._told: set[str] = set()

    def _say(self, text: str) -> None:
        import sys

        print(f"kdseg: {text}", file=sys.stderr, flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        try:
            error = _last_line(trial.get_error())
        except Exception:  # cosmetic: never break the sweep for a message
            error = "unknown error"
        limit = "unlimited" if self.max_failures < 0 else str(self.max_failures)
        self._say(
            f"trial {trial.trial_id} failed ({error}); retrying from its last checkpoint "
            f"(failure {trial.num_failures}, sweep.max_failures {limit})"
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        note = result.get("recovered")
        if note and trial.trial_id not in self._told:
            self._told.add(trial.trial_id)
            self._say(f"trial {trial.trial_id}: {note}")
