"""The folder contract: every file name of a sweep folder and a training run folder, and their readers.

This module is the one place that knows these names; everything else imports them from here.
It imports nothing of kdseg, so any layer may use it::

    ROOT/NAME/                     a sweep (kdseg-sweep, kdseg resume)
      sweep.yaml                   the resolved spec as run            SPEC_FILE
      leaderboard.csv              one row per trial                   LEADERBOARD
      best_config.yaml             the winner's training config        BEST_CONFIG
      optuna.db                    the default Optuna storage          DEFAULT_DB
      final_eval.json              sweep.final_eval's test numbers     FINAL_EVAL_FILE
      report.html                  kdseg report                        REPORT_FILE
      best_student.onnx|...        kdseg export --format               best_student_file()
      .driver.lock                 flock-ed by the sweep's one driver  LOCK_FILE
      broken-state/                Ray state files a crash cut short   BROKEN_STATE_DIR
      orphaned/<trial_id>/         trial folders Tune never recorded   ORPHANED_DIR
      teachers/<hash>/             a teacher-stage teacher: a run      TEACHERS_DIR, teacher_dir()
        teacher.json               its summary, once it has finished   TEACHER_SUMMARY
      tune/                        the Ray Tune experiment             TUNE_DIR
        <trial_id>/params.json     what Ray Tune sampled               PARAMS_FILE
        <trial_id>/run/            the trial's training run folder     trial_run_dir()
        <trial_id>/checkpoint_*/checkpoint.json   Tune's checkpoint: a pointer to run/checkpoint-eNNNN.pt

    DIR/                           a training run (kdseg train, a trial's run/)
      config.yaml                  the resolved config                 CONFIG_FILE
      metrics.jsonl                one JSON object per epoch           METRICS_FILE, read_metrics()
      student.pt                   the student's state_dict            STUDENT_CHECKPOINT
      checkpoint.pt                everything needed to resume         FULL_CHECKPOINT
      checkpoint-eNNNN.pt          a sweep trial's, after epoch N      epoch_checkpoint()
      .tune-report/                what a sweep trial hands Tune       REPORT_STAGING_DIR
      eval_<split>.json            kdseg eval                          eval_file()
      images/classes.json          class names and colours of images/  IMAGES_DIR, CLASSES_FILE
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------ a sweep folder
SPEC_FILE = "sweep.yaml"
LEADERBOARD = "leaderboard.csv"
BEST_CONFIG = "best_config.yaml"
DEFAULT_DB = "optuna.db"
FINAL_EVAL_FILE = "final_eval.json"
REPORT_FILE = "report.html"
LOCK_FILE = ".driver.lock"
TUNE_DIR = "tune"
BROKEN_STATE_DIR = "broken-state"  # beside tune/: every folder in tune/ is one trial
ORPHANED_DIR = "orphaned"  # beside tune/: trial folders of a killed driver that Tune never recorded
TEACHERS_DIR = "teachers"  # the teacher stage's runs, one folder per teacher hash
TEACHER_SUMMARY = "teacher.json"  # in a teacher's run folder: its summary, written when it has finished
PARAMS_FILE = "params.json"
TRIAL_RUN_DIR = "run"
FAULTS_DIR = ".faults"  # kdseg.sweep.faults' counts (a testing aid)
BEST_STUDENT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}

# ------------------------------------------------------------------------------------ a training run
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
STUDENT_CHECKPOINT = "student.pt"  # the student's state_dict alone: what gets deployed
FULL_CHECKPOINT = "checkpoint.pt"  # everything needed to resume a run
EPOCH_CHECKPOINT_GLOB = "checkpoint-e*.pt"  # a sweep trial's full checkpoints (epoch_checkpoint)
CHECKPOINT_POINTER = "checkpoint.json"  # what a sweep trial reports to Tune: names one of them
REPORT_STAGING_DIR = ".tune-report"  # a sweep trial's folder for the pointer Tune copies at each report
IMAGES_DIR = "images"
CLASSES_FILE = "classes.json"

# ----------------------------------------------------------------------- outside any folder above
PROFILE_CACHE_FILE = "profile_cache.json"  # kdseg.deploy.bench's cost cache, in the user's cache folder


def trial_run_dir(sweep_dir: str | os.PathLike, trial_id: str) -> Path:
    """The folder where a trial's train_kd wrote config.yaml, metrics.jsonl and student.pt."""
    return Path(sweep_dir) / TUNE_DIR / trial_id / TRIAL_RUN_DIR


def teacher_dir(sweep_dir: str | os.PathLike, digest: str) -> Path:
    """The run folder of the teacher-stage teacher whose hash is ``digest``."""
    return Path(sweep_dir) / TEACHERS_DIR / digest


def epoch_checkpoint(epoch: int) -> str:
    """The name of a sweep trial's full checkpoint after (1-based) ``epoch``, in its run folder."""
    return f"checkpoint-e{epoch:04d}.pt"


def best_student_file(sweep_dir: str | os.PathLike, fmt: str) -> Path:
    """``SWEEP_DIR/best_student.onnx`` or ``SWEEP_DIR/best_student.torchscript.pt``."""
    return Path(sweep_dir) / f"best_student{BEST_STUDENT_SUFFIX[fmt]}"


def eval_file(split: str) -> str:
    """The name of the file ``kdseg eval`` writes for ``split`` into a run folder."""
    return f"eval_{split}.json"


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """A finished sweep folder: it has its spec and its leaderboard."""
    path = Path(path)
    return (path / LEADERBOARD).is_file() and (path / SPEC_FILE).is_file()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The epochs of a run's metrics.jsonl, in order; [] when there is none. A line cut by a crash is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
    return out


def last_metrics(run_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The last epoch of a run's metrics.jsonl; {} when there is none."""
    rows = read_metrics(run_dir) if run_dir is not None else []
    return rows[-1] if rows else {}


def append_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Add one epoch to a run's metrics.jsonl."""
    with (Path(run_dir) / METRICS_FILE).open("a") as f:
        f.write(json.dumps(metrics) + "\n")


def truncate_metrics(run_dir: str | os.PathLike, keep_epochs: int) -> None:
    """Drop epochs after the checkpoint a run resumes from, so metrics.jsonl never counts an epoch twice."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= keep_epochs]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def copy_metrics(src_dir: str | os.PathLike, run_dir: str | os.PathLike) -> int:
    """Copy a restored attempt's metrics.jsonl into ``run_dir``; returns its number of epochs (0 if none)."""
    src = Path(src_dir) / METRICS_FILE
    if not src.exists():
        return 0
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    text = src.read_text()
    (Path(run_dir) / METRICS_FILE).write_text(text)
    return len(text.splitlines())


def drop_metrics(run_dir: str | os.PathLike) -> None:
    """Remove a run's metrics.jsonl (a trial that starts again from scratch)."""
    (Path(run_dir) / METRICS_FILE).unlink(missing_ok=True)
