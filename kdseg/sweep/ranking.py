"""Ranking the trials of a sweep: the leaderboard, the Pareto front, and the leaderboard's CSV file.

The terminal table is :mod:`kdseg.sweep.leaderboard_table`, the Pareto figure :mod:`kdseg.report.pareto`.

A leaderboard row is a plain dict, one per trial, with at least ``trial_id``, ``status``,
the descriptive columns of :func:`kdseg.space.describe_trial`, ``student_params``, ``val_miou`` (last
reported) and ``epochs`` (epochs completed); sweep rows also carry ``score`` and ``below_floor``
(:mod:`kdseg.selection`). :func:`build_leaderboard` adds ``iou_per_mparam``, ``pareto`` and ``rank``,
and orders the rows in four tiers:

0. trials that ran the full budget (``epochs >= max_t``) and reached the quality floor,
1. trials that ran the full budget under the quality floor,
2. trials stopped early by ASHA (and trials still running): ASHA judged each worse, at its rung, than
   the trials it let go on, and a number measured after fewer epochs is not comparable with one
   measured after ``max_t``,
3. failed trials (``error``, ``diverged``),

each tier by the sweep's objective: its ``score`` (the objective's value, or ``val_miou - 1`` under
the floor), or for ``pareto`` the front's members first, then ``val_miou`` descending. Rows without a
value come last in their tier; ties go to the smaller student, then to the trial id. The Pareto front
(maximise ``val_miou``, minimise the cost: ``student_params`` unless the sweep says otherwise) uses the
same rule: it is computed over tier 0 only, so it never mixes budgets nor holds a student under the
floor. The winner (:func:`best_row`) is the first row of tier 0; a sweep without one has no winner.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdseg.fileio import atomic_write
from kdseg.sweep.selection import (
    OBJECTIVES,
    PARETO,
    SCALAR_OBJECTIVES,
    SCORE,
    as_number,
    score_metrics,
    under_floor_score,
)

__all__ = [
    "FAILED_STATUSES",
    "LEADERBOARD_COLUMNS",
    "STATUSES",
    "best_row",
    "why_no_winner",
    "build_leaderboard",
    "iou_per_mparam",
    "leaderboard_columns",
    "pareto_mask",
    "read_leaderboard_csv",
    "write_leaderboard_csv",
]

LEADERBOARD_COLUMNS = [
    "rank",
    "trial_id",
    "status",
    "teacher",
    "student",
    "mode",
    "temperature",
    "alpha",
    "distill_site",
    "alternation",
    "student_params",
    "val_miou",
    "teacher_val_miou",
    "kd_gain",
    "score",
    "quality_floor",
    "below_floor",
    "iou_per_mparam",
    "gflops",
    "latency_ms",
    "iou_per_gflop",
    "epochs",
    "pareto",
    "label",
    "control",
    "error",
]
STATUSES = ("completed", "stopped", "running", "error", "diverged")
FAILED_STATUSES = ("error", "diverged")
# Ranking by these columns prefers smaller values; every other numeric column prefers larger ones.
LOWER_IS_BETTER = {"latency_ms", "gflops", "student_params"}

# Column types restored when a leaderboard CSV is read back; other columns are inferred.
_STR_COLUMNS = {
    "trial_id",
    "status",
    "teacher",
    "student",
    "mode",
    "distill_site",
    "alternation",
    "error",
    "label",
}
_INT_COLUMNS = {"rank", "student_params", "epochs"}
_FLOAT_COLUMNS = {
    "temperature",
    "alpha",
    "val_miou",
    "teacher_val_miou",
    "iou_per_mparam",
    "gflops",
    "latency_ms",
    "iou_per_gflop",
    "kd_gain",
    "score",
    "quality_floor",
}
_BOOL_COLUMNS = {"pareto", "below_floor", "control"}


def iou_per_mparam(val_miou: Any, student_params: Any) -> float | None:
    """``val_miou / (student_params / 1e6)``; None when either is missing or params <= 0."""
    miou, params = as_number(val_miou), as_number(student_params)
    if miou is None or params is None or params <= 0:
        return None
    return miou / (params / 1e6)


def pareto_mask(mious: Sequence[Any], params: Sequence[Any]) -> list[bool]:
    """Non-dominated points for (val_miou: max, student_params: min).

    A point is dominated when another is at least as good on both and strictly better on one;
    identical points do not dominate each other. Points missing either number are never on the front.
    """
    if len(mious) != len(params):
        raise ValueError(f"{len(mious)} mIoU values but {len(params)} parameter counts")
    pts = [(as_number(m), as_number(p)) for m, p in zip(mious, params, strict=True)]
    mask = []
    for i, (mi, pi) in enumerate(pts):
        if mi is None or pi is None:
            mask.append(False)
            continue
        dominated = any(
            j != i and mj is not None and pj is not None and mj >= mi and pj <= pi and (mj > mi or pj < pi)
            for j, (mj, pj) in enumerate(pts)
        )
        mask.append(not dominated)
    return mask


def _failed(row: Mapping[str, Any]) -> bool:
    return row.get("status") in FAILED_STATUSES


def _full_budget(row: Mapping[str, Any], max_t: int) -> bool:
    return (as_number(row.get("epochs")) or 0) >= max_t


def _tier(row: Mapping[str, Any], max_t: int) -> int:
    if _failed(row):
        return 3
    if not _full_budget(row, max_t):
        return 2
    return 1 if row.get("below_floor") else 0


def _score(row: Mapping[str, Any], objective: str) -> float | None:
    """The row's score: as the sweep reported it, else the objective's value (no floor known)."""
    if as_number(row.get(SCORE)) is not None:
        return as_number(row[SCORE])
    return as_number(score_metrics(objective, row, 0.0)[SCORE])


def _sort_key(row: Mapping[str, Any], objective: str, max_t: int) -> tuple:
    miou = as_number(row.get("val_miou"))
    params = as_number(row.get("student_params"))
    if objective in SCALAR_OBJECTIVES:
        primary = _score(row, objective)
        key: tuple = (primary is None, -(primary or 0.0))
    elif objective == PARETO:
        key = (miou is None, not row.get("pareto"), -(miou or 0.0))
    else:  # --rank-by any numeric column, e.g. teacher_val_miou, latency_ms, kd_gain
        value = as_number(row.get(objective))
        sign = 1.0 if objective in LOWER_IS_BETTER else -1.0
        key = (value is None, sign * (value or 0.0))
    return (
        _tier(row, max_t),
        *key,
        -(miou if miou is not None else -math.inf),
        params if params is not None else math.inf,
        str(row.get("trial_id", "")),
    )


def build_leaderboard(
    rows: Iterable[Mapping[str, Any]], objective: str, max_t: int, cost: str = "student_params"
) -> list[dict[str, Any]]:
    """Rows ranked as the module docstring says, with ``iou_per_mparam``, ``pareto`` and ``rank`` filled."""
    out = [dict(r) for r in rows]
    if objective not in OBJECTIVES and not any(as_number(r.get(objective)) is not None for r in out):
        raise ValueError(
            f"cannot rank by {objective!r}: use {', '.join(OBJECTIVES)} or a numeric leaderboard column"
        )
    for r in out:
        if as_number(r.get("iou_per_mparam")) is None:
            r["iou_per_mparam"] = iou_per_mparam(r.get("val_miou"), r.get("student_params"))
        miou = as_number(r.get("val_miou"))
        if r.get("below_floor") is True and miou is not None and as_number(r.get(SCORE)) is not None:
            # a trial reported by an earlier kdseg (val_miou - floor) in a resumed sweep, on today's scale
            r[SCORE] = under_floor_score(miou)
    eligible = [r for r in out if _tier(r, max_t) == 0]
    front = pareto_mask([r.get("val_miou") for r in eligible], [r.get(cost) for r in eligible])
    on_front = {id(r) for r, on in zip(eligible, front, strict=True) if on}
    for r in out:
        r["pareto"] = id(r) in on_front
    out.sort(key=lambda r: _sort_key(r, objective, max_t))
    for i, r in enumerate(out, start=1):
        r["rank"] = i
    return out


def best_row(rows: Sequence[Mapping[str, Any]], max_t: int | None = None) -> dict[str, Any] | None:
    """The winner: the first row (in the given order) that can be deployed, or None.

    A row can be deployed when it has a ``val_miou``, did not fail, ran the full budget (``epochs >=
    max_t``; without ``max_t``: status ``completed``) and is not under the quality floor. A built
    leaderboard's order is its ranking, so this is its first tier-0 row.
    """

    def finished(r: Mapping[str, Any]) -> bool:
        if max_t is not None:
            return _full_budget(r, max_t)
        return r.get("status") == "completed"

    for r in rows:
        if as_number(r.get("val_miou")) is None or _failed(r) or not finished(r) or r.get("below_floor"):
            continue
        return dict(r)
    return None


def why_no_winner(rows: Sequence[Mapping[str, Any]], max_t: int | None = None) -> str:
    """One sentence saying why :func:`best_row` found no winner."""
    scored = [r for r in rows if as_number(r.get("val_miou")) is not None and not _failed(r)]
    if not scored:
        return "no trial has a val_miou to rank (every trial failed?)"
    full = [r for r in scored if (_full_budget(r, max_t) if max_t else r.get("status") == "completed")]
    if not full and max_t is None:
        return "no trial completed its full budget"
    if not full:
        return "no trial ran the full budget (sweep.asha.max_t epochs) yet"
    return (
        f"none of the {len(full)} trials that ran the full budget reached the quality floor "
        f"(sweep.quality_floor x its teacher's val mIoU); train longer, or lower sweep.quality_floor"
    )


# ------------------------------------------------------------------------------------------- CSV


def leaderboard_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """LEADERBOARD_COLUMNS, then any other keys of the rows in first-seen order."""
    cols = list(LEADERBOARD_COLUMNS)
    seen = set(cols)
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    return str(v)


def write_leaderboard_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write the rows as CSV atomically (temp file in the same folder, then rename)."""
    cols = leaderboard_columns(rows)
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
    return Path(path)


def _infer(s: str) -> Any:
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if s.lstrip("+-").isdigit():
        return int(s)
    try:
        return float(s)
    except ValueError:
        return s


def _parse_cell(col: str, s: str) -> Any:
    if s == "":
        return None
    try:
        if col in _STR_COLUMNS:
            return s
        if col in _INT_COLUMNS:
            return int(float(s)) if not s.lstrip("+-").isdigit() else int(s)
        if col in _FLOAT_COLUMNS:
            return float(s)
        if col in _BOOL_COLUMNS:
            return s.lower() in ("true", "1", "yes")
    except ValueError:
        return s
    return _infer(s)


def read_leaderboard_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a leaderboard CSV with types restored (empty cells are None)."""
    with open(path, newline="") as f:
        return [{k: _parse_cell(k, v) for k, v in r.items()} for r in csv.DictReader(f)]
