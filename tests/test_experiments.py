"""Every experiments/*.yaml validates and trains one epoch on fixture data in its dataset's layout.

Each config runs as written except what a CPU test must change: data.root (a fixture in the right
layout), image size, no pretrained weights, one short epoch. Offline configs first train their
teacher with the recipe their header documents, so the documented commands are tested too.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from kdseg.config import load_config
from tests.conftest import SHARED_DATA
from tests.fixtures_layouts import one_torch_thread, write_bdd100k, write_camvid, write_cityscapes

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))

# What a CPU test changes; everything else (models, distillation, schedules, metric) is the config's.
FAST = [
    "data.image_size=[32,32]",
    "data.max_samples=2",
    "teacher.weights=null",
    "student.weights=null",
    "train.epochs=1",
    "train.max_steps_per_epoch=1",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.device=cpu",
    ("train.amp", "off"),  # as a string: "--set train.amp=off" parses as YAML false
    "tracking.wandb.mode=disabled",
]

# The teacher recipe of each offline config, as its header documents it (checked below).
TEACHER_RECIPES = {
    "sskd_lightweight_offline": [
        "distill.mode=none",
        "student.arch=fcn_resnet50",
        "student.weights=imagenet",
    ],
    "cityscapes_r50_mobilenetv3_offline": [
        "distill.mode=none",
        "student.encoder=resnet50",
        "student.weights=imagenet",
    ],
    "bdd100k_r50_mobilenetv3_offline": [
        "distill.mode=none",
        "student.encoder=resnet50",
        "student.weights=imagenet",
    ],
}


@pytest.fixture(autouse=True)
def _one_thread():
    yield from one_torch_thread()


def fixture_root(fmt: str, tmp: Path) -> Path | None:
    """A tiny dataset in ``fmt``'s layout; None for ``synthetic`` (generated into data.root)."""
    if fmt == "carla":
        from kdseg.data import write_synth

        return write_synth(tmp / "carla", n=4, size=(64, 64), seed=0)
    if fmt == "camvid":
        real = SHARED_DATA / "camvid"
        return real if real.is_dir() else write_camvid(tmp / "camvid", size=(72, 96))
    if fmt == "cityscapes":
        return write_cityscapes(tmp / "cityscapes", size=(64, 128))
    if fmt == "bdd100k":
        return write_bdd100k(tmp / "bdd100k", size=(72, 128))
    assert fmt == "synthetic", fmt
    return None


def test_every_config_is_covered():
    names = {p.stem for p in CONFIGS}
    assert {
        "carla_online_r34_r18",
        "sskd_lightweight_offline",
        "cityscapes_r50_mobilenetv3_offline",
        "bdd100k_r50_mobilenetv3_offline",
    } <= names
    for p in CONFIGS:
        doc = yaml.safe_load(p.read_text())
        staged = doc.get("teacher", {}).get("checkpoint") == "train"  # the teacher stage trains it
        if doc.get("distill", {}).get("mode") == "offline" and not staged:
            assert p.stem in TEACHER_RECIPES, f"{p.name}: offline config without a tested teacher recipe"
            text = p.read_text()
            for item in TEACHER_RECIPES[p.stem]:
                assert f"--set {item}" in text, f"{p.name}: header does not document --set {item}"


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_one_epoch(path: Path, tmp_path: Path):
    from kdseg.data import load_data
    from kdseg.layout import read_metrics
    from kdseg.models import build_model
    from kdseg.train import train_kd

    as_written = load_config(path)  # validates unchanged
    root = fixture_root(as_written.data.format, tmp_path)
    where = [f"data.root={root if root is not None else tmp_path / 'synth'}"]
    if as_written.data.format == "synthetic":
        where += ["data.synth.n=4", "data.synth.size=[64,64]"]
    overrides = [*where, *FAST]

    if as_written.teacher.checkpoint == "train":
        # the teacher stage's own path: the teacher trained once (kdseg.sweep.teacher_stage), then frozen
        from kdseg.config import config_to_dict
        from kdseg.sweep.teacher_plan import teacher_config
        from kdseg.sweep.teacher_stage import train_teacher

        staged = load_config(path, [*overrides, "teacher.train_epochs=1"])
        tcfg = teacher_config(staged)
        summary = train_teacher(config_to_dict(tcfg), load_data(tcfg.data), str(tmp_path / "teacher"))
        overrides += [f"teacher.checkpoint={summary['checkpoint']}", "teacher.train_epochs=null"]
    elif as_written.distill.mode == "offline":
        # the documented recipe: the same config, trained alone, with the teacher as the student
        recipe = load_config(path, [*overrides, *TEACHER_RECIPES[path.stem], "student.weights=null"])
        teacher_run = tmp_path / "teacher"
        train_kd(recipe, load_data(recipe.data), run_dir=teacher_run)
        overrides.append(f"teacher.checkpoint={teacher_run / 'student.pt'}")

    cfg = load_config(path, overrides)
    for key in ("distill", "teacher", "student"):  # the experiment itself is unchanged
        ours, theirs = getattr(cfg, key).model_dump(), getattr(as_written, key).model_dump()
        ignore = {"weights", "checkpoint", "train_epochs"}
        assert {k: v for k, v in ours.items() if k not in ignore} == {
            k: v for k, v in theirs.items() if k not in ignore
        }, key
    run = tmp_path / "run"
    last = train_kd(cfg, load_data(cfg.data), run_dir=run)

    assert last["epoch"] == 1 and finite(last["train_loss"]) and finite(last["train_loss_hard"])
    assert 0.0 <= last["val_miou"] <= 1.0
    assert finite(last["val_miou_dataset"]) and finite(last["val_miou_per_image"])
    if cfg.distill.mode != "none":
        assert finite(last["train_loss_soft"]) and 0.0 <= last["teacher_val_miou"] <= 1.0
        assert last["alpha"] == pytest.approx(cfg.distill.alpha)  # the first epoch of any schedule
    assert read_metrics(run)[-1]["epoch"] == 1
    state = torch.load(run / "student.pt", map_location="cpu", weights_only=True)
    build_model(cfg.student, cfg.data.num_classes).load_state_dict(state)  # fits the student as configured


def test_offline_without_teacher_says_how_to_get_one(tmp_path: Path, capsys):
    from kdseg.cli import main

    root = write_cityscapes(tmp_path / "cityscapes", size=(64, 128))
    config = EXPERIMENTS / "cityscapes_r50_mobilenetv3_offline.yaml"
    missing = tmp_path / "no_teacher.pt"
    out = tmp_path / "run"
    sets = [f"data.root={root}", f"teacher.checkpoint={missing}", *(s for s in FAST if isinstance(s, str))]
    code = main(["train", str(config), "--out", str(out), *(a for s in sets for a in ("--set", s))])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("kdseg: error:")]
    assert len(errors) == 1, err  # one message, on one line
    assert f"teacher.checkpoint: {missing}: checkpoint file not found" in errors[0]
    assert "--set distill.mode=none" in errors[0] and "student.pt" in errors[0]
    assert not out.exists()
