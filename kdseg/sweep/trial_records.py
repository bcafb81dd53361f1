"""What the Optuna study records of each trial besides what the searcher tells it.

- user attributes (:data:`USER_ATTRS`, ``ray_trial_id``, ``kdseg_status``) and the quality-floor
  constraint (:func:`set_floor`), so that ``optuna trials``, ``optuna best-trial`` and optuna-dashboard
  tell the story leaderboard.csv tells;
- kdseg's status of a finished trial (:func:`trial_status`: completed, stopped, diverged, error);
- no trial left RUNNING: :func:`close_running` (FAIL at the end of a sweep), :func:`pause_running` and
  :func:`reopen_paused` (WAITING across an interrupted driver and ``kdseg resume``);
- the no-KD controls, which never go through the searcher, added when the sweep finalises
  (:func:`record_controls`).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from kdseg.sweep.ray_private import trial_number_id
from kdseg.sweep.selection import CONTROL_KEY

FLOOR_CONSTRAINT = "quality_floor"


def set_floor(trial, attrs: dict[str, Any]) -> None:
    """Record a trial's user attributes and its quality-floor constraint (``floor - val_miou``, <= 0 ok).

    Optuna's ``best_trial``/``best_trials`` and its samplers take only feasible trials as the best, so
    the study names the winner the leaderboard names.
    """
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    trial.set_constraint(FLOOR_CONSTRAINT, float(attrs.get("floor_gap", 0.0)))


# What each Optuna trial carries besides its values, so that `optuna trials`, `optuna best-trial` and
# optuna-dashboard tell the story leaderboard.csv tells.
USER_ATTRS = (
    "label",
    "teacher",
    "student",
    "mode",
    "student_params",
    "gflops",
    "latency_ms",
    "val_miou",
    "teacher_val_miou",
    "iou_per_mparam",
    "iou_per_gflop",
    "quality_floor",
    "below_floor",
    "epoch",
)


def trial_user_attrs(result: dict | None) -> dict[str, Any]:
    """The user attributes of a trial's last result (``floor_gap`` is the floor constraint, <= 0 ok)."""
    if not result:
        return {}
    out = {k: result[k] for k in USER_ATTRS if result.get(k) is not None}
    out["kd"] = result.get("mode") not in (None, "none")
    floor, miou = result.get("quality_floor"), result.get("val_miou")
    if isinstance(floor, (int, float)) and isinstance(miou, (int, float)):
        out["floor_gap"] = float(floor) - float(miou)
    return out


def trial_status(result: dict | None, error: bool, max_t: int) -> str:
    """kdseg's status of a finished trial: completed, stopped (ASHA), diverged or error."""
    if error:
        return "error"
    if not result:
        return "error"  # removed before it reported anything
    if result.get("diverged"):
        return "diverged"
    epoch = result.get("epoch") or result.get("training_iteration") or 0
    return "completed" if epoch >= max_t else "stopped"


def close_running(storage, study_name: str, reason: str = "sweep ended while the trial was running") -> int:
    """Mark every RUNNING trial of the study FAIL (a sweep never leaves one behind); returns the count."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        storage.set_trial_user_attr(trial_number_id(t), "kdseg_status", "error")
        storage.set_trial_user_attr(trial_number_id(t), "error", reason)
        storage.set_trial_state_values(trial_number_id(t), TrialState.FAIL)
        n += 1
    return n


PAUSED = "kdseg_paused"  # user attribute of a trial an interrupted driver set WAITING: why


def pause_running(storage, study_name: str, reason: str) -> int:
    """Set every RUNNING trial of the study WAITING (none stays RUNNING without a live driver), marked
    :data:`PAUSED` with ``reason``, for ``kdseg resume`` to continue (:func:`reopen_paused`); returns the count.

    Not FAIL: Optuna cannot reopen a finished trial, and the resumed sweep finishes these trials.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial_number_id(t), PAUSED, reason)
        storage.set_trial_state_values(trial_number_id(t), TrialState.WAITING)
        n += 1
    return n


def reopen_paused(storage, study_name: str) -> int:
    """Set the trials :func:`pause_running` paused RUNNING again (before the resumed sweep asks for any
    new trial: Optuna's ``ask`` would hand a WAITING trial out as a new one); returns the count."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if PAUSED in t.user_attrs:
            storage.set_trial_state_values(trial_number_id(t), TrialState.RUNNING)
            n += 1
    return n


def record_controls(storage, study_name: str, rows: list[dict[str, Any]], metric) -> int:
    """Add the sweep's finished no-KD controls to the study (once each); returns how many were added.

    Controls never went through the searcher (they are not search points), but the study should
    tell the same story as the leaderboard: each becomes a trial without parameters, with the same
    values, user attributes and floor constraint a searched trial gets, and ``kdseg_control: true``.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    known = {t.user_attrs.get("ray_trial_id") for t in study.get_trials(deepcopy=False)}
    metrics = metric if isinstance(metric, list) else [metric]
    name_metrics(study, metrics)
    added = 0
    for r in rows:
        if (r.get("params") or {}).get(CONTROL_KEY) is None or r.get("trial_id") in known:
            continue
        values = [r.get(m) for m in metrics]
        trial = study.ask()
        trial.set_user_attr("ray_trial_id", r["trial_id"])
        trial.set_user_attr("kdseg_status", r.get("status"))
        trial.set_user_attr("kdseg_control", True)
        set_floor(trial, trial_user_attrs(r))
        ok = r.get("status") not in ("error", "diverged") and all(isinstance(v, (int, float)) for v in values)
        if ok:
            study.tell(trial, values if len(values) > 1 else values[0])
        else:
            study.tell(trial, state=TrialState.FAIL)
        added += 1
    return added


def name_metrics(study, names: list[str]) -> None:
    """Name the study's objective(s), so the optuna CLI and dashboard say what they show."""
    if study.metric_names != names:
        with warnings.catch_warnings():  # set_metric_names is marked experimental since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
