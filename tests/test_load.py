"""Under load: 50 very short trials, more of them at once than the machine has cores, all recorded
once and consistently in the leaderboard, Ray Tune's results and the Optuna study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import tiny_config
from tests.test_sweep import check_consistent

N = 50
pytestmark = pytest.mark.slow


def ray_cpus() -> int:
    """The CPUs local Ray will see (cgroup limits included)."""
    from ray._private.utils import get_num_cpus

    return max(1, int(get_num_cpus()))


@pytest.mark.e2e  # minutes-long scenario, run with -m e2e (keeps the default suite inside CI time)
def test_fifty_short_trials_oversubscribed(tmp_path, kdseg):
    from kdseg.data import write_synth

    data = write_synth(tmp_path / "scenes", n=8, size=(32, 32), seed=0)
    cores = ray_cpus()
    concurrent = cores + 2  # more trials at once than cores
    base = tiny_config(
        data,
        data={"image_size": [32, 32], "augment": {"enabled": False}},
        student={"arch": "lightweight_unet", "width": 0.25},
        distill={"mode": "none"},
        train={"batch_size": 4, "max_steps_per_epoch": 1, "checkpoint_every": 1},
    )
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    space = {
        "base": "base.yaml",
        "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}, "train.seed": {"randint": [0, 1000]}},
        "sweep": {
            "num_samples": N,
            "asha": {"max_t": 2, "grace_period": 1, "reduction_factor": 2},
            # fractions of a CPU: Ray packs `concurrent` trials onto `cores` CPUs
            "resources_per_trial": {"cpu": round(cores / concurrent, 4)},
            "max_concurrent": concurrent,
            "seed": 0,
        },
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    out = kdseg(
        "sweep",
        "space.yaml",
        "--out",
        "runs",
        "--name",
        "load",
        cwd=tmp_path,
        env=kdseg.env(WANDB_MODE="disabled"),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "load"

    # leaderboard rows = Ray trial folders = Optuna trials, one each, states and values agreeing
    rows = check_consistent(sweep_dir, "load", N)
    assert {r["status"] for r in rows} <= {"completed", "stopped"}
    assert any(r["status"] == "completed" for r in rows) and any(r["status"] == "stopped" for r in rows)

    # Ray Tune's own record of the experiment (what `kdseg resume` restores) agrees
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(sweep_dir / "tune"))
    assert sorted(t.trial_id for t in analysis.trials) == sorted(r["trial_id"] for r in rows)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    by_id = {r["trial_id"]: r for r in rows}
    for t in analysis.trials:
        assert t.last_result["epoch"] == by_id[t.trial_id]["epochs"]
        assert t.last_result["val_miou"] == pytest.approx(by_id[t.trial_id]["val_miou"])

    # Optuna numbered every trial once, and each Ray trial's parameters are its Optuna trial's
    study = optuna.load_study(study_name="load", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(N))
    for t in trials:
        params = json.loads((sweep_dir / "tune" / t.user_attrs["ray_trial_id"] / "params.json").read_text())
        assert params["train.lr"] == pytest.approx(t.params["train.lr"])
        assert params["train.seed"] == t.params["train.seed"]

    # trials really ran side by side: more at once than there are cores
    assert max_overlap(sweep_dir) > cores


def max_overlap(sweep_dir: Path) -> int:
    """The most trials that were training at the same moment.

    A trial's ``run/config.yaml`` is written when its training starts and its other files as each
    epoch ends, straight into the sweep folder (Ray's own files are copied there later).
    """
    events = []
    for run in (sweep_dir / "tune").glob("*/run"):
        start = (run / "config.yaml").stat().st_mtime
        end = max(p.stat().st_mtime for p in run.iterdir())
        events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(events):  # at a tie an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak
