"""The private names of Ray, Optuna and W&B that kdseg relies on still exist (kdseg/sweep/ray_private.py,
kdseg/tracking/wandb_records.py). A failure here names the attribute an upgrade removed: fix the adapter,
then move the pin in pyproject.toml."""

from __future__ import annotations

import optuna
import pytest


def test_optuna_search_keeps_the_private_state_honest_optuna_search_uses() -> None:
    from ray.tune.search.optuna import OptunaSearch

    from kdseg.sweep.ray_private import (
        SEARCHER_ATTRS,
        completed_trials,
        intermediate_values,
        missing_searcher_attrs,
        ot_study,
        ot_trials,
        search_space,
        trial_number_id,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="m", mode="max", seed=0
    )
    assert missing_searcher_attrs(searcher) == [], f"ray's OptunaSearch lost {SEARCHER_ATTRS}"
    assert isinstance(ot_study(searcher), optuna.Study)
    assert isinstance(ot_trials(searcher), dict) and isinstance(completed_trials(searcher), set)
    assert not callable(search_space(searcher))
    params = searcher.suggest("t1")
    assert set(params) == {"x"} and 0.0 <= params["x"] <= 1.0
    trial = ot_trials(searcher)["t1"]
    assert isinstance(trial_number_id(trial), int)
    trial.report(0.5, 1)
    assert intermediate_values(ot_study(searcher), trial) == {1: 0.5}


def test_optuna_frozen_trials_carry_their_storage_id() -> None:
    from kdseg.sweep.ray_private import trial_number_id

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    assert trial_number_id(study.trials[0]) == study.trials[0]._trial_id
    assert isinstance(trial_number_id(study.trials[0]), int)


def test_ray_train_session_getter_exists() -> None:
    from kdseg.sweep.ray_private import train_session

    assert train_session() is None  # outside a trial: no session, and no error


def test_ray_train_v2_switch_exists(monkeypatch) -> None:
    from kdseg.sweep.ray_private import TRAIN_V2_ENV, train_v2_enabled

    monkeypatch.delenv(TRAIN_V2_ENV, raising=False)
    assert train_v2_enabled() is True  # Ray 2.60's default
    monkeypatch.setenv(TRAIN_V2_ENV, "0")
    assert train_v2_enabled() is False


def test_wandb_proto_record_has_the_fields_the_offline_reader_reads() -> None:
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    rec = pb.Record()
    for kind in ("run", "history", "summary", "stats", "config", "exit"):
        assert kind in rec.DESCRIPTOR.fields_by_name, f"wandb.proto Record lost {kind!r}"
    run = pb.RunRecord()
    for name in ("run_id", "project", "run_group", "display_name", "config"):
        assert name in run.DESCRIPTOR.fields_by_name, f"wandb.proto RunRecord lost {name!r}"


def test_tune_still_reads_the_thread_timeout_kdseg_gives_trial_actors() -> None:
    """kdseg raises Tune's 2 s wait for a finished trial's thread before an actor is reused
    (ray_private.trial_actor_env): the variable must still be what FunctionTrainable.reset_config reads."""
    import inspect

    from ray.tune.trainable.function_trainable import FunctionTrainable

    from kdseg.sweep.ray_private import THREAD_TIMEOUT_ENV, trial_actor_env

    assert THREAD_TIMEOUT_ENV in inspect.getsource(FunctionTrainable.reset_config), (
        f"ray's FunctionTrainable.reset_config no longer reads {THREAD_TIMEOUT_ENV}"
    )
    assert float(trial_actor_env()[THREAD_TIMEOUT_ENV]) >= 30


def test_smp_imports_without_wandb_and_wandb_still_imports_after() -> None:
    """kdseg/models/smp_import.py: timm's ``try: import wandb`` is skipped while smp is imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kdseg.models.smp_import import import_smp\n"
        "smp = import_smp()\n"
        "assert smp.create_model('Unet', encoder_name='resnet18', encoder_weights=None, classes=3)\n"
        "assert 'wandb' not in sys.modules, 'smp/timm imported wandb'\n"
        "assert import_smp() is smp\n"
        "import wandb\n"
        "assert wandb.init and wandb.Image, 'wandb not importable after smp'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


_COUNT_IDLE_WORKERS = """
import time, psutil
from kdseg.sweep.tuner import _init_ray
_init_ray(None, False)  # the local Ray a sweep's driver starts
time.sleep(3)  # a prestarted worker would be up by now (it starts while the driver connects)
cmds = [p.cmdline() for p in psutil.Process().children(recursive=True) if p.is_running()]
print("RAYLET", sum(c[0].endswith("/raylet") for c in cmds))
# a Python worker: titled ray::IDLE once registered, "python .../setup_worker.py .../default_worker.py" before
print("WORKERS", sum(c[0].startswith("ray::IDLE") or "default_worker.py" in " ".join(c[1:3]) for c in cmds))
"""


@pytest.mark.slow
def test_a_local_ray_started_by_kdseg_has_no_idle_prestarted_workers() -> None:
    """ray_private.local_ray_env: Ray's raylet must still read RAY_prestart_worker_first_driver. With it
    unread (renamed in an upgrade) the raylet would start one idle worker per CPU and this count fails."""
    import subprocess
    import sys

    from kdseg.sweep.ray_private import PRESTART_ENV, local_ray_env
    from tests.sweeps import KdsegCLI

    assert local_ray_env() == {PRESTART_ENV: "0"}
    env = {k: v for k, v in KdsegCLI.env().items() if k != PRESTART_ENV}  # this checkout's kdseg
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_IDLE_WORKERS], env=env, text=True, capture_output=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RAYLET 1" in out.stdout, out.stdout  # the count looked at this driver's own Ray
    assert "WORKERS 0" in out.stdout, f"{PRESTART_ENV} no longer stops Ray's prestarted workers: {out.stdout}"


def test_tune_callback_usage_tag_is_counted_alike_without_importing_the_integrations() -> None:
    """ray_private.count_callbacks_without_integrations: Tune's run still tags its callbacks through
    ray.air._internal.usage._count_callbacks, Ray's integrations are the ones kdseg names, and kdseg's
    count equals Ray's for built-in, custom logger and custom callbacks."""
    import inspect
    import re

    from ray.air._internal import usage
    from ray.tune import Callback
    from ray.tune import tune as tune_module
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

    from kdseg.sweep.ray_private import INTEGRATION_CALLBACKS, count_callbacks_by_name

    assert "air_usage.tag_callbacks(" in inspect.getsource(tune_module.run), (
        "tune.run no longer tags callbacks"
    )
    assert "_count_callbacks(" in inspect.getsource(usage.tag_callbacks), "tag_callbacks no longer counts"
    original = usage._count_callbacks  # Ray's own (this test process never applies kdseg's)
    imported = set(re.findall(r"import (\w+LoggerCallback)\b", inspect.getsource(original)))
    assert imported - {"LoggerCallback"} == set(INTEGRATION_CALLBACKS), imported

    class Mine(LoggerCallback):
        pass

    callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), CSVLoggerCallback(), Mine(), Callback(), object()]
    assert count_callbacks_by_name(callbacks) == original(callbacks)
    assert count_callbacks_by_name(None) == original(None) == {}


def test_a_sweep_driver_tags_tune_callbacks_without_importing_wandb() -> None:
    import subprocess
    import sys

    from tests.sweeps import KdsegCLI

    code = (
        "import sys\n"
        "from kdseg.sweep.ray_private import count_callbacks_without_integrations\n"
        "from ray.air._internal import usage\n"
        "from ray.tune.logger import CSVLoggerCallback\n"
        "{patch}"
        "usage._count_callbacks([CSVLoggerCallback()])\n"
        "print('WANDB', 'wandb' in sys.modules)\n"
    )
    runs = {
        patch: subprocess.run(
            [sys.executable, "-c", code.format(patch=patch)],
            env=KdsegCLI.env(),
            text=True,
            capture_output=True,
            timeout=120,
        )
        for patch in ("", "count_callbacks_without_integrations()\n")
    }
    assert all(r.returncode == 0 for r in runs.values()), [r.stderr[-2000:] for r in runs.values()]
    assert "WANDB True" in runs[""].stdout  # Ray's own count imports wandb: what this test would miss
    assert "WANDB False" in runs["count_callbacks_without_integrations()\n"].stdout
