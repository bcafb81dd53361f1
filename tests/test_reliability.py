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


def test_fit_pauses_running_trials_and_names_a_full_disk(tmp_path):
    """Whatever ends Tuner.fit, no Optuna trial stays RUNNING: they wait (WAITING) for kdseg resume, which
    runs them again; ENOSPC becomes DiskFullError."""
    import errno

    import optuna

    from kdseg.sweep.optuna_storage import open_storage
    from kdseg.sweep.plan import SweepPlan
    from kdseg.sweep.recovery import _fit
    from kdseg.sweep.trial_records import close_running, reopen_paused

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s1", storage=url)
    done = study.ask()
    study.tell(done, 1.0)
    study.ask(), study.ask()
    plan = SweepPlan(spec=None, name="s1", sweep_dir=tmp_path, storage_url=url)
    W, R, C = (
        optuna.trial.TrialState.WAITING,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.COMPLETE,
    )

    class Tuner:
        def __init__(self, err):
            self.err = err

        def fit(self):
            raise self.err

    def states():
        return [t.state for t in optuna.load_study(study_name="s1", storage=url).get_trials()]

    with pytest.raises(DiskFullError, match=f"no space left on device: {tmp_path}/tune/x"):
        _fit(plan, Tuner(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tune" / "x"))))
    assert states() == [C, W, W]
    trials = optuna.load_study(study_name="s1", storage=url).get_trials()
    assert "kdseg resume continues it" in trials[1].user_attrs["kdseg_paused"]
    assert reopen_paused(open_storage(url), "s1") == 2 and states() == [C, R, R]  # kdseg resume
    study.enqueue_trial({})  # a WAITING trial kdseg did not pause is not reopened
    with pytest.raises(KeyboardInterrupt):
        _fit(plan, Tuner(KeyboardInterrupt()))
    assert states() == [C, W, W, W]
    assert (
        "KeyboardInterrupt"
        in optuna.load_study(study_name="s1", storage=url).trials[2].user_attrs["kdseg_paused"]
    )
    assert reopen_paused(open_storage(url), "s1") == 2 and states() == [C, R, R, W]
    close_running(open_storage(url), "s1")  # a sweep's end closes whatever is left
    assert states() == [C] + [optuna.trial.TrialState.FAIL] * 3


def test_a_trial_failed_by_a_full_disk_stops_the_sweep(tmp_path):
    """The scheduler hears of a failed trial before the searcher: a full disk ends Tuner.fit there."""
    import copy
    import pickle

    from ray.tune.schedulers import FIFOScheduler

    from kdseg.sweep.recovery import StopOnFullDisk, _disk_full, trial_disk_full

    err = DiskFullError(tmp_path / "tune" / "t1" / "checkpoint.pt")
    assert str(copy.copy(err)) == str(pickle.loads(pickle.dumps(err))) == str(err)  # as Ray copies it

    class Trial:
        path = str(tmp_path / "tune" / "t1")
        error_file = str(tmp_path / "error.txt")

    class Scheduler(StopOnFullDisk, FIFOScheduler):
        pass

    errors = Path(Trial.error_file)
    errors.write_text(
        f"Failure # 1 (occurred at x)\nray::Trainable.train()\nkdseg.errors.DiskFullError: {err}\n"
    )
    assert str(trial_disk_full(Trial())) == str(err)
    with pytest.raises(DiskFullError, match="checkpoint.pt"):
        Scheduler().on_trial_error(None, Trial())
    with errors.open("a") as f:  # a later attempt failed for another reason: that one counts
        f.write("Failure # 2 (occurred at y)\nValueError: bad\n")
    assert trial_disk_full(Trial()) is None
    Scheduler().on_trial_error(None, Trial())  # FIFO's own: nothing
    with errors.open("a") as f:
        f.write("Failure # 3 (occurred at z)\nOSError: [Errno 28] No space left on device: '/x/y.json'\n")
    assert str(trial_disk_full(Trial())) == "no space left on device: /x/y.json"
    with errors.open("a") as f:
        f.write("Failure # 4 (occurred at z)\nsqlite3.OperationalError: database or disk is full\n")
    assert str(trial_disk_full(Trial())) == f"no space left on device: {Trial.path}"
    # Tuner.fit wraps the trial's error in text (TuneError): its path is read from there
    wrapped = RuntimeError(f"Traceback (most recent call last):\n  ...\nkdseg.errors.DiskFullError: {err}\n")
    assert str(_disk_full(wrapped, tmp_path)) == str(err)
    assert (
        str(_disk_full(RuntimeError("database or disk is full"), tmp_path))
        == f"no space left on device: {tmp_path}"
    )
    assert _disk_full(RuntimeError("bad value"), tmp_path) is None


def test_broken_searcher_state_is_set_aside(tmp_path):
    from kdseg.sweep.recovery import set_aside_broken_state

    tune = tmp_path / "tune"
    tune.mkdir()

    good = {"counter": 1}
    (tune / "search_gen_state-2024-01-01.json").write_bytes(pickle.dumps(good))
    (tune / "searcher-state-2024-01-01.pkl").write_bytes(pickle.dumps(good))
    (tune / "search_gen_state-2024-01-02.json").write_bytes(b"")  # a crash mid-write
    (tune / "searcher-state-2024-01-02.pkl").write_bytes(pickle.dumps(good)[:5])
    moved = set_aside_broken_state(tune)
    assert {p.parent for p in moved} == {tmp_path / "broken-state"}  # beside tune/, whose folders are trials
    assert sorted(p.name for p in moved) == [
        "search_gen_state-2024-01-02.json",
        "searcher-state-2024-01-02.pkl",
    ]
    assert sorted(p.name for p in tune.glob("*state-*")) == [
        "search_gen_state-2024-01-01.json",
        "searcher-state-2024-01-01.pkl",
    ]
    (tune / "search_gen_state-2024-01-01.json").unlink()  # one without the other: both go
    set_aside_broken_state(tune)
    assert not list(tune.glob("*state-*"))


def test_experiment_state_cut_short_is_replaced_by_the_drivers_own_copy(tmp_path, monkeypatch):
    """Tune copies its state to the sweep folder non-atomically: a full disk leaves a cut-short
    experiment_state. kdseg resume takes the driver's staged copy (Ray's temp dir) of that session instead."""
    import json

    from kdseg.sweep.recovery import set_aside_broken_state

    session = "2026-01-02_03-04-05"
    tune_dir = tmp_path / "sweep" / "tune"
    tune_dir.mkdir(parents=True)
    (tune_dir / f"experiment_state-{session}.json").write_text('{"trial_data": [["cut sho')
    (tune_dir / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"old": 1}))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "rt"))
    with pytest.raises(KdsegError, match="experiment state is cut short .* cannot be resumed"):
        set_aside_broken_state(
            tune_dir
        )  # no copy of the driver's: refused, not started again over the trials
    staged = tmp_path / "rt" / "ray" / "session_x" / "artifacts" / session / "tune" / "driver_artifacts"
    staged.mkdir(parents=True)
    state = {"trial_data": [], "runner_data": {}, "stats": {}}
    (staged / f"experiment_state-{session}.json").write_text(json.dumps(state))
    (staged / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"new": 1}))
    (staged / f"search_gen_state-{session}.json").write_bytes(pickle.dumps({"gen": 1}))
    moved = set_aside_broken_state(tune_dir)
    assert sorted(p.name for p in moved) == [
        f"experiment_state-{session}.json",
        f"searcher-state-{session}.pkl",
    ]
    assert json.loads((tune_dir / f"experiment_state-{session}.json").read_text()) == state
    assert pickle.loads((tune_dir / f"searcher-state-{session}.pkl").read_bytes()) == {"new": 1}
    assert pickle.loads((tune_dir / f"search_gen_state-{session}.json").read_bytes()) == {"gen": 1}
    assert set_aside_broken_state(tune_dir) == []  # readable now: nothing more to do


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
    from kdseg.sweep.optuna_storage import SecretFreeRDBStorage

    url = f"sqlite:///{tmp_path / 'x.db'}"
    storage = SecretFreeRDBStorage(strip_password(url))
    storage.url = "postgresql://u@h/db"  # what a PostgreSQL storage holds once its password is stripped
    state = storage.__getstate__()
    assert "password" not in pickle.dumps(state).decode("latin-1")


def test_a_storage_pickled_by_an_earlier_kdseg_still_loads(tmp_path):
    """Sweeps started before kdseg.sweep.optuna_storage existed pickled their storage as
    kdseg.sweep.study.SecretFreeRDBStorage; `kdseg resume` must still unpickle it."""
    from kdseg.sweep.optuna_storage import SecretFreeRDBStorage

    storage = SecretFreeRDBStorage(f"sqlite:///{tmp_path / 'x.db'}")
    # protocol 0 names classes as text lines, so the module name can be swapped in place
    old = pickle.dumps(storage, protocol=0).replace(b"kdseg.sweep.optuna_storage", b"kdseg.sweep.study")
    assert b"kdseg.sweep.study" in old
    again = pickle.loads(old)
    assert isinstance(again, SecretFreeRDBStorage) and again.url == storage.url


def test_a_new_study_is_created_atomically(tmp_path):
    """Drivers racing to create the same study on one storage: the storage picks one, the others are refused."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import optuna

    from kdseg.errors import ConfigError
    from kdseg.sweep.optuna_storage import create_new_study, open_storage

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_storage(url)  # the schema first: this test is about the study, not Optuna's tables
    start = threading.Barrier(4)

    def create(_):
        start.wait()
        try:
            create_new_study(url, "s1", ["max", "min"])
        except ConfigError as e:
            return str(e)
        return "created"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(create, range(4)))
    assert outcomes.count("created") == 1, outcomes
    for text in outcomes:
        if text != "created":
            assert text == (
                f"storage '{url}': a study named 's1' exists already; pass --name to start another sweep, "
                f"or resume the existing one"
            )
    study = optuna.load_study(study_name="s1", storage=url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]


def test_the_loser_of_a_study_race_is_refused_and_writes_nothing(tmp_path):
    """Two same-name sweeps in different folders on one shared storage both pass plan_sweep's check; the one
    that creates its study second is refused (exit 2 message, naming the space file) before Ray starts, and
    removes nothing of the winner's."""
    import optuna

    from kdseg.data import write_synth
    from kdseg.errors import ConfigError
    from kdseg.sweep.driver import plan_sweep, run_sweep
    from kdseg.sweep.optuna_storage import create_new_study
    from tests.sweeps import write_space

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    space = write_space(
        tmp_path / "in", write_synth(tmp_path / "data", n=8, size=(32, 32), seed=0), storage=url
    )
    winner = plan_sweep(space, out_root=tmp_path / "a", name="s1")
    loser = plan_sweep(space, out_root=tmp_path / "b", name="s1")  # the check passes for both
    create_new_study(winner.storage_url, winner.name, "max")  # the winner got there first
    with pytest.raises(ConfigError) as e:
        run_sweep(loser)
    assert str(e.value) == (
        f"{space}: storage '{url}': a study named 's1' exists already; pass --name to start another sweep, "
        f"or resume the existing one"
    )
    assert not (tmp_path / "b").exists()  # nothing written, not even --out
    assert optuna.load_study(study_name="s1", storage=url).trials == []  # the winner's study is untouched


def test_a_sweep_that_fails_to_start_leaves_no_study_on_a_shared_storage(tmp_path, monkeypatch):
    """Its study is deleted with its folder, so the same sweep can be started again (no "exists already")."""
    import optuna

    import kdseg.sweep.driver as driver
    from kdseg.data import write_synth
    from tests.sweeps import write_space

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    space = write_space(
        tmp_path / "in", write_synth(tmp_path / "data", n=8, size=(32, 32), seed=0), storage=url
    )
    plan = driver.plan_sweep(space, out_root=tmp_path / "runs", name="s1")

    def no_ray(*_):
        raise RuntimeError("ray would not start")

    monkeypatch.setattr(driver, "_init_ray", no_ray)
    with pytest.raises(RuntimeError, match="ray would not start"):
        driver.run_sweep(plan)
    assert not (tmp_path / "runs").exists()
    assert optuna.get_all_study_names(url) == []
    driver.plan_sweep(space, out_root=tmp_path / "runs", name="s1")  # not refused


def test_offline_imagenet_weights_are_refused_before_anything_starts(tmp_path, monkeypatch):
    """A sweep whose teacher wants `weights: imagenet` on a machine that cannot download them: one message
    naming the space file and the key (exit 2), before Ray starts, nothing written. No network is used."""
    import huggingface_hub
    import segmentation_models_pytorch.encoders as smp_encoders

    import kdseg.sweep.driver as driver
    from kdseg.data import write_synth
    from kdseg.errors import WeightsError
    from tests.sweeps import write_space

    real = huggingface_hub.hf_hub_download

    def offline_download(*args, **kwargs):  # the real client on an empty cache: what an offline machine sees
        return real(*args, **{**kwargs, "local_files_only": True, "cache_dir": str(tmp_path / "hf-cache")})

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline_download)
    teacher = {"arch": "Unet", "encoder": "resnet18", "weights": "imagenet"}
    data = write_synth(tmp_path / "data", n=8, size=(32, 32), seed=0)
    space = write_space(tmp_path / "in", data, base={"teacher": teacher})
    plan = driver.plan_sweep(space, out_root=tmp_path / "runs", name="s1")
    monkeypatch.setattr(driver, "_init_ray", lambda *_: pytest.fail("Ray started"))
    with pytest.raises(WeightsError) as e:
        driver.run_sweep(plan)
    assert e.value.exit_code == 2
    assert str(e.value).startswith(f"{space}: teacher.weights:") and "offline" in str(e.value)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------- kdseg submit: no password shipped

SECRET = "s3cr" + "etPW"


def _project_with_password(root: Path) -> Path:
    """A project whose space file names a PostgreSQL storage with its password in the URL."""
    from tests.sweeps import write_space

    space = write_space(
        root / "experiments",
        root / "scenes",
        base_name="../experiments/base.yaml",
        space_path=root / "search spaces" / "space.yaml",  # a space in a folder name: escaped in the excludes
        storage=f"postgresql://kd:{SECRET}@db.example:5432/kd?sslmode=require",
    )
    (root / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    return space


def test_submit_ships_no_storage_password(tmp_path):
    """The job's upload (the zip Ray builds), entrypoint, runtime_env and metadata hold no password, from the
    space file or from --set; the cluster runs a password-free copy of the space file."""
    import json
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    from kdseg.cluster.submit import plan_job
    from kdseg.sweep.space import load_space

    space = _project_with_password(tmp_path / "proj")
    original = space.read_text()
    plan = plan_job(
        space, out=str(tmp_path / "shared"), overrides=[f"storage=postgresql://kd:{SECRET}@db2/kd"]
    )
    assert SECRET not in json.dumps([plan.entrypoint, plan.runtime_env, plan.metadata])
    assert "--set storage=postgresql://kd@db2/kd" in plan.entrypoint
    assert "search spaces/space.yaml" not in plan.files and plan.space_rel in plan.files
    shipped = plan.working_dir / plan.space_rel
    assert shipped.parent == space.parent and space.read_text() == original  # the user's file is untouched
    assert load_space(shipped).storage == "postgresql://kd@db.example:5432/kd?sslmode=require"
    package = tmp_path / "package.zip"
    create_package(
        str(plan.working_dir), package, include_gitignore=True, excludes=plan.runtime_env["excludes"]
    )
    with zipfile.ZipFile(package) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        assert sorted(names) == sorted(plan.files)
        assert not [n for n in names if SECRET.encode() in z.read(n)]


def test_submit_removes_its_password_free_copy(tmp_path, kdseg):
    """`kdseg submit --dry-run`: the copy it would ship is listed, and gone when the command ends."""
    space = _project_with_password(tmp_path / "proj")
    before = sorted(p.name for p in space.parent.iterdir())
    proc = kdseg("submit", space, "--dry-run", "--address", "http://127.0.0.1:1", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert SECRET not in proc.stdout + proc.stderr
    assert "search spaces/space.kdseg-submit-" in proc.stdout
    assert sorted(p.name for p in space.parent.iterdir()) == before
