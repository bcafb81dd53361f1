"""The one score a sweep optimises (kdseg.sweep.selection), its no-KD controls (kdseg.sweep.space) and the searcher
wrapper that runs them (kdseg.sweep.study.ControlsFirst): unit tests, no Ray run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdseg.errors import ConfigError
from kdseg.sweep.selection import (
    CONTROL_KEY,
    DIVERGED_SCORE,
    check_objective,
    score_metrics,
    settle_controls,
)
from kdseg.sweep.space import (
    control_params,
    controls,
    describe_trial,
    initial_points,
    load_space,
    to_tune_space,
    trial_config,
    trial_label,
)
from tests.conftest import REPO, tiny_config


def test_score_is_the_objective_over_the_floor_and_the_students_own_miou_under_it() -> None:
    r18 = {"val_miou": 0.128, "teacher_val_miou": 0.13, "student_params": 14_300_000, "gflops": 0.69}
    tiny = {"val_miou": 0.045, "teacher_val_miou": 0.13, "student_params": 150_000, "gflops": 0.05}
    a = score_metrics("iou_per_mparam", r18, 0.8)
    assert a["score"] == pytest.approx(0.128 / 14.3) and a["below_floor"] is False
    assert a["quality_floor"] == pytest.approx(0.8 * 0.13)
    b = score_metrics("iou_per_mparam", tiny, 0.8)
    assert b["below_floor"] is True and b["score"] == pytest.approx(0.045 - 1)
    assert b["score"] < 0 < a["score"]  # 48x smaller, and still ranked below
    assert score_metrics("iou_per_gflop", r18, 0.8)["score"] == pytest.approx(0.128 / 0.69)
    assert score_metrics("val_miou", r18, 0.8)["score"] == pytest.approx(0.128)
    # no teacher (a control during the sweep) or no floor: the objective's value
    assert score_metrics("iou_per_mparam", {**tiny, "teacher_val_miou": None}, 0.8)["below_floor"] is None
    assert score_metrics("iou_per_mparam", tiny, 0.0)["score"] == pytest.approx(0.045 / 0.15)
    # an explicit reference replaces the teacher
    assert score_metrics("val_miou", tiny, 0.5, reference=0.08)["below_floor"] is False
    assert score_metrics("iou_per_gflop", {"val_miou": 0.5}, 0.8)["score"] is None  # no gflops


@pytest.mark.parametrize("objective", ["val_miou", "iou_per_mparam", "iou_per_gflop"])
def test_under_the_floor_a_better_student_scores_higher_and_a_worse_teacher_never_helps(objective) -> None:
    """Online KD trains each trial's teacher with the trial's own hyper-parameters, so a score that
    measured a student against its teacher would reward the trials whose teacher learned least (the
    36-config ASHA benchmark in docs/selection.md: ASHA then stopped the best students at epoch 1)."""
    cost = {"student_params": 1_000_000, "gflops": 0.5}
    fast = {"val_miou": 0.045, "teacher_val_miou": 0.088, **cost}  # a teacher that learns fast
    slow = {"val_miou": 0.030, "teacher_val_miou": 0.040, **cost}  # a weaker student of a weaker teacher
    a, b = score_metrics(objective, fast, 0.8), score_metrics(objective, slow, 0.8)
    assert a["below_floor"] and b["below_floor"]
    assert a["score"] > b["score"]  # the old val_miou - floor ranked them the other way (-0.0254 < -0.002)
    for teacher in (0.06, 0.07, 0.08, 0.5):  # the teacher alone moves nothing under the floor
        assert score_metrics(objective, {**slow, "teacher_val_miou": teacher}, 0.8)["score"] == b["score"]
    # every student under a floor scores below every student over one, and above a diverged trial
    over = score_metrics(objective, {"val_miou": 0.001, "teacher_val_miou": 0.001, **cost}, 0.8)
    worst = score_metrics(objective, {"val_miou": 0.0, "teacher_val_miou": 1.0, **cost}, 1.0)
    assert DIVERGED_SCORE < worst["score"] <= b["score"] < a["score"] < 0 <= over["score"]


def test_objectives_that_hold_no_accuracy_are_refused_with_what_to_use() -> None:
    assert check_objective("pareto") == "pareto"
    with pytest.raises(ValueError, match="objective: pareto with cost: latency_ms"):
        check_objective("latency_ms")
    with pytest.raises(ValueError, match="unknown objective"):
        check_objective("accuracy")


def _space(tmp_path: Path, synth_dir: Path, space: dict, **sweep) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_config(synth_dir)))
    doc = {"base": "base.yaml", "space": space, "sweep": {"num_samples": 6, **sweep}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_latency_objective_in_a_space_file_is_refused(tmp_path, synth_dir) -> None:
    path = _space(tmp_path, synth_dir, {"distill.alpha": {"uniform": [0.1, 0.9]}}, objective="latency_ms")
    with pytest.raises(ConfigError, match=r"sweep\.objective.*pareto with cost: latency_ms"):
        load_space(path)


def test_controls_once_per_student_never_searched() -> None:
    spec = load_space(REPO / "search_spaces" / "backbones.yaml", ["data.root=/nonexistent"])
    ctl = controls(spec)
    # backbones.yaml's baseline names its student (Unet/resnet18): one control
    assert [c.label for c in ctl] == ["baseline"]
    pair = to_tune_space(spec)["pair"]
    assert "baseline" not in pair.categories and len(pair.categories) == 5
    assert all(p["pair"] != "baseline" for p in initial_points(spec))
    cfg = trial_config(spec, control_params(spec, ctl[0]))
    assert cfg.distill.mode == "none" and cfg.student.encoder == "resnet18"
    assert trial_label(spec, control_params(spec, ctl[0])) == "baseline"
    # a control keeps the base config's value of every other searched key
    assert cfg.distill.temperature == spec.base_config.distill.temperature
    assert describe_trial(cfg)["temperature"] is None


def test_controls_expand_over_the_students_of_their_group(tmp_path, synth_dir) -> None:
    space = {
        "pair": {
            "grid": [
                {"student.arch": "lightweight_unet", "student.width": 0.5, "label": "light"},
                {"student.arch": "Unet", "student.encoder": "resnet18", "label": "r18"},
                {
                    "student.arch": "Unet",
                    "student.encoder": "resnet18",
                    "distill.alpha": 0.3,
                    "label": "r18b",
                },
                {"distill.mode": "none", "label": "alone"},
            ]
        },
        "distill.temperature": {"loguniform": [1, 8]},
    }
    spec = load_space(_space(tmp_path, synth_dir, space))
    labels = [c.label for c in controls(spec)]
    assert labels == ["alone (lightweight_unet@0.5)", "alone (Unet/resnet18)"]  # r18 once, not twice
    assert len(initial_points(spec)) == 3
    # num_samples must leave room for the grid and the controls
    with pytest.raises(ConfigError, match=r"3 grid combinations and 2 no-KD controls.*at least 5"):
        load_space(_space(tmp_path, synth_dir, space, num_samples=4))
    with pytest.raises(ConfigError, match="no-KD control 'nope'"):
        trial_config(spec, {CONTROL_KEY: "nope"})


def test_settle_controls_fills_kd_gain_at_the_same_epoch_and_the_control_floor() -> None:
    rows = [
        {
            "trial_id": "c",
            "status": "completed",
            "mode": "none",
            "control": True,
            "student": "S",
            "val_miou": 0.40,
            "epochs": 3,
        },
        {
            "trial_id": "k",
            "status": "completed",
            "mode": "online",
            "student": "S",
            "val_miou": 0.45,
            "epochs": 3,
        },
        {
            "trial_id": "s",
            "status": "stopped",
            "mode": "online",
            "student": "S",
            "val_miou": 0.20,
            "epochs": 1,
        },
        {
            "trial_id": "o",
            "status": "completed",
            "mode": "online",
            "student": "T",
            "val_miou": 0.30,
            "epochs": 3,
        },
    ]
    history = {
        "c": [{"epoch": 1, "val_miou": 0.25}, {"epoch": 2, "val_miou": 0.35}, {"epoch": 3, "val_miou": 0.40}],
        "k": [{"epoch": 3, "teacher_val_miou": 0.60}],
        "s": [{"epoch": 1, "teacher_val_miou": 0.30}],
        "o": [{"epoch": 3, "teacher_val_miou": 0.40}],
    }
    settle_controls(rows, history, "val_miou", 0.8)
    by = {r["trial_id"]: r for r in rows}
    assert by["k"]["kd_gain"] == pytest.approx(0.05)
    assert by["s"]["kd_gain"] == pytest.approx(0.20 - 0.25)  # compared at its own last epoch
    assert by["o"]["kd_gain"] is None  # no control of student T
    # the control's floor: 0.8 x the mean teacher val mIoU at epoch 3 (0.60, 0.40)
    assert by["c"]["quality_floor"] == pytest.approx(0.8 * 0.5) and by["c"]["below_floor"] is False
