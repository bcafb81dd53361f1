"""data.class_weights: pixel counts of the training split, the weight formulas, the CE wiring, `kdseg data stats`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from kdseg.cli import main
from kdseg.config import DataConfig, validate_config
from kdseg.data import SegData, Split, class_weights_for, compute_class_weights, load_data
from kdseg.data.class_weights import ABSENT_WEIGHT
from kdseg.errors import ConfigError
from tests.conftest import tiny_config
from tests.fixtures_layouts import one_torch_thread, write_camvid


@pytest.fixture(autouse=True)
def _one_thread():
    yield from one_torch_thread()


def test_inverse_and_median_frequency_formulas():
    counts = np.array([100, 300, 0, 600])  # frequencies 0.1, 0.3, (absent), 0.6
    inv = compute_class_weights(counts, "inverse")
    np.testing.assert_allclose(inv, [1 / 0.3, 1 / 0.9, ABSENT_WEIGHT, 1 / 1.8], rtol=1e-6)
    present = counts > 0
    assert (counts[present] / counts.sum() * inv[present]).sum() == pytest.approx(1.0)  # pixel mean is 1
    med = compute_class_weights(counts, "median_frequency")
    np.testing.assert_allclose(med, [3.0, 1.0, ABSENT_WEIGHT, 0.5], rtol=1e-6)  # median frequency 0.3
    assert inv.dtype == med.dtype == np.float32
    assert compute_class_weights(counts, "none") is None


def test_weights_always_finite():
    for counts in ([0, 0, 0], [1, 0, 10**12], [5]):
        for method in ("inverse", "median_frequency"):
            w = compute_class_weights(np.array(counts), method)
            assert np.isfinite(w).all() and (w > 0).all(), (counts, method, w)
    np.testing.assert_array_equal(compute_class_weights(np.zeros(3), "inverse"), np.ones(3))
    with pytest.raises(ValueError, match="unknown class weighting"):
        compute_class_weights(np.ones(3), "sqrt")


def test_counts_come_from_train_labels_at_native_size(tmp_path: Path):
    root = write_camvid(tmp_path / "camvid", size=(72, 96))
    data = load_data(DataConfig(format="camvid", root=root, num_classes=11, image_size=(32, 32)))
    native = np.zeros(256, np.int64)
    for name in data.train.names:
        native += np.bincount(
            np.asarray(Image.open(root / "trainannot" / f"{name}.png")).ravel(), minlength=256
        )
    counts = data.class_pixels()
    assert counts.dtype == np.int64 and counts.shape == (11,)
    np.testing.assert_array_equal(counts, native[:11])  # id 11 (unlabelled) is not counted, val is not
    assert counts.sum() < 3 * 72 * 96  # some pixels were unlabelled
    assert data.class_pixels() is counts  # counted once


def test_hand_built_segdata_counts_its_masks_once():
    masks = np.array([[[0, 0], [2, 255]], [[2, 2], [255, 255]]], np.uint8)
    split = Split(np.zeros((2, 2, 2, 3), np.uint8), masks, ["a", "b"])
    data = SegData(split, split, 4, 255, ["a", "b", "c", "d"], np.zeros((4, 3), np.uint8), "test")
    np.testing.assert_array_equal(data.class_pixels(), [2, 0, 3, 0])
    w = class_weights_for(data, "median_frequency")
    np.testing.assert_allclose(w, [1.25, ABSENT_WEIGHT, 2.5 / 3, ABSENT_WEIGHT], rtol=1e-6)
    assert class_weights_for(data, "none") is None


def test_config_key_is_validated():
    assert validate_config({}).data.class_weights == "none"
    with pytest.raises(ConfigError, match=r"cfg\.yaml: data\.class_weights: Input should be 'none'"):
        validate_config({"data": {"class_weights": "balanced"}}, "cfg.yaml")


def test_train_kd_weights_the_ce_of_student_and_teacher(synth_dir: Path, monkeypatch):
    """Every cross-entropy computed in training (student's and online teacher's) gets the weights."""
    import kdseg.distill.objective as objective
    from kdseg.train import train_kd

    cfg = validate_config(
        tiny_config(
            synth_dir,
            data={"class_weights": "inverse", "image_size": [32, 32], "max_samples": 4},
            teacher={"arch": "lightweight_unet", "width": 0.25},
            student={"arch": "lightweight_unet", "width": 0.25},
            train={"max_steps_per_epoch": 1, "batch_size": 2, "device": "cpu", "amp": "off"},
        )
    )
    data = load_data(cfg.data)
    expected = torch.as_tensor(class_weights_for(data, "inverse"))
    seen: list[torch.Tensor | None] = []
    real = objective.hard_loss

    def spy(logits, target, ignore_index=255, class_weights=None):
        seen.append(None if class_weights is None else class_weights.detach().cpu())
        return real(logits, target, ignore_index, class_weights)

    monkeypatch.setattr(objective, "hard_loss", spy)
    metrics = train_kd(cfg, data)
    assert len(seen) >= 2  # the student's and the teacher's CE of the one step
    assert all(w is not None and torch.allclose(w, expected) for w in seen)
    assert metrics["teacher_train_loss"] is not None and np.isfinite(metrics["train_loss"])


def write_cfg(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_data_stats_command(tmp_path: Path, capsys):
    root = write_camvid(tmp_path / "camvid")
    doc = {"data": {"format": "camvid", "root": str(root), "num_classes": 11, "image_size": [32, 32]}}
    cfg = write_cfg(tmp_path / "cv.yaml", doc)
    out = tmp_path / "stats"
    assert main(["data", "stats", str(cfg), "--out", str(out), "--set", "data.class_weights=inverse"]) == 0
    printed = capsys.readouterr().out
    assert "Bicyclist" in printed and "inverse *" in printed and "median_frequency" in printed
    assert (out / "class_stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "class_stats.json").read_text())
    data = load_data(DataConfig(**doc["data"]))
    assert report["class_weights"] == "inverse"
    assert [r["pixels"] for r in report["classes"]] == data.class_pixels().tolist()
    np.testing.assert_allclose(
        [r["inverse"] for r in report["classes"]], class_weights_for(data, "inverse"), rtol=1e-6
    )


def test_data_stats_bad_input_writes_nothing(tmp_path: Path, capsys):
    cfg = write_cfg(tmp_path / "bad.yaml", {"data": {"format": "camvid", "root": str(tmp_path / "nope")}})
    out = tmp_path / "stats"
    assert main(["data", "stats", str(cfg), "--out", str(out), "--set", "data.class_weights=log"]) == 2
    assert "data.class_weights" in capsys.readouterr().err
    assert main(["data", "stats", str(cfg), "--out", str(out)]) == 2
    assert "nope: dataset folder not found" in capsys.readouterr().err
    assert not out.exists()
