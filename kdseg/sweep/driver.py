"""The sweep driver: a search space file in, a ranked sweep folder out.

``run_sweep`` validates everything (space, base config, dataset, storage, output folder) before Ray
starts, decodes the dataset once and puts it in the object store, runs a Ray Tune ``Tuner`` with
:class:`~kdseg.study.HonestOptunaSearch` (seeded TPE, persistent storage) and ASHA, and finally
writes ``leaderboard.csv`` and ``best_config.yaml``. ``resume_sweep`` restores an interrupted sweep
from its folder (``Tuner.restore``): finished trials keep their results and are not rerun.

Folder layout (``ROOT/NAME``)::

    sweep.yaml         resolved spec as run
    optuna.db          default Optuna storage (study name = sweep name)
    tune/              the Ray Tune experiment (trial folders, checkpoints; what resume restores)
    leaderboard.csv    one row per trial, ranked
    best_config.yaml   the winner's complete training config (``kdseg train`` accepts it)
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.config import dump_yaml
from kdseg.errors import ConfigError, DiskFullError, KdsegError
from kdseg.fileio import require_writable
from kdseg.layout import LEADERBOARD, LOCK_FILE, SPEC_FILE, TUNE_DIR, read_metrics, trial_run_dir


@dataclass
class SweepPlan:
    """Everything a sweep needs, validated, before anything is written."""

    spec: Any  # kdseg.space.SweepSpec
    name: str
    sweep_dir: Path
    storage_url: str
    address: str | None = None
    verbose: bool = False
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    sweep_dir: Path
    leaderboard: list[dict[str, Any]]
    best_config: Path | None
    wall_time_s: float


def plan_sweep(
    space_path: str | os.PathLike,
    *,
    out_root: str | os.PathLike = "runs",
    name: str | None = None,
    overrides: list[str] = (),
    address: str | None = None,
    verbose: bool = False,
) -> SweepPlan:
    """Load and validate a search space; refuse to overwrite an existing sweep."""
    from kdseg.sweep.final_eval import check_final_eval
    from kdseg.sweep.shared_path import check_sweep_root
    from kdseg.sweep.space import load_space
    from kdseg.sweep.study import check_new_study, storage_url
    from kdseg.sweep.teacher_stage import plan_teachers

    check_sweep_root(out_root)  # a path (shared on a cluster), not a URI
    spec = load_space(space_path, overrides)
    where = "--name" if name else (f"{space_path}: name" if spec.name else f"{space_path}: its file name")
    name = name or spec.name or Path(space_path).stem
    _check_name(name, where)
    sweep_dir = (Path(out_root) / name).resolve()
    _check_data_keys(spec, space_path)
    plan_teachers(spec, str(space_path))  # teacher.checkpoint: train: its teachers known before the trials
    check_final_eval(spec, space_path)
    if sweep_dir.exists() and any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
        raise KdsegError(
            f"{sweep_dir}: a sweep named {name!r} exists already; `kdseg resume {sweep_dir}` continues it, "
            f"or pass --name to start another"
        )
    require_writable(sweep_dir, "sweep")
    url = storage_url(spec.storage, sweep_dir)
    if spec.storage is not None:  # a storage of its own: usable, and the study name must be new too
        try:
            check_new_study(url, name)
        except ConfigError as e:
            raise ConfigError(f"{space_path}: {e}") from None
    return SweepPlan(
        spec=spec, name=name, sweep_dir=sweep_dir, storage_url=url, address=address, verbose=verbose
    )


def _load_data(cfg, source):
    """Decode the sweep's dataset once; a dataset problem names the config it came from too."""
    from kdseg.data import load_data
    from kdseg.errors import DatasetError

    try:
        return load_data(cfg, progress=True)
    except DatasetError as e:
        raise DatasetError(f"{source}: data: {e}") from None


def _check_name(name: str, where: str = "--name") -> None:
    from kdseg.sweep.space import check_sweep_name

    check_sweep_name(name, where)


def _check_data_keys(spec, source) -> None:
    """Data is decoded once per sweep, so only augmentation may vary between trials."""
    from kdseg.sweep.space import searched_keys

    bad = [k for k in searched_keys(spec) if k.startswith("data.") and not k.startswith("data.augment.")]
    if bad:
        raise ConfigError(
            f"{source}: space: {', '.join(bad)}: data keys cannot be searched (the dataset is decoded once "
            f"per sweep); run one sweep per dataset setting"
        )


# ------------------------------------------------------------------------------------------ Ray


def _init_ray(address: str | None, verbose: bool) -> None:
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Save the experiment state every second (Tune's default is >= 10 s): a killed driver then
    # loses at most a second of bookkeeping, and a resume reruns (almost) nothing that had finished.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
        "configure_logging": True,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, **kwargs)


def _trainable(spec, data, sweep_dir: Path, resources: dict[str, float]):
    from ray import tune

    from kdseg.sweep.trainable import kd_trainable
    from kdseg.sweep.workers import multi_worker_trainable, uses_workers

    if uses_workers(spec):  # resources_per_trial.workers: a Ray Train job per trial
        return multi_worker_trainable(spec, data, sweep_dir)
    return tune.with_resources(
        tune.with_parameters(kd_trainable, spec=spec, data=data, sweep_dir=str(sweep_dir)), resources
    )


def _resources(spec) -> dict[str, float]:
    r = spec.sweep.resources_per_trial
    return {"cpu": r.cpu, "gpu": r.gpu}


def _describe(spec):
    from kdseg.sweep.space import describe_trial, trial_config

    def label(params: dict) -> dict:  # the live table's pair, T and alpha
        try:
            d = describe_trial(trial_config(spec, params))
        except Exception:  # a label is cosmetic; never fail the table for it
            return {}
        return d

    return label


def _tuner(plan: SweepPlan, data, restore: bool):
    from ray import tune

    from kdseg.sweep.progress import LiveTrialTable
    from kdseg.sweep.space import control_params, controls, initial_points, to_tune_space
    from kdseg.sweep.study import make_searcher, open_storage
    from kdseg.sweep.trainable import PruneFinishedCheckpoints, ReportRecoveries
    from kdseg.sweep.workers import default_concurrency, uses_workers

    spec = plan.spec
    s = spec.sweep
    trainable = _trainable(spec, data, plan.sweep_dir, _resources(spec))
    storage_path = str(plan.sweep_dir)
    callbacks = [
        LiveTrialTable(s.asha.max_t, s.num_samples, describe=_describe(spec)),
        PruneFinishedCheckpoints(str(plan.sweep_dir)),
        ReportRecoveries(s.max_failures),
    ]
    if restore:
        return tune.Tuner.restore(
            str(plan.sweep_dir / TUNE_DIR), trainable=trainable, resume_unfinished=True, resume_errored=False
        ), callbacks
    metric, mode = objective_metrics(s)
    searcher = make_searcher(
        metric=metric,
        mode=mode,
        study_name=plan.name,
        storage=open_storage(plan.storage_url),
        seed=s.seed,
        points_to_evaluate=initial_points(spec),
        max_t=s.asha.max_t,
        controls=[control_params(spec, c) for c in controls(spec)],
    )
    scheduler = _scheduler(s)
    tuner = tune.Tuner(
        trainable,
        param_space=to_tune_space(spec),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=s.num_samples,
            max_concurrent_trials=default_concurrency(spec),
            trial_dirname_creator=lambda trial: trial.trial_id,
            # A new worker per trial re-imports torch/smp/Ray (5-15 s on 2 cores): reuse them.
            # (not for workers trials: their actor only drives a Train run of new worker processes)
            reuse_actors=not uses_workers(spec),
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=storage_path,
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    return tuner, callbacks


def objective_metrics(s) -> tuple[str | list[str], str | list[str]]:
    """The reported metric(s) and direction(s) of the study for ``sweep`` settings ``s``."""
    from kdseg.sweep.selection import PARETO, SCORE

    if s.objective == PARETO:
        return ["val_miou", s.cost], ["max", "min"]
    return SCORE, "max"


def _scheduler(s):
    """ASHA on the objective's score, never stopping a no-KD control; no early stopping for pareto.

    Optuna cannot prune a multi-objective study, and one scalar compared at ASHA's rungs would stop the
    cheap end of the front: a ``pareto`` sweep runs every trial to ``max_t``.
    """
    from ray.tune.schedulers import FIFOScheduler

    from kdseg.sweep.selection import PARETO, SCORE
    from kdseg.sweep.study import ControlsRunFullBudget

    if s.objective == PARETO:
        return FIFOScheduler()

    return ControlsRunFullBudget(
        # kdseg's own epoch, not Tune's training_iteration: a trial that had to start again from
        # scratch (damaged checkpoint) reports epoch 1 again while Tune's counter goes on.
        time_attr="epoch",
        metric=SCORE,
        mode="max",
        max_t=s.asha.max_t,
        grace_period=s.asha.grace_period,
        reduction_factor=s.asha.reduction_factor,
    )


def run_sweep(plan: SweepPlan) -> SweepResult:
    """Run a planned sweep to the end and write its leaderboard and best config."""
    from kdseg.sweep.preflight import preflight
    from kdseg.sweep.space import spec_to_dict

    started = time.perf_counter()
    data = _load_data(plan.spec.base_config.data, plan.spec.base)  # dataset errors before Ray starts
    preflight(plan.spec, plan.address)  # checkpoints, pretrained weights, resources: before any folder
    created = [p for p in (plan.sweep_dir, *plan.sweep_dir.parents) if not p.exists()]
    claim = claim_sweep(plan.sweep_dir, new=True)  # a second driver stops here, having touched nothing
    try:
        try:
            dump_yaml(
                {**spec_to_dict(plan.spec), "sweep_name": plan.name, "storage_url": plan.storage_url},
                plan.sweep_dir / SPEC_FILE,
            )
            _init_ray(plan.address, plan.verbose)
            tuner, _ = _tuner(plan, data, restore=False)
        except BaseException:
            shutil.rmtree(plan.sweep_dir, ignore_errors=True)  # nothing half-written
            for folder in created[1:]:  # nor the empty folders made for it (--out ROOT)
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        _teacher_stage(plan, data)
        results = _fit(plan, tuner)
        return _storage_errors(plan, lambda: finalize(plan, results, started))
    finally:
        claim.release()


def resume_sweep(
    sweep_dir: str | os.PathLike,
    *,
    address: str | None = None,
    verbose: bool = False,
    storage: str | None = None,
) -> SweepResult:
    """Continue an interrupted sweep from its folder (same storage, same study).

    ``storage`` is the sweep's storage URL given again, with its password (which is never stored).
    """
    from ray import tune

    from kdseg.sweep.dburl import redact, remember, same_database
    from kdseg.sweep.space import load_resolved
    from kdseg.sweep.study import open_storage

    sweep_dir = Path(sweep_dir).resolve()
    spec_file = sweep_dir / SPEC_FILE
    if not spec_file.exists():
        raise KdsegError(f"{sweep_dir}: not a kdseg sweep folder (no {SPEC_FILE})")
    claim = claim_sweep(sweep_dir, new=False)  # refused while the sweep's driver is alive
    try:
        if not tune.Tuner.can_restore(str(sweep_dir / TUNE_DIR)):
            raise KdsegError(f"{sweep_dir / TUNE_DIR}: no Ray Tune experiment state to resume from")
        spec = load_resolved(spec_file)
        extra = spec.extra
        url = extra["storage_url"]
        if storage is not None:
            if not same_database(storage, url):
                raise ConfigError(
                    f"--storage {redact(storage)}: not the storage of this sweep ({redact(url)}, {spec_file})"
                )
            remember(storage)  # its password, for this process only
        open_storage(url)  # unreachable, or no password: refused before Ray starts
        plan = SweepPlan(
            spec=spec,
            name=extra["sweep_name"],
            sweep_dir=sweep_dir,
            storage_url=url,
            address=address,
            verbose=verbose,
            resume=True,
        )
        started = time.perf_counter()
        data = _load_data(spec.base_config.data, spec_file)
        set_aside_broken_state(sweep_dir / TUNE_DIR)
        _init_ray(address, verbose)
        # a driver killed before the trials started (in the teacher stage) left no experiment state
        started_trials = any((sweep_dir / TUNE_DIR).glob("experiment_state-*.json"))
        tuner, _ = _tuner(plan, data, restore=started_trials)
        _teacher_stage(plan, data)  # a finished teacher is reused, an interrupted one continues
        results = _fit(plan, tuner)
        return _storage_errors(plan, lambda: finalize(plan, results, started))
    finally:
        claim.release()


# ------------------------------------------------------------------------ claim, finalisation


class SweepClaim:
    """An exclusive ``flock`` on ``SWEEP_DIR/.driver.lock``, held while a driver runs the sweep.

    The kernel drops it when the driver dies (even SIGKILL), so a crashed sweep can be resumed, and
    a sweep whose driver is alive cannot be run or resumed a second time.
    """

    def __init__(self, fd: int, path: Path):
        self._fd, self.path = fd, path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def claim_sweep(sweep_dir: Path, *, new: bool) -> SweepClaim:
    """Claim ``sweep_dir`` for this driver, or refuse (exit 2) without changing anything in it.

    ``new``: the folder is created (``mkdir``) and must hold nothing but the lock once claimed; a
    second driver that started at the same moment loses the lock and stops.
    """
    import fcntl

    if new:
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            sweep_dir.mkdir()
        except FileExistsError:
            pass  # maybe empty; the lock below decides
    lock = sweep_dir / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise KdsegError(f"{lock}: cannot open the sweep's lock file ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise KdsegError(
            f"{sweep_dir}: another kdseg driver{holder} is running this sweep; wait for it to end "
            f"(or stop it), then `kdseg resume {sweep_dir}`"
        ) from None
    if new and any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
        os.close(fd)
        raise KdsegError(
            f"{sweep_dir}: a sweep named {sweep_dir.name!r} exists already; `kdseg resume {sweep_dir}` "
            f"continues it, or pass --name to start another"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
    return SweepClaim(fd, lock)


def _lock_holder(fd: int) -> str:
    try:
        pid, host = os.pread(fd, 200, 0).decode().split()[:2]
        return f" (pid {int(pid)} on {host})"
    except (OSError, ValueError, UnicodeDecodeError):
        return ""


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


# ------------------------------------------------------------------------------------- results


def collect_rows(plan: SweepPlan, results) -> list[dict[str, Any]]:
    """One leaderboard row per Ray trial."""
    from kdseg.sweep.selection import CONTROL_KEY
    from kdseg.sweep.space import describe_trial, trial_config, trial_label
    from kdseg.sweep.study import trial_status

    max_t = plan.spec.sweep.asha.max_t
    rows = []
    for r in results:
        m = dict(r.metrics or {})
        trial_id = m.get("trial_id") or Path(r.path).name
        status = trial_status(m, r.error is not None, max_t)
        params = {k.removeprefix("config/"): v for k, v in (r.config or {}).items()}
        row: dict[str, Any] = {"trial_id": trial_id, "status": status}
        try:
            row.update(describe_trial(trial_config(plan.spec, params)))
        except KdsegError:
            pass
        failed = status in ("error", "diverged")
        row.update(
            label=trial_label(plan.spec, params) or None,
            control=params.get(CONTROL_KEY) is not None,
            student_params=m.get("student_params"),
            val_miou=None if failed else m.get("val_miou"),
            teacher_val_miou=m.get("teacher_val_miou"),
            score=None if failed else m.get("score"),
            quality_floor=m.get("quality_floor"),
            below_floor=None if failed else m.get("below_floor"),
            iou_per_mparam=None if failed else m.get("iou_per_mparam"),
            gflops=m.get("gflops"),
            latency_ms=m.get("latency_ms"),
            iou_per_gflop=None if failed else m.get("iou_per_gflop"),
            epochs=m.get("epoch") or 0,
            # why it failed; for a trial that survived a damaged checkpoint, what happened
            error=_error_text(r.error) if r.error is not None else (m.get("error") or m.get("recovered")),
            params=params,
            path=str(r.path),
        )
        rows.append(row)
    return rows


def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]


def _set_aside_orphans(sweep_dir: Path, trial_ids: set[str]) -> None:
    """Move trial folders that the Ray experiment does not know out of ``tune/``.

    A driver killed after starting a trial but before Tune saved its experiment state leaves a
    folder behind; the resumed sweep reruns that trial (its Optuna trial is adopted) under a new id.
    The stale folder goes to ``orphaned/`` so that every folder in ``tune/`` is one leaderboard row.
    """
    tune_dir = sweep_dir / TUNE_DIR
    for folder in sorted(p for p in tune_dir.iterdir() if p.is_dir()):
        if folder.name not in trial_ids and (folder / "run").is_dir():
            dest = sweep_dir / "orphaned" / folder.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(folder), str(dest))


def finalize(plan: SweepPlan, results, started: float) -> SweepResult:
    """Write leaderboard.csv and best_config.yaml; close any Optuna trial still RUNNING."""
    from kdseg.deploy.best_config import export_config
    from kdseg.sweep.final_eval import run_final_eval
    from kdseg.sweep.ranking import best_row, build_leaderboard, write_leaderboard_csv
    from kdseg.sweep.selection import settle_controls
    from kdseg.sweep.study import close_running, open_storage, record_controls

    rows = collect_rows(plan, results)
    _set_aside_orphans(plan.sweep_dir, {r["trial_id"] for r in rows})
    s = plan.spec.sweep
    history = {}
    for r in rows:
        try:
            history[r["trial_id"]] = read_metrics(trial_run_dir(plan.sweep_dir, r["trial_id"]))
        except (OSError, ValueError):
            history[r["trial_id"]] = []
    settle_controls(rows, history, s.objective, s.quality_floor)
    board = build_leaderboard(rows, s.objective, s.asha.max_t, cost=s.cost)
    board = run_final_eval(plan, board)  # sweep.final_eval: test_miou after ranking, never fed back
    write_leaderboard_csv(
        [{k: v for k, v in r.items() if k not in ("params", "path")} for r in board],
        plan.sweep_dir / LEADERBOARD,
    )
    storage = open_storage(plan.storage_url)
    close_running(storage, plan.name)
    record_controls(storage, plan.name, board, objective_metrics(s)[0])
    best_path = None
    if best_row(board, s.asha.max_t) is not None:
        best_path, _ = export_config(plan.sweep_dir)
    return SweepResult(plan.sweep_dir, board, best_path, time.perf_counter() - started)
