"""train_kd under data parallelism: the same config on 1 process and on 2 (torchrun, CPU, gloo).

Both runs see the same global batch (4 images: batch_size 4 on one process, 2 per process on two)
in the same order with the same augmentations (shuffle and augmentation are functions of seed,
epoch and item). The networks are made batch-independent (``tests/ddp_worker.py
--batch-independent``: GroupNorm for BatchNorm, no dropout); with BatchNorm each process normalises
with its own half batch, which is a different function (README, Multi-GPU).

Tolerance: after one step the weights of the two runs agree to 6e-8 (float32 rounding: a batch of 4
is summed in another order than two batches of 2 averaged); 18 SGD steps amplify that to about 7e-5
(measured: student 6.6e-5, teacher 7.4e-5, adapters 3.4e-6, on weights of magnitude ~1). We allow
1e-3, ten times that. With BatchNorm the same runs differ by up to 9e-2; without the LR fix the
2-process schedule does not even reach zero.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdseg.config import KDConfig
from tests.conftest import REPO, tiny_config

WORKER = REPO / "tests" / "ddp_worker.py"
WEIGHT_TOL = 1e-3  # max abs difference of any weight, 1 vs 2 processes (module docstring)
METRIC_TOL = 1e-3  # losses (relative) and mIoU (absolute)

pytestmark = [
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="torch.distributed with gloo is not available",
    ),
    pytest.mark.xdist_group("ddp"),  # one pytest-xdist worker runs the module's 1-vs-2-process runs once
]


def _config(root: Path, batch_size: int) -> dict:
    return tiny_config(
        root,
        data={"image_size": [32, 32]},
        teacher={"arch": "lightweight_unet", "width": 1.0},
        student={"arch": "lightweight_unet", "width": 0.5},
        distill={"sites": ["logits", "encoder", "decoder"]},  # conv adapters at encoder and decoder
        train={
            "epochs": 2,
            "batch_size": batch_size,
            "optimizer": "sgd",
            "lr": 0.01,
            "scheduler": "cosine",
            "grad_clip": 5.0,
            "device": "cpu",
            "amp": "off",
        },
    )


@pytest.fixture(scope="module")
def runs(synth_dir, tmp_path_factory) -> Path:
    """Runs ``one`` (1 process, batch 4) and ``two`` (torchrun, 2 processes, batch 2) side by side."""
    root = tmp_path_factory.mktemp("ddp")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    launch = {
        "one": [sys.executable],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    }
    procs = {}
    for name, batch in (("one", 4), ("two", 2)):
        (root / f"{name}.json").write_text(json.dumps(_config(synth_dir, batch)))
        args = [str(WORKER), str(root / f"{name}.json"), str(root / name / "run"), str(root / name / "out")]
        log = (root / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(
            [*launch[name], *args, "--batch-independent"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    for name, proc in procs.items():
        try:
            rc = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"{name}: no result within 600 s; log: {(root / f'{name}.log').read_text()[-3000:]}")
        assert rc == 0, f"{name} exited {rc}:\n{(root / f'{name}.log').read_text()[-5000:]}"
    return root


def _result(runs: Path, name: str, rank: int = 0) -> dict:
    return torch.load(runs / name / "out" / f"rank{rank}.pt", weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def test_worker_ran_as_asked(runs):
    assert _result(runs, "one")["world_size"] == 1
    assert [_result(runs, "two", r)["world_size"] for r in (0, 1)] == [2, 2]


def test_two_processes_train_what_one_does(runs):
    one, two = _result(runs, "one"), _result(runs, "two")
    assert len(one["adapters"]) > 0  # conv adapters exist and are compared
    for part in ("student", "teacher", "adapters"):
        assert _max_diff(one[part], two[part]) <= WEIGHT_TOL, part
    m1, m2 = one["metrics"], two["metrics"]
    for key in (
        "train_loss",
        "train_loss_hard",
        "train_loss_soft",
        "train_loss_feature",
        "teacher_train_loss",
    ):
        assert m2[key] == pytest.approx(m1[key], rel=METRIC_TOL), key
    for key in ("val_miou", "val_miou_per_image", "teacher_val_miou", "student_pixel_acc"):
        assert m2[key] == pytest.approx(m1[key], abs=METRIC_TOL), key
    # the schedules count the sharded steps: both cosine schedules end at exactly zero
    assert m1["lr"] == pytest.approx(0.0, abs=1e-12) and m2["lr"] == pytest.approx(0.0, abs=1e-12)


def test_every_rank_ends_with_the_same_weights_and_metrics(runs):
    r0, r1 = _result(runs, "two", 0), _result(runs, "two", 1)
    for part in ("student", "teacher", "adapters"):
        for k, v in r0[part].items():
            assert torch.equal(v, r1[part][k]), f"{part}.{k} differs between ranks"
    timing = {"images_per_s", "epoch_time_s"}  # each process's own clock
    assert {k: v for k, v in r0["metrics"].items() if k not in timing} == {
        k: v for k, v in r1["metrics"].items() if k not in timing
    }


def test_one_writer_one_row_per_epoch(runs):
    from kdseg.layout import read_metrics

    run = runs / "two" / "run"
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    saved = torch.load(run / "student.pt", weights_only=True)
    assert _max_diff(saved, _result(runs, "two")["student"]) == 0.0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert _max_diff(ckpt["objective"], _result(runs, "two")["adapters"]) == 0.0


def test_validation_counts_every_pixel_once(runs, synth_dir):
    """10 validation images, 2 x 2 per global batch: accelerate pads the last batch with 2 repeats."""
    from kdseg.data import load_data, make_loaders

    cfg = KDConfig.model_validate(_config(synth_dir, 4))
    data = load_data(cfg.data)
    _, val = make_loaders(data, cfg.data, 4, 0, 0)
    pixels = sum(int((y != data.ignore_index).sum()) for _, y in val)
    expected = (pixels, len(data.val))
    assert len(data.val) % 4 != 0  # the case that pads
    for name, rank in (("one", 0), ("two", 0), ("two", 1)):
        counted = _result(runs, name, rank)["counted"]
        assert len(counted) == 4  # student and teacher, 2 epochs
        assert all(c == expected for c in counted), (name, rank, counted, expected)


# ------------------------------------------------------------------------- schedules and clipping


def _light(synth_dir, **train) -> KDConfig:
    return KDConfig.model_validate(
        tiny_config(
            synth_dir,
            data={"image_size": [32, 32]},
            teacher={"arch": "lightweight_unet", "width": 0.5},
            student={"arch": "lightweight_unet", "width": 0.25},
            distill={"sites": ["logits", "encoder"]},
            train={"device": "cpu", "amp": "off", **train},
        )
    )


@pytest.fixture(scope="module")
def light_data(synth_dir):
    from kdseg.data import load_data

    return load_data(_light(synth_dir).data)


def test_teacher_student_schedules_each_end_at_zero(synth_dir, light_data, tmp_path):
    """Each network steps on every other step; each cosine schedule spans its own steps."""
    from kdseg.train import train_kd

    cfg = _light(synth_dir, epochs=2, max_steps_per_epoch=3, scheduler="cosine", lr=0.01)
    cfg.distill.alternation = "teacher_student"
    train_kd(cfg, light_data, run_dir=tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for who in ("s", "t"):  # 6 steps: the teacher steps on 0, 2, 4, the student on 1, 3, 5
        assert ckpt[f"sched_{who}"]["T_max"] == 3
        assert ckpt[f"sched_{who}"]["last_epoch"] == 3
        assert ckpt[f"opt_{who}"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12), who


def test_update_counts():
    from kdseg.train.setup import update_counts

    cfg = KDConfig.model_validate({"train": {"epochs": 3}, "distill": {"alternation": "teacher_student"}})
    assert update_counts(cfg, 5, teacher_trains=True) == (7, 8)  # 15 steps: the teacher on the even ones
    assert update_counts(cfg, 5, teacher_trains=False) == (15, 0)
    cfg.distill.alternation = "none"
    assert update_counts(cfg, 5, teacher_trains=True) == (15, 15)


def test_grad_clip_bounds_the_adapters_too(synth_dir, light_data, tmp_path):
    """With a tiny grad_clip the student's whole side (student + adapters) barely moves in one step."""
    from kdseg.train import seed_everything, train_kd
    from kdseg.train.setup import Models

    clip, lr = 1e-6, 1.0
    cfg = _light(
        synth_dir, epochs=1, max_steps_per_epoch=1, grad_clip=clip, lr=lr, optimizer="sgd", scheduler="none"
    )
    cfg.train.weight_decay = 0.0
    seed_everything(cfg.train.seed)  # what train_kd builds first
    before = Models(cfg, light_data.num_classes, light_data.ignore_index).objective.state_dict()
    assert any(v.dim() == 4 for v in before.values())  # conv adapters
    train_kd(cfg, light_data, run_dir=tmp_path)
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["objective"]
    moved = math.sqrt(sum(float((after[k] - before[k]).double().pow(2).sum()) for k in before))
    # SGD (nesterov, momentum 0.9), first step: the update is 1.9 * lr * the clipped gradient
    assert 0 < moved <= 1.9 * lr * clip * 1.01
