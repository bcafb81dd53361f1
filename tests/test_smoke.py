"""`kdseg-sweep SPACE --smoke`: a shipped real-data space shrunk to a CPU dry run of the same question."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kdseg.cli import main
from kdseg.sweep.smoke import SMOKE_OVERRIDES, smoke_overrides
from kdseg.sweep.space import grid_size, load_space, searched_keys

REPO = Path(__file__).resolve().parents[1]
BACKBONES = REPO / "search_spaces" / "backbones.yaml"


def test_smoke_keeps_the_question_and_shrinks_the_cost() -> None:
    full = load_space(BACKBONES)
    small = load_space(BACKBONES, smoke_overrides(BACKBONES, []))
    assert small.space.keys() == full.space.keys() and searched_keys(small) == searched_keys(full)
    assert small.sweep.num_samples == grid_size(full) + 1 == 6  # every KD pair once, and the no-KD control
    assert small.sweep.asha.max_t == 2 and small.sweep.resources_per_trial.gpu == 0
    cfg = small.base_config
    assert tuple(cfg.data.image_size) == (64, 64) and cfg.train.device == "cpu"
    assert cfg.teacher.weights is None and cfg.student.weights is None  # no download
    assert small.sweep.objective == full.sweep.objective and cfg.distill == full.base_config.distill


def test_user_overrides_win_over_smoke() -> None:
    ov = smoke_overrides(BACKBONES, ["sweep.num_samples=8", "data.image_size=[32,32]"])
    spec = load_space(BACKBONES, ov)
    assert spec.sweep.num_samples == 8 and tuple(spec.base_config.data.image_size) == (32, 32)
    assert ov[: len(SMOKE_OVERRIDES)] == list(SMOKE_OVERRIDES)


def test_missing_dataset_names_the_fix(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the base config's data.root (data/lyft_udacity) is not here
    assert main(["sweep", str(BACKBONES), "--smoke", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--smoke: a CPU dry run of the same question; it sets --set data.image_size=[64,64]" in err
    assert "dataset folder not found" in err and "--set data.root=PATH" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e  # minutes-long scenario, run with -m e2e (keeps the default suite inside CI time)
@pytest.mark.slow
def test_smoke_run_of_backbones_on_lyft_samples(tmp_path, shared_data, kdseg) -> None:
    root = shared_data / "lyft_udacity_samples"
    proc = kdseg(
        *(BACKBONES, "--smoke", "--set", f"data.root={root}", "--out", tmp_path, "--name", "bb"),
        env=kdseg.env(WANDB_MODE="disabled"),
        timeout=900,
        command=kdseg.kdseg_sweep,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--smoke: a CPU dry run" in proc.stderr
    with open(tmp_path / "bb" / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(r["status"] in ("completed", "stopped") for r in rows), rows
    students = {r["student"] for r in rows}
    assert {"Unet/resnet18", "Unet/mobilenet_v2", "Unet/efficientnet-b0", "lightweight_unet@1.0"} <= students
    assert (tmp_path / "bb" / "best_config.yaml").is_file()
