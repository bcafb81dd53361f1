"""``kdseg eval``: trained students (and their teachers) measured on a named split.

A target is a run folder (``config.yaml`` + ``student.pt``), a sweep trial folder (``tune/<trial>``,
whose ``run/`` holds them), a ``student.pt`` with ``--config``, or a sweep folder: its Pareto front
(default) or its ``--top-k`` best rows of ``leaderboard.csv``. Each target's student is measured on
the split (``test`` by default) with the same data pipeline, loader and :func:`kdseg.train.evaluate` as
validation during training, so ``--split val`` reproduces the run's last ``student_val_miou`` exactly.

Everything is checked before anything is measured (configs, checkpoints against the config, the
split's files, that the output files can be written); a problem is one :class:`KdsegError` naming
the file, and nothing is written. Results go to ``eval_<split>.json`` beside each run (and, for a
sweep folder, ``SWEEP_DIR/eval_<split>.json`` with every target).

Test numbers are for reporting: nothing in kdseg selects, stops or ranks on them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.errors import CheckpointError, ConfigError, KdsegError
from kdseg.layout import (
    CONFIG_FILE,
    FULL_CHECKPOINT,
    LEADERBOARD,
    METRICS_FILE,
    STUDENT_CHECKPOINT,
    TRIAL_RUN_DIR,
    eval_file,
    is_sweep_dir,
    last_metrics,
    trial_run_dir,
)

SPLITS = ("test", "val", "train")


@dataclass
class Target:
    """One trained student to measure, with where its config, weights and results live."""

    name: str
    cfg: Any  # KDConfig
    config_path: Path
    student_path: Path
    out_dir: Path  # eval_<split>.json is written here
    run_dir: Path | None = None  # the training run folder (metrics.jsonl, checkpoint.pt), when known
    last: dict[str, Any] = field(default_factory=dict)  # the run's last metrics.jsonl row
    row: dict[str, Any] | None = None  # the leaderboard row of a sweep trial


# --------------------------------------------------------------------------------------- targets


def run_target(
    run_dir: Path, overrides: Sequence[str] = (), config: Path | None = None, name: str | None = None
) -> Target:
    """A run folder (``config.yaml`` + ``student.pt``) as a target; ``config`` replaces its config.yaml."""
    from kdseg.config import load_config

    config_path = config or run_dir / CONFIG_FILE
    cfg = load_config(config_path, overrides)
    student = run_dir / STUDENT_CHECKPOINT
    if not student.is_file():
        raise CheckpointError(f"{student}: checkpoint not found (the run has not finished an epoch?)")
    return Target(name or run_dir.name, cfg, config_path, student, run_dir, run_dir, last_metrics(run_dir))


def select_rows(rows: Sequence[dict[str, Any]], top_k: int | None = None, pareto: bool = False) -> list[dict]:
    """Leaderboard rows to measure: the ``top_k`` first (in ranked order) or the Pareto front.

    Only rows with a ``val_miou`` that did not fail count; the order of ``rows`` is kept.
    """
    from kdseg.sweep.ranking import FAILED_STATUSES, as_number

    ok = [
        r for r in rows if r.get("status") not in FAILED_STATUSES and as_number(r.get("val_miou")) is not None
    ]
    return [r for r in ok if r.get("pareto")] if pareto else ok[: top_k or 1]


def sweep_targets(
    sweep_dir: Path, overrides: Sequence[str] = (), top_k: int | None = None, pareto: bool = False
) -> list[Target]:
    """The selected trials of a finished sweep folder (see :func:`select_rows`)."""
    from kdseg.sweep.ranking import read_leaderboard_csv

    board = sweep_dir / LEADERBOARD
    if not board.is_file():
        raise KdsegError(f"{sweep_dir}: no {LEADERBOARD} (the sweep has not finished)")
    rows = select_rows(read_leaderboard_csv(board), top_k, pareto)
    if not rows:
        raise KdsegError(f"{board}: no finished trial with a val_miou to evaluate")
    out = []
    for r in rows:
        t = run_target(trial_run_dir(sweep_dir, str(r["trial_id"])), overrides, name=str(r["trial_id"]))
        t.row = r
        out.append(t)
    return out


def resolve_targets(
    paths: Sequence[str | Path],
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    top_k: int | None = None,
    pareto: bool = False,
) -> list[Target]:
    """Targets from command-line paths (module docstring); a path that is none of them is an error."""

    config = Path(config) if config is not None else None
    out: list[Target] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            cfg_path = config or path.parent / CONFIG_FILE
            if not cfg_path.is_file():
                raise ConfigError(
                    f"{path}: a checkpoint file needs its training config: pass --config CONFIG.yaml"
                )
            from kdseg.config import load_config

            cfg = load_config(cfg_path, overrides)
            run_dir = path.parent if (path.parent / METRICS_FILE).is_file() else None
            out.append(
                Target(
                    path.parent.name or path.name,
                    cfg,
                    cfg_path,
                    path,
                    path.parent,
                    run_dir,
                    last_metrics(run_dir),
                )
            )
        elif is_sweep_dir(path):
            if config is not None:
                raise ConfigError(f"{path}: --config applies to a run folder or a checkpoint, not to a sweep")
            out.extend(sweep_targets(path, overrides, top_k, pareto))
        elif (path / STUDENT_CHECKPOINT).is_file() or (path / CONFIG_FILE).is_file():
            out.append(run_target(path, overrides, config))
        elif (path / TRIAL_RUN_DIR / CONFIG_FILE).is_file():  # a sweep trial folder: tune/<trial_id>/
            out.append(run_target(path / TRIAL_RUN_DIR, overrides, config, name=path.name))
        elif not path.exists():
            raise KdsegError(f"{path}: not found")
        else:
            raise KdsegError(
                f"{path}: not a run folder (config.yaml + student.pt), a sweep trial folder, a sweep folder "
                f"(leaderboard.csv) or a checkpoint file"
            )
    return out


# ---------------------------------------------------------------------------------------- models


def load_student(t: Target):
    """The target's student with its trained weights (a checkpoint that does not fit is an error)."""
    from kdseg.models import build_model, load_model_checkpoint

    n = t.cfg.data.num_classes
    model = build_model(t.cfg.student.model_copy(update={"weights": None, "checkpoint": None}), n, "student")
    load_model_checkpoint(model, t.student_path, role="student", num_classes=n)
    return model


def teacher_source(t: Target) -> tuple[Path | None, str]:
    """Where the teacher the student learnt from is saved, or None and why there is none.

    A run's ``checkpoint.pt`` holds the teacher when it is from the student's last epoch (``kdseg
    train`` keeps it; a sweep trial does not); a teacher that never trains is ``teacher.checkpoint``.
    """
    from kdseg.checkpoint import load_checkpoint

    cfg = t.cfg
    if cfg.distill.mode == "none":
        return None, "no teacher (distill.mode none)"
    full = t.run_dir / FULL_CHECKPOINT if t.run_dir is not None else None
    if full is not None and full.is_file():
        state = load_checkpoint(full)
        epoch = state.get("epoch") if isinstance(state, dict) else None
        if isinstance(state, dict) and "teacher" in state and epoch == t.last.get("epoch"):
            return full, ""
    if not cfg.teacher_trains and cfg.teacher.checkpoint is not None:
        return Path(cfg.teacher.checkpoint), ""
    return None, "no checkpoint of its last-epoch teacher (a sweep trial keeps only student.pt)"


def load_teacher(t: Target, path: Path):
    from kdseg.models import build_model, load_model_checkpoint

    n = t.cfg.data.num_classes
    model = build_model(t.cfg.teacher.model_copy(update={"weights": None, "checkpoint": None}), n, "teacher")
    load_model_checkpoint(model, path, role="teacher", num_classes=n)
    return model


# ------------------------------------------------------------------------------------- measuring


def _data_key(cfg) -> str:
    """Targets whose data sections differ only in augmentation share one decoded split."""
    d = cfg.data.model_dump(mode="json")
    d.pop("augment", None)
    return json.dumps(d, sort_keys=True)


def load_splits(targets: Sequence[Target], split: str, progress: bool = False) -> dict[str, Any]:
    """``{data key: HeldOutSplit}`` for the targets; a dataset problem names the config it came from."""
    from kdseg.data import load_split
    from kdseg.errors import DatasetError

    out: dict[str, Any] = {}
    for t in targets:
        key = _data_key(t.cfg)
        if key not in out:
            try:
                out[key] = load_split(t.cfg.data, split, progress=progress)
            except DatasetError as e:
                raise DatasetError(f"{t.config_path}: data: {e}") from None
    return out


def measure(model, held, cfg) -> dict[str, Any]:
    """:func:`kdseg.train.evaluate` of ``model`` on a decoded split, with the run's own loader settings."""
    import torch

    from kdseg.data import make_eval_loader
    from kdseg.train import evaluate, make_accelerator

    t = cfg.train
    accelerator = make_accelerator(cfg)
    model = model.to(accelerator.device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = accelerator.prepare(make_eval_loader(held.data, cfg.data, t.batch_size, t.num_workers, t.seed))
    out = evaluate(model, loader, held.num_classes, held.ignore_index, accelerator)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _model_result(scores: dict[str, Any], params: int, metric: str, val: Any) -> dict[str, Any]:
    return {
        "params": params,
        "score": scores[metric],  # what train.metric calls val_miou, on this split
        "miou": scores["miou"],
        "per_image_miou": scores["per_image_miou"],
        "pixel_acc": scores["pixel_acc"],
        "per_class_iou": scores["per_class_iou"],
        "run_val_miou": val,  # the run's last validation value (same metric), for comparison
    }


def evaluate_targets(
    targets: Sequence[Target], split: str, *, teacher: bool = False, progress: bool = False, console=None
) -> list[dict[str, Any]]:
    """Measure every target on ``split``; everything is checked before the first measurement.

    Returns one result dict per target (the content of its ``eval_<split>.json``).
    """
    from kdseg.models import count_params

    for t in targets:  # checkpoints against configs, before any data is decoded
        load_student(t)
    teachers = {id(t): teacher_source(t) if teacher else (None, "") for t in targets}
    for t in targets:
        path = teachers[id(t)][0]
        if path is not None:
            load_teacher(t, path)
    splits = load_splits(targets, split, progress)

    results = []
    for t in targets:
        held = splits[_data_key(t.cfg)]
        metric = t.cfg.train.metric
        if console is not None:
            console.print(f"evaluating {t.name} on {split} ({len(held.data)} images)", highlight=False)
        student = load_student(t)
        result: dict[str, Any] = {
            "name": t.name,
            "split": split,
            "images": len(held.data),
            "data": held.source,
            "note": held.note or None,
            "config": str(t.config_path),
            "checkpoint": str(t.student_path),
            "metric": metric,
            "class_names": list(held.class_names),
            "student": _model_result(
                measure(student, held, t.cfg), count_params(student), metric, t.last.get("student_val_miou")
            ),
            "teacher": None,
        }
        if t.row is not None:
            result["trial_id"] = t.row.get("trial_id")
        path, why = teachers[id(t)]
        if path is not None:
            model = load_teacher(t, path)
            result["teacher"] = _model_result(
                measure(model, held, t.cfg), count_params(model), metric, t.last.get("teacher_val_miou")
            )
            result["teacher_checkpoint"] = str(path)
        elif teacher:
            result["teacher_note"] = why
        results.append(result)
    return results


def write_results(
    targets: Sequence[Target], results: Sequence[dict], split: str, extra: Path | None
) -> list[Path]:
    """``eval_<split>.json`` beside each target (and all results in ``extra``, a sweep folder)."""
    from kdseg.fileio import atomic_write

    written = []
    for t, r in zip(targets, results, strict=True):
        with atomic_write(t.out_dir / eval_file(split), "w") as f:
            json.dump(r, f, indent=1)
        written.append(t.out_dir / eval_file(split))
    if extra is not None:
        with atomic_write(extra / eval_file(split), "w") as f:
            json.dump({"split": split, "results": list(results)}, f, indent=1)
        written.append(extra / eval_file(split))
    return written


# ---------------------------------------------------------------------------------------- display


def _f(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def render_tables(results: Sequence[dict[str, Any]], split: str) -> list:
    """A rich table of every model's scores, and one of per-class IoU (classes x models)."""
    from rich.table import Table

    summary = Table(title=f"{split} split", header_style="bold", pad_edge=False)
    for name, justify in (
        ("model", "left"),
        ("params M", "right"),
        (f"{split} mIoU", "right"),
        ("per-image mIoU", "right"),
        ("pixel acc", "right"),
        ("run's val mIoU", "right"),
        ("gap", "right"),
    ):
        summary.add_column(name, justify=justify)
    columns: list[tuple[str, list]] = []
    for r in results:
        for who in ("student", "teacher"):
            m = r.get(who)
            if m is None:
                continue
            label = f"{r['name']} {who}"
            gap = None if m["score"] is None or m["run_val_miou"] is None else m["score"] - m["run_val_miou"]
            summary.add_row(
                label,
                f"{m['params'] / 1e6:.2f}",
                _f(m["score"]),
                _f(m["per_image_miou"]),
                _f(m["pixel_acc"]),
                _f(m["run_val_miou"]),
                _f(gap, "+.4f"),
            )
            columns.append((label, m["per_class_iou"]))
    metric = results[0]["metric"] if results else "miou"
    summary.caption = (
        f"{split} mIoU and the run's val mIoU follow train.metric ({metric}); gap = {split} - val"
    )
    per_class = Table(title=f"per-class IoU ({split})", header_style="bold", pad_edge=False)
    per_class.add_column("class")
    for label, _ in columns:
        per_class.add_column(label, justify="right")
    names = results[0]["class_names"] if results else []
    for i, cls in enumerate(names):
        per_class.add_row(cls, *(_f(ious[i], ".3f") if i < len(ious) else "-" for _, ious in columns))
    return [summary, per_class]


__all__ = [
    "SPLITS",
    "Target",
    "evaluate_targets",
    "load_splits",
    "measure",
    "resolve_targets",
    "select_rows",
    "write_results",
]
