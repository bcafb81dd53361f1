"""kdseg.deploy.model_export and student_export: ONNX / TorchScript export of students, checked against PyTorch; a sweep's best student."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdseg.cli.export import add_export_format_args, run_export_format
from kdseg.config import ModelConfig, save_config, validate_config
from kdseg.deploy import model_export as deploy
from kdseg.deploy.model_export import ExportError, export_model
from kdseg.deploy.student_export import export_student
from kdseg.errors import CheckpointError, KdsegError
from kdseg.models import build_model
from kdseg.yaml_io import dump_yaml

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("onnxruntime", reason="pip install -e '.[test]' installs the export extras")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

LWUNET = ModelConfig(arch="lightweight_unet", width=0.5)
LWUNET_S = ModelConfig(arch="lightweight_unet", width=0.25)
R18 = ModelConfig(arch="Unet", encoder="resnet18")


def _trained_like(cfg: ModelConfig, num_classes: int = 13, seed: int = 0) -> torch.nn.Module:
    """A model with non-default BatchNorm statistics (as after training), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(cfg, num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {"lightweight_unet": _trained_like(LWUNET), "unet_r18": _trained_like(R18)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["lightweight_unet", "unet_r18"])
def test_export_model_matches_pytorch(tmp_path, models, name, fmt):
    model = models[name]
    out = tmp_path / "sub" / f"{name}.{fmt}"
    r = export_model(model, fmt, out, (64, 64))
    assert out.is_file() and r["path"] == str(out) and r["bytes"] == out.stat().st_size
    assert r["max_abs_diff"] <= 1e-4 and r["atol"] == 1e-4
    assert r["input_shape"] == [2, 3, 64, 64] and r["output_shape"] == [2, 13, 64, 64]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp files, no external data

    # independent re-check, at another batch size (the batch axis is dynamic)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert r["opset"] and r["exporter"] in ("dynamo", "torchscript")
    else:
        got = torch.jit.load(str(out)).eval()(x).detach().numpy()
    assert got.shape == (3, 13, 64, 64)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    if fmt == "onnx":  # height and width are dynamic: another size gives PyTorch's answer too
        assert r["dynamic_hw"] and r["checked_sizes"] == [[64, 64], [128, 128]], r["notes"]
        x = torch.randn(1, 3, 128, 96)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == (1, 13, 128, 96)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


class _SizeBaked(torch.nn.Module):
    """Its graph depends on the export size (a reshape by H*W read as Python ints)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[2]), int(x.shape[3])
        y = self.conv(x)
        return y.reshape(-1, 4, h * w).softmax(-1).reshape(-1, 4, h, w)


def test_onnx_fixes_height_and_width_where_the_graph_needs_it_and_says_why(tmp_path):
    import onnxruntime as ort

    out = tmp_path / "baked.onnx"
    r = export_model(_SizeBaked().eval(), "onnx", out, (64, 64))
    assert not r["dynamic_hw"] and r["checked_sizes"] == [[64, 64]] and r["max_abs_diff"] <= 1e-4
    assert any("height and width are fixed at 64x64" in n and "128x128" in n for n in r["notes"]), r["notes"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [d for d in sess.get_inputs()[0].shape[1:]] == [3, 64, 64]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_onnx_falls_back_to_the_torchscript_exporter(tmp_path, models, monkeypatch):
    real = torch.onnx.export

    def dynamo_breaks(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("torch.export cannot trace this model")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_breaks)
    r = export_model(models["lightweight_unet"], "onnx", tmp_path / "m.onnx", (64, 64))
    assert r["exporter"] == "torchscript" and r["max_abs_diff"] <= 1e-4
    assert "cannot trace this model" in r["notes"][0]
    with pytest.raises(ExportError, match="dynamo exporter failed"):
        export_model(models["lightweight_unet"], "onnx", tmp_path / "m2.onnx", (64, 64), dynamo=True)
    assert not (tmp_path / "m2.onnx").exists()


def test_export_model_mismatch_is_an_error_and_writes_nothing(tmp_path, models, monkeypatch):
    real = deploy._run_torchscript
    monkeypatch.setattr(deploy, "_run_torchscript", lambda path, x: real(path, x) + 1e-3)
    out = tmp_path / "m.pt"
    with pytest.raises(ExportError, match=r"does not match PyTorch: max \|diff\| 0.001"):
        export_model(models["lightweight_unet"], "torchscript", out, (64, 64))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_model_missing_runtime_is_a_clear_error(tmp_path, models, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ExportError, match=r"onnxruntime.*pip install 'kdseg\[export\]'"):
        export_model(models["lightweight_unet"], "onnx", tmp_path / "m.onnx", (64, 64))
    assert list(tmp_path.iterdir()) == []


def test_export_model_bad_input(tmp_path, models):
    with pytest.raises(ExportError, match="unknown format"):
        export_model(models["lightweight_unet"], "tflite", tmp_path / "m", (64, 64))
    with pytest.raises(ExportError, match="cannot run on a 2x2 input"):
        export_model(torch.nn.Conv2d(3, 4, kernel_size=5), "torchscript", tmp_path / "m.pt", (2, 2))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ a fake sweep


def _trial_config(student: dict) -> dict:
    return {
        "name": "t",
        "data": {"format": "synthetic", "image_size": [64, 64], "num_classes": 13},
        "teacher": {"arch": "Unet", "encoder": "resnet34"},
        # imagenet: export must not try to download what the trained weights replace
        "student": {"weights": "imagenet", **student},
        "train": {"epochs": 3},
    }


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """A finished sweep's files: sweep.yaml, leaderboard.csv, and two trials' run folders.

    Trial ``b`` (lightweight UNet, width 0.25) ranks first by iou_per_mparam; trial ``a`` (lightweight
    UNet, width 0.5) has the higher val_miou.
    """
    from kdseg.sweep.ranking import build_leaderboard, write_leaderboard_csv
    from kdseg.sweep.space import load_space, spec_to_dict

    sweep = tmp_path / "runs" / "demo"
    spec = load_space(REPO / "search_spaces" / "quickstart_cpu.yaml")
    dump_yaml(spec_to_dict(spec), sweep / "sweep.yaml")
    rows = [
        {"trial_id": "a", "status": "completed", "student": "lightweight_unet", "val_miou": 0.6, "epochs": 3},
        {"trial_id": "b", "status": "completed", "student": "lightweight_unet", "val_miou": 0.5, "epochs": 3},
    ]
    trials = {
        "a": (LWUNET, {"arch": "lightweight_unet", "width": 0.5}),
        "b": (LWUNET_S, {"arch": "lightweight_unet", "width": 0.25}),
    }
    for trial_id, (mcfg, student) in trials.items():
        model = _trained_like(mcfg, seed=1)
        rows[0 if trial_id == "a" else 1]["student_params"] = sum(p.numel() for p in model.parameters())
        run = sweep / "tune" / trial_id / "run"
        save_config(validate_config(_trial_config(student)), run / "config.yaml")
        torch.save(model.state_dict(), run / "student.pt")
    write_leaderboard_csv(build_leaderboard(rows, "iou_per_mparam", 3), sweep / "leaderboard.csv")
    return sweep


def _expected(sweep: Path, trial_id: str, mcfg: ModelConfig, x: torch.Tensor) -> np.ndarray:
    model = build_model(mcfg, 13)
    model.load_state_dict(torch.load(sweep / "tune" / trial_id / "run" / "student.pt", weights_only=True))
    with torch.no_grad():
        return model.eval()(x).numpy()


def test_export_student_onnx_carries_the_trained_weights(sweep_dir, tmp_path):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "deploy" / "student.onnx"
    r = export_student(sweep_dir, "onnx", out)
    assert r["trial_id"] == "b" and r["student"] == "lightweight_unet(width=0.25)"
    assert r["max_abs_diff"] <= 1e-4 and r["val_miou"] == 0.5
    x = torch.randn(1, 3, 64, 64)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, _expected(sweep_dir, "b", LWUNET_S, x), atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["kdseg.trial_id"] == "b" and meta["kdseg.arch"] == "lightweight_unet"
    assert json.loads(meta["kdseg.mean"]) == [0.485, 0.456, 0.406]


def test_export_command_torchscript_rank_by(sweep_dir, tmp_path, capsys):
    p = argparse.ArgumentParser()
    p.add_argument("sweep_dir")
    p.add_argument("-o", "--output")
    p.add_argument("--rank-by")
    add_export_format_args(p)
    args = p.parse_args([str(sweep_dir), "--format", "torchscript", "--rank-by", "val_miou"])
    assert run_export_format(args) == 0
    out = sweep_dir / "best_student.torchscript.pt"  # the default output
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "trial a" in text and "check: torch.jit.load" in text and "OK" in text
    x = torch.randn(2, 3, 64, 64)
    extra = {"kdseg.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    with torch.no_grad():
        got = loaded(x).numpy()
    np.testing.assert_allclose(got, _expected(sweep_dir, "a", LWUNET, x), atol=1e-4, rtol=0)
    assert json.loads(extra["kdseg.json"])["trial_id"] == "a"


def test_export_student_errors(sweep_dir, tmp_path):
    with pytest.raises(KdsegError, match="no such sweep folder"):
        export_student(tmp_path / "nope", "onnx", tmp_path / "m.onnx")
    with pytest.raises(KdsegError, match="not a YAML config"):
        export_student(sweep_dir, "onnx", tmp_path / "best.yaml")
    (sweep_dir / "tune" / "b" / "run" / "student.pt").unlink()
    with pytest.raises(CheckpointError, match="trained student is missing"):
        export_student(sweep_dir, "torchscript", tmp_path / "m.pt")
    torch.save({"foo": torch.zeros(1)}, sweep_dir / "tune" / "b" / "run" / "student.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        export_student(sweep_dir, "torchscript", tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
