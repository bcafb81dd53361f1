"""A sweep's teacher stage: each distinct teacher trained once, before the trials, then frozen.

``teacher.checkpoint: train`` (with ``distill.mode: offline``) asks the sweep to train the teacher
itself. Before any trial starts, the driver works out every distinct teacher the trials can get
(:func:`kdseg.sweep.teacher_plan.plan_teachers`, which also says what shapes a teacher and names its
folder), trains each one once as a Ray task with the trial's resources, through the same
:func:`kdseg.train.train_kd` every trial runs (``distill.mode: none``, the teacher as the student: one
training function), and every offline trial then distils from that frozen teacher (:func:`fill_teacher`
puts its ``student.pt`` in the trial's ``teacher.checkpoint``).

A teacher's folder ``SWEEP/teachers/<hash>/`` (:func:`kdseg.layout.teacher_dir`) holds ``config.yaml``,
``metrics.jsonl``, ``student.pt`` (the teacher's weights) and, once it has finished,
``teacher.json`` (its summary, the mark that it is done). A finished teacher is never trained again
(``kdseg resume`` reuses it); an interrupted one continues from its last ``checkpoint.pt``.
A teacher that fails stops the sweep before any student starts (:class:`TeacherStageError`, exit status 1).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdseg.config import TRAIN_TEACHER, KDConfig, config_to_dict, validate_config
from kdseg.errors import CheckpointError, KdsegError
from kdseg.layout import (
    CONFIG_FILE,
    FULL_CHECKPOINT,
    METRICS_FILE,
    STUDENT_CHECKPOINT,
    TEACHER_SUMMARY,
    TEACHERS_DIR,
    read_metrics,
    teacher_dir,
)
from kdseg.sweep.teacher_plan import Teacher, plan_teachers, teacher_hash


class TeacherStageError(KdsegError):
    """A teacher of the teacher stage failed; no student was started."""

    exit_code = 1  # not bad input: the teacher's own error says what went wrong


def fill_teacher(cfg: KDConfig, sweep_dir: str | Path) -> KDConfig:
    """A trial config with its stage-trained teacher's ``student.pt`` as ``teacher.checkpoint``.

    Configs without a teacher stage come back unchanged; a no-KD control's ``train`` is cleared (it has
    no teacher).
    """
    if cfg.teacher.checkpoint != TRAIN_TEACHER:
        return cfg
    cfg = cfg.model_copy(deep=True)
    if cfg.distill.mode != "offline":
        cfg.teacher.train_epochs = None
        cfg.teacher.checkpoint = None
        return cfg
    folder = teacher_dir(sweep_dir, teacher_hash(cfg))
    if read_summary(folder) is None:
        raise CheckpointError(
            f"teacher.checkpoint: train: the teacher stage has no finished teacher for this trial ({folder}); "
            "keys that shape the teacher must be fixed or choice/grid in the space"
        )
    cfg.teacher.train_epochs = None
    cfg.teacher.checkpoint = folder / STUDENT_CHECKPOINT
    return cfg


# -------------------------------------------------------------------------------------- training


def _say(text: str) -> None:
    print(f"kdseg: {text}", file=sys.stderr, flush=True)


def read_summary(folder: Path) -> dict[str, Any] | None:
    """A finished teacher's ``teacher.json`` (None while it has not finished, or without its weights)."""
    try:
        summary = json.loads((folder / TEACHER_SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and (folder / STUDENT_CHECKPOINT).is_file() else None


def train_teacher(config: dict[str, Any], data, folder: str, report=None) -> dict[str, Any]:
    """Train one teacher into ``folder`` (continuing from its ``checkpoint.pt``); its summary.

    The body of the stage's Ray task, and an ordinary function (experiments/kd_benefit.py, tests);
    ``report(metrics, checkpoint_dir)`` is :func:`kdseg.train.train_kd`'s per-epoch callback.
    """
    from kdseg.fileio import atomic_write
    from kdseg.train import train_kd

    run_dir = Path(folder)
    cfg = validate_config(config, source=str(run_dir / CONFIG_FILE))
    started = time.perf_counter()
    resume = run_dir / FULL_CHECKPOINT if (run_dir / FULL_CHECKPOINT).is_file() else None
    try:
        last = train_kd(cfg, data, report, run_dir=run_dir, resume=resume, keep_last_checkpoint=False)
    except CheckpointError:
        if resume is None:
            raise
        (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a damaged checkpoint: start again
        last = train_kd(cfg, data, report, run_dir=run_dir, keep_last_checkpoint=False)
    epochs = read_metrics(run_dir)
    last = epochs[-1] if epochs else last
    summary = {
        "hash": cfg.name.removeprefix("teacher-"),
        "teacher": Teacher(cfg.name, cfg).label,
        "epochs": int(last["epoch"]),
        "val_miou": last["val_miou"],
        "val_miou_dataset": last.get("val_miou_dataset"),
        "val_miou_per_image": last.get("val_miou_per_image"),
        "params": last.get("student_params"),
        "checkpoint": str(run_dir / STUDENT_CHECKPOINT),
        "train_time_s": round(time.perf_counter() - started, 1),
    }
    (run_dir / FULL_CHECKPOINT).unlink(missing_ok=True)  # finished: only student.pt is needed
    with atomic_write(run_dir / TEACHER_SUMMARY, "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err  # RayTaskError keeps the task's own exception
    lines = [ln.strip() for ln in str(cause).strip().splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:500]


def run_teacher_stage(
    spec, data, sweep_dir: str | Path, *, on_failure: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Train every teacher of the sweep that has not finished yet (Ray tasks); their summaries.

    Prints each teacher's epochs as they finish. A failed teacher cancels the others, calls
    ``on_failure(reason)`` and raises :class:`TeacherStageError` with the teacher's error.
    """
    teachers = plan_teachers(spec)
    if not teachers:
        return []
    import ray

    sweep_dir = Path(sweep_dir)
    summaries: dict[str, dict[str, Any]] = {}
    todo = []
    for t in teachers:
        folder = teacher_dir(sweep_dir, t.hash)
        if (s := read_summary(folder)) is not None:
            summaries[t.hash] = s
            _say(
                f"teacher {t.hash} ({t.label}) trained earlier: val mIoU {s['val_miou']:.4f} after "
                f"{s['epochs']} epochs; reused"
            )
        else:
            todo.append(t)
    if todo:
        r = spec.sweep.resources_per_trial
        retries = spec.sweep.max_failures
        task = ray.remote(num_cpus=r.cpu, num_gpus=r.gpu, max_retries=retries, retry_exceptions=retries != 0)(
            train_teacher
        )
        _say(
            f"teacher stage: training {len(todo)} teacher(s) once, before the trials: "
            + "; ".join(
                f"{t.hash} ({t.label}, {t.config.train.epochs} epochs)"
                + (" continuing" if (teacher_dir(sweep_dir, t.hash) / FULL_CHECKPOINT).is_file() else "")
                for t in todo
            )
            + f" -> {sweep_dir / TEACHERS_DIR}"
        )
        data_ref = ray.put(data)
        refs = {
            task.remote(config_to_dict(t.config), data_ref, str(teacher_dir(sweep_dir, t.hash))): t
            for t in todo
        }
        shown = {t.hash: len(read_metrics(teacher_dir(sweep_dir, t.hash))) for t in todo}
        started = time.perf_counter()
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for t in todo:
                    epochs = read_metrics(teacher_dir(sweep_dir, t.hash))
                    for m in epochs[shown[t.hash] :]:
                        _say(
                            f"teacher {t.hash}: epoch {m['epoch']}/{t.config.train.epochs}, val mIoU "
                            f"{m['val_miou']:.4f} ({time.perf_counter() - started:.0f} s)"
                        )
                    shown[t.hash] = max(shown[t.hash], len(epochs))
                for ref in ready:
                    t = refs[ref]
                    try:
                        s = ray.get(ref)
                    except Exception as e:
                        raise TeacherStageError(
                            f"teacher stage: teacher {t.hash} ({t.label}) failed, so no student was started: "
                            f"{_error_text(e)} (its run: {teacher_dir(sweep_dir, t.hash)}); after a transient failure "
                            f"`kdseg resume {sweep_dir}` trains it again; a problem in the config needs a new sweep"
                        ) from None
                    summaries[t.hash] = s
                    _say(
                        f"teacher {t.hash} ({t.label}) done: val mIoU {s['val_miou']:.4f} after {s['epochs']} "
                        f"epochs ({s['train_time_s']:.0f} s)"
                    )
        except BaseException as e:
            for ref in pending:
                ray.cancel(ref, force=True)
            if on_failure is not None:
                on_failure(f"teacher stage failed ({str(e)[:200]})")
            raise
        del data_ref
    return [summaries[t.hash] for t in teachers]


# ------------------------------------------------------------------------------------ reporting


def read_teachers(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The summaries of a sweep's finished stage teachers (sorted by hash)."""
    root = Path(sweep_dir) / TEACHERS_DIR
    if not root.is_dir():
        return []
    return [s for d in sorted(root.iterdir()) if d.is_dir() and (s := read_summary(d)) is not None]


def describe_teachers(sweep_dir: str | Path) -> list[str]:
    """One line per stage teacher, for the console under the leaderboard."""
    return [
        f"teacher {s['hash']} ({s['teacher']}, trained once by the teacher stage): val mIoU "
        f"{s['val_miou']:.4f} after {s['epochs']} epochs -> {s['checkpoint']}"
        for s in read_teachers(sweep_dir)
    ]
