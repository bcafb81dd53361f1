"""Optuna storage for sweeps, and a searcher that keeps the study honest.

Storage (``storage:`` in the space file):
- ``null``: SQLite ``optuna.db`` in the sweep folder;
- any SQLAlchemy URL (``postgresql://user@host/db``, ``sqlite:////abs/path.db``);
- ``journal:PATH``: Optuna's journal file (good for NFS without a database server).

Ray's ``OptunaSearch`` tells Optuna that a trial ASHA stopped COMPLETED with its low-rung value,
which misleads TPE and every dashboard. :class:`HonestOptunaSearch` records ASHA-stopped trials as
PRUNED (their per-epoch values were reported as intermediate values), errored and diverged trials
as FAIL, and only trials that ran to ``max_t`` as COMPLETE. Every Optuna trial carries the Ray
trial id in its user attributes (``ray_trial_id``) and kdseg's status (``kdseg_status``).
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import unflatten_dict

from kdseg.errors import ConfigError
from kdseg.layout import DEFAULT_DB
from kdseg.sweep.dburl import redact, scrub, strip_password, with_password
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

log = logging.getLogger(__name__)


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The storage the sweep uses, as a string (``journal:PATH`` or an SQLAlchemy URL)."""
    if storage is None:
        return f"sqlite:///{(Path(sweep_dir) / DEFAULT_DB).resolve()}"
    return storage


def open_storage(url: str):
    """An Optuna storage object for ``url``; unreachable or malformed URLs are ConfigErrors."""

    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser().resolve()
        if not path.parent.is_dir():
            raise ConfigError(f"storage: journal folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"storage: {url!r} is neither an SQLAlchemy URL (dialect://...) nor journal:PATH")
    db_file = sqlite_file(url)
    if db_file is not None and not db_file.parent.is_dir():
        raise ConfigError(f"storage: {url}: folder {db_file.parent} does not exist")
    url = strip_password(url)  # the password stays in memory (kdseg.dburl), never in a pickle
    driver_url = strip_password(_driver_url(with_password(url)))
    for attempt in range(_SCHEMA_RACE_ATTEMPTS):
        try:
            return SecretFreeRDBStorage(driver_url, engine_kwargs=_engine_kwargs(url))
        except Exception as e:  # sqlalchemy raises many kinds; every one means "cannot use this storage"
            if _schema_race(e, url) and attempt + 1 < _SCHEMA_RACE_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            hint = "" if "password" not in first else _PASSWORD_HINT
            raise ConfigError(
                f"storage: cannot open {redact(with_password(url))}: {scrub(first, url)}{hint}"
            ) from None
    raise AssertionError("unreachable")


_PASSWORD_HINT = (
    " (kdseg never stores a database password: give it in PGPASSWORD or ~/.pgpass, or the full URL again "
    "with kdseg resume --storage URL)"
)


class SecretFreeRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose pickled state (Ray's tuner.pkl, the searcher state) holds no password.

    ``url`` is password-free; the password remembered by :mod:`kdseg.dburl` in this process is added
    only to the URL the engine connects with. Unpickled in another process, it connects without one
    (libpq then reads ``PGPASSWORD`` or ``~/.pgpass``).
    """

    def __init__(self, url: str, **kwargs):
        super().__init__(with_password(url), **kwargs)
        self.url = url

    def __setstate__(self, state: dict) -> None:
        clean = state["url"]
        super().__setstate__({**state, "url": with_password(clean)})
        self.url = clean


# --- database servers (PostgreSQL, MySQL) shared by several sweeps -------------------------------
# Optuna creates its tables on first use. Two sweeps opening a fresh database at the same moment
# race on CREATE TABLE / the version rows (PostgreSQL: UniqueViolation on pg_type, DuplicateTable);
# the loser retries and finds the schema in place.
_SCHEMA_RACE_ATTEMPTS = 6
CONNECT_TIMEOUT_S = 10  # an unreachable database server is an error after this long, never a hang


def _schema_race(err: BaseException, url: str) -> bool:
    import sqlalchemy.exc

    return not url.startswith("sqlite") and isinstance(
        err, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)
    )


def _driver_url(url: str) -> str:
    """``postgresql://`` (or Heroku's ``postgres://``) without a driver means psycopg 3, kdseg's dependency.

    SQLAlchemy 2.0 maps a bare ``postgresql://`` to psycopg2 and 2.1 to psycopg; naming the driver
    makes the URL work the same with both.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url.removeprefix(bare)
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    # fail fast on unreachable servers instead of hanging a sweep
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (``sqlite:////abs/x.db``, ``sqlite:///rel.db``); else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).expanduser().resolve()


def check_new_study(url: str, name: str) -> None:
    """Refuse a storage that cannot be used, or that holds a study ``name`` already; create nothing.

    A database server is connected to (Optuna creates its tables there, no study); an SQLite or
    journal file that does not exist yet is not created (it cannot hold a study), only its folder
    is checked.
    """
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser().resolve()
        if not path.parent.is_dir():
            raise ConfigError(f"storage: journal folder {path.parent} does not exist")
        if not path.exists():
            return
    elif (db_file := sqlite_file(url)) is not None:
        if not db_file.parent.is_dir():
            raise ConfigError(f"storage: {url}: folder {db_file.parent} does not exist")
        if not db_file.exists():
            return
    if study_exists(open_storage(url), name):
        raise _study_exists_error(url, name)


def _study_exists_error(url: str, name: str) -> ConfigError:
    return ConfigError(
        f"storage {redact(url)!r}: a study named {name!r} exists already; pass --name to start "
        f"another sweep, or resume the existing one"
    )


def create_new_study(url: str, name: str, modes: str | list[str]) -> None:
    """Create the study of a new sweep, atomically, or refuse as :func:`check_new_study` does.

    :func:`check_new_study` is a check before anything starts; two drivers of the same name on a shared
    storage may both pass it. Creating the study with ``load_if_exists=False`` leaves the decision to
    the storage (a unique study name): the loser gets Optuna's ``DuplicatedStudyError``, refused here.
    ``modes``: ``"max"``/``"min"`` or one per objective (the searcher then loads this study).
    """
    directions = [
        "maximize" if m == "max" else "minimize" for m in ([modes] if isinstance(modes, str) else modes)
    ]
    try:
        optuna.create_study(storage=open_storage(url), study_name=name, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        raise _study_exists_error(url, name) from None


def delete_study(url: str, name: str) -> None:
    """Delete study ``name`` (one this driver created for a sweep that then failed to start)."""
    optuna.delete_study(study_name=name, storage=open_storage(url))


def study_exists(storage, name: str) -> bool:

    return any(
        s.study_name == name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    )


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


FLOOR_CONSTRAINT = "quality_floor"


def set_floor(trial, attrs: dict[str, Any]) -> None:
    """Record a trial's user attributes and its quality-floor constraint (``floor - val_miou``, <= 0 ok).

    Optuna's ``best_trial``/``best_trials`` and its samplers take only feasible trials as the best, so
    the study names the winner the leaderboard names.
    """
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    trial.set_constraint(FLOOR_CONSTRAINT, float(attrs.get("floor_gap", 0.0)))


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
        _name_metrics(ot_study(self), list(self.metric) if isinstance(self.metric, list) else [self.metric])
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


def _step(result: dict) -> int | None:
    """The Optuna step of a result: kdseg's epoch (Tune's training_iteration goes on counting
    across a restart from scratch)."""
    step = result.get("epoch") or result.get("training_iteration")
    return None if step is None else int(step)


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
    from optuna.trial import TrialState

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


def _name_metrics(study, names: list[str]) -> None:
    if study.metric_names != names:
        with warnings.catch_warnings():  # set_metric_names is marked experimental since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def record_controls(storage, study_name: str, rows: list[dict[str, Any]], metric) -> int:
    """Add the sweep's finished no-KD controls to the study (once each); returns how many were added.

    Controls never went through the searcher (they are not search points), but the study should
    tell the same story as the leaderboard: each becomes a trial without parameters, with the same
    values, user attributes and floor constraint a searched trial gets, and ``kdseg_control: true``.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    known = {t.user_attrs.get("ray_trial_id") for t in study.get_trials(deepcopy=False)}
    metrics = metric if isinstance(metric, list) else [metric]
    _name_metrics(study, metrics)
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
