"""Bad input of every kind is refused the same way: one message naming the file and the key (or line),
exit status 2, and nothing left behind (no sweep folder, no Optuna storage or study, no W&B run).

Each case starts from a workspace that passes validation (``test_the_workspace_itself_is_valid``),
breaks one thing and runs the command line in this process (``kdseg.cli.main``). Cases fail before Ray
or any trial starts, so the table takes seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import tiny_config, tiny_space


class Work:
    """A valid sweep workspace in ``root`` (the working directory): data/, base.yaml, space.yaml."""

    def __init__(self, root: Path, good_data: Path):
        self.root = root
        self.data = root / "data"
        shutil.copytree(good_data, self.data)
        self.base_doc = tiny_config(
            self.data,
            data={"image_size": [32, 32]},
            student={"arch": "lightweight_unet", "width": 0.25},
            train={"max_steps_per_epoch": 1},
            tracking={"wandb": {"mode": "offline"}},
        )
        self.space_doc = tiny_space("base.yaml", num_samples=2, max_t=1)
        self.base = root / "base.yaml"
        self.space = root / "space.yaml"
        self.out = root / "runs"

    def write(self) -> None:
        self.base.write_text(yaml.safe_dump(self.base_doc, sort_keys=False))
        self.space.write_text(yaml.safe_dump(self.space_doc, sort_keys=False))

    def sweep(self, *extra: str) -> list[str]:
        self.write()
        return ["sweep", str(self.space), "--out", str(self.out), "--name", "s1", *extra]

    def base_set(self, section: str, **values) -> list[str]:
        self.base_doc.setdefault(section, {}).update(values)
        return self.sweep()

    def space_set(self, key: str, domain) -> list[str]:
        self.space_doc["space"][key] = domain
        return self.sweep()

    def sweep_set(self, **values) -> list[str]:
        self.space_doc["sweep"].update(values)
        return self.sweep()

    def storage(self, url: str) -> list[str]:
        self.space_doc["storage"] = url
        return self.sweep()

    def pngs(self, kind: str = "CameraRGB") -> list[Path]:
        return sorted((self.data / kind).glob("*.png"))


Setup = Callable[[Work], tuple[list[str], list[str]]]


@dataclass(frozen=True)
class Case:
    id: str
    area: str  # config, space, dataset, storage, cli
    input: str  # what is wrong, in words (the resolution's table)
    setup: Setup  # breaks the workspace; returns (argv, substrings the message must hold)


def _malformed_base(w: Work):
    w.write()
    w.base.write_text("data:\n  format: carla\ntrain: {epochs: 2\nstudent: x\n")
    return ["sweep", str(w.space), "--out", str(w.out)], ["base.yaml", "line 4", "malformed YAML"]


def _base_not_mapping(w: Work):
    w.write()
    w.base.write_text("- data\n- train\n")
    return ["sweep", str(w.space), "--out", str(w.out)], ["base.yaml", "expected a mapping"]


def _malformed_space(w: Work):
    w.write()
    w.space.write_text("base: base.yaml\nspace:\n  distill.alpha: {uniform: [0.1, 0.2]\n  x: 1\n")
    return ["sweep", str(w.space), "--out", str(w.out)], ["space.yaml", "line 4", "malformed YAML"]


def _missing_base(w: Work):
    w.space_doc["base"] = "missing.yaml"
    return w.sweep(), ["space.yaml", "base", "missing.yaml", "not found"]


def _encoder_in_choice(w: Work):
    return w.space_set("teacher.encoder", {"choice": ["resnet34", "resnet999"]}), [
        "space.yaml",
        "space.teacher.encoder.choice[1]",
        "resnet999",
    ]


def _empty_space(w: Work):
    w.space_doc["space"] = {}
    return w.sweep(), ["space.yaml", "space: empty"]


def _unknown_space_key(w: Work):
    w.space_doc["sweeps"] = {"num_samples": 2}
    return w.sweep(), ["space.yaml", "sweeps", "unknown key"]


# ------------------------------------------------------------------------------------------ dataset


def _data_root(w: Work, root: Path):
    w.base_doc["data"]["root"] = str(root)
    return w.sweep()


def _missing_root(w: Work):
    return _data_root(w, w.root / "nope"), [str(w.root / "nope"), "not found"]


def _not_a_dataset(w: Work):
    (w.root / "empty").mkdir()
    return _data_root(w, w.root / "empty"), [str(w.root / "empty"), "not a carla dataset", "CameraRGB"]


def _few_classes(w: Work):
    return w.base_set("data", num_classes=3), ["CameraSeg", ".png", "data.num_classes=3", "label ids"]


def _size_mismatch(w: Work):
    mask = w.pngs("CameraSeg")[2]
    Image.open(mask).resize((64, 48), Image.NEAREST).save(mask)
    return w.sweep(), [str(mask), str(w.pngs()[2]), "but its label"]


def _unpaired(w: Work):
    gone = w.pngs("CameraSeg")[1]
    gone.unlink()
    return w.sweep(), ["unpaired files", gone.stem, "images without a label"]


def _unreadable_png(w: Work):
    bad = w.pngs()[3]
    bad.write_bytes(b"this is not a PNG at all")
    return w.sweep(), [str(bad), "not a readable PNG"]


def _truncated_png(w: Work):
    bad = w.pngs()[0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return w.sweep(), [str(bad), "truncated"]


def _empty_split(w: Work):
    pairs = list(zip(w.pngs(), w.pngs("CameraSeg"), strict=True))
    for split in ("train", "val"):
        for kind in ("CameraRGB", "CameraSeg"):
            (w.data / split / kind).mkdir(parents=True)
    for img, mask in pairs:
        img.rename(w.data / "train" / "CameraRGB" / img.name)
        mask.rename(w.data / "train" / "CameraSeg" / mask.name)
    return w.sweep(), [str(w.data / "val" / "CameraRGB"), "no PNG images"]


def _one_pair(w: Work):
    for p in w.pngs()[1:] + w.pngs("CameraSeg")[1:]:
        p.unlink()
    return w.sweep(), [str(w.data.resolve()), "1 image/label pair", "at least 2"]


# ------------------------------------------------------------------------------------------ storage


def _study_exists(w: Work):
    import optuna

    url = f"sqlite:///{w.root / 'shared.db'}"
    optuna.create_study(study_name="s1", storage=url)
    return w.storage(url), ["space.yaml", "storage", "a study named 's1' exists already"]


def _new_sqlite_then_bad_data(w: Work):
    w.space_doc["storage"] = f"sqlite:///{w.root / 'new.db'}"
    return _missing_root(w)


# ------------------------------------------------------------------------------------- command line


def _sweep_exists(w: Work):
    (w.out / "s1").mkdir(parents=True)
    (w.out / "s1" / "leaderboard.csv").write_text("trial_id\n")
    return w.sweep(), [str(w.out / "s1"), "exists already", "kdseg resume"]


def _out_is_a_file(w: Work):
    (w.root / "afile").write_text("x")
    argv = w.sweep()
    argv[argv.index("--out") + 1] = str(w.root / "afile")
    return argv, [str(w.root / "afile"), "cannot write"]


def _resume_not_a_sweep(w: Work):
    (w.root / "notasweep").mkdir()
    return ["resume", str(w.root / "notasweep")], [str(w.root / "notasweep"), "not a kdseg sweep folder"]


def _train_bad_value(w: Work):
    w.write()
    return ["train", str(w.base), "--out", str(w.root / "run"), "--set", "train.optimizer=lion"], [
        "--set train.optimizer",
        "lion",
    ]


def _train_missing_data(w: Work):
    w.base_doc["data"]["root"] = str(w.root / "nope")
    w.write()
    return ["train", str(w.base), "--out", str(w.root / "run")], [str(w.root / "nope"), "not found"]


def _synth_bad_size(w: Work):
    return ["data", "synth", "--out", str(w.root / "gen"), "--size", "4x4"], ["--size", "too small"]


def _export_no_sweep(w: Work):
    return ["export", str(w.root / "nothing")], [str(w.root / "nothing"), "no such sweep folder"]


# ------------------------------------------------------------------------------ reliability (issue 15)


def _alias_bomb(w: Work):
    """faults[].when accepts any value: nested aliases would expand to 9**9 items once copied."""
    w.write()
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    text = w.space.read_text() + "bomb:\n" + "\n".join("  " + line for line in lines) + "\n"
    text += "faults:\n- {when: {distill.alpha: *a8}, epoch: 1, action: raise}\n"
    w.space.write_text(text)
    argv = ["sweep", str(w.space), "--out", str(w.out), "--name", "s1"]
    return argv, ["space.yaml", "line", "YAML aliases (*a0) are not accepted"]


def _alias_in_base(w: Work):
    w.write()
    w.base.write_text(w.base.read_text() + "x: &anchor {lr: 0.1}\ny: *anchor\n")
    return ["sweep", str(w.space), "--out", str(w.out), "--name", "s1"], ["base.yaml", "YAML aliases"]


def _base_is_folder(w: Work):
    (w.root / "configs").mkdir()
    w.space_doc["base"] = "configs"
    return w.sweep(), ["space.yaml", "base:", "is a folder"]


def _base_is_space(w: Work):
    w.write()
    (w.root / "other_space.yaml").write_text(w.space.read_text())
    w.space_doc["base"] = "other_space.yaml"
    return w.sweep(), ["space.yaml", "other_space.yaml is a search space, not a training config"]


def _train_a_space(w: Work):
    w.write()
    return ["train", str(w.space), "--out", str(w.root / "run")], [
        "space.yaml",
        "this is a search space, not a training config",
    ]


def _truncated_checkpoint(w: Work):
    import torch

    from kdseg.config import validate_config
    from kdseg.models import build_model

    cfg = validate_config(w.base_doc)
    path = w.root / "teacher.pt"
    torch.save(build_model(cfg.teacher, cfg.data.num_classes).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    w.base_doc["teacher"]["checkpoint"] = str(path)
    return w.sweep(), ["space.yaml", "teacher.checkpoint", "teacher.pt", "truncated or corrupt"]


def _mismatched_checkpoint(w: Work):
    import torch

    from kdseg.models import LightweightUNet

    path = w.root / "student.pt"
    torch.save(LightweightUNet(5, width=0.25).state_dict(), path)  # 5 classes, the config has 13
    w.base_doc["student"]["checkpoint"] = str(path)
    return w.sweep(), ["space.yaml", "student.checkpoint", "does not fit"]


def _unsafe_checkpoint(w: Work):
    import torch

    path = w.root / "teacher.pt"
    torch.save({"model": __import__("collections").OrderedDict(), "obj": Path("/")}, path)
    w.base_doc["teacher"]["checkpoint"] = str(path)
    return w.sweep(), ["space.yaml", "teacher.checkpoint", "cannot be loaded safely"]


def _storage_password_query(w: Work):
    url = "postgresql://nobody@127.0.0.1:1/x?password=hunter2secret&connect_timeout=2"
    return w.storage(url), ["space.yaml", "cannot open postgresql://nobody@127.0.0.1:1/x"]


def _run_folder(w: Work, **student) -> Path:
    """A run folder as ``kdseg train`` leaves it (config.yaml, student.pt) for the base config."""
    import torch

    from kdseg.config import save_config, validate_config
    from kdseg.models import build_model

    cfg = validate_config(w.base_doc)
    run = w.root / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    model_cfg = cfg.student.model_copy(update=student)
    torch.save(build_model(model_cfg, cfg.data.num_classes).state_dict(), run / "student.pt")
    return run


def _eval_misfit(w: Work):
    run = _run_folder(w, width=0.5)
    return ["eval", str(run), "--split", "val"], [str(run / "student.pt"), "does not fit", "width"]


def _eval_classes(w: Work):
    run = _run_folder(w)
    return ["eval", str(run), "--set", "data.num_classes=5"], [
        str(run / "student.pt"),
        "predicts 13 classes",
        "data.num_classes is 5",
    ]


def _eval_no_test(w: Work):
    run = _run_folder(w)
    return ["eval", str(run)], [f"{run / 'config.yaml'}: data: ", str(w.data / "test"), "no test split"]


def _eval_unreadable(w: Work):
    run = _run_folder(w)
    (run / "student.pt").write_bytes(b"not a checkpoint")
    return ["eval", str(run), "--split", "val"], [str(run / "student.pt"), "truncated or corrupt"]


def _eval_bad_config(w: Work):
    run = _run_folder(w)
    (run / "config.yaml").write_text("data: {format: carla\n")
    return ["eval", str(run), "--split", "val"], [str(run / "config.yaml"), "malformed YAML"]


CASES = [
    # ---- training config (base.yaml)
    Case("config-malformed-yaml", "config", "base.yaml is not valid YAML", _malformed_base),
    Case("config-not-a-mapping", "config", "base.yaml holds a list", _base_not_mapping),
    Case(
        "config-unknown-key",
        "config",
        "train.epoch (typo)",
        lambda w: (w.base_set("train", epoch=3), ["base.yaml", "train.epoch", "unknown key"]),
    ),
    Case(
        "config-wrong-type",
        "config",
        "train.batch_size: eight",
        lambda w: (w.base_set("train", batch_size="eight"), ["base.yaml", "train.batch_size", "integer"]),
    ),
    Case(
        "config-negative-lr",
        "config",
        "train.lr: -0.1",
        lambda w: (w.base_set("train", lr=-0.1), ["base.yaml", "train.lr", "greater than 0"]),
    ),
    Case(
        "config-unknown-encoder",
        "config",
        "teacher.encoder: resnet999",
        lambda w: (w.base_set("teacher", encoder="resnet999"), ["base.yaml", "teacher.encoder", "resnet999"]),
    ),
    Case(
        "config-unknown-arch",
        "config",
        "student.arch: Unetzz",
        lambda w: (
            w.base_set("student", arch="Unetzz"),
            ["base.yaml", "student.arch", "unknown architecture 'Unetzz'"],
        ),
    ),
    Case(
        "config-unknown-format",
        "config",
        "data.format: kitti",
        lambda w: (w.base_set("data", format="kitti"), ["base.yaml", "data.format", "kitti"]),
    ),
    Case(
        "config-image-size",
        "config",
        "data.image_size: [50, 50]",
        lambda w: (
            w.base_set("data", image_size=[50, 50]),
            ["base.yaml", "data.image_size", "multiples of 32"],
        ),
    ),
    Case(
        "config-offline-no-teacher",
        "config",
        "distill.mode: offline without teacher.checkpoint",
        lambda w: (w.base_set("distill", mode="offline"), ["base.yaml", "offline", "teacher.checkpoint"]),
    ),
    Case("config-missing-base", "config", "base: missing.yaml", _missing_base),
    # ---- search space (space.yaml)
    Case("space-malformed-yaml", "space", "space.yaml is not valid YAML", _malformed_space),
    Case("space-unknown-top-key", "space", "sweeps: (typo of sweep)", _unknown_space_key),
    Case(
        "space-unknown-config-key",
        "space",
        "distill.temprature: {uniform: ...}",
        lambda w: (
            w.space_set("distill.temprature", {"uniform": [1, 2]}),
            ["space.yaml", "space.distill.temprature", "did you mean distill.temperature"],
        ),
    ),
    Case(
        "space-empty-choice",
        "space",
        "distill.alpha: {choice: []}",
        lambda w: (
            w.space_set("distill.alpha", {"choice": []}),
            ["space.yaml", "space.distill.alpha.choice", "non-empty list"],
        ),
    ),
    Case(
        "space-low-above-high",
        "space",
        "distill.alpha: {uniform: [0.9, 0.1]}",
        lambda w: (
            w.space_set("distill.alpha", {"uniform": [0.9, 0.1]}),
            ["space.yaml", "space.distill.alpha.uniform", "low 0.9 is greater than high 0.1"],
        ),
    ),
    Case(
        "space-loguniform-zero",
        "space",
        "distill.temperature: {loguniform: [0, 8]}",
        lambda w: (
            w.space_set("distill.temperature", {"loguniform": [0, 8]}),
            ["space.yaml", "space.distill.temperature.loguniform", "0 < low"],
        ),
    ),
    Case(
        "space-unknown-domain",
        "space",
        "distill.alpha: {normal: [0, 1]}",
        lambda w: (
            w.space_set("distill.alpha", {"normal": [0, 1]}),
            ["space.yaml", "space.distill.alpha", "unknown domain 'normal'"],
        ),
    ),
    Case(
        "space-outside-schema",
        "space",
        "distill.alpha: {uniform: [0.5, 1.5]}",
        lambda w: (
            w.space_set("distill.alpha", {"uniform": [0.5, 1.5]}),
            ["space.yaml", "space.distill.alpha.uniform: high 1.5", "less than or equal to 1"],
        ),
    ),
    Case(
        "space-int-key-uniform",
        "space",
        "train.batch_size: {uniform: [2, 8]}",
        lambda w: (
            w.space_set("train.batch_size", {"uniform": [2, 8]}),
            ["space.yaml", "space.train.batch_size", "is an integer"],
        ),
    ),
    Case(
        "space-reserved-key",
        "space",
        "train.epochs searched",
        lambda w: (
            w.space_set("train.epochs", {"choice": [1, 2]}),
            ["space.yaml", "train.epochs cannot be searched", "sweep.asha.max_t"],
        ),
    ),
    Case(
        "space-data-key",
        "space",
        "data.num_classes searched",
        lambda w: (
            w.space_set("data.num_classes", {"choice": [3, 13]}),
            ["space.yaml", "data.num_classes cannot be searched"],
        ),
    ),
    Case(
        "space-bad-choice-value",
        "space",
        "teacher.encoder: {choice: [resnet34, resnet999]}",
        _encoder_in_choice,
    ),
    Case("space-empty", "space", "space: {}", _empty_space),
    Case(
        "sweep-num-samples-zero",
        "space",
        "sweep.num_samples: 0",
        lambda w: (
            w.sweep_set(num_samples=0),
            ["space.yaml", "sweep.num_samples", "greater than or equal to 1"],
        ),
    ),
    Case(
        "sweep-fewer-samples-than-grid",
        "space",
        "sweep.num_samples: 1 with 1 grid point and 1 no-KD control",
        lambda w: (
            w.sweep_set(num_samples=1),
            ["space.yaml", "sweep.num_samples", "1 grid combination and 1 no-KD control", "at least 2"],
        ),
    ),
    Case(
        "sweep-grace-above-max-t",
        "space",
        "sweep.asha.grace_period > max_t",
        lambda w: (
            w.sweep_set(asha={"max_t": 2, "grace_period": 5}),
            ["space.yaml", "sweep.asha.grace_period", "exceeds sweep.asha.max_t"],
        ),
    ),
    Case(
        "sweep-wrong-type",
        "space",
        "sweep.max_concurrent: many",
        lambda w: (w.sweep_set(max_concurrent="many"), ["space.yaml", "sweep.max_concurrent", "integer"]),
    ),
    Case(
        "sweep-max-failures",
        "space",
        "sweep.max_failures: -2",
        lambda w: (w.sweep_set(max_failures=-2), ["space.yaml", "sweep.max_failures", "-1"]),
    ),
    Case(
        "sweep-final-eval-no-test-split",
        "space",
        "sweep.final_eval on, data without a test/ folder",
        lambda w: (
            w.sweep_set(final_eval={"top_k": 1}),
            ["space.yaml", "sweep.final_eval: no test split", str(w.data / "test")],
        ),
    ),
    # ---- dataset (found by the scan before Ray starts)
    Case("data-missing-root", "dataset", "data.root does not exist", _missing_root),
    Case("data-not-a-dataset", "dataset", "data.root has no CameraRGB/CameraSeg", _not_a_dataset),
    Case("data-num-classes-too-small", "dataset", "data.num_classes: 3, labels up to 12", _few_classes),
    Case("data-size-mismatch", "dataset", "a label 64x48, its image 32x32", _size_mismatch),
    Case("data-unpaired", "dataset", "an image without its label", _unpaired),
    Case("data-unreadable-png", "dataset", "an image file that is not a PNG", _unreadable_png),
    Case("data-truncated-png", "dataset", "an image PNG cut in half", _truncated_png),
    Case("data-empty-split", "dataset", "train/ and val/ folders, val/ empty", _empty_split),
    Case("data-one-pair", "dataset", "one image/label pair (nothing to split)", _one_pair),
    # ---- storage
    Case(
        "storage-unreachable",
        "storage",
        "postgresql://nobody@127.0.0.1:1/x",
        lambda w: (
            w.storage("postgresql://nobody@127.0.0.1:1/x"),
            ["space.yaml", "storage", "cannot open postgresql://nobody@127.0.0.1:1/x"],
        ),
    ),
    Case(
        "storage-not-a-url",
        "storage",
        "storage: optuna.db",
        lambda w: (w.storage("optuna.db"), ["space.yaml", "storage", "neither an SQLAlchemy URL"]),
    ),
    Case(
        "storage-journal-missing-folder",
        "storage",
        "storage: journal:/nonexistent-kdseg/x.log",
        lambda w: (
            w.storage("journal:/nonexistent-kdseg/x.log"),
            ["space.yaml", "storage", "/nonexistent-kdseg", "does not exist"],
        ),
    ),
    Case(
        "storage-sqlite-missing-folder",
        "storage",
        "storage: sqlite:////nonexistent-kdseg/x.db",
        lambda w: (
            w.storage("sqlite:////nonexistent-kdseg/x.db"),
            ["space.yaml", "storage", "/nonexistent-kdseg", "does not exist"],
        ),
    ),
    Case(
        "storage-study-exists", "storage", "a study named like the sweep exists in the storage", _study_exists
    ),
    Case(
        "storage-new-sqlite-bad-data",
        "storage",
        "a new SQLite storage file, then a missing data.root",
        _new_sqlite_then_bad_data,
    ),
    # ---- command line
    Case(
        "cli-missing-space-file",
        "cli",
        "kdseg-sweep missing.yaml",
        lambda w: (["sweep", str(w.root / "missing.yaml")], ["missing.yaml", "not found"]),
    ),
    Case(
        "cli-set-without-value",
        "cli",
        "--set train.lr",
        lambda w: (w.sweep("--set", "train.lr"), ["space.yaml", "--set 'train.lr'", "key.path=value"]),
    ),
    Case(
        "cli-set-unknown-key",
        "cli",
        "--set foo.bar=1",
        lambda w: (w.sweep("--set", "foo.bar=1"), ["space.yaml", "--set foo.bar", "unknown key"]),
    ),
    Case(
        "cli-set-wrong-type",
        "cli",
        "--set train.batch_size=abc",
        lambda w: (w.sweep("--set", "train.batch_size=abc"), ["--set train.batch_size", "integer"]),
    ),
    Case(
        "cli-bad-name",
        "cli",
        "--name a/b",
        lambda w: (w.sweep()[:-2] + ["--name", "a/b"], ["sweep name 'a/b'", "plain folder name"]),
    ),
    Case("cli-sweep-exists", "cli", "--name of an existing sweep, without resume", _sweep_exists),
    Case("cli-out-not-writable", "cli", "--out is a file", _out_is_a_file),
    Case(
        "cli-out-read-only",
        "cli",
        "--out /proc/kdseg-runs (not writable, even for root)",
        lambda w: (w.sweep()[:2] + ["--out", "/proc/kdseg-runs"], ["/proc/kdseg-runs", "cannot write"]),
    ),
    Case(
        "cli-unknown-option",
        "cli",
        "kdseg sweep --bogus",
        lambda w: (w.sweep("--bogus"), ["unrecognized arguments: --bogus"]),
    ),
    Case("cli-resume-not-a-sweep", "cli", "kdseg resume on a folder that is no sweep", _resume_not_a_sweep),
    Case("cli-train-bad-value", "cli", "kdseg train --set train.optimizer=lion", _train_bad_value),
    Case("cli-train-missing-data", "cli", "kdseg train, data.root missing", _train_missing_data),
    Case("cli-synth-bad-size", "cli", "kdseg data synth --size 4x4", _synth_bad_size),
    Case("cli-export-no-sweep", "cli", "kdseg export on a missing folder", _export_no_sweep),
    # ---- reliability (issue 15): refused before any folder exists, before Ray starts
    Case("config-yaml-alias", "config", "base.yaml uses an anchor and an alias", _alias_in_base),
    Case("space-alias-bomb", "space", "faults[].when: a nested YAML alias bomb", _alias_bomb),
    Case("space-base-is-folder", "space", "base: a folder", _base_is_folder),
    Case("space-base-is-a-space", "space", "base: another search space", _base_is_space),
    Case("cli-train-a-space-file", "cli", "kdseg train SPACE.yaml", _train_a_space),
    Case("config-truncated-checkpoint", "config", "teacher.checkpoint cut in half", _truncated_checkpoint),
    Case("config-mismatched-checkpoint", "config", "student.checkpoint of 5 classes", _mismatched_checkpoint),
    Case(
        "config-unsafe-checkpoint", "config", "teacher.checkpoint holds a pickled object", _unsafe_checkpoint
    ),
    Case(
        "sweep-more-gpus-than-here",
        "space",
        "resources_per_trial.gpu: 64 on local Ray",
        lambda w: (
            w.sweep_set(resources_per_trial={"cpu": 1, "gpu": 64}),
            ["space.yaml", "sweep.resources_per_trial.gpu", "no trial could start"],
        ),
    ),
    Case(
        "sweep-more-cpus-than-here",
        "space",
        "resources_per_trial.cpu: 4096 on local Ray",
        lambda w: (
            w.sweep_set(resources_per_trial={"cpu": 4096}),
            ["space.yaml", "sweep.resources_per_trial.cpu", "no trial could start"],
        ),
    ),
    Case("storage-password-in-query", "storage", "?password= in an unreachable URL", _storage_password_query),
    Case(
        "cli-name-with-space",
        "cli",
        "--name 'a b' (the space file's name: rule)",
        lambda w: (w.sweep()[:-2] + ["--name", "a b"], ["--name", "sweep name 'a b'", "plain folder name"]),
    ),
    Case(
        "space-name-unicode",
        "space",
        "name: café in the space file",
        lambda w: (
            (w.space_doc.update(name="café"), w.sweep()[:-2])[1],
            ["space.yaml: name", "sweep name 'café'", "plain folder name"],
        ),
    ),
    Case("eval-checkpoint-misfit", "cli", "kdseg eval, student.pt of another width", _eval_misfit),
    Case("eval-class-count", "cli", "kdseg eval --set data.num_classes=5 (checkpoint has 13)", _eval_classes),
    Case("eval-no-test-split", "cli", "kdseg eval --split test, no test/ folder", _eval_no_test),
    Case("eval-unreadable-checkpoint", "cli", "kdseg eval, student.pt is not a checkpoint", _eval_unreadable),
    Case(
        "eval-malformed-config",
        "cli",
        "kdseg eval, the run's config.yaml is not valid YAML",
        _eval_bad_config,
    ),
    Case(
        "eval-unknown-split",
        "cli",
        "kdseg eval --split holdout",
        lambda w: (
            ["eval", str(_run_folder(w)), "--split", "holdout"],
            ["--split", "invalid choice: 'holdout'"],
        ),
    ),
]


@pytest.fixture(scope="module")
def good_data(tmp_path_factory) -> Path:
    from kdseg.data import write_synth

    return write_synth(tmp_path_factory.mktemp("bad-input-data") / "scenes", n=6, size=(32, 32), seed=0)


@pytest.fixture
def work(tmp_path, good_data, monkeypatch) -> Work:
    monkeypatch.chdir(tmp_path)  # a W&B run or any relative output would land here
    return Work(tmp_path, good_data)


def run_cli(argv: list[str]) -> int:
    from kdseg.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code)


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} | {
        str(p.relative_to(root)) + "/": 0 for p in root.rglob("*") if p.is_dir()
    }


def study_names(url: str) -> list[str]:
    import optuna

    return sorted(s.study_name for s in optuna.get_all_study_summaries(url, include_best_trial=False))


def test_table_is_large_and_distinct():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES) and len({c.input for c in CASES}) == len(CASES)
    assert {c.area for c in CASES} == {"config", "space", "dataset", "storage", "cli"}


def test_the_workspace_itself_is_valid(work):
    """The unbroken workspace passes every check the cases rely on (so each case fails for its own defect)."""
    from kdseg.data import load_data
    from kdseg.sweep.driver import plan_sweep

    work.write()
    plan = plan_sweep(work.space, out_root=work.out, name="s1")
    data = load_data(plan.spec.base_config.data)
    assert len(data.train.names) + len(data.val.names) == 6
    assert not work.out.exists()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, work: Work, capsys, monkeypatch):
    argv, expected = case.setup(work)
    capsys.readouterr()
    before = snapshot(work.root)
    studies = {p: study_names(f"sqlite:///{p}") for p in work.root.glob("*.db")}
    started = []  # what bad input must never reach: Ray, a training run

    def must_not_start(what):
        def start(*args, **kwargs):
            started.append(what)
            raise AssertionError(f"{what} started on bad input")

        return start

    monkeypatch.setattr("ray.init", must_not_start("ray.init"))
    monkeypatch.setattr("kdseg.train.train_kd", must_not_start("train_kd"))
    rc = run_cli(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert "Traceback" not in err
    if case.area == "dataset":  # the config the dataset came from is named too
        assert "base.yaml: data: " in err
    # nothing written: no sweep folder, no Optuna file or study, no W&B run, nothing else
    assert snapshot(work.root) == before
    for path, names in studies.items():
        assert study_names(f"sqlite:///{path}") == names
    assert started == [], f"bad input must be refused before anything starts: {started} did"
    assert "hunter2secret" not in err
