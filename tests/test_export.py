"""best_config.yaml reads as what was run: keys that do not apply are left out, and kdseg train takes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from kdseg.cli import main
from kdseg.config import config_to_dict, load_config, save_config, validate_config
from kdseg.deploy.best_config import export_config, inapplicable
from kdseg.yaml_io import dump_yaml

REPO = Path(__file__).resolve().parents[1]


def fake_sweep(tmp_path: Path, cfg: dict) -> Path:
    """A finished sweep folder with one trial whose run used ``cfg``."""
    from kdseg.sweep.ranking import build_leaderboard, write_leaderboard_csv
    from kdseg.sweep.space import load_space, spec_to_dict

    sweep = tmp_path / "runs" / "demo"
    dump_yaml(spec_to_dict(load_space(REPO / "search_spaces" / "quickstart_cpu.yaml")), sweep / "sweep.yaml")
    save_config(validate_config(cfg), sweep / "tune" / "t1" / "run" / "config.yaml")
    # the quickstart's full budget (max_t 3): a winner must have run it
    row = {"trial_id": "t1", "status": "completed", "val_miou": 0.5, "student_params": 1000, "epochs": 3}
    write_leaderboard_csv(build_leaderboard([row], "iou_per_mparam", 3), sweep / "leaderboard.csv")
    return sweep


CASES = {
    "lightweight_student": (
        {"student": {"arch": "lightweight_unet", "width": 0.5, "encoder": "resnet18"}},
        ["student.encoder", "teacher.width", "distill.feature_loss", "distill.alpha_final", "data.synth"],
        {
            "student": {"arch": "lightweight_unet", "width": 0.5},
            "distill": {"temperature": 4.0, "alpha": 0.5},
        },
    ),
    "no_kd": (
        {"distill": {"mode": "none", "temperature": 7.0, "alpha": 0.9}},
        ["teacher", "distill.temperature", "distill.alpha", "distill.sites", "student.width"],
        {"student": {"arch": "Unet", "encoder": "resnet18"}, "distill": {"mode": "none"}},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_best_config_leaves_out_what_does_not_apply_and_trains(case, tmp_path, synth_dir, capsys):
    sections, left_out, kept = CASES[case]
    cfg = tiny_config(
        synth_dir,
        data={"image_size": [32, 32]},
        train={"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2, "num_workers": 0},
    )
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    path, row = export_config(fake_sweep(tmp_path, cfg))
    text = path.read_text()
    doc = yaml.safe_load(text)
    for key in left_out:
        section, _, name = key.partition(".")
        assert (name not in doc[section]) if name else (section not in doc), (key, text)
        assert key in text.split("\n\n")[0].split("left out")[1].split("\ndata:")[0], (
            text
        )  # named in the header
    for section, values in kept.items():
        assert {k: doc[section][k] for k in values} == values, text
    assert "encoder: resnet18" not in text if case == "lightweight_student" else "temperature:" not in text

    # what was run is unchanged: every key that applies has its trial value
    reloaded, original = load_config(path), validate_config(cfg)
    skip = set(inapplicable(original))
    flat_a, flat_b = _flat(config_to_dict(reloaded)), _flat(config_to_dict(original))
    diff = {k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k)}
    assert all(k in skip or k.split(".")[0] in skip or k == "name" for k in diff), diff - skip

    # kdseg train accepts the file unchanged
    assert main(["train", str(path), "--out", str(tmp_path / "retrain")]) == 0, capsys.readouterr().err
    assert (tmp_path / "retrain" / "student.pt").is_file()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out
