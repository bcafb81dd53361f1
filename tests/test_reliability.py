"""Reliability pieces without a sweep: the sweep folder's claim, full disks, broken searcher state,
passwords in storage URLs (the end-to-end checks are in test_postgres.py and test_bad_input.py)."""

from __future__ import annotations

import os
import pickle
import subprocess
import uuid
from pathlib import Path

import pytest

from kdseg.errors import DiskFullError, KdsegError


def test_claim_is_exclusive_and_dies_with_its_driver(tmp_path):
    from kdseg.layout import LOCK_FILE
    from kdseg.sweep.claim import claim_sweep

    sweep = tmp_path / "runs" / "s1"
    first = claim_sweep(sweep, new=True)
    before = sorted(p.name for p in sweep.iterdir())
    with pytest.raises(KdsegError, match=rf"another kdseg driver \(pid {os.getpid()} .*\) is running"):
        claim_sweep(sweep, new=True)  # a second driver for the same sweep
    with pytest.raises(KdsegError, match="another kdseg driver"):
        claim_sweep(sweep, new=False)  # kdseg resume while the driver is alive
    assert sorted(p.name for p in sweep.iterdir()) == before == [LOCK_FILE]
    first.release()
    (sweep / "sweep.yaml").write_text("x: 1\n")
    with pytest.raises(KdsegError, match="exists already"):
        claim_sweep(sweep, new=True)  # a finished sweep is not started again
    claim_sweep(sweep, new=False).release()  # but resumed


def test_claim_is_released_when_the_driver_is_killed(tmp_path):
    from kdseg.sweep.claim import claim_sweep

    sweep = tmp_path / "s1"
    code = f"from kdseg.sweep.claim import claim_sweep; from pathlib import Path; c = claim_sweep(Path({str(sweep)!r}), new=True); print('held', flush=True); import time; time.sleep(60)"
    proc = subprocess.Popen(["python", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(KdsegError, match="another kdseg driver"):
            claim_sweep(sweep, new=False)
    finally:
        proc.kill()
        proc.wait()
    claim_sweep(sweep, new=False).release()


@pytest.fixture
def tiny_tmpfs():
    """A 512 KiB tmpfs (root only); skipped where mounting is not allowed."""
    mnt = Path("/tmp") / f"kdseg-full-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if out.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def test_a_full_disk_is_named_with_its_path(tiny_tmpfs):
    import torch

    from kdseg.checkpoint import save_atomic
    from kdseg.fileio import atomic_write

    big = torch.zeros(1 << 20)  # 4 MiB of float32 on a 512 KiB file system
    with pytest.raises(DiskFullError) as e:
        save_atomic({"w": big}, tiny_tmpfs / "run" / "checkpoint.pt")
    assert str(e.value) == f"no space left on device: {tiny_tmpfs / 'run' / 'checkpoint.pt'}"
    with pytest.raises(DiskFullError, match="no space left on device: .*leaderboard.csv"):
        with atomic_write(tiny_tmpfs / "leaderboard.csv", "w") as f:
            f.write("x" * (1 << 20))
    assert not [p for p in tiny_tmpfs.rglob("*") if p.is_file()]  # no temp file left behind


def test_fit_closes_running_trials_and_names_a_full_disk(tmp_path):
    """Whatever ends Tuner.fit, no Optuna trial stays RUNNING; ENOSPC becomes DiskFullError."""
    import errno

    import optuna

    from kdseg.sweep.plan import SweepPlan
    from kdseg.sweep.recovery import _fit

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s1", storage=url)
    study.ask(), study.ask()
    plan = SweepPlan(spec=None, name="s1", sweep_dir=tmp_path, storage_url=url)

    class Tuner:
        def __init__(self, err):
            self.err = err

        def fit(self):
            raise self.err

    with pytest.raises(DiskFullError, match=f"no space left on device: {tmp_path}/tune/x"):
        _fit(plan, Tuner(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tune" / "x"))))
    states = {t.state for t in optuna.load_study(study_name="s1", storage=url).get_trials()}
    assert states == {optuna.trial.TrialState.FAIL}
    study.ask()
    with pytest.raises(KeyboardInterrupt):
        _fit(plan, Tuner(KeyboardInterrupt()))
    trials = optuna.load_study(study_name="s1", storage=url).get_trials()
    assert {t.state for t in trials} == {optuna.trial.TrialState.FAIL}
    assert "KeyboardInterrupt" in trials[-1].user_attrs["error"]


def test_broken_searcher_state_is_set_aside(tmp_path):
    from kdseg.sweep.recovery import set_aside_broken_state

    good = {"counter": 1}
    (tmp_path / "search_gen_state-2024-01-01.json").write_bytes(pickle.dumps(good))
    (tmp_path / "searcher-state-2024-01-01.pkl").write_bytes(pickle.dumps(good))
    (tmp_path / "search_gen_state-2024-01-02.json").write_bytes(b"")  # a crash mid-write
    (tmp_path / "searcher-state-2024-01-02.pkl").write_bytes(pickle.dumps(good)[:5])
    moved = set_aside_broken_state(tmp_path)
    assert sorted(p.name for p in moved) == [
        "search_gen_state-2024-01-02.json",
        "searcher-state-2024-01-02.pkl",
    ]
    assert sorted(p.name for p in tmp_path.glob("*state-*")) == [
        "search_gen_state-2024-01-01.json",
        "searcher-state-2024-01-01.pkl",
    ]
    (tmp_path / "search_gen_state-2024-01-01.json").unlink()  # one without the other: both go
    set_aside_broken_state(tmp_path)
    assert not list(tmp_path.glob("*state-*"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cr%40t@db.example:5432/kd",
        "postgresql://u@db.example/kd?password=s3cr%40t&sslmode=require",
        "mysql+pymysql://u:s3cr%40t@db.example/kd",
    ],
)
def test_passwords_stay_in_memory(url):
    from kdseg.sweep.dburl import redact, same_database, strip_password, with_password

    clean = strip_password(url)
    assert "s3cr" not in clean and "s3cr" not in redact(url) and "***" in redact(url).replace("%2A", "*")
    assert with_password(clean) == url and same_database(url, clean)
    assert not same_database(url, clean.replace("/kd", "/other"))


def test_the_storage_pickles_without_its_password(tmp_path):
    from kdseg.sweep.dburl import strip_password
    from kdseg.sweep.study import SecretFreeRDBStorage

    url = f"sqlite:///{tmp_path / 'x.db'}"
    storage = SecretFreeRDBStorage(strip_password(url))
    storage.url = "postgresql://u@h/db"  # what a PostgreSQL storage holds once its password is stripped
    state = storage.__getstate__()
    assert "password" not in pickle.dumps(state).decode("latin-1")
