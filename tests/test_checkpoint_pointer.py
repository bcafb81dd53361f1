"""A sweep trial's checkpoints: written once into run/, reported to Tune as a pointer, followed on resume.

Unit tests of :mod:`kdseg.checkpoint`'s pointers, then :func:`kdseg.sweep.trainable.run_trial` in this
process (no Ray): Tune is a fake that copies each reported folder into its own storage, as Ray does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kdseg.checkpoint import (
    Pointer,
    prune_epoch_checkpoints,
    read_pointer,
    save_epoch_checkpoint,
    write_pointer,
)
from kdseg.errors import CheckpointError
from kdseg.layout import (
    CHECKPOINT_POINTER,
    FULL_CHECKPOINT,
    METRICS_FILE,
    REPORT_STAGING_DIR,
    read_metrics,
    trial_run_dir,
)


def _saved(tmp_path: Path, epoch: int = 3) -> tuple[Path, Pointer, Path]:
    run = tmp_path / "run"
    pointer = save_epoch_checkpoint({"epoch": epoch, "w": torch.arange(1000.0)}, run, epoch)
    folder = tmp_path / "tune" / "checkpoint_000002"
    folder.mkdir(parents=True)
    write_pointer(folder, pointer)
    return run, pointer, folder


def test_a_pointer_names_its_file_and_loads_it(tmp_path):
    run, pointer, folder = _saved(tmp_path)
    assert pointer.path == run / "checkpoint-e0003.pt" and pointer.epoch == 3
    fields = json.loads((folder / CHECKPOINT_POINTER).read_text())
    assert fields["file"] == "checkpoint-e0003.pt"  # the name only: the run folder may move
    read = read_pointer(folder, run)
    assert (read.path, read.epoch, read.size, read.id) == (pointer.path, 3, pointer.size, pointer.id)
    state = read.load()
    assert torch.equal(state["w"], torch.arange(1000.0)) and state["checkpoint_id"] == pointer.id
    assert read_pointer(tmp_path, run) is None  # a folder without a pointer


def test_a_missing_file_is_an_error_naming_both(tmp_path):
    run, pointer, folder = _saved(tmp_path)
    pointer.path.unlink()
    with pytest.raises(CheckpointError) as e:
        read_pointer(folder, run).load()
    assert str(folder / CHECKPOINT_POINTER) in str(e.value) and str(pointer.path) in str(e.value)
    assert "does not exist" in str(e.value)


def test_a_truncated_file_is_an_error_before_it_is_read(tmp_path):
    run, pointer, folder = _saved(tmp_path)
    data = pointer.path.read_bytes()
    pointer.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as e:
        read_pointer(folder, run).load()
    assert f"{len(data) // 2} bytes" in str(e.value) and str(pointer.size) in str(e.value)


def test_another_attempts_file_of_the_same_name_is_refused(tmp_path):
    run, pointer, folder = _saved(tmp_path)
    save_epoch_checkpoint({"epoch": 3, "w": torch.arange(1000.0)}, run, 3)  # same size, new id
    assert pointer.path.stat().st_size == pointer.size
    with pytest.raises(CheckpointError, match="its id differs"):
        read_pointer(folder, run).load()


@pytest.mark.parametrize(
    "text", ["{not json", '{"file": "checkpoint-e0003.pt"}', '{"file": "../x/checkpoint-e0003.pt"}']
)
def test_a_damaged_pointer_is_an_error(tmp_path, text):
    run, _, folder = _saved(tmp_path)
    (folder / CHECKPOINT_POINTER).write_text(text)
    with pytest.raises(CheckpointError, match="not a readable checkpoint pointer"):
        read_pointer(folder, run)


def test_prune_keeps_what_it_is_told(tmp_path):
    run = tmp_path / "run"
    for e in (1, 2, 3):
        save_epoch_checkpoint({"epoch": e}, run, e)
    (run / "student.pt").write_bytes(b"x")
    prune_epoch_checkpoints(run, keep=["checkpoint-e0002.pt"])
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-e0002.pt", "student.pt"]
    prune_epoch_checkpoints(run)
    assert [p.name for p in run.iterdir()] == ["student.pt"]


# ------------------------------------------------------------------------- a trial, with a fake Tune
class FakeTune:
    """Ray's part: each reported checkpoint folder copied into storage (``checkpoint_NNNNNN``)."""

    def __init__(self, storage: Path, fail_at: int | None = None):
        self.storage, self.fail_at = storage, fail_at
        self.results: list[dict] = []
        self.checkpoints: list[Path] = []
        self.sources: list[Path] = []  # the folders the trial handed over
        tune = self

        class Checkpoint:
            def __init__(self, path: str):
                self.path = path

            @classmethod
            def from_directory(cls, path: str):
                dest = tune.storage / f"checkpoint_{len(tune.checkpoints):06d}"
                tune.sources.append(Path(path))
                shutil.copytree(path, dest)
                return cls(str(dest))

            def to_directory(self, path: str) -> None:
                shutil.copytree(self.path, path, dirs_exist_ok=True)

        self.Checkpoint = Checkpoint

    def report(self, metrics, checkpoint=None):
        if metrics.get("epoch") == self.fail_at:
            self.fail_at = None
            raise RuntimeError("killed between writing the checkpoint and Tune registering it")
        self.results.append(metrics)
        if checkpoint is not None:
            self.checkpoints.append(Path(checkpoint.path))


@pytest.fixture
def trial(tmp_path, synth_dir):
    from kdseg.sweep.space import default_params, load_space
    from tests.sweeps import write_space

    space = write_space(
        tmp_path / "space",
        synth_dir,
        base={
            "data": {"image_size": [32, 32]},
            "student": {"arch": "lightweight_unet", "width": 0.25},
            "distill": {"mode": "none"},
            "train": {"batch_size": 4, "max_steps_per_epoch": 2},
        },
        max_t=4,
    )
    spec = load_space(space)
    params = default_params(spec)
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    return spec, params, sweep_dir


def _run(trial, tune: FakeTune, checkpoint=None):
    from kdseg.sweep.trainable import run_trial

    spec, params, sweep_dir = trial
    run_trial(
        params,
        spec,
        _data(spec),
        str(sweep_dir),
        tune.report,
        trial_id="t1",
        checkpoint=checkpoint,
        checkpoint_type=tune.Checkpoint,
    )
    return sweep_dir / "tune" / "t1" / "run"


def _data(spec):
    from kdseg.data import load_data

    return load_data(spec.base_config.data)


def _files(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob("checkpoint*"))


def test_a_trial_reports_pointers_and_resumes_after_a_crash_between_write_and_report(tmp_path, trial):
    tune = FakeTune(tmp_path / "tune-storage", fail_at=3)
    with pytest.raises(RuntimeError, match="killed"):
        _run(trial, tune)
    run = trial[2] / "tune" / "t1" / "run"
    assert [r["epoch"] for r in tune.results] == [1, 2]
    # handed over from the trial's run folder (not /tmp: a stopped trial may never clean up), then removed
    assert set(tune.sources) == {run / REPORT_STAGING_DIR} and not (run / REPORT_STAGING_DIR).exists()
    # what Ray copied: a pointer and metrics.jsonl, no weights
    assert sorted(p.name for p in tune.checkpoints[-1].iterdir()) == [CHECKPOINT_POINTER, METRICS_FILE]
    # epoch 3's file was written, its report never registered: the last pointer's file is still there
    assert _files(run) == ["checkpoint-e0001.pt", "checkpoint-e0002.pt", "checkpoint-e0003.pt"]
    assert not (run / FULL_CHECKPOINT).exists()

    resumed = FakeTune(tmp_path / "tune-storage-2")
    _run(trial, resumed, checkpoint=tune.Checkpoint(str(tune.checkpoints[-1])))
    assert [r["epoch"] for r in resumed.results] == [3, 4]  # from epoch 2's checkpoint
    assert "recovered" not in resumed.results[-1]
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3, 4]
    # the file resumed from and the new epoch 3's, the one Tune holds: older ones and the orphan replaced
    assert _files(run) == ["checkpoint-e0002.pt", "checkpoint-e0003.pt"]
    pointer = json.loads((resumed.checkpoints[-1] / CHECKPOINT_POINTER).read_text())
    assert pointer["file"] == "checkpoint-e0003.pt" and pointer["epoch"] == 3


def test_a_pointer_to_a_missing_file_restarts_the_trial_and_says_so(tmp_path, trial):
    tune = FakeTune(tmp_path / "tune-storage", fail_at=3)
    with pytest.raises(RuntimeError):
        _run(trial, tune)
    run = trial[2] / "tune" / "t1" / "run"
    (run / "checkpoint-e0002.pt").unlink()
    again = FakeTune(tmp_path / "tune-storage-2")
    _run(trial, again, checkpoint=tune.Checkpoint(str(tune.checkpoints[-1])))
    assert [r["epoch"] for r in again.results] == [1, 2, 3, 4]  # from scratch, never silently
    note = again.results[0]["recovered"]
    assert "restarted from scratch" in note and "checkpoint-e0002.pt" in note and "does not exist" in note
    assert str(tune.checkpoints[-1]) in note  # the checkpoint as Tune stores it, not a temporary copy
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_a_finished_trials_staging_folder_is_removed(tmp_path):
    """A trial that Tune stops exits inside its report: the driver's callback removes what it left."""
    from types import SimpleNamespace

    from kdseg.sweep.callbacks import PruneFinishedCheckpoints

    run = trial_run_dir(tmp_path, "t1")
    (run / REPORT_STAGING_DIR).mkdir(parents=True)
    (run / REPORT_STAGING_DIR / CHECKPOINT_POINTER).write_text("{}")
    (run / "student.pt").write_bytes(b"weights")
    PruneFinishedCheckpoints(str(tmp_path)).on_trial_complete(
        0, [], SimpleNamespace(trial_id="t1", checkpoint=None)
    )
    assert [p.name for p in run.iterdir()] == ["student.pt"]
