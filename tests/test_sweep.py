"""End-to-end sweeps on local Ray: leaderboard = Ray trials = Optuna trials, export, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import yaml

from kdseg.layout import REPORT_STAGING_DIR
from kdseg.sweep.ranking import read_leaderboard_csv
from tests.conftest import tiny_config
from tests.sweeps import check_consistent, write_space, write_split_synth

pytestmark = pytest.mark.slow


def test_sweep_end_to_end_export_reproduces(tiny_sweep, kdseg, tmp_path):
    out, sweep_dir = tiny_sweep.proc, tiny_sweep.sweep_dir
    assert "best config:" in out.stdout and "leaderboard" in out.stdout
    for name in ("sweep.yaml", "leaderboard.csv", "best_config.yaml", "optuna.db"):
        assert (sweep_dir / name).exists(), name
    rows = check_consistent(sweep_dir, tiny_sweep.name, tiny_sweep.num_samples)
    assert {r["status"] for r in rows} <= {"completed", "stopped"}
    controls = [r for r in rows if r["control"]]
    assert len(controls) == 1 and controls[0]["epochs"] == tiny_sweep.max_t  # the control ran once, fully
    assert rows[0]["status"] == "completed"  # trials that reached max_t rank first
    for r in rows:
        run = sweep_dir / "tune" / r["trial_id"] / "run"
        assert (run / "metrics.jsonl").exists() and (run / "student.pt").exists()
        # finished trials drop their full checkpoints, and Tune's pointers to them
        assert not (run / "checkpoint.pt").exists() and not list(run.glob("checkpoint-e*.pt"))
        assert not list(run.parent.glob("checkpoint_*/checkpoint.json"))
        # nor the folder a report hands Tune, also of a trial ASHA stopped inside its report
        assert not (run / REPORT_STAGING_DIR).exists()

    # export + train reproduce the winner's val mIoU (same data, same seed)
    exported = tmp_path / "winner.yaml"
    out = kdseg("export", sweep_dir, "-o", exported)
    assert out.returncode == 0, out.stderr
    out = kdseg("train", exported, "--out", tmp_path / "retrain")
    assert out.returncode == 0, out.stderr
    final = json.loads((tmp_path / "retrain" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["val_miou"] == pytest.approx(rows[0]["val_miou"], abs=0.02)

    # the same name again is refused, and nothing is touched
    before = (sweep_dir / "leaderboard.csv").read_bytes()
    again = kdseg("sweep", tiny_sweep.space, "--out", tiny_sweep.out, "--name", tiny_sweep.name)
    assert again.returncode == 2 and "kdseg resume" in again.stderr
    assert (sweep_dir / "leaderboard.csv").read_bytes() == before


def test_resume_after_sigkill(tmp_path, kdseg):
    space = write_space(
        tmp_path,
        write_split_synth(tmp_path / "data"),
        base={"data": {"image_size": [32, 32]}, "train": {"batch_size": 4, "max_steps_per_epoch": 2}},
        extra_space={"distill.alpha": {"uniform": [0.2, 0.8]}},
        num_samples=4,
        max_t=3,
    )
    sweep_dir = tmp_path / "runs" / "killed"
    # its own session: the driver and the local Ray it starts are one process group, killed below
    proc = kdseg.popen("sweep", space, "--out", tmp_path / "runs", "--name", "killed", start_new_session=True)
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

    out = kdseg("resume", sweep_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    # no trial lost or counted twice (leaderboard = Ray trials = Optuna trials), none left RUNNING
    rows = {r["trial_id"]: r for r in check_consistent(sweep_dir, "killed", 4)}
    for trial_id, val_miou in finished.items():  # a trial that had finished keeps its result
        assert rows[trial_id]["status"] == "completed"
        assert rows[trial_id]["val_miou"] == pytest.approx(val_miou, abs=1e-6)


def test_bad_space_is_refused_before_ray_starts(tmp_path, synth_dir, kdseg):
    space = write_space(tmp_path, synth_dir, extra_space={"distill.alpha": {"uniform": [0.9, 0.1]}})
    out = kdseg("sweep", space, "--out", tmp_path / "runs")
    assert out.returncode == 2
    assert "space.yaml" in out.stderr and "distill.alpha" in out.stderr
    assert not (tmp_path / "runs").exists()


def _answer_space(
    folder: Path, synth_dir: Path, *, objective: str, num_samples: int, max_t: int, steps: int, **sweep
):
    """r34 teaches a UNet-ResNet18 (which learns) and a tiny lightweight UNet (lr 1e-12: cannot learn);
    the ResNet18 alone is the control. ASHA's grace period is max_t: these tests are about the ranking
    (after a few steps on 48 images, a network that learned nothing can still look as good as one that
    is learning; the README quickstart shows the floor at ASHA's rungs)."""
    base = tiny_config(synth_dir, train={"batch_size": 8, "max_steps_per_epoch": steps})
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    space = {
        "base": "base.yaml",
        "space": {
            "pair": {
                "grid": [
                    {
                        "student.arch": "lightweight_unet",
                        "student.width": 0.25,
                        "train.lr": 1e-12,
                        "train.teacher_lr": 1e-3,  # its teacher learns
                        "label": "tiny",
                    },
                    {"student.arch": "Unet", "student.encoder": "resnet18", "label": "r18"},
                    {
                        "distill.mode": "none",
                        "student.arch": "Unet",
                        "student.encoder": "resnet18",
                        "label": "alone",
                    },
                ]
            },
            "distill.temperature": {"loguniform": [1, 8]},
        },
        "sweep": {
            "num_samples": num_samples,
            "objective": objective,
            "asha": {"max_t": max_t, "grace_period": max_t, "reduction_factor": 2},
            "resources_per_trial": {"cpu": 1},
            "max_concurrent": 1,  # one trial actor, reused: these tests are about the ranking
            "seed": 0,
            **sweep,
        },
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_the_winner_is_good_and_everyone_names_the_same_one(tmp_path, synth_dir, kdseg):
    """Default objective (iou_per_mparam with the quality floor): a 48x smaller student that learned
    nothing does not win; export, the Optuna study and the leaderboard agree; the control ran once, fully."""
    # the default objective; a floor of half the teacher leaves room for what 18 steps can teach
    space = _answer_space(
        tmp_path, synth_dir, objective="iou_per_mparam", num_samples=3, max_t=3, steps=6, quality_floor=0.5
    )  # the three grid points: tiny, r18 and its control
    out = kdseg(
        "sweep",
        str(space),
        "--out",
        str(tmp_path / "runs"),
        "--name",
        "answer",
        command=kdseg.kdseg_listing_imports,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # the driver plans, schedules and ranks without torch, smp or wandb (only its trials train and log;
    # no final_eval here)
    assert "IMPORTED []" in out.stdout, out.stdout[-500:]
    sweep_dir = tmp_path / "runs" / "answer"
    rows = check_consistent(sweep_dir, "answer", 3)
    assert rows[0]["student"] == "Unet/resnet18" and rows[0]["status"] == "completed"
    assert rows[0]["below_floor"] is False
    tiny = [r for r in rows if r["label"] == "tiny"]
    assert tiny and all(r["below_floor"] for r in tiny if r["status"] == "completed")
    assert all(r["rank"] > rows[0]["rank"] for r in tiny)
    # the control: once, all epochs, and every full-budget KD row of its student has a kd_gain
    controls = [r for r in rows if r["control"]]
    assert [c["label"] for c in controls] == ["alone"] and controls[0]["epochs"] == 3
    for r in rows:
        if r["student"] == "Unet/resnet18" and r["mode"] != "none":
            assert isinstance(r["kd_gain"], float)
    # kdseg export and optuna best-trial name the same trial, and the study names its metric
    exported = kdseg("export", str(sweep_dir), "-o", str(tmp_path / "best.yaml"))
    assert exported.returncode == 0, exported.stderr
    study = optuna.load_study(study_name="answer", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert study.metric_names == ["score"]
    assert study.best_trial.user_attrs["ray_trial_id"] == rows[0]["trial_id"]
    assert f"answer-{rows[0]['trial_id']}" in (tmp_path / "best.yaml").read_text()
    assert study.best_trial.user_attrs["label"] == "r18"


@pytest.mark.e2e  # minutes-long scenario, run with -m e2e (keeps the default suite inside CI time)
def test_iou_per_gflop_is_measured_and_ranks(tmp_path, synth_dir, kdseg):
    space = _answer_space(tmp_path, synth_dir, objective="iou_per_gflop", num_samples=3, max_t=1, steps=2)
    out = kdseg("sweep", str(space), "--out", str(tmp_path / "runs"), "--name", "gflop")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = read_leaderboard_csv(tmp_path / "runs" / "gflop" / "leaderboard.csv")
    assert len(rows) == 3
    for r in rows:
        assert r["gflops"] > 0 and r["latency_ms"] > 0
        assert r["iou_per_gflop"] == pytest.approx(r["val_miou"] / r["gflops"])
    over = [r for r in rows if not r["below_floor"]]
    assert [r["score"] for r in over] == sorted((r["score"] for r in over), reverse=True)
    for r in over:
        assert r["score"] == pytest.approx(r["iou_per_gflop"])


def test_pareto_is_a_multi_objective_study(tmp_path, synth_dir, kdseg):
    space = _answer_space(tmp_path, synth_dir, objective="pareto", num_samples=3, max_t=1, steps=2)
    out = kdseg(
        "sweep", str(space), "--out", str(tmp_path / "runs"), "--name", "front", "--set", "sweep.cost=gflops"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    sweep_dir = tmp_path / "runs" / "front"
    study = optuna.load_study(study_name="front", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_miou", "gflops"]
    rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
    assert {r["status"] for r in rows} == {"completed"}  # no early stopping in a multi-objective study
    front = {r["trial_id"] for r in rows if r["pareto"]}
    best = {t.user_attrs["ray_trial_id"] for t in study.best_trials}
    assert front == best and front


@pytest.mark.parametrize(
    "max_t, grace, rf", [(9, 1, 3.0), (3, 1, 3.0), (40, 4, 3.0), (40, 2, 2.0), (10, 1, 1.5), (5, 5, 2.0)]
)
def test_student_pt_is_written_at_every_epoch_asha_can_stop_a_trial(max_t, grace, rf):
    """asha_stop_epochs: the first epoch >= each of the rungs of Ray's own bracket (its private class)."""
    import math
    import types

    from ray.tune.schedulers.async_hyperband import _Bracket

    from kdseg.sweep.trainable import asha_stop_epochs

    asha = types.SimpleNamespace(max_t=max_t, grace_period=grace, reduction_factor=rf)
    sweep = types.SimpleNamespace(objective="val_miou", asha=asha)
    rungs = {math.ceil(m) for m, _ in _Bracket(grace, max_t, rf, 0)._rungs}
    assert asha_stop_epochs(sweep, max_t) == rungs
    assert asha_stop_epochs(types.SimpleNamespace(objective="pareto", asha=asha), max_t) == set()
