"""Trials that span several workers (``sweep.resources_per_trial.workers``, kdseg.sweep.workers).

The form is validated before Ray starts (exit 2 naming the key); a sweep whose trials are Ray Train jobs
of 2 CPU workers (gloo) runs to the end with the bookkeeping of one-process trials: one metrics row per
epoch, ASHA's stop PRUNED in Optuna, completions COMPLETE with the leaderboard's score.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.sweeps import check_consistent, study_trials, write_space


def _space(tmp_path, synth_dir, resources, **sweep):
    return write_space(
        tmp_path, synth_dir, base={"data": {"image_size": [32, 32]}}, resources_per_trial=resources, **sweep
    )


# ---------------------------------------------------------------------------------- the form


def test_resources_form_is_backward_compatible(tmp_path, synth_dir):
    from kdseg.sweep.space import load_space

    r = load_space(_space(tmp_path, synth_dir, {"cpu": 2, "gpu": 0})).sweep.resources_per_trial
    assert (r.cpu, r.gpu, r.workers) == (2, 0, None)
    r = load_space(_space(tmp_path, synth_dir, {"workers": 2, "cpu": 1, "gpu": 0})).sweep.resources_per_trial
    assert (r.cpu, r.gpu, r.workers) == (1, 0, 2)


@pytest.mark.parametrize(
    "resources, words",
    [
        ({"workers": 0}, ["sweep.resources_per_trial.workers", "greater than or equal to 1"]),
        ({"workers": 1.5}, ["sweep.resources_per_trial.workers", "1.5"]),
        ({"workers": "two"}, ["sweep.resources_per_trial.workers", "'two'"]),
        ({"workers": True}, ["sweep.resources_per_trial.workers"]),
        ({"workers": 2, "gpu": 0.5}, ["sweep.resources_per_trial", "gpu: 0.5 with workers"]),
        ({"workers": 2, "nodes": 2}, ["sweep.resources_per_trial.nodes", "unknown key"]),
    ],
)
def test_bad_resources_are_refused_naming_the_key(tmp_path, synth_dir, resources, words):
    from kdseg.errors import ConfigError
    from kdseg.sweep.space import load_space

    space = _space(tmp_path, synth_dir, resources)
    with pytest.raises(ConfigError) as e:
        load_space(space)
    assert str(space) in str(e.value) and e.value.exit_code == 2
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_workers_that_do_not_fit_exit_2_before_ray(tmp_path, synth_dir, kdseg):
    cpus = os.cpu_count() or 1
    space = _space(tmp_path, synth_dir, {"workers": cpus + 1, "cpu": 1})
    out = kdseg("sweep", space, "--out", tmp_path / "runs", "--name", "nofit")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "sweep.resources_per_trial" in out.stderr and f"workers: {cpus + 1}" in out.stderr
    assert "Ray" not in out.stderr.split("sweep.resources_per_trial")[0]  # refused before Ray started
    assert not (tmp_path / "runs" / "nofit").exists()

    space = _space(tmp_path, synth_dir, {"workers": 2, "gpu": 0.25})
    out = kdseg("sweep", space, "--out", tmp_path / "runs", "--name", "nofit")
    assert out.returncode == 2 and "gpu: 0.25 with workers" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "runs" / "nofit").exists()


def test_train_v2_turned_off_is_refused(tmp_path, synth_dir, kdseg):
    space = _space(tmp_path, synth_dir, {"workers": 2, "cpu": 1})
    out = kdseg(
        "sweep", space, "--out", tmp_path / "runs", "--name", "v1", env=kdseg.env(RAY_TRAIN_V2_ENABLED="0")
    )
    assert out.returncode == 2 and "RAY_TRAIN_V2_ENABLED" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "runs" / "v1").exists()


# ------------------------------------------------------------------------------- a real sweep


@pytest.mark.e2e
@pytest.mark.slow
def test_sweep_with_two_workers_per_trial(tmp_path, synth_dir, kdseg):
    """Two students in order, each trial 2 gloo workers x 1 CPU (one trial at a time on 2 CPUs): the
    small one runs to max_t; the wide one (16x the parameters, so about 1/16 of the mIoU per Mparam)
    scores below it at ASHA's first rung and is stopped there."""
    space = write_space(
        tmp_path,
        synth_dir,
        base={
            "data": {"image_size": [32, 32]},
            "teacher": {"arch": "lightweight_unet", "width": 0.5},
            "train": {"batch_size": 2, "max_steps_per_epoch": 3},
        },
        num_samples=2,
        max_t=2,
        resources_per_trial={"workers": 2, "cpu": 1, "gpu": 0},
        max_concurrent=None,  # what 2 CPUs hold: one trial of 2 workers at a time
    )
    doc = yaml.safe_load(space.read_text())
    doc["space"] = {
        "pair": {
            "grid": [
                {"student.arch": "lightweight_unet", "student.width": 0.25, "label": "small"},
                {"student.arch": "lightweight_unet", "student.width": 2.0, "label": "wide"},
            ]
        }
    }
    space.write_text(yaml.safe_dump(doc))
    out = kdseg("sweep", space, "--out", tmp_path / "runs", "--name", "w2", timeout=900)
    (tmp_path / "out.log").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "w2"

    rows = check_consistent(sweep_dir, "w2", 2)  # leaderboard = Ray trials = Optuna trials, states agreeing
    by_label = {r["label"]: r for r in rows}
    assert by_label["small"]["status"] == "completed" and by_label["small"]["epochs"] == 2
    assert by_label["wide"]["status"] == "stopped" and by_label["wide"]["epochs"] == 1
    states = {t.user_attrs["ray_trial_id"]: t.state.name for t in study_trials(sweep_dir, "w2")}
    assert states == {by_label["small"]["trial_id"]: "COMPLETE", by_label["wide"]["trial_id"]: "PRUNED"}

    for r in rows:
        trial = sweep_dir / "tune" / r["trial_id"]
        lines = (trial / "run" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == list(range(1, r["epochs"] + 1))  # one row each
        assert (trial / "run" / "student.pt").exists()
        results = [json.loads(x) for x in (trial / "result.json").read_text().splitlines()]
        assert [x["epoch"] for x in results] == list(range(1, r["epochs"] + 1))  # Tune got each epoch once
        assert {x["workers"] for x in results} == {2}  # Ray Train's world size, as rank 0 saw it
        # the Train run's checkpoints: pruned once the trial finished (run/ keeps the student)
        ckpts = list((trial / "train").glob("checkpoint_*/"))
        assert ckpts and not any((c / "checkpoint.pt").exists() for c in ckpts)
    assert (sweep_dir / "best_config.yaml").exists()
