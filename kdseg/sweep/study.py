"""The sweep's searcher and schedulers: a searcher that keeps the Optuna study honest.

Ray's ``OptunaSearch`` tells Optuna that a trial ASHA stopped COMPLETED with its low-rung value,
which misleads TPE and every dashboard. :class:`HonestOptunaSearch` records ASHA-stopped trials as
PRUNED (their per-epoch values were reported as intermediate values), errored and diverged trials
as FAIL, and only trials that ran to ``max_t`` as COMPLETE. Every Optuna trial carries the Ray
trial id in its user attributes (``ray_trial_id``) and kdseg's status (``kdseg_status``)
(:mod:`kdseg.sweep.trial_records`). The study's storage: :mod:`kdseg.sweep.optuna_storage`.
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import unflatten_dict

from kdseg.sweep.optuna_storage import SecretFreeRDBStorage  # noqa: F401 (see below)
from kdseg.sweep.ray_private import (
    completed_trials,
    intermediate_values,
    ot_study,
    ot_trials,
    search_space,
    trial_number_id,
)
from kdseg.sweep.recovery import StopOnFullDisk, is_disk_full
from kdseg.sweep.selection import CONTROL_KEY
from kdseg.sweep.trial_records import name_metrics, set_floor, trial_status, trial_user_attrs

# A sweep's pickled searcher state (tuner.pkl, the searcher checkpoint) names the storage class by the
# module that defined it; sweeps started before kdseg.sweep.optuna_storage existed name this one, so
# `kdseg resume` of such a sweep finds the class here.

log = logging.getLogger(__name__)


def make_searcher(
    *,
    metric,
    mode,
    study_name: str,
    storage,
    seed: int,
    points_to_evaluate,
    max_t: int,
    controls: list[dict] = (),
):
    """The sweep's searcher: its no-KD controls first, then seeded TPE storing into ``storage``.

    ``metric``/``mode`` are one name and direction (a single-objective study) or two lists (``pareto``:
    a multi-objective study; Optuna's TPE handles both). ``controls`` are the parameter dicts of the
    no-KD control trials (:func:`kdseg.space.control_params`): run once each, never sampled by TPE and
    never told to the study during the sweep (the driver records them when it finalises).
    """

    # TPE reads each trial's floor constraint (set by HonestOptunaSearch before it tells the study)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=4)
    inner = HonestOptunaSearch(
        metric=metric,
        mode=mode,
        points_to_evaluate=points_to_evaluate or None,
        sampler=sampler,
        study_name=study_name,
        storage=storage,
        max_t=max_t,
    )
    return ControlsFirst(inner, list(controls))


class ControlsFirst(Searcher):
    """Hands out the no-KD control trials first, then delegates to the wrapped searcher.

    Controls are the experiment's baselines, not search points: the wrapped searcher (and so TPE and
    the Optuna study) never sees them, so no control is sampled twice and no key that does not apply
    to a control is sampled for it. Built like Ray's ``ConcurrencyLimiter`` (a public ``Searcher``
    wrapping another); its own state is saved with the wrapped searcher's.
    """

    def __init__(self, searcher: Searcher, controls: list[dict]):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.pending = [dict(c) for c in controls]
        self.control_ids: set[str] = set()

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id in self.control_ids:
            return None
        if self.pending:
            self.control_ids.add(trial_id)
            return self.pending.pop(0)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.control_ids:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.control_ids:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # Ray's SearchGenerator saves a wrapper's get_state() beside the wrapped searcher's own file
    # (as for ConcurrencyLimiter), and restores both.
    def get_state(self) -> dict:
        return {"pending": [dict(p) for p in self.pending], "control_ids": sorted(self.control_ids)}

    def set_state(self, state: dict) -> None:
        self.pending = [dict(p) for p in state.get("pending", [])]
        self.control_ids = set(state.get("control_ids", []))

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class ControlsRunFullBudget(StopOnFullDisk, ASHAScheduler):
    """ASHA whose rungs never see (or stop) a no-KD control: controls run every epoch; a full disk
    stops the sweep (:class:`~kdseg.sweep.recovery.StopOnFullDisk`)."""

    def on_trial_result(self, tune_controller, trial, result):
        if (trial.config or {}).get(CONTROL_KEY) is not None:
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if (trial.config or {}).get(CONTROL_KEY) is not None:
            return
        return super().on_trial_complete(tune_controller, trial, result)


class FullDiskStopsFIFO(StopOnFullDisk, FIFOScheduler):
    """FIFO (every trial to ``max_t``) whose full disk stops the sweep (:class:`~kdseg.sweep.recovery.StopOnFullDisk`)."""


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that records ASHA stops as PRUNED and failures as FAIL."""

    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_t = max_t

    def suggest(self, trial_id: str) -> dict | None:
        # A driver killed between Optuna's ask() and Tune's next experiment checkpoint leaves an
        # Optuna trial RUNNING that Tune never recorded. A resumed sweep adopts such orphans (their
        # parameters were sampled already) before asking for new ones, so the study and the Ray
        # experiment keep one trial each.
        if trial_id not in ot_trials(self) and not callable(search_space(self)):
            orphan = self._next_orphan()
            if orphan is not None:
                ot_trials(self)[trial_id] = optuna.trial.Trial(ot_study(self), trial_number_id(orphan))
                return unflatten_dict(dict(orphan.params))
        return super().suggest(trial_id)

    def _next_orphan(self):
        known = {trial_number_id(t) for t in ot_trials(self).values()}
        for t in ot_study(self).get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial_number_id(t) not in known:
                return t
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("diverged"):  # its placeholder score is not a measurement
            return
        if isinstance(self.metric, list) or trial_id in completed_trials(self):
            return super().on_trial_result(trial_id, result)
        value, step = result.get(self.metric), _step(result)
        ot_trial = ot_trials(self).get(trial_id)
        if value is None or step is None or ot_trial is None:
            return
        # a step reported already (a trial restarted from scratch) keeps its first value
        if step not in intermediate_values(ot_study(self), ot_trial):
            ot_trial.report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in completed_trials(self):
            return
        ot_trial = ot_trials(self).get(trial_id)
        if ot_trial is None:
            return
        status = trial_status(result, error, self._max_t)
        try:
            self._name_metrics()
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            ot_trial.set_user_attr("kdseg_status", status)
            set_floor(ot_trial, trial_user_attrs(result))
            if result and result.get("error"):
                ot_trial.set_user_attr("error", str(result["error"])[:500])
            self._report_last(ot_trial, result, status)
            state, values = self._outcome(result, status)
            ot_study(self).tell(ot_trial, values, state=state)
        except Exception as e:  # never let bookkeeping crash a sweep, unless the disk is full: stop it then
            if is_disk_full(e):
                raise
            log.warning("optuna: could not record trial %s: %s", trial_id, e)
        completed_trials(self).add(trial_id)

    def _name_metrics(self) -> None:
        """Name the study's objective(s) once, so the optuna CLI and dashboard say what they show."""
        if getattr(self, "_kdseg_named", False):
            return
        name_metrics(ot_study(self), list(self.metric) if isinstance(self.metric, list) else [self.metric])
        self._kdseg_named = True

    def _outcome(self, result: dict | None, status: str):
        if status == "stopped":
            return TrialState.PRUNED, None
        if status != "completed":
            return TrialState.FAIL, None
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics]
        if any(v is None for v in values):
            return TrialState.FAIL, None
        return TrialState.COMPLETE, values if isinstance(self.metric, list) else values[0]

    def _report_last(self, ot_trial, result: dict | None, status: str) -> None:
        """Tune hands the result that ends a trial to on_trial_complete only: keep it as an intermediate value."""
        if not result or isinstance(self.metric, list) or status in ("error", "diverged"):
            return
        value, step = result.get(self.metric), _step(result)
        if value is None or step is None:
            return
        if step not in intermediate_values(ot_study(self), ot_trial):
            ot_trial.report(value, step)


def _step(result: dict) -> int | None:
    """The Optuna step of a result: kdseg's epoch (Tune's training_iteration goes on counting
    across a restart from scratch)."""
    step = result.get("epoch") or result.get("training_iteration")
    return None if step is None else int(step)
