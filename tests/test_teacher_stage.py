"""The teacher stage (teacher.checkpoint: train): planning, hashing, one training per teacher, resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import yaml

from kdseg.config import validate_config
from kdseg.errors import CheckpointError, ConfigError
from kdseg.sweep.space import load_space, trial_config
from kdseg.sweep.teacher_plan import plan_teachers, teacher_config, teacher_hash
from kdseg.sweep.teacher_stage import fill_teacher, train_teacher
from tests.conftest import tiny_config


def stage_base(synth_dir: Path, **train) -> dict:
    """Tiny offline KD: a lightweight UNet teacher (trained by the stage) -> a narrower one."""
    return tiny_config(
        synth_dir,
        teacher={"arch": "lightweight_unet", "width": 0.5, "checkpoint": "train", "train_epochs": 3},
        student={"arch": "lightweight_unet", "width": 0.25},
        distill={"mode": "offline"},
        train={"batch_size": 8, "max_steps_per_epoch": 2, **train},
    )


def write_stage_space(folder: Path, synth_dir: Path, space=None, base=None, **sweep) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(base or stage_base(synth_dir)))
    doc = {
        "base": "base.yaml",
        "space": space or {"distill.temperature": {"loguniform": [1, 8]}},
        "sweep": {
            "num_samples": 3,
            "asha": {"max_t": 2, "grace_period": 2, "reduction_factor": 2},
            "resources_per_trial": {"cpu": 1},
            "max_concurrent": 2,
            "seed": 0,
            **sweep,
        },
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# ------------------------------------------------------------------------------------- unit tests


def test_hash_depends_on_the_teacher_not_on_the_student(synth_dir):
    base = stage_base(synth_dir)
    cfg = validate_config(base)
    h = teacher_hash(cfg)
    student_keys = {"student": {"arch": "Unet", "encoder": "resnet18"}, "distill": {"temperature": 2.0}}
    assert teacher_hash(validate_config({**base, **student_keys, "distill": {"mode": "offline"}})) == h
    same = [
        ("train", {**base["train"], "lr": 5e-3, "teacher_lr": 1e-3})
    ]  # teacher_lr set: lr is the student's
    a = validate_config({**base, "train": {**base["train"], "teacher_lr": 1e-3}})
    b = validate_config({**base, **dict(same)})
    assert teacher_hash(a) == teacher_hash(b)
    for section, change in [
        ("teacher", {"width": 0.75}),
        ("teacher", {"train_epochs": 4}),
        ("train", {"seed": 1}),
        ("train", {"lr": 5e-3}),  # teacher_lr unset: lr is the teacher's learning rate too
        ("train", {"batch_size": 4}),
        ("data", {"image_size": [32, 32]}),
    ]:
        other = validate_config({**base, section: {**base[section], **change}})
        assert teacher_hash(other) != h, (section, change)
    t = teacher_config(cfg)
    assert t.distill.mode == "none" and t.student.arch == "lightweight_unet" and t.student.width == 0.5
    assert t.train.epochs == 3 and t.student.checkpoint is None


def test_plan_one_teacher_per_distinct_configuration(tmp_path, synth_dir):
    space = write_stage_space(
        tmp_path,
        synth_dir,
        space={
            "distill.temperature": {"loguniform": [1, 8]},
            "student.width": {"choice": [0.25, 0.5]},  # student keys: still one teacher
            "pair": {
                "choice": [
                    {"teacher.width": 0.5, "label": "t50"},
                    {"teacher.width": 0.75, "label": "t75"},
                    {"distill.mode": "none", "label": "alone"},
                ]
            },
        },
        num_samples=6,
    )
    spec = load_space(space)
    teachers = plan_teachers(spec)
    assert sorted(t.config.student.width for t in teachers) == [0.5, 0.75]


def test_numeric_teacher_key_is_refused_before_anything_starts(tmp_path, synth_dir, kdseg):
    space = write_stage_space(tmp_path, synth_dir, space={"train.lr": {"loguniform": [1e-4, 1e-2]}})
    out = kdseg("sweep", space, "--out", tmp_path / "runs", timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "space.yaml: space.train.lr" in out.stderr and "train.teacher_lr" in out.stderr
    assert not (tmp_path / "runs").exists()
    # with train.teacher_lr fixed, train.lr is the student's alone and may be searched over a range
    base = stage_base(synth_dir, teacher_lr=1e-3)
    write_stage_space(tmp_path, synth_dir, base=base, space={"train.lr": {"loguniform": [1e-4, 1e-2]}})
    assert len(plan_teachers(load_space(space))) == 1
    with pytest.raises(ConfigError, match=r"space\.teacher\.width: uniform"):
        write_stage_space(tmp_path, synth_dir, space={"teacher.width": {"uniform": [0.5, 1.0]}})
        plan_teachers(load_space(space))


def test_train_outside_a_sweep_and_online_mode_are_refused(synth_dir):
    from kdseg.models import build_model

    cfg = validate_config(stage_base(synth_dir))
    with pytest.raises(CheckpointError, match="teacher stage"):
        build_model(cfg.teacher, 13, role="teacher")
    with pytest.raises(ConfigError, match="distill.mode must be offline"):
        validate_config({**stage_base(synth_dir), "distill": {"mode": "online"}}, "x.yaml")
    with pytest.raises(ConfigError, match="train_epochs applies only"):
        validate_config(tiny_config(synth_dir, teacher={"train_epochs": 3}), "x.yaml")


def test_fill_teacher_points_trials_at_the_trained_teacher(tmp_path, synth_dir):
    from kdseg.data import load_data

    spec = load_space(write_stage_space(tmp_path, synth_dir))
    (teacher,) = plan_teachers(spec)
    cfg = trial_config(spec, {"distill.temperature": 2.0})
    with pytest.raises(CheckpointError, match="no finished teacher"):
        fill_teacher(cfg, tmp_path)
    folder = tmp_path / "teachers" / teacher.hash
    from kdseg.config import config_to_dict

    summary = train_teacher(config_to_dict(teacher.config), load_data(teacher.config.data), str(folder))
    assert summary["epochs"] == 3 and len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (folder / "checkpoint.pt").exists() and (folder / "teacher.json").exists()
    filled = fill_teacher(cfg, tmp_path)
    assert filled.teacher.checkpoint == folder / "student.pt" and filled.teacher.train_epochs is None
    control = fill_teacher(validate_config({**stage_base(synth_dir), "distill": {"mode": "none"}}), tmp_path)
    assert control.teacher.checkpoint is None


# ---------------------------------------------------------------------------------- end to end


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_teacher_trained_once_for_all_trials_and_not_again_after_sigkill(tmp_path, synth_dir, kdseg):
    space = write_stage_space(tmp_path, synth_dir, num_samples=3, max_concurrent=1)
    sweep_dir = tmp_path / "runs" / "stage"
    # its own session: the driver and the local Ray it starts are one process group, killed below
    proc = kdseg.popen("sweep", space, "--out", tmp_path / "runs", "--name", "stage", start_new_session=True)
    # kill the driver once the teacher has finished and a student has started
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        done = list((sweep_dir / "teachers").glob("*/teacher.json")) if sweep_dir.exists() else []
        if done and list((sweep_dir / "tune").glob("*/run/metrics.jsonl")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed: " + (proc.stdout.read() or "")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (sweep_dir / "leaderboard.csv").exists()
    (folder,) = [p for p in (sweep_dir / "teachers").iterdir() if p.is_dir()]  # one teacher folder
    before = _state(folder)

    out = kdseg("resume", sweep_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reused" in out.stderr and "teacher stage: training" not in out.stderr
    assert _state(folder) == before  # not trained again: same files, untouched
    summary = json.loads((folder / "teacher.json").read_text())
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3] == list(range(1, summary["epochs"] + 1))  # trained once, every epoch once
    assert f"val mIoU {summary['val_miou']:.4f} after 3 epochs" in out.stdout  # shown once under the table

    from kdseg.sweep.ranking import read_leaderboard_csv

    rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}
    for r in rows:  # every trial distilled from that teacher, evaluated it each epoch, and has its floor
        cfg = yaml.safe_load((sweep_dir / "tune" / r["trial_id"] / "run" / "config.yaml").read_text())
        assert cfg["distill"]["mode"] == "offline"
        assert cfg["teacher"]["checkpoint"] == str(folder / "student.pt")
        assert r["teacher_val_miou"] == pytest.approx(summary["val_miou"], abs=1e-9)
        assert r["quality_floor"] == pytest.approx(0.8 * summary["val_miou"], abs=1e-9)
    trials = optuna.load_study(
        study_name="stage", storage=f"sqlite:///{sweep_dir / 'optuna.db'}"
    ).get_trials()
    assert len(trials) == 3 and not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)

    from kdseg.report.load import load_sweep
    from kdseg.report.sections import _summary_html

    html = _summary_html(load_sweep(sweep_dir), None, None)
    assert html.count("trained once by the teacher stage") == 1 and f"{summary['val_miou']:.4f}" in html


@pytest.mark.slow
def test_failed_teacher_stops_the_sweep_before_any_student(tmp_path, synth_dir, kdseg):
    base = stage_base(synth_dir, teacher_lr=1e30)  # the teacher's loss becomes NaN at its second step
    space = write_stage_space(tmp_path, synth_dir, base=base)
    out = kdseg("sweep", space, "--out", tmp_path / "runs", "--name", "bad")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "failed, so no student was started" in out.stderr and "Diverged" in out.stderr
    sweep_dir = tmp_path / "runs" / "bad"
    assert not [p for p in (sweep_dir / "tune").iterdir() if p.is_dir()]  # no trial started
    assert not (sweep_dir / "leaderboard.csv").exists()
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep_dir / 'optuna.db'}")
    for s in optuna.get_all_study_summaries(storage):
        assert not optuna.load_study(study_name=s.study_name, storage=storage).get_trials(
            states=(optuna.trial.TrialState.RUNNING,)
        )
