"""The sweep driver: a search space file in, a ranked sweep folder out.

``run_sweep`` validates everything (space, base config, dataset, storage, output folder) before Ray
starts, decodes the dataset once and puts it in the object store, runs a Ray Tune ``Tuner`` with
:class:`~kdseg.sweep.study.HonestOptunaSearch` (seeded TPE, persistent storage) and ASHA, and finally
writes ``leaderboard.csv`` and ``best_config.yaml``. ``resume_sweep`` restores an interrupted sweep
from its folder (``Tuner.restore``): finished trials keep their results and are not rerun.

The steps live in modules of their own: :mod:`~kdseg.sweep.plan` (validation, before anything
is written), :mod:`~kdseg.sweep.claim` (the folder's lock), :mod:`~kdseg.sweep.tuner` (Ray, searcher,
scheduler), :mod:`~kdseg.sweep.recovery` (whatever ends ``Tuner.fit``) and :mod:`~kdseg.sweep.finalize`
(leaderboard, best config).

Folder layout (``ROOT/NAME``)::

    sweep.yaml         resolved spec as run
    optuna.db          default Optuna storage (study name = sweep name)
    tune/              the Ray Tune experiment (trial folders, checkpoints; what resume restores)
    leaderboard.csv    one row per trial, ranked
    best_config.yaml   the winner's complete training config (``kdseg train`` accepts it)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from kdseg.errors import ConfigError, KdsegError
from kdseg.layout import SPEC_FILE, TUNE_DIR
from kdseg.sweep.claim import claim_sweep
from kdseg.sweep.finalize import finalize
from kdseg.sweep.plan import SweepPlan, SweepResult, _load_data, plan_sweep
from kdseg.sweep.recovery import _fit, _storage_errors, _teacher_stage, set_aside_broken_state
from kdseg.sweep.tuner import _init_ray, _tuner, objective_metrics
from kdseg.yaml_io import dump_yaml

__all__ = ["SweepPlan", "SweepResult", "plan_sweep", "resume_sweep", "run_sweep"]


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
        study = False
        try:
            _create_study(plan)  # on a shared storage, a same-name driver elsewhere stops here
            study = True
            dump_yaml(
                {**spec_to_dict(plan.spec), "sweep_name": plan.name, "storage_url": plan.storage_url},
                plan.sweep_dir / SPEC_FILE,
            )
            _init_ray(plan.address, plan.verbose)
            tuner, _ = _tuner(plan, data, restore=False)
        except BaseException:
            if study and plan.spec.storage is not None:  # a storage of its own: its study goes too
                _delete_study(plan)
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


def _create_study(plan: SweepPlan) -> None:
    """The sweep's Optuna study, created atomically (plan_sweep's check cannot stop a driver that races it)."""
    import optuna

    from kdseg.sweep.optuna_storage import create_new_study

    optuna.logging.set_verbosity(optuna.logging.INFO if plan.verbose else optuna.logging.WARNING)
    try:
        create_new_study(plan.storage_url, plan.name, objective_metrics(plan.spec.sweep)[1])
    except ConfigError as e:
        raise (ConfigError(f"{plan.spec.source}: {e}") if plan.spec.source else e) from None


def _delete_study(plan: SweepPlan) -> None:
    from kdseg.sweep.optuna_storage import delete_study

    try:
        delete_study(plan.storage_url, plan.name)
    except Exception as e:  # the storage may be what failed; keep the first error
        logging.getLogger(__name__).warning("could not delete the study %r: %s", plan.name, e)


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
    from kdseg.sweep.optuna_storage import open_storage
    from kdseg.sweep.space import load_resolved
    from kdseg.sweep.trial_records import reopen_paused

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
        reopen_paused(open_storage(url), plan.name)  # what an interrupted driver set WAITING runs again
        _init_ray(address, verbose)
        # a driver killed before the trials started (in the teacher stage) left no experiment state
        started_trials = any((sweep_dir / TUNE_DIR).glob("experiment_state-*.json"))
        tuner, _ = _tuner(plan, data, restore=started_trials)
        _teacher_stage(plan, data)  # a finished teacher is reused, an interrupted one continues
        results = _fit(plan, tuner)
        return _storage_errors(plan, lambda: finalize(plan, results, started))
    finally:
        claim.release()
