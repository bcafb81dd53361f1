"""Whatever ends a sweep early: Optuna trials closed, a full disk named, broken searcher state set aside.

A crash, Ctrl-C or ENOSPC must leave a state that ``kdseg resume`` continues: no Optuna trial RUNNING
without a live driver, no empty searcher state file in the way, storage errors reported with their path.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

from kdseg.errors import DiskFullError
from kdseg.sweep.plan import SweepPlan


def _teacher_stage(plan: SweepPlan, data) -> None:
    """``teacher.checkpoint: train``: each distinct teacher trained once, before any trial (kdseg.sweep.teacher_stage)."""
    from kdseg.sweep.study import open_storage, study_exists
    from kdseg.sweep.teacher_stage import run_teacher_stage

    def close(why: str) -> None:  # the study is created when the trials start
        if study_exists(open_storage(plan.storage_url), plan.name):
            _close_running_quietly(plan, why)

    run_teacher_stage(plan.spec, data, plan.sweep_dir, on_failure=close)


def _fit(plan: SweepPlan, tuner):
    """``tuner.fit()``; whatever ends it early (an exception, Ctrl-C, a full disk), no Optuna trial is
    left RUNNING, and a full disk is reported as such, with its path."""
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
    from kdseg.sweep.study import close_running, open_storage

    try:
        n = close_running(open_storage(plan.storage_url), plan.name, reason)
    except Exception as e:  # the database may be what failed; say so, keep the first error
        logging.getLogger(__name__).warning("could not close the running Optuna trials: %s", e)
        return
    if n:
        logging.getLogger(__name__).warning("%d running Optuna trial(s) marked FAIL: %s", n, reason)


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
    """A :class:`DiskFullError` naming the file if ``err`` (or its cause) is ENOSPC/EDQUOT, else None."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, DiskFullError):
            return err
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(err.filename or where)
        if "No space left on device" in str(err):
            return DiskFullError(where)
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def set_aside_broken_state(tune_dir: Path) -> list[Path]:
    """Move Ray's searcher state files that a crash left empty or unreadable to ``tune/broken-state/``.

    Ray restores the newest readable state then (an earlier session's), or, with none, sets the
    searcher up again from the study in storage. Returns what was moved.
    """
    import pickle

    import ray.cloudpickle as cloudpickle

    moved = []
    for pattern in ("search_gen_state-*.json", "searcher-state-*.pkl"):
        for f in sorted(tune_dir.glob(pattern)):
            try:
                with f.open("rb") as fh:
                    (cloudpickle if pattern.endswith("json") else pickle).load(fh)
                continue
            except Exception:  # empty, truncated, or written by something else
                pass
            dest = tune_dir / "broken-state" / f.name
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
            dest = tune_dir / "broken-state" / f.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(f), str(dest))
            moved.append(dest)
    return moved
