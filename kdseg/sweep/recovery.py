"""Whatever ends a sweep early: Optuna trials paused, a full disk named, broken searcher state set aside.

A crash, Ctrl-C or ENOSPC must leave a state that ``kdseg resume`` continues: no Optuna trial RUNNING
without a live driver, no empty searcher state file in the way, storage errors reported with their path,
and a trial that a full disk ended is not failed but stops the sweep (:class:`StopOnFullDisk`).
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
from pathlib import Path

from kdseg.errors import DiskFullError, KdsegError
from kdseg.layout import BROKEN_STATE_DIR
from kdseg.sweep.plan import SweepPlan


def _teacher_stage(plan: SweepPlan, data) -> None:
    """``teacher.checkpoint: train``: each distinct teacher trained once, before any trial (kdseg.sweep.teacher_stage)."""
    from kdseg.sweep.optuna_storage import open_storage, study_exists
    from kdseg.sweep.teacher_stage import run_teacher_stage

    def close(why: str) -> None:  # the study is created when the trials start
        if study_exists(open_storage(plan.storage_url), plan.name):
            _close_running_quietly(plan, why)

    run_teacher_stage(plan.spec, data, plan.sweep_dir, on_failure=close)


def _fit(plan: SweepPlan, tuner):
    """``tuner.fit()``; whatever ends it early (an exception, Ctrl-C, a full disk), no Optuna trial is
    left RUNNING (they wait for ``kdseg resume``), and a full disk is reported as such, with its path."""
    try:
        return tuner.fit()
    except BaseException as e:
        reason = f"sweep interrupted ({type(e).__name__}: {str(e).strip()[:200]}); kdseg resume continues it"
        _close_running_quietly(plan, reason)
        full = _disk_full(e, plan.sweep_dir)
        if full is not None:
            raise full from e
        raise


def _close_running_quietly(plan: SweepPlan, reason: str) -> None:
    """Pause the study's RUNNING trials (:func:`kdseg.sweep.trial_records.pause_running`) for a resume."""
    from kdseg.sweep.optuna_storage import open_storage
    from kdseg.sweep.trial_records import pause_running

    try:
        n = pause_running(open_storage(plan.storage_url), plan.name, reason)
    except Exception as e:  # the database may be what failed (a full disk); say so, keep the first error
        logging.getLogger(__name__).warning("could not pause the running Optuna trials: %s", e)
        return
    if n:
        logging.getLogger(__name__).warning("%d running Optuna trial(s) set WAITING: %s", n, reason)


class StopOnFullDisk:
    """A Tune scheduler mixin: a trial that failed because the disk is full stops the sweep.

    A full disk is not the trial's fault: failing the trial would lose it (Optuna cannot reopen a FAIL
    trial; ``kdseg resume`` does not rerun errored trials) and fail every trial after it. The scheduler
    hears of a trial's failure before the searcher does (``TuneController._process_trial_failure``);
    raising here ends ``Tuner.fit`` with the trial still unfinished in Tune's experiment state and
    unreported to Optuna, and :func:`_fit` says "no space left on device: PATH". Once space is freed,
    ``kdseg resume`` continues the trial from its last checkpoint.
    """

    def on_trial_error(self, tune_controller, trial):
        full = trial_disk_full(trial)
        if full is not None:
            raise full
        return super().on_trial_error(tune_controller, trial)


_FULL = (
    re.compile(r"no space left on device: (\S+)"),  # kdseg's DiskFullError, with its path
    re.compile(r"\[Errno (?:28|122)\] [^:\n]+: '([^'\n]+)'"),  # an OSError (ENOSPC, EDQUOT) with a file
    re.compile(r"\[Errno (?:28|122)\]|No space left on device|database or disk is full"),
)


def trial_disk_full(trial) -> DiskFullError | None:
    """The full disk that ended ``trial``'s last attempt, read from the error Ray recorded; else None."""
    try:
        text = Path(trial.error_file).read_text(errors="replace")
    except (OSError, TypeError):
        return None
    path = _full_in_text(text.rsplit("Failure # ", 1)[-1])  # Ray appends one section per failed attempt
    return None if path is None else DiskFullError(path or trial.path)


def _storage_errors(plan: SweepPlan, step):
    """Run ``step``; a full disk becomes "no space left on device: PATH"."""
    try:
        return step()
    except BaseException as e:
        full = _disk_full(e, plan.sweep_dir)
        if full is not None:
            raise full from e
        raise


def _disk_full(err: BaseException, where: Path) -> DiskFullError | None:
    """A :class:`DiskFullError` naming the file if ``err`` (or its cause) is ENOSPC/EDQUOT, else None.

    Ray wraps a trial's error in text (``TuneError``, ``RayTaskError``): the path is read from it then,
    else ``where`` is named.
    """
    chain: list[BaseException] = []
    while err is not None and len(chain) < 10:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        if isinstance(e, DiskFullError):
            return e
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(e.filename or _full_in_text(str(e)) or where)
    for e in chain:
        path = _full_in_text(str(e))
        if path is not None:
            return DiskFullError(path or where)
    return None


def _full_in_text(text: str) -> str | None:
    """The path named by the first disk-full error in ``text``; "" when none is named; None: no such error."""
    for pattern in _FULL:
        m = pattern.search(text)
        if m:
            return m.group(1) if m.groups() else ""
    return None


_STATE_FILES = (
    "experiment_state-{}.json",
    "search_gen_state-{}.json",
    "searcher-state-{}.pkl",
    "callback-states-{}.pkl",
)


def _replace_broken_experiment_state(tune_dir: Path) -> list[Path]:
    import json

    from kdseg.sweep.ray_private import staged_tune_state

    moved = []
    for f in sorted(tune_dir.glob("experiment_state-*.json")):
        try:
            json.loads(f.read_text())
            continue
        except (OSError, ValueError):
            pass
        staged = staged_tune_state(tune_dir.name, f.name)
        if staged is None:
            raise KdsegError(
                f"{f}: Ray Tune's experiment state is cut short (a full disk?) and the driver's own copy, kept "
                f"in Ray's temp folder on the machine it ran on, is not there: the sweep cannot be resumed"
            )
        session = f.name.removeprefix("experiment_state-").removesuffix(".json")
        for name in (pattern.format(session) for pattern in _STATE_FILES):
            if (tune_dir / name).exists():
                dest = tune_dir.parent / BROKEN_STATE_DIR / name
                dest.parent.mkdir(exist_ok=True)
                shutil.move(str(tune_dir / name), str(dest))
                moved.append(dest)
            if (staged / name).exists():
                shutil.copyfile(staged / name, tune_dir / name)
        logging.getLogger(__name__).warning(
            "%s was cut short; resuming from the driver's own copy in %s", f.name, staged
        )
    return moved


def is_disk_full(err: BaseException) -> bool:
    return _disk_full(err, Path()) is not None


def set_aside_broken_state(tune_dir: Path) -> list[Path]:
    """Move Ray's state files that a crash left empty or unreadable to ``SWEEP_DIR/broken-state/``.

    An experiment state (``experiment_state-S.json``) cut short is replaced by the driver's own copy of
    session S's state files (:func:`~kdseg.sweep.ray_private.staged_tune_state`); without one, the sweep
    cannot be resumed (Tune would start it again over the old trials): a :class:`KdsegError`. For
    searcher state, Ray restores the newest readable one then (an earlier session's), or, with none,
    sets the searcher up again from the study in storage. Returns what was moved.
    """
    import pickle

    import ray.cloudpickle as cloudpickle

    moved = _replace_broken_experiment_state(tune_dir)
    for pattern in ("search_gen_state-*.json", "searcher-state-*.pkl"):
        for f in sorted(tune_dir.glob(pattern)):
            try:
                with f.open("rb") as fh:
                    (cloudpickle if pattern.endswith("json") else pickle).load(fh)
                continue
            except Exception:  # empty, truncated, or written by something else
                pass
            dest = tune_dir.parent / BROKEN_STATE_DIR / f.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(f), str(dest))
            moved.append(dest)
    if moved:
        logging.getLogger(__name__).warning(
            "set aside unreadable searcher state (a crash left it): %s", ", ".join(p.name for p in moved)
        )
    # a searcher file without its generator file (or the reverse) cannot be restored alone
    gens, searchers = (
        list(tune_dir.glob("search_gen_state-*.json")),
        list(tune_dir.glob("searcher-state-*.pkl")),
    )
    if bool(gens) != bool(searchers):
        for f in gens + searchers:
            dest = tune_dir.parent / BROKEN_STATE_DIR / f.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(f), str(dest))
            moved.append(dest)
    return moved
