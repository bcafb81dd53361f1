"""Every private attribute of Ray Tune and Optuna that kdseg uses, in one place.

``HonestOptunaSearch`` (kdseg.sweep.study) extends Ray's ``OptunaSearch`` and needs its private state;
``ProtectFinish`` (kdseg.sweep.trainable) wraps the train session's ``finish``; ``workers`` sweeps
(kdseg.sweep.workers) ask whether Ray Train V2 is on; ``kdseg resume`` reads Tune's staging copy of a
state file a full disk cut short (:func:`staged_tune_state`); trial actors get Tune's thread timeout
(:func:`trial_actor_env`); a local Ray starts without idle prestarted workers (:func:`local_ray_env`);
Tune's callback usage tag counts without importing W&B (:func:`count_callbacks_without_integrations`).
These names are not a public API: pyproject.toml pins the versions they were checked against, and
``tests/test_private_api.py`` fails loudly, naming the attribute, when an upgrade changes one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Ray Tune reuses a trial's actor for the next trial (reuse_actors) only if the finished trial's thread
# ends within this many seconds (FunctionTrainable.reset_config reads the variable in the actor; Ray's
# default is 2). A kdseg trial's teardown (W&B finish, checkpoint pruning, release_memory) can take longer
# on a busy machine, and a failed reuse errors the next trial ("Trainable runner reuse requires
# reset_config() ..."). Set in the environment the trial actors inherit: the driver's before a local
# ray.init, a submitted job's runtime_env env_vars.
THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
THREAD_TIMEOUT_S = "60"


def trial_actor_env() -> dict[str, str]:
    """Environment variables kdseg's trial actors need (a value already set wins)."""
    return {THREAD_TIMEOUT_ENV: os.environ.get(THREAD_TIMEOUT_ENV, THREAD_TIMEOUT_S)}


# A local Ray's raylet prestarts one Python worker per CPU when the first driver connects (Ray's system
# config ``prestart_worker_first_driver``, src/ray/common/ray_config_def.h, read from the environment as
# RAY_prestart_worker_first_driver; checked with ray 2.60). Tune never uses them: it gives every trial actor
# a runtime_env of its own (env_vars), so each trial actor starts a worker with that env, and the
# prestarted ones (empty runtime env) sit idle for the whole sweep: on this 2-core machine 0.4 to 0.75 s of
# CPU each while Ray starts and 42 MB of unique memory each (80 MB RSS) for as long as it runs, one per CPU
# of the node. A task that does want one (the teacher stage's) starts a worker on demand.
PRESTART_ENV = "RAY_prestart_worker_first_driver"


def local_ray_env() -> dict[str, str]:
    """Environment variables for a local Ray the driver starts (its raylet reads them; a value already set wins)."""
    return {PRESTART_ENV: os.environ.get(PRESTART_ENV, "0")}


# Ray Tune's usage tag of the callbacks a run was given (ray/air/_internal/usage.py: tune.run calls
# tag_callbacks, which calls _count_callbacks), checked with ray 2.60. To name Ray's built-in callbacks,
# _count_callbacks imports its W&B, MLflow, Comet and Aim integrations, and with them wandb itself: 0.6 s of
# CPU and wandb's memory in every sweep's driver, W&B used or not. kdseg's count gives the same tag by name.
INTEGRATION_CALLBACKS = (
    "WandbLoggerCallback",
    "MLflowLoggerCallback",
    "CometLoggerCallback",
    "AimLoggerCallback",
)


def count_callbacks_by_name(callbacks: list[Any] | None) -> dict[str, int]:
    """Ray's ``_count_callbacks`` (callback class name -> count) without importing Ray's integrations."""
    from collections import defaultdict

    from ray.tune import Callback
    from ray.tune.logger import LoggerCallback
    from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

    built_in = {*INTEGRATION_CALLBACKS, *(cls.__name__ for cls in DEFAULT_CALLBACK_CLASSES)}
    counts: dict[str, int] = defaultdict(int)
    for callback in callbacks or []:
        if not isinstance(callback, Callback):
            continue
        name = type(callback).__name__
        if name in built_in:
            counts[name] += 1
        elif isinstance(callback, LoggerCallback):
            counts["CustomLoggerCallback"] += 1
        else:
            counts["CustomCallback"] += 1
    return counts


def count_callbacks_without_integrations() -> None:
    """Make Tune's callback usage tag count by class name (this process only; the tag is unchanged)."""
    from ray.air._internal import usage

    usage._count_callbacks = count_callbacks_by_name


# Ray Tune's OptunaSearch (ray/tune/search/optuna/optuna_search.py), checked with ray 2.60
SEARCHER_ATTRS = ("_ot_study", "_ot_trials", "_completed_trials", "_space")


def ot_study(searcher: Any) -> Any:
    """The ``optuna.Study`` an ``OptunaSearch`` asks and tells."""
    return searcher._ot_study


def ot_trials(searcher: Any) -> dict[str, Any]:
    """Ray trial id -> the ``optuna.Trial`` an ``OptunaSearch`` asked for it (mutable)."""
    return searcher._ot_trials


def completed_trials(searcher: Any) -> set[str]:
    """Ray trial ids an ``OptunaSearch`` has told the study about (mutable)."""
    return searcher._completed_trials


def search_space(searcher: Any) -> Any:
    """The space an ``OptunaSearch`` samples: a dict of distributions, or a define-by-run callable."""
    return searcher._space


# Optuna (checked with optuna 5.0)
def trial_number_id(trial: Any) -> int:
    """The storage id of an ``optuna.Trial`` or ``FrozenTrial`` (``_trial_id``)."""
    return trial._trial_id


def intermediate_values(study: Any, trial: Any) -> dict[int, float]:
    """The intermediate values a trial has reported, read from the study's storage."""
    return study._storage.get_trial(trial._trial_id).intermediate_values


# Ray Train's session (ray/train/_internal/session.py), checked with ray 2.60
def train_session() -> Any:
    """The current Ray Train session of a function trainable (``ray.train._internal.session``)."""
    from ray.train._internal.session import get_session

    return get_session()


# Ray Train V2's switch (ray/train/v2/_internal/constants.py), checked with ray 2.60
TRAIN_V2_ENV = "RAY_TRAIN_V2_ENABLED"


def train_v2_enabled() -> bool:
    """Whether ``ray.train`` is Ray Train V2 in this process (``RAY_TRAIN_V2_ENABLED``; on by default)."""
    from ray.train.v2._internal.constants import is_v2_enabled

    return is_v2_enabled()


# Ray Tune's driver staging folder (ray/train/_internal/storage.py, experiment_driver_staging_path),
# checked with ray 2.60: <ray temp dir>/session_*/artifacts/<session>/<experiment>/driver_artifacts
def staged_tune_state(experiment: str, state_file: str) -> Path | None:
    """The folder holding the driver's own, complete copy of Tune's ``state_file`` (``experiment_state-S.json``).

    Tune writes its state files to a staging folder in Ray's temp dir, then copies that folder to the
    experiment folder, not atomically: a full disk leaves a cut-short copy there. The staging folder
    outlives the driver, on the machine the driver ran on. None when it is not found.
    """
    from ray._common.utils import get_default_ray_temp_dir

    session = state_file.removeprefix("experiment_state-").removesuffix(".json")
    roots = [
        os.environ.get("RAY_TMPDIR") and Path(os.environ["RAY_TMPDIR"]) / "ray",
        Path(get_default_ray_temp_dir()),
    ]
    for root in filter(None, roots):
        for found in sorted(
            root.glob(f"session_*/artifacts/{session}/{experiment}/driver_artifacts/{state_file}")
        ):
            return found.parent
    return None


def missing_searcher_attrs(searcher: Any) -> list[str]:
    """The names of :data:`SEARCHER_ATTRS` that ``searcher`` lacks (empty when Ray still has them all)."""
    return [name for name in SEARCHER_ATTRS if not hasattr(searcher, name)]
