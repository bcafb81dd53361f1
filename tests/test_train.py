"""train_kd: every mode, site and alternation runs; KD learns; checkpoints resume exactly."""

from __future__ import annotations

import json

import pytest
import torch

from kdseg.config import validate_config
from kdseg.data import load_data
from kdseg.layout import read_metrics
from kdseg.models import build_model
from kdseg.train import Diverged, train_kd
from tests.conftest import tiny_config

PAIRS = {
    "r34-r18": ({"arch": "Unet", "encoder": "resnet34"}, {"arch": "Unet", "encoder": "resnet18"}),
    "r50-r18": ({"arch": "Unet", "encoder": "resnet50"}, {"arch": "Unet", "encoder": "resnet18"}),
    "r34-light": ({"arch": "Unet", "encoder": "resnet34"}, {"arch": "lightweight_unet", "width": 0.5}),
}
ALL_SITES = ["encoder", "bottleneck", "decoder", "logits"]


@pytest.fixture(scope="module")
def data(synth_dir):
    cfg = validate_config(tiny_config(synth_dir))
    return load_data(cfg.data)


def one_step(synth_dir, data, tmp_path=None, **sections):
    cfg = validate_config(tiny_config(synth_dir, **sections))
    cfg.train.max_steps_per_epoch = 1
    reports = []
    last = train_kd(cfg, data, lambda m, c: reports.append(m), run_dir=tmp_path)
    assert len(reports) == 1
    assert last["train_loss"] is not None and torch.isfinite(torch.tensor(last["train_loss"]))
    assert 0.0 <= last["val_miou"] <= 1.0
    return last


@pytest.fixture(scope="module")
def teacher_ckpts(tmp_path_factory):
    """A saved teacher state_dict per pair, for offline mode."""
    from kdseg.config import ModelConfig

    out = {}
    folder = tmp_path_factory.mktemp("teachers")
    for name, (teacher, _) in PAIRS.items():
        path = folder / f"{name}.pt"
        if not any(p.name == f"{teacher['encoder']}.pt" for p in folder.iterdir()):
            torch.save(build_model(ModelConfig(**teacher), 13).state_dict(), path)
        out[name] = path
    return out


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("mode", ["online", "mutual", "offline", "none"])
def test_every_mode_runs_a_step_with_all_sites(synth_dir, data, teacher_ckpts, pair, mode):
    teacher, student = PAIRS[pair]
    if mode == "offline":
        teacher = {**teacher, "checkpoint": str(teacher_ckpts[pair])}
    last = one_step(
        synth_dir, data, teacher=teacher, student=student, distill={"mode": mode, "sites": ALL_SITES}
    )
    if mode == "none":
        assert last["teacher_val_miou"] is None and last["teacher_params"] == 0
    else:
        assert last["teacher_val_miou"] is not None and last["teacher_params"] > last["student_params"]
        assert last["train_loss_feature"] > 0  # feature sites contributed
    if mode in ("online", "mutual"):
        assert last["teacher_train_loss"] is not None
    else:
        assert last["teacher_train_loss"] is None


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("feature_loss", ["mse", "cosine", "cwd"])
def test_every_feature_loss_runs_at_every_site(synth_dir, data, pair, feature_loss):
    teacher, student = PAIRS[pair]
    last = one_step(
        synth_dir,
        data,
        teacher=teacher,
        student=student,
        distill={"sites": ALL_SITES, "feature_loss": feature_loss},
    )
    assert last["train_loss_feature"] > 0 and last["train_loss_soft"] > 0


@pytest.mark.parametrize("site", ALL_SITES)
def test_each_site_alone(synth_dir, data, site):
    teacher, student = PAIRS["r50-r18"]  # channel mismatches at every feature site: adapters
    last = one_step(synth_dir, data, teacher=teacher, student=student, distill={"sites": [site]})
    if site == "logits":
        assert last["train_loss_soft"] > 0 and last["train_loss_feature"] == 0
    else:
        assert last["train_loss_feature"] > 0 and last["train_loss_soft"] == 0


@pytest.mark.parametrize("alternation", ["none", "epoch", "step", "teacher_student"])
def test_alternations_run(synth_dir, data, alternation):
    cfg = validate_config(
        tiny_config(synth_dir, distill={"alternation": alternation, "teacher_entropy": 0.1})
    )
    cfg.train.epochs, cfg.train.max_steps_per_epoch = 2, 2
    reports = []
    train_kd(cfg, data, lambda m, c: reports.append(m))
    assert [r["epoch"] for r in reports] == [1, 2]
    if alternation == "epoch":  # epoch 1 (index 0) is hard-only: no soft loss
        assert reports[0]["train_loss_soft"] == 0 and reports[1]["train_loss_hard"] == 0


def test_two_epochs_of_online_kd_raise_student_miou(synth_dir, data, tmp_path):
    """The student learns: after two epochs its mIoU is clearly above the untrained network's."""
    from kdseg.train import evaluate, make_accelerator

    cfg = validate_config(tiny_config(synth_dir, train={"epochs": 2, "batch_size": 4, "lr": 2e-3}))
    untrained = build_model(cfg.student, data.num_classes)
    torch.manual_seed(0)
    from kdseg.data import make_loaders

    _, val = make_loaders(data, cfg.data, 4, 0, 0)
    before = evaluate(untrained, val, data.num_classes, data.ignore_index, make_accelerator(cfg))["miou"]
    train_kd(cfg, data, run_dir=tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["student_val_miou"] > before + 0.02, (before, rows)
    assert rows[-1]["student_val_miou"] > rows[0]["student_val_miou"]


def test_run_folder_contract(synth_dir, data, tmp_path):
    cfg = validate_config(tiny_config(synth_dir, train={"epochs": 1, "max_steps_per_epoch": 2}))
    train_kd(cfg, data, run_dir=tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "student.pt", "checkpoint.pt"} <= names
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for key in (
        "epoch",
        "student_val_miou",
        "teacher_val_miou",
        "student_params",
        "teacher_params",
        "train_loss",
    ):
        assert key in row
    assert len(row["student_per_class_iou"]) == 13
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    student = build_model(cfg.student, 13)
    student.load_state_dict(state)  # the student as deployed: no adapters, no wrapper prefixes
    assert row["student_params"] == sum(p.numel() for p in student.parameters())


def test_resume_is_identical_to_an_uninterrupted_run(synth_dir, data, tmp_path):
    sections = dict(train={"epochs": 2, "max_steps_per_epoch": 3}, distill={"sites": ["decoder", "logits"]})
    straight = tmp_path / "straight"
    train_kd(validate_config(tiny_config(synth_dir, **sections)), data, run_dir=straight)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(metrics, ckpt):
        raise Killed  # the process dies right after epoch 1's checkpoint was written

    part = tmp_path / "part"
    cfg = validate_config(tiny_config(synth_dir, **sections))
    with pytest.raises(Killed):
        train_kd(cfg, data, kill_after_first_epoch, run_dir=part)
    train_kd(cfg, data, run_dir=part, resume=part / "checkpoint.pt")

    a, b = read_metrics(straight), read_metrics(part)
    assert [r["epoch"] for r in b] == [1, 2]  # no epoch counted twice
    for key in ("train_loss", "student_val_miou", "teacher_val_miou"):
        assert b[-1][key] == pytest.approx(a[-1][key], abs=1e-5), key


def test_corrupt_checkpoint_is_a_clear_error(synth_dir, data, tmp_path):
    from kdseg.errors import CheckpointError

    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    cfg = validate_config(tiny_config(synth_dir))
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        train_kd(cfg, data, resume=bad)


def test_nan_loss_raises_diverged(synth_dir, data):
    cfg = validate_config(tiny_config(synth_dir, train={"lr": 1e30, "max_steps_per_epoch": 8, "epochs": 3}))
    with pytest.raises(Diverged):
        train_kd(cfg, data)


def test_channels_last_gives_the_same_first_step(synth_dir, data):
    """train.channels_last changes the memory layout only: same weights, same first loss."""
    nhwc = one_step(synth_dir, data, train={"channels_last": True})
    nchw = one_step(synth_dir, data)
    assert nhwc["train_loss"] == pytest.approx(nchw["train_loss"], rel=1e-4)
