"""experiments/kd_benefit.py: both arms per seed, a summary a reader can trust, finished runs not repeated."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("kd_benefit", REPO / "experiments" / "kd_benefit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kd_benefit_runs_both_arms_and_resumes(tmp_path: Path, synth_dir: Path, capsys) -> None:
    kd_benefit = _load_script()
    out = tmp_path / "cmp"
    args = [
        str(REPO / "experiments" / "quickstart_synth.yaml"),
        "--seeds", "0", "1",
        "--out", str(out),
        "--set", "data.format=carla", f"data.root={synth_dir}", "train.epochs=1",
        "train.max_steps_per_epoch=1", "student.arch=lightweight_unet", "student.width=0.25",
        "data.image_size=[32,32]", "teacher.encoder=resnet18",  # plumbing: the smallest that runs
    ]  # fmt: skip
    assert kd_benefit.main(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in result["kd"]["runs"]] == [0, 1]
    assert [r["seed"] for r in result["alone"]["runs"]] == [0, 1]
    for arm in ("kd", "alone"):
        vals = [r["val_miou"] for r in result[arm]["runs"]]
        assert abs(result[arm]["mean"] - sum(vals) / 2) < 1e-12
        assert all((out / arm / f"seed{s}" / "student.pt").is_file() for s in (0, 1))
    # the KD arm trains a teacher, the student-alone arm does not
    assert all(r["teacher_val_miou"] is not None for r in result["kd"]["runs"])
    assert all(r["teacher_val_miou"] is None for r in result["alone"]["runs"])
    assert abs(result["delta"] - (result["kd"]["mean"] - result["alone"]["mean"])) < 1e-12

    capsys.readouterr()
    assert kd_benefit.main(args) == 0  # a second call finds every run finished
    assert capsys.readouterr().out.count("finished earlier") == 4
