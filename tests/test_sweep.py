"""End-to-end sweeps on local Ray: leaderboard = Ray trials = Optuna trials, export, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from kdseg.ranking import read_leaderboard_csv
from tests.conftest import REPO, tiny_config, tiny_space

pytestmark = pytest.mark.slow


def write_space(folder: Path, synth_dir: Path, *, num_samples=4, max_t=2, extra_space=None, **sweep) -> Path:
    base = tiny_config(synth_dir, train={"batch_size": 8, "max_steps_per_epoch": 3})
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    extra = {"distill.alpha": {"uniform": [0.2, 0.8]}, **(extra_space or {})}
    space = tiny_space("base.yaml", num_samples=num_samples, max_t=max_t, extra_space=extra, **sweep)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def kdseg(*args, cwd=None, timeout=600, **kw):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "kdseg.cli", *args],
        cwd=cwd or REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        **kw,
    )


def study_trials(sweep_dir: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").get_trials()


def check_consistent(sweep_dir: Path, name: str, n: int) -> list[dict]:
    rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
    ray_trials = sorted(p.name for p in (sweep_dir / "tune").iterdir() if p.is_dir())
    trials = study_trials(sweep_dir, name)
    assert len(rows) == len(ray_trials) == len(trials) == n
    assert sorted(r["trial_id"] for r in rows) == ray_trials
    assert sorted(t.user_attrs["ray_trial_id"] for t in trials) == ray_trials
    by_id = {t.user_attrs["ray_trial_id"]: t for t in trials}
    expected = {
        "completed": optuna.trial.TrialState.COMPLETE,
        "stopped": optuna.trial.TrialState.PRUNED,
        "error": optuna.trial.TrialState.FAIL,
        "diverged": optuna.trial.TrialState.FAIL,
    }
    for r in rows:
        t = by_id[r["trial_id"]]
        assert t.state == expected[r["status"]], (r, t.state)
        if r["status"] == "stopped":  # ASHA stops keep their per-epoch values as intermediate values
            assert len(t.intermediate_values) == r["epochs"]
        if r["status"] == "completed":
            assert t.value == pytest.approx(r["val_miou"])
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return rows


def test_sweep_end_to_end_export_reproduces(tmp_path, synth_dir):
    space = write_space(tmp_path, synth_dir, num_samples=4)
    out = kdseg("sweep", str(space), "--out", str(tmp_path / "runs"), "--name", "e2e")
    assert out.returncode == 0, out.stdout + out.stderr
    sweep_dir = tmp_path / "runs" / "e2e"
    assert "best config:" in out.stdout and "leaderboard" in out.stdout
    for name in ("sweep.yaml", "leaderboard.csv", "best_config.yaml", "optuna.db"):
        assert (sweep_dir / name).exists(), name
    rows = check_consistent(sweep_dir, "e2e", 4)
    assert {r["status"] for r in rows} <= {"completed", "stopped"}
    assert any(r["mode"] == "none" for r in rows)  # the baseline ran (grid points come first)
    assert rows[0]["status"] == "completed"  # trials that reached max_t rank first
    for r in rows:
        run = sweep_dir / "tune" / r["trial_id"] / "run"
        assert (run / "metrics.jsonl").exists() and (run / "student.pt").exists()
        assert not (run / "checkpoint.pt").exists()  # finished trials drop their full checkpoints

    # export + train reproduce the winner's val mIoU (same data, same seed)
    exported = tmp_path / "winner.yaml"
    out = kdseg("export", str(sweep_dir), "-o", str(exported))
    assert out.returncode == 0, out.stderr
    out = kdseg("train", str(exported), "--out", str(tmp_path / "retrain"))
    assert out.returncode == 0, out.stderr
    import json

    final = json.loads((tmp_path / "retrain" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["val_miou"] == pytest.approx(rows[0]["val_miou"], abs=0.02)

    # the same name again is refused, and nothing is touched
    before = (sweep_dir / "leaderboard.csv").read_bytes()
    again = kdseg("sweep", str(space), "--out", str(tmp_path / "runs"), "--name", "e2e")
    assert again.returncode == 2 and "kdseg resume" in again.stderr
    assert (sweep_dir / "leaderboard.csv").read_bytes() == before


def test_resume_after_sigkill(tmp_path, synth_dir):
    space = write_space(tmp_path, synth_dir, num_samples=6, max_t=3)
    sweep_dir = tmp_path / "runs" / "killed"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kdseg.cli",
            "sweep",
            str(space),
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "killed",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # wait until a trial has finished all its epochs and another has started, then kill the driver
    deadline = time.time() + 300
    finished: dict[str, float] = {}
    while time.time() < deadline and proc.poll() is None:
        runs = list((sweep_dir / "tune").glob("*/run/metrics.jsonl")) if sweep_dir.exists() else []
        epochs = {p.parent.parent.name: p.read_text().splitlines() for p in runs}
        finished = {t: json.loads(lines[-1])["val_miou"] for t, lines in epochs.items() if len(lines) >= 3}
        if finished and len(epochs) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be killed: " + (proc.stdout.read() or "")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started (same process group)
    proc.wait(timeout=30)
    assert not (sweep_dir / "leaderboard.csv").exists()

    out = kdseg("resume", str(sweep_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    # no trial lost or counted twice (leaderboard = Ray trials = Optuna trials), none left RUNNING
    rows = {r["trial_id"]: r for r in check_consistent(sweep_dir, "killed", 6)}
    for trial_id, val_miou in finished.items():  # a trial that had finished keeps its result
        assert rows[trial_id]["status"] == "completed"
        assert rows[trial_id]["val_miou"] == pytest.approx(val_miou, abs=1e-6)


def test_bad_space_is_refused_before_ray_starts(tmp_path, synth_dir):
    space = write_space(tmp_path, synth_dir, extra_space={"distill.alpha": {"uniform": [0.9, 0.1]}})
    out = kdseg("sweep", str(space), "--out", str(tmp_path / "runs"))
    assert out.returncode == 2
    assert "space.yaml" in out.stderr and "distill.alpha" in out.stderr
    assert not (tmp_path / "runs").exists()
