"""Ray and the Tuner of a sweep: ``ray.init``, the trainable with its resources, the searcher and the scheduler."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kdseg.layout import TUNE_DIR
from kdseg.sweep.plan import SweepPlan


def _init_ray(address: str | None, verbose: bool) -> None:
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Save the experiment state every second (Tune's default is >= 10 s): a killed driver then
    # loses at most a second of bookkeeping, and a resume reruns (almost) nothing that had finished.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # Tune's own loggers are given explicitly (_tuner: result.json, progress.csv), not TensorBoard's: its
    # tensorboardX imports torch into the driver (2 s, 400 MB) for event files nothing here reads
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    from kdseg.sweep.ray_private import count_callbacks_without_integrations, local_ray_env, trial_actor_env

    count_callbacks_without_integrations()  # Tune would import wandb into the driver to name its callbacks

    os.environ.update(trial_actor_env())  # before a local ray.init: its workers inherit this environment
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
        os.environ.update(local_ray_env())  # the raylet ray.init starts inherits it
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
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from kdseg.sweep.callbacks import PruneFinishedCheckpoints, ReportRecoveries
    from kdseg.sweep.optuna_storage import open_storage
    from kdseg.sweep.progress import LiveTrialTable
    from kdseg.sweep.space import control_params, controls, initial_points, to_tune_space
    from kdseg.sweep.study import make_searcher
    from kdseg.sweep.workers import default_concurrency, uses_workers

    spec = plan.spec
    s = spec.sweep
    trainable = _trainable(spec, data, plan.sweep_dir, _resources(spec))
    storage_path = str(plan.sweep_dir)
    callbacks = [
        LiveTrialTable(s.asha.max_t, s.num_samples, describe=_describe(spec)),
        PruneFinishedCheckpoints(str(plan.sweep_dir)),
        ReportRecoveries(s.max_failures),
        CSVLoggerCallback(),  # Tune's progress.csv and result.json per trial (see _init_ray)
        JsonLoggerCallback(),
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
    from kdseg.sweep.selection import PARETO, SCORE
    from kdseg.sweep.study import ControlsRunFullBudget, FullDiskStopsFIFO

    if s.objective == PARETO:
        return FullDiskStopsFIFO()

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
