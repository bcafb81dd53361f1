"""Held-out evaluation: test splits per format, ``kdseg eval``, and ``sweep.final_eval``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from kdseg.config import DataConfig, KDConfig, save_config, validate_config
from kdseg.data.load import find_split, load_split
from kdseg.errors import ConfigError, DatasetError
from tests.conftest import tiny_config
from tests.fixtures_layouts import write_bdd100k, write_camvid, write_cityscapes


def names(pairs) -> list[str]:
    return [p.name for p in pairs]


def data_cfg(fmt: str, root: Path, **kw) -> DataConfig:
    n = {"camvid": 11, "carla": 13}.get(fmt, 19)
    return validate_config({"data": {"format": fmt, "root": str(root), "num_classes": n, **kw}}).data


# ------------------------------------------------------------------------------------ test splits


def test_camvid_reads_test_and_testannot(tmp_path):
    root = write_camvid(tmp_path / "cv", {"train": 3, "val": 2, "test": 4}, seed=1)
    layout, pairs = find_split(data_cfg("camvid", root), "test")
    assert len(pairs) == 4 and all(p.image.parent == root / "test" for p in pairs)
    assert all(p.mask.parent == root / "testannot" for p in pairs)
    assert layout.test_note == ""
    assert len(layout.val) == 2  # train and val are what they were


def test_missing_test_split_names_the_folder(tmp_path):
    root = write_camvid(tmp_path / "cv")
    with pytest.raises(DatasetError, match=f"{root / 'test'}: no test split here.*testannot.*data.test_root"):
        find_split(data_cfg("camvid", root), "test")
    with pytest.raises(DatasetError, match="unknown split 'tset'"):
        find_split(data_cfg("camvid", root), "tset")


def test_test_root_kept_elsewhere(tmp_path):
    root = write_camvid(tmp_path / "cv")
    elsewhere = write_camvid(tmp_path / "held_out", {"test": 3}, seed=2)
    _, pairs = find_split(data_cfg("camvid", root, test_root=str(elsewhere)), "test")
    assert len(pairs) == 3 and pairs[0].image.parent == elsewhere / "test"
    with pytest.raises(DatasetError, match="data.test_root folder not found"):
        find_split(data_cfg("camvid", root, test_root=str(tmp_path / "nope")), "test")


def test_carla_test_folder_and_flat_test_root(tmp_path):
    from kdseg.data import write_synth

    root = tmp_path / "carla"
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        write_synth(root / split, n=n, size=(32, 32), seed=len(split))
    _, pairs = find_split(data_cfg("carla", root), "test")
    assert len(pairs) == 3 and pairs[0].image.parent == root / "test" / "CameraRGB"
    flat = write_synth(tmp_path / "flat", n=5, size=(32, 32), seed=9)  # CameraRGB/ directly: all test
    _, pairs = find_split(data_cfg("carla", root, test_root=str(flat)), "test")
    assert len(pairs) == 5 and pairs[0].image.parent == flat / "CameraRGB"
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match=f"{root / 'test'}: no test split here.*CameraRGB"):
        find_split(data_cfg("carla", root), "test")


@pytest.mark.parametrize("fmt", ["cityscapes", "bdd100k"])
def test_cityscapes_and_bdd100k_test_is_val(tmp_path, fmt):
    write = write_cityscapes if fmt == "cityscapes" else write_bdd100k
    root = write(tmp_path / fmt)
    layout, pairs = find_split(data_cfg(fmt, root), "test")
    assert names(pairs) == names(layout.val)  # their test labels are not public
    assert "test labels are not public" in layout.test_note and "data.test_root" in layout.test_note
    held = write(tmp_path / "labelled_test", {"test": 2}, seed=3)
    (held / "images" / "10k" / "test" / "ffffffff-00000000.jpg").unlink(
        missing_ok=True
    )  # bdd's unlabelled one
    layout, pairs = find_split(data_cfg(fmt, root, test_root=str(held)), "test")
    assert len(pairs) == 2 and "test" in pairs[0].image.parts and layout.test_note == ""
    assert not set(names(pairs)) & set(names(layout.val))


def test_load_split_decodes_one_split_and_refuses_unlabelled(tmp_path):
    root = write_camvid(tmp_path / "cv", {"train": 3, "val": 2, "test": 2})
    held = load_split(data_cfg("camvid", root, image_size=[64, 64]), "test")
    assert held.name == "test" and len(held.data) == 2 and held.data.size == (64, 64)
    assert held.num_classes == 11 and len(held.class_names) == 11
    for mask in (root / "testannot").glob("*.png"):  # published without labels: all "unlabelled"
        Image.fromarray(np.full((72, 96), 11, np.uint8)).save(mask)
    with pytest.raises(DatasetError, match="the test split has no labelled pixel"):
        load_split(data_cfg("camvid", root, image_size=[64, 64]), "test")


# ------------------------------------------------------------------------------ sweep.final_eval


def test_final_eval_settings():
    from kdseg.sweep.space import SweepSettings

    def fe(v):
        return SweepSettings.model_validate({"final_eval": v}).final_eval

    assert SweepSettings().final_eval is None and fe(False) is None
    assert fe(True).top_k == 3 and not fe(True).pareto
    assert fe("pareto").pareto and fe("pareto").top_k is None
    assert fe(5).top_k == 5 and fe({"split": "test", "top_k": 2}).top_k == 2
    for bad in ({"top_k": 2, "pareto": True}, {"split": "val"}, {"top_k": 0}):
        with pytest.raises(ValueError):
            fe(bad)


def spec_for(data: DataConfig, **final_eval):
    from kdseg.sweep.space import FinalEval

    return SimpleNamespace(
        sweep=SimpleNamespace(final_eval=FinalEval(**final_eval)), base_config=KDConfig(data=data)
    )


def test_check_final_eval_refuses_without_a_held_out_split(tmp_path):
    from kdseg.sweep.final_eval import check_final_eval

    root = write_camvid(tmp_path / "cv", {"train": 3, "val": 2, "test": 2})
    check_final_eval(spec_for(data_cfg("camvid", root)), "space.yaml")  # a test split: fine
    check_final_eval(SimpleNamespace(sweep=SimpleNamespace(final_eval=None)), "space.yaml")  # off
    shutil.rmtree(root / "test")
    with pytest.raises(ConfigError, match=f"space.yaml: sweep.final_eval: no test split: .*{root / 'test'}"):
        check_final_eval(spec_for(data_cfg("camvid", root)), "space.yaml")
    city = write_cityscapes(tmp_path / "city")
    with pytest.raises(ConfigError, match="shares 2 images with the validation split.*not public"):
        check_final_eval(spec_for(data_cfg("cityscapes", city)), "space.yaml")


def fake_run(folder: Path, data_root: Path, width: float, seed: int, val_miou: float) -> Path:
    """A run folder as a trial leaves it: config.yaml, student.pt (random weights), metrics.jsonl."""
    import torch

    from kdseg.models import build_model

    cfg = validate_config(
        tiny_config(
            data_root,
            data={"format": "camvid", "num_classes": 11},
            student={"arch": "lightweight_unet", "width": width},
            distill={"mode": "none"},
        )
    )
    folder.mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    torch.manual_seed(seed)
    torch.save(build_model(cfg.student, 11).state_dict(), folder / "student.pt")
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "student_val_miou": val_miou}) + "\n")
    return folder


def test_run_final_eval_adds_test_miou_to_the_chosen_rows_only(tmp_path):
    from kdseg.layout import FINAL_EVAL_FILE, trial_run_dir
    from kdseg.sweep.final_eval import run_final_eval
    from kdseg.sweep.ranking import build_leaderboard

    root = write_camvid(tmp_path / "cv", {"train": 3, "val": 2, "test": 3})
    sweep = tmp_path / "sweep"
    rows = []
    for i, (tid, status, miou) in enumerate(
        [("a", "completed", 0.5), ("b", "completed", 0.4), ("c", "error", None), ("d", "stopped", 0.3)]
    ):
        fake_run(trial_run_dir(sweep, tid), root, 0.25, i, miou or 0.0)
        rows.append(
            {
                "trial_id": tid,
                "status": status,
                "val_miou": miou,
                "student_params": 1000 * (i + 1),
                "epochs": 1,
            }
        )
    board = build_leaderboard(rows, "val_miou", 1)
    plan = SimpleNamespace(spec=spec_for(data_cfg("camvid", root), top_k=2), sweep_dir=sweep)
    out = run_final_eval(plan, board)
    assert [r["trial_id"] for r in out] == [r["trial_id"] for r in board]  # the ranking is not touched
    assert [r["rank"] for r in out] == [r["rank"] for r in board]
    with_test = {r["trial_id"]: r["test_miou"] for r in out if "test_miou" in r}
    assert set(with_test) == {"a", "b"} and all(0.0 <= v <= 1.0 for v in with_test.values())
    summary = json.loads((sweep / FINAL_EVAL_FILE).read_text())
    assert [r["name"] for r in summary["results"]] == ["a", "b"] and summary["split"] == "test"
    own = json.loads((trial_run_dir(sweep, "a") / "eval_test.json").read_text())
    assert own["student"]["score"] == with_test["a"] and own["images"] == 3
    assert own["student"]["run_val_miou"] == 0.5

    plan = SimpleNamespace(spec=spec_for(data_cfg("camvid", root), pareto=True), sweep_dir=sweep)
    pareto = {r["trial_id"] for r in build_leaderboard(rows, "val_miou", 1) if r["pareto"]}
    out = run_final_eval(plan, board)
    assert {r["trial_id"] for r in out if "test_miou" in r} == pareto - {"c"}

    shutil.rmtree(root / "test")  # gone since the sweep started: said, and the board is kept
    assert run_final_eval(plan, board) == board


# ------------------------------------------------------------------------------------- kdseg eval


def run_cli(argv: list[str]) -> int:
    from kdseg.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.fixture(scope="module")
def camvid_run(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny ``kdseg train`` run on ../shared/data/camvid train/val, with a CamVid-layout test folder
    made of a few val pairs (copied: a stand-in test set for the code path, not a held-out one)."""
    root = tmp_path_factory.mktemp("camvid")
    cam = shared_data / "camvid"
    for split in ("train", "trainannot", "val", "valannot"):
        (root / split).symlink_to(cam / split)
    for split in ("test", "testannot"):
        (root / split).mkdir()
    for img in sorted((cam / "val").glob("*.png"))[:5]:
        shutil.copy(img, root / "test" / img.name)
        shutil.copy(cam / "valannot" / img.name, root / "testannot" / img.name)
    cfg = tiny_config(
        root,
        data={"format": "camvid", "num_classes": 11, "max_samples": 8},
        teacher={"arch": "Unet", "encoder": "resnet18"},
        student={"arch": "lightweight_unet", "width": 0.25},
        train={"max_steps_per_epoch": 2},
    )
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert run_cli(["train", str(config), "--out", str(run)]) == 0
    return root, run


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_eval_on_val_reproduces_the_run(camvid_run, capsys):
    _, run = camvid_run
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    capsys.readouterr()
    assert run_cli(["eval", str(run), "--split", "val", "--teacher"]) == 0
    out = capsys.readouterr().out
    result = last_json(out)["results"][0]
    assert result["split"] == "val" and result["images"] == 8
    assert result["student"]["score"] == last["student_val_miou"]  # exactly: same data, loader, evaluate
    assert result["student"]["miou"] == last["val_miou_dataset"]
    assert result["student"]["per_image_miou"] == last["val_miou_per_image"]
    assert result["student"]["pixel_acc"] == last["student_pixel_acc"]
    assert result["student"]["per_class_iou"] == last["student_per_class_iou"]
    assert result["teacher"]["score"] == last["teacher_val_miou"]  # kdseg train keeps its teacher
    assert result["teacher_checkpoint"] == str(run / "checkpoint.pt")
    assert "per-class IoU (val)" in out and "tiny student" in out and "tiny teacher" in out
    assert json.loads((run / "eval_val.json").read_text()) == result


def test_eval_on_test_writes_beside_the_run(camvid_run, capsys):
    root, run = camvid_run
    capsys.readouterr()
    assert run_cli(["eval", str(run / "student.pt"), "--config", str(run / "config.yaml"), "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1  # --json: the JSON line only
    result = last_json(out)["results"][0]
    assert result["split"] == "test" and result["images"] == 5 and result["teacher"] is None
    assert 0.0 <= result["student"]["score"] <= 1.0 and len(result["student"]["per_class_iou"]) == 11
    assert result["class_names"][0] == "Sky"
    assert json.loads((run / "eval_test.json").read_text()) == result
    # --set works as in kdseg train: the same test set kept elsewhere
    elsewhere = root.parent / "elsewhere"
    shutil.copytree(root / "test", elsewhere / "test")
    shutil.copytree(root / "testannot", elsewhere / "testannot")
    assert run_cli(["eval", str(run), "--json", "--set", f"data.test_root={elsewhere}"]) == 0
    again = last_json(capsys.readouterr().out)["results"][0]
    assert again["student"] == result["student"]


@pytest.mark.slow
def test_sweep_with_final_eval(tiny_sweep, kdseg):
    """A real sweep with ``final_eval: {top_k: 2}`` (conftest ``tiny_sweep``): test_miou on its two best
    rows and on no other."""
    from kdseg.sweep.ranking import read_leaderboard_csv

    sweep_dir = tiny_sweep.sweep_dir
    rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
    assert len(rows) == tiny_sweep.num_samples and "test_miou" in rows[0]
    chosen = [r["trial_id"] for r in rows if r["status"] not in ("error", "diverged")][:2]
    assert [r["trial_id"] for r in rows if r["test_miou"] is not None] == chosen
    assert all(0.0 <= r["test_miou"] <= 1.0 for r in rows if r["trial_id"] in chosen)
    summary = json.loads((sweep_dir / "final_eval.json").read_text())
    assert [r["name"] for r in summary["results"]] == chosen
    assert "final evaluation of the top 2" in tiny_sweep.proc.stderr
    refused = kdseg("export", sweep_dir, "--rank-by", "test_miou")
    assert refused.returncode == 2 and "never used for selection" in refused.stderr
    report = kdseg("report", sweep_dir, "--wandb", "never")
    assert report.returncode == 0, report.stderr
    assert 'id="val-vs-test"' in (sweep_dir / "report.html").read_text()


def test_report_val_vs_test_section():
    from kdseg.report.sections import val_vs_test_html

    rows = [
        {
            "rank": 1,
            "trial_id": "a",
            "student": "light",
            "student_params": 2e6,
            "val_miou": 0.5,
            "test_miou": 0.45,
        },
        {
            "rank": 2,
            "trial_id": "b",
            "student": "r18",
            "student_params": 1e7,
            "val_miou": 0.6,
            "test_miou": None,
        },
    ]
    html = val_vs_test_html(SimpleNamespace(rows=rows))
    assert "<td class='l'>a</td>" in html and ">b<" not in html  # only the rows measured on test
    assert "<td>0.5000</td><td>0.4500</td><td>-0.0500</td>" in html and "never feed selection" in html
    assert val_vs_test_html(SimpleNamespace(rows=rows[1:])) is None
