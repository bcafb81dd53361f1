"""distill.alpha_schedule (alpha per epoch) and train.metric (dataset-level or per-image mIoU)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kdseg.config import DistillConfig, validate_config
from kdseg.distill import alpha_at
from kdseg.errors import ConfigError
from kdseg.metrics import ConfusionMatrix
from tests.conftest import tiny_config
from tests.fixtures_layouts import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread():
    yield from one_torch_thread()


# ----------------------------------------------------------------------------------- alpha schedule


def test_alpha_schedules():
    const = DistillConfig(alpha=0.7, alpha_final=0.1)  # alpha_final is ignored by constant
    assert [alpha_at(const, e, 4) for e in range(4)] == [0.7] * 4
    lin = DistillConfig(alpha=0.7, alpha_schedule="linear", alpha_final=0.1)
    assert [alpha_at(lin, e, 4) for e in range(4)] == pytest.approx([0.7, 0.5, 0.3, 0.1])
    cos = DistillConfig(alpha=0.7, alpha_schedule="cosine", alpha_final=0.1)
    values = [alpha_at(cos, e, 5) for e in range(5)]
    assert values[0] == pytest.approx(0.7) and values[-1] == pytest.approx(0.1)
    assert values[2] == pytest.approx(0.4)  # halfway
    assert values[1] == pytest.approx(0.1 + 0.6 * (1 + math.cos(math.pi / 4)) / 2)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert alpha_at(lin, 0, 1) == 0.7  # a one-epoch run uses alpha
    up = DistillConfig(alpha=0.2, alpha_schedule="linear", alpha_final=0.8)  # rising works too
    assert alpha_at(up, 1, 3) == pytest.approx(0.5)


def test_alpha_schedule_validation():
    with pytest.raises(ConfigError, match=r"c\.yaml: distill\.alpha_final: alpha_schedule 'cosine' needs"):
        validate_config({"distill": {"alpha_schedule": "cosine"}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"distill\.alpha_final: Input should be less than or equal to 1"):
        validate_config({"distill": {"alpha_schedule": "linear", "alpha_final": 1.5}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"distill\.alpha_schedule: Input should be 'constant'"):
        validate_config({"distill": {"alpha_schedule": "exp", "alpha_final": 0.1}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"train\.metric: Input should be 'miou' or 'per_image_miou'"):
        validate_config({"train": {"metric": "dice"}}, "c.yaml")


# ---------------------------------------------------------------------------------- per-image mIoU


def test_per_image_miou_by_hand():
    cm = ConfusionMatrix(3, 255, per_image=True)
    target = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [255, 255]], [[255, 255], [255, 255]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 0], [0, 0]], [[1, 1], [1, 1]]])
    cm.update(pred, target)
    # image 0: class 0 IoU 1/2, class 1 IoU 2/3; image 1 (labelled pixels only): class 2 IoU 1/2,
    # class 0 predicted once, never true: IoU 0; image 2 has no labelled pixel and is not counted.
    expected = ((1 / 2 + 2 / 3) / 2 + (1 / 2 + 0) / 2) / 2
    assert cm.per_image_miou() == pytest.approx(expected)
    out = cm.compute()
    assert out["per_image_miou"] == pytest.approx(expected)
    plain = ConfusionMatrix(3, 255)
    plain.update(pred, target)
    assert torch.equal(plain.matrix, cm.matrix) and out["miou"] == plain.miou()  # same dataset-level number
    assert out["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert "per_image_miou" not in plain.compute()


def test_per_image_miou_accumulates_over_batches_and_merges():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (6, 8, 8))
    target[:, :2] = 255
    pred = torch.randint(0, 4, (6, 8, 8))
    whole = ConfusionMatrix(4, 255, per_image=True)
    whole.update(pred, target)
    parts = [ConfusionMatrix(4, 255, per_image=True) for _ in range(3)]
    for i, cm in enumerate(parts):
        cm.update(pred[2 * i : 2 * i + 2], target[2 * i : 2 * i + 2])
    merged = parts[0] + parts[1]
    merged += parts[2]
    assert merged.per_image_miou() == pytest.approx(whole.per_image_miou())
    singles = []
    for i in range(6):
        one = ConfusionMatrix(4, 255)
        one.update(pred[i], target[i])
        singles.append(one.miou())
    assert whole.per_image_miou() == pytest.approx(sum(singles) / 6)
    assert math.isnan(ConfusionMatrix(4, per_image=True).per_image_miou())


# ----------------------------------------------------------------------------------- in train_kd


def test_train_kd_applies_logs_alpha_and_reports_chosen_metric(synth_dir: Path):
    from kdseg.data import load_data
    from kdseg.train import train_kd

    cfg = validate_config(
        tiny_config(
            synth_dir,
            data={"image_size": [32, 32], "max_samples": 4},
            teacher={"arch": "lightweight_unet", "width": 0.25},
            student={"arch": "lightweight_unet", "width": 0.25},
            distill={"alpha": 0.7, "alpha_schedule": "linear", "alpha_final": 0.1, "temperature": 3.0},
            train={"epochs": 2, "max_steps_per_epoch": 1, "batch_size": 2, "device": "cpu", "amp": "off"},
        )
    )
    cfg.train.metric = "per_image_miou"
    rows: list[dict] = []
    train_kd(cfg, load_data(cfg.data), lambda m, _: rows.append(m))
    assert [r["alpha"] for r in rows] == pytest.approx([0.7, 0.1])
    for r in rows:
        # the scheduled alpha is the one the loss used: total = (1 - alpha) CE + alpha KL
        a = r["alpha"]
        assert r["train_loss"] == pytest.approx(
            (1 - a) * r["train_loss_hard"] + a * r["train_loss_soft"], rel=1e-5
        )
        assert r["val_miou"] == r["student_val_miou"] == r["val_miou_per_image"]
        assert r["teacher_val_miou"] == r["teacher_val_miou_per_image"]
        assert 0.0 <= r["val_miou_dataset"] <= 1.0 and 0.0 <= r["teacher_val_miou_dataset"] <= 1.0
        assert r["iou_per_mparam"] == pytest.approx(r["val_miou_per_image"] / (r["student_params"] / 1e6))
