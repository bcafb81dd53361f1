"""What a sweep optimises: its objective, the quality floor, and the one score built from them.

The question a sweep answers is "which student should I deploy?". One quantity answers it, and the
Optuna study, the searcher (TPE), ASHA's rungs, the leaderboard, ``kdseg export`` and the report all
use that same quantity:

- ``sweep.objective`` picks it: ``iou_per_mparam`` (val mIoU per million student parameters, the
  default), ``iou_per_gflop`` (val mIoU per GFLOP of one forward pass), ``val_miou``, or ``pareto``
  (a multi-objective study: val mIoU up, ``sweep.cost`` down).
- **The quality floor**: a ratio such as IoU per parameter is only meaningful for a student that
  learned something, so a trial counts for the objective only when its val mIoU is at least
  ``sweep.quality_floor`` (default 0.8) times its teacher's val mIoU at the same epoch. A no-KD control
  has no teacher of its own and is held to the mean val mIoU of the sweep's teachers at that epoch.
- **The score** of a trial at an epoch is the objective's value when the trial is at or over the floor,
  and ``val_miou - 1`` (in [-1, 0)) when it is under it: every student under the floor scores below
  every student over it, and among those under it the better student scores higher, whatever its
  teacher. (It was ``val_miou - floor``: under the floor that rewarded a worse teacher, whose lower
  floor made its student look closer to it; ASHA then stopped the students of the teachers that learned
  fastest. docs/selection.md has the measurement.)

Costs: ``student_params`` (counted on the deployed student), ``gflops`` and ``latency_ms`` (batch-1
median latency) are measured once per student architecture and input size per sweep
(:func:`kdseg.bench.student_cost`) and reported with every epoch. ``latency_ms`` alone is not an
objective (it holds no accuracy: the fastest student is the one that learned least); use it as the
cost of ``pareto``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTROL_KEY",
    "COSTS",
    "DEFAULT_QUALITY_FLOOR",
    "DIVERGED_SCORE",
    "OBJECTIVES",
    "PARETO",
    "SCALAR_OBJECTIVES",
    "SCORE",
    "as_number",
    "Objective",
    "check_objective",
    "floor_of",
    "objective_value",
    "score_metrics",
    "settle_controls",
    "under_floor_score",
]

PARETO = "pareto"
SCORE = "score"  # the reported metric ASHA and a single-objective study follow
CONTROL_KEY = "kdseg_control"  # the trial parameter that marks a no-KD control (kdseg.space.controls)
DEFAULT_QUALITY_FLOOR = 0.8
# under the floor the score is val_miou - 1: below every objective value (all are >= 0), since a student
# under a floor of at most its teacher's mIoU (quality_floor <= 1) has val_miou < 1
UNDER_FLOOR_OFFSET = 1.0
# a diverged trial's score: below every trial that reported a number (under the floor: >= -1)
DIVERGED_SCORE = -2.0
COSTS = ("student_params", "gflops", "latency_ms")


@dataclass(frozen=True)
class Objective:
    name: str
    description: str
    needs: tuple[str, ...]  # reported metrics the value is computed from


SCALAR_OBJECTIVES: dict[str, Objective] = {
    "iou_per_mparam": Objective(
        "iou_per_mparam", "val mIoU per million student parameters", ("val_miou", "student_params")
    ),
    "iou_per_gflop": Objective("iou_per_gflop", "val mIoU per GFLOP of the student", ("val_miou", "gflops")),
    "val_miou": Objective("val_miou", "val mIoU", ("val_miou",)),
}
OBJECTIVES: tuple[str, ...] = (*SCALAR_OBJECTIVES, PARETO)
_REFUSED = {
    "latency_ms": (
        "latency alone holds no accuracy (the fastest student is the one that learned least); use "
        "objective: pareto with cost: latency_ms, or objective: iou_per_gflop"
    ),
    "gflops": "GFLOPs alone hold no accuracy; use objective: iou_per_gflop, or pareto with cost: gflops",
    "student_params": "size alone holds no accuracy; use objective: iou_per_mparam, or pareto",
}


def check_objective(name: str) -> str:
    """``name`` if it is an objective; a ValueError saying what to use instead otherwise."""
    if name in OBJECTIVES:
        return name
    if name in _REFUSED:
        raise ValueError(f"{name!r} cannot be an objective: {_REFUSED[name]}")
    raise ValueError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")


def as_number(x: Any) -> float | None:
    """A finite float, or None (missing, NaN, inf, not a number)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def objective_value(objective: str, metrics: Mapping[str, Any]) -> float | None:
    """The raw value of a scalar objective (no floor), or None when a number it needs is missing."""
    miou = as_number(metrics.get("val_miou"))
    if miou is None:
        return None
    if objective in ("val_miou", PARETO):
        return miou
    if objective == "iou_per_mparam":
        params = as_number(metrics.get("student_params"))
        return miou / (params / 1e6) if params and params > 0 else None
    if objective == "iou_per_gflop":
        gflops = as_number(metrics.get("gflops"))
        return miou / gflops if gflops and gflops > 0 else None
    raise ValueError(f"unknown objective {objective!r}")


def under_floor_score(miou: float) -> float:
    """The score of a student under the quality floor: its own val mIoU, less one (never its teacher's)."""
    return miou - UNDER_FLOOR_OFFSET


def floor_of(fraction: float, reference: Any) -> float | None:
    """The floor (an mIoU) for a reference mIoU; None when there is no reference or no floor."""
    ref = as_number(reference)
    if ref is None or fraction <= 0:
        return None
    return fraction * ref


def score_metrics(
    objective: str, metrics: Mapping[str, Any], fraction: float, reference: Any = "teacher"
) -> dict[str, Any]:
    """``score``, ``quality_floor`` (the mIoU floor) and ``below_floor`` of one result.

    ``reference`` is the mIoU the floor is a fraction of; ``"teacher"`` (the default) takes the
    result's own ``teacher_val_miou``. Without a reference there is no floor and the score is the
    objective's value. A result without the numbers the objective needs scores None.
    """
    if isinstance(reference, str) and reference == "teacher":
        reference = metrics.get("teacher_val_miou")
    floor = floor_of(fraction, reference)
    value = objective_value(objective, metrics)
    miou = as_number(metrics.get("val_miou"))
    below = None if floor is None or miou is None else miou < floor
    if below:  # a worse teacher must not raise it
        score = under_floor_score(miou)
    else:
        score = value
    return {SCORE: score, "quality_floor": floor, "below_floor": below}


def settle_controls(
    rows: list[dict[str, Any]],
    history: Mapping[str, list[Mapping[str, Any]]],
    objective: str,
    fraction: float,
) -> None:
    """What the no-KD controls say, filled into the leaderboard rows in place.

    - every KD row gets ``kd_gain``: its val mIoU minus the val mIoU of the control with the same
      student, at the KD row's last epoch (None when there is no such control, or it has not
      reached that epoch);
    - every control row (``control`` true) gets its floor and score: its teacher reference is the mean
      val mIoU of the sweep's teachers at the control's last epoch.

    ``history`` maps trial ids to their per-epoch metrics (``metrics.jsonl``).
    """

    def at(trial_id: str, epoch: Any, key: str) -> float | None:
        for m in history.get(str(trial_id), ()):
            if m.get("epoch") == epoch:
                return as_number(m.get(key))
        return None

    ok = [r for r in rows if r.get("status") not in ("error", "diverged")]
    controls = [r for r in ok if r.get("control")]
    kd = [r for r in ok if r.get("mode") not in (None, "none")]
    for r in controls:
        refs = [at(k["trial_id"], r.get("epochs"), "teacher_val_miou") for k in kd]
        refs = [x for x in refs if x is not None]
        r.update(score_metrics(objective, r, fraction, sum(refs) / len(refs) if refs else None))
    for r in kd:
        mine = [c for c in controls if c.get("student") == r.get("student")]
        base = [at(c["trial_id"], r.get("epochs"), "val_miou") for c in mine]
        base = [x for x in base if x is not None]
        miou = as_number(r.get("val_miou"))
        r["kd_gain"] = miou - base[0] if base and miou is not None else None
