"""Faults a sweep survives: a trial that raises (retried from its checkpoint, or recorded as failed),
a NaN loss (``diverged``, not retried), a damaged checkpoint (restarted from scratch), an output
folder that cannot be written. The driver killed with SIGKILL is ``test_sweep.test_resume_after_sigkill``.

One sweep of four trials covers the trial faults; each trial is told apart by its ``train.seed`` and
fails on purpose through the space file's ``faults:`` rules (:mod:`kdseg.sweep.faults`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kdseg.sweep.ranking import read_leaderboard_csv
from tests.conftest import tiny_config
from tests.test_sweep import check_consistent

pytestmark = pytest.mark.xdist_group("faults")  # one pytest-xdist worker runs the module's fault sweep once

FAKE_KEY = "kdsegfake" + "5a5a5a5a5a5a5a5a" * 2  # a configured "API key" that must never be written
MAX_T = 3

# train.seed -> what happens to that trial
RETRIED, BROKEN, DIVERGES, CORRUPT = 1, 2, 3, 4


@pytest.fixture(scope="module")
def data32(tmp_path_factory) -> Path:
    from kdseg.data import write_synth

    return write_synth(tmp_path_factory.mktemp("faults-data") / "scenes", n=12, size=(32, 32), seed=0)


def fault_space(folder: Path, data: Path, **sweep) -> Path:
    base = tiny_config(
        data,
        data={"image_size": [32, 32]},
        student={"arch": "lightweight_unet", "width": 0.25},
        distill={"mode": "none"},
        train={"batch_size": 4, "max_steps_per_epoch": 2},
        tracking={"wandb": {"mode": "auto", "log_images_every": 0}},
    )
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    light = {"student.arch": "lightweight_unet", "student.width": 0.25}
    space = {
        "base": "base.yaml",
        "space": {
            "case": {
                "grid": [
                    {**light, "train.seed": RETRIED, "distill.mode": "online", "label": "retried"},
                    {**light, "train.seed": BROKEN, "label": "broken"},
                    {**light, "train.seed": DIVERGES, "train.lr": 1e10, "label": "diverges"},
                    {**light, "train.seed": CORRUPT, "label": "corrupt"},
                ]
            },
            "distill.temperature": {"uniform": [2, 4]},
        },
        "sweep": {
            "num_samples": 4,
            # grace_period = max_t: ASHA never stops a trial early, every outcome below is a fault's
            "asha": {"max_t": MAX_T, "grace_period": MAX_T, "reduction_factor": 2},
            "resources_per_trial": {"cpu": 1},
            "max_concurrent": 2,
            "max_failures": 1,
            **sweep,
        },
        "faults": [
            {"action": "raise", "epoch": 2, "step": 1, "times": 1, "when": {"train.seed": RETRIED}},
            {"action": "raise", "epoch": 1, "step": 2, "when": {"train.seed": BROKEN}},
            {
                "action": "corrupt_checkpoint",
                "epoch": 3,
                "step": 1,
                "times": 1,
                "when": {"train.seed": CORRUPT},
            },
        ],
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture(scope="module")
def fault_sweep(tmp_path_factory, data32, kdseg):
    """The sweep, run as a user runs it, W&B offline with a (fake) API key configured."""
    folder = tmp_path_factory.mktemp("fault-sweep")
    space = fault_space(folder, data32)
    out = kdseg(
        "sweep", space, "--out", folder / "runs", "--name", "f", env=kdseg.env(WANDB_API_KEY=FAKE_KEY)
    )
    sweep_dir = folder / "runs" / "f"
    rows = (
        {r["trial_id"]: r for r in read_leaderboard_csv(sweep_dir / "leaderboard.csv")}
        if out.returncode == 0
        else {}
    )
    return out, sweep_dir, rows


def by_seed(sweep_dir: Path, rows: dict, seed: int) -> tuple[dict, Path]:
    for trial_id, row in rows.items():
        folder = sweep_dir / "tune" / trial_id
        cfg = yaml.safe_load((folder / "run" / "config.yaml").read_text())
        if cfg["train"]["seed"] == seed:
            return row, folder
    raise AssertionError(f"no trial with train.seed {seed}")


def reported_epochs(trial_dir: Path) -> list[int]:
    """Every epoch Ray Tune received for the trial, over all its attempts, in order."""
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line).get("epoch") for line in lines if line.strip()]


def failures(trial_dir: Path) -> int:
    path = trial_dir / "error.txt"
    return path.read_text().count("Failure #") if path.exists() else 0


def metric_epochs(trial_dir: Path) -> list[int]:
    lines = (trial_dir / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


@pytest.mark.slow
def test_sweep_completes_and_records_every_fault(fault_sweep):
    out, sweep_dir, rows = fault_sweep
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_consistent(sweep_dir, "f", 4)  # leaderboard = Ray trials = Optuna trials, none RUNNING
    assert {r["status"] for r in rows.values()} == {"completed", "error", "diverged"}


@pytest.mark.slow
def test_failed_trial_is_retried_from_its_last_checkpoint(fault_sweep):
    out, sweep_dir, rows = fault_sweep
    row, trial = by_seed(sweep_dir, rows, RETRIED)
    assert row["status"] == "completed" and row["epochs"] == MAX_T and row["val_miou"] is not None
    assert failures(trial) == 1  # one failed attempt, then Tune's retry
    # the retry resumed after epoch 1 (its checkpoint): epochs are not repeated from 1
    assert reported_epochs(trial) == [1, 2, 3]
    assert metric_epochs(trial) == [1, 2, 3]
    assert "retrying from its last checkpoint" in out.stderr and "injected fault" in out.stderr


@pytest.mark.slow
def test_trial_that_always_fails_is_recorded_with_its_error(fault_sweep):
    out, sweep_dir, rows = fault_sweep
    row, trial = by_seed(sweep_dir, rows, BROKEN)
    assert row["status"] == "error" and row["val_miou"] is None
    assert failures(trial) == 2  # the first attempt and sweep.max_failures = 1 retry
    assert "injected fault (raise)" in row["error"] and "epoch 1, step 2" in row["error"]
    assert row["rank"] > sum(r["status"] not in ("error", "diverged") for r in rows.values())  # ranks last


@pytest.mark.slow
def test_nan_loss_is_diverged_not_a_crash_nor_a_retry(fault_sweep):
    out, sweep_dir, rows = fault_sweep
    row, trial = by_seed(sweep_dir, rows, DIVERGES)
    assert row["status"] == "diverged" and row["val_miou"] is None
    assert "loss is nan" in row["error"] or "loss is inf" in row["error"]
    assert failures(trial) == 0  # Tune saw no failure: nothing retried
    assert len(reported_epochs(trial)) == 1  # one attempt, one (final) report


@pytest.mark.slow
def test_damaged_checkpoint_restarts_the_trial_from_scratch(fault_sweep):
    out, sweep_dir, rows = fault_sweep
    row, trial = by_seed(sweep_dir, rows, CORRUPT)
    assert row["status"] == "completed" and row["epochs"] == MAX_T
    assert failures(trial) == 1
    # the retry found the checkpoint of epoch 2 truncated, said so, and trained again from epoch 1
    assert "restarted from scratch" in row["error"] and "not a readable checkpoint" in row["error"]
    assert f"tune/{trial.name}/checkpoint_" in row["error"]  # names the checkpoint as stored
    assert reported_epochs(trial) == [1, 2, 1, 2, 3]
    assert metric_epochs(trial) == [1, 2, 3]  # no epoch counted twice
    assert "restarted from scratch" in out.stderr


@pytest.mark.slow
def test_failing_sweep_writes_no_api_key(fault_sweep):
    """Errors, divergence and retries included: the W&B key is in no file of the sweep, nor in its output."""
    out, sweep_dir, rows = fault_sweep
    assert list(sweep_dir.glob("tune/*/wandb/offline-run-*")), "W&B runs were not written offline"
    checked = 0
    for path in sweep_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
            checked += 1
    assert checked > 30
    assert FAKE_KEY not in out.stdout + out.stderr


def test_fault_rules_fire_as_often_as_asked(tmp_path):
    from kdseg.sweep.faults import FaultInjector, InjectedFault
    from kdseg.sweep.space import FaultRule

    rules = [
        FaultRule(action="raise", epoch=2, step=3, times=2, when={"train.seed": 7}),
        FaultRule(action="raise", epoch=1, when={"train.seed": 8}),
    ]
    cfg = {"train": {"seed": 7}}
    for attempt in range(3):  # a new injector per attempt, as in a retried trial's new process
        faults = FaultInjector(rules, cfg, "t1", tmp_path)
        faults.on_step(2, 2)
        faults.on_step(1, 3)
        if attempt < 2:
            with pytest.raises(InjectedFault, match="epoch 2, step 3"):
                faults.on_step(2, 3)
        else:
            faults.on_step(2, 3)  # fired twice already
    assert not FaultInjector(rules, {"train": {"seed": 9}}, "t2", tmp_path)  # no rule matches


def test_unknown_fault_key_is_refused(tmp_path, data32):
    from kdseg.errors import ConfigError
    from kdseg.sweep.space import load_space

    space = fault_space(tmp_path, data32)
    doc = yaml.safe_load(space.read_text())
    doc["faults"][0]["when"] = {"train.sed": 1}
    space.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"faults\[0\]\.when\.train\.sed.*did you mean train\.seed"):
        load_space(space)


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_unwritable_output_folder_is_refused_before_anything_starts(tmp_path, data32, command, capsys):
    from kdseg.cli import main

    space = fault_space(tmp_path, data32)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should go\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    target = tmp_path / "base.yaml" if command == "train" else space
    out = blocker / "runs"
    assert main([command, str(target), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "cannot write" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
