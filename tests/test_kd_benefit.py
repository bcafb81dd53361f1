"""experiments/kd_benefit.py: both arms per seed, a summary a reader can trust, finished runs not repeated."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

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


def test_kd_benefit_three_arms_with_a_teacher_trained_once(tmp_path: Path, synth_dir: Path, capsys) -> None:
    kd_benefit = _load_script()
    out = tmp_path / "cmp3"
    args = [
        str(REPO / "experiments" / "quickstart_synth.yaml"),
        "--seeds", "0", "1",
        "--out", str(out),
        "--set", "data.format=carla", f"data.root={synth_dir}", "train.epochs=1", "train.max_steps_per_epoch=1",
        "student.arch=lightweight_unet", "student.width=0.25", "teacher.arch=lightweight_unet",
        "teacher.width=0.5", "distill.mode=offline", "teacher.checkpoint=train", "teacher.train_epochs=2",
    ]  # fmt: skip
    assert kd_benefit.main(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert [a for a in ("alone", "offline", "online") if a in result] == ["alone", "offline", "online"]
    (teacher_dir,) = (out / "teacher").iterdir()  # trained once, for both seeds
    teacher = result["teacher"]
    assert teacher["epochs"] == 2 and len((teacher_dir / "metrics.jsonl").read_text().splitlines()) == 2
    for arm in ("alone", "offline", "online"):
        runs = result[arm]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        assert all(Path(r["student_pt"]).is_file() and Path(r["config"]).is_file() for r in runs)
        vals = [r["val_miou"] for r in runs]
        assert abs(result[arm]["mean"] - sum(vals) / 2) < 1e-12
    for r in result["offline"]["runs"]:  # distilled from that teacher, frozen: its val mIoU at every seed
        cfg = yaml.safe_load(Path(r["config"]).read_text())
        assert cfg["distill"]["mode"] == "offline" and cfg["teacher"]["checkpoint"] == teacher["checkpoint"]
        assert abs(r["teacher_val_miou"] - teacher["val_miou"]) < 1e-9
    for r in result["online"]["runs"]:
        cfg = yaml.safe_load(Path(r["config"]).read_text())
        assert cfg["distill"]["mode"] == "online" and cfg["teacher"]["checkpoint"] is None
    assert all(r["teacher_val_miou"] is None for r in result["alone"]["runs"])
    d = result["offline"]["delta_vs_alone"]
    assert abs(d - (result["offline"]["mean"] - result["alone"]["mean"])) < 1e-12 and d == result["delta"]
    printed = capsys.readouterr().out
    assert f"val mIoU {teacher['val_miou']:.4f}" in printed and "offline teacher" in printed

    assert kd_benefit.main(args) == 0  # everything finished: nothing trained again, the teacher included
    again = capsys.readouterr().out
    assert again.count("finished earlier") == 7  # 1 teacher + 3 arms x 2 seeds
