"""Reliability end to end, on real sweeps (local Ray, minutes each): a disk that fills up mid-sweep, and two
drivers of one sweep started at the same moment. The pieces are tested without a sweep in test_reliability.py.

The sweeps are tests.sweeps' tiny space with a lightweight teacher, so that a whole sweep (checkpoints
included) fits in a 48 MiB tmpfs: r34's checkpoints with Adam state would need hundreds of MiB of memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.sweeps import KdsegCLI, check_consistent, write_space, write_split_synth

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
N, MAX_T = 4, 3


def small_space(folder: Path, **space) -> Path:
    return write_space(
        folder,
        write_split_synth(folder / "data"),
        base={
            "data": {"image_size": [32, 32]},
            "train": {"batch_size": 4, "max_steps_per_epoch": 2},
            "teacher": {"arch": "lightweight_unet", "width": 0.5},
        },
        num_samples=N,
        max_t=MAX_T,
        **space,
    )


@pytest.fixture
def small_tmpfs():
    """A 48 MiB tmpfs (we are root in this container), unmounted in a finalizer; skipped only where the
    kernel refuses the mount."""
    mnt = Path("/tmp") / f"kdseg-enospc-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True)
    if out.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)  # a process still holds a file: detach
        mnt.rmdir()


def fill(mnt: Path, smallest: int) -> Path:
    """Write a file until the file system is full, down to writes of ``smallest`` bytes; returns it."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            if chunk < smallest:
                break
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == 28, e
    finally:
        os.close(fd)
    return filler


def start(kdseg: KdsegCLI, *args, log: Path, command: tuple[str, ...] | None = None) -> subprocess.Popen:
    """A driver in its own process group, its output (stdout and stderr) into ``log``: no pipe to fill."""
    with log.open("w") as out:
        return kdseg.popen(
            *args, command=command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_until(done, procs: list[subprocess.Popen], what: str, timeout: float = 400) -> None:
    """Until ``done()``, while one of ``procs`` (the sweep's drivers) still runs."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(p.poll() is None for p in procs):
        if done():
            return
        time.sleep(0.3)
    raise AssertionError(
        f"{what}: not within {timeout:.0f}s while a driver ran ({[p.poll() for p in procs]})"
    )


def first_epoch_done(sweep_dir: Path):
    def done() -> bool:
        runs = list((sweep_dir / "tune").glob("*/run/metrics.jsonl")) if sweep_dir.exists() else []
        return any(p.read_text().strip() for p in runs)

    return done


def stop(proc: subprocess.Popen) -> None:
    """Kill a driver this test started (and the local Ray in its process group) if it still runs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("full", id="study-on-the-full-disk-filled-to-the-last-byte"),
        pytest.param("nearly", id="shared-study-small-files-still-fit"),
    ],
)
def test_a_full_disk_stops_the_sweep_and_resume_finishes_it(where, small_tmpfs, tmp_path, kdseg):
    """Mid-sweep the sweep's file system fills up: the driver stops with "no space left on device: PATH"
    (exit 1); once space is freed, `kdseg resume` runs it to completion, every trial completed or stopped,
    leaderboard = Ray trials = Optuna trials, none left RUNNING.

    ``full``: the default storage (optuna.db in the sweep folder) on a disk filled to the last byte, so no
    write at all succeeds. ``nearly``: the study in an SQLite file elsewhere (a shared storage) and the disk
    filled to its last 64 KiB: small files still fit, a checkpoint does not, so the trial fails with ENOSPC
    while Ray can still record the failure; the sweep stops rather than failing the trial, and its Optuna
    trials wait (WAITING, none RUNNING) for the resume.
    """
    import optuna

    storage = f"sqlite:///{tmp_path / 'shared.db'}" if where == "nearly" else None
    space = small_space(tmp_path, storage=storage)
    sweep_dir = small_tmpfs / "s1"
    log = tmp_path / "driver.log"
    proc = start(kdseg, "sweep", space, "--out", small_tmpfs, "--name", "s1", log=log)
    try:
        wait_until(first_epoch_done(sweep_dir), [proc], "a trial's first epoch")
        filler = fill(small_tmpfs, smallest=1 if where == "full" else 1 << 16)
        assert proc.poll() is None, "the sweep ended before the disk was full"
        proc.wait(timeout=600)
    finally:
        stop(proc)
    output = log.read_text()
    assert proc.returncode == 1, output[-4000:]
    assert f"kdseg: error: no space left on device: {small_tmpfs}/" in output, output[-4000:]
    assert not (sweep_dir / "leaderboard.csv").exists()
    if storage is not None:  # the database has room: the driver left no trial RUNNING
        trials = optuna.load_study(study_name="s1", storage=storage).trials
        assert trials and optuna.trial.TrialState.RUNNING not in {t.state for t in trials}
        paused = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
        assert paused and all("kdseg resume continues it" in t.user_attrs["kdseg_paused"] for t in paused)

    filler.unlink()  # space freed
    out = kdseg("resume", sweep_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Failed to restore the run state" not in out.stderr, out.stderr[-3000:]
    rows = check_consistent(sweep_dir, "s1", N, storage)
    assert {r["status"] for r in rows} <= {"completed", "stopped"}, rows  # a full disk failed no trial
    assert all(t.state != optuna.trial.TrialState.WAITING for t in optuna.load_study(
        study_name="s1", storage=storage or f"sqlite:///{sweep_dir / 'optuna.db'}").trials)  # fmt: skip


def test_two_drivers_of_one_sweep_started_together(tmp_path, kdseg):
    """Two `kdseg-sweep` processes, same --name and --out, started at once: one runs the sweep, the other
    exits 2 with a clear message (the claim on the folder, or the folder that exists already) having
    touched nothing; the finished sweep is consistent. `kdseg resume` while the driver runs is refused too."""
    space = small_space(tmp_path)
    runs = tmp_path / "runs"
    sweep_dir = runs / "s1"
    logs = [tmp_path / f"driver{i}.log" for i in range(2)]
    procs = [
        start(kdseg, space, "--out", runs, "--name", "s1", log=log, command=KdsegCLI.kdseg_sweep)
        for log in logs
    ]
    try:
        wait_until((sweep_dir / "sweep.yaml").exists, procs, "the sweep's folder")
        holder = int((sweep_dir / ".driver.lock").read_text().split()[0])
        winner = next(p for p in procs if p.pid == holder)
        resume = kdseg("resume", sweep_dir)  # the driver is alive: refused, nothing changed
        assert winner.poll() is None, "the driver ended before the resume was refused"
        for p in procs:
            p.wait(timeout=900)
    finally:
        for p in procs:
            stop(p)
    assert resume.returncode == 2, resume.stdout[-2000:] + resume.stderr[-2000:]
    assert f"kdseg: error: {sweep_dir}: another kdseg driver (pid {holder} on " in resume.stderr
    assert "is running this sweep" in resume.stderr
    outputs = [log.read_text() for log in logs]
    assert winner.returncode == 0, outputs[procs.index(winner)][-3000:]
    loser = outputs[1 - procs.index(winner)]
    assert procs[1 - procs.index(winner)].returncode == 2, loser[-3000:]
    refusals = (
        f"kdseg: error: {sweep_dir}: another kdseg driver (pid {holder} on ",
        f"kdseg: error: {sweep_dir}: a sweep named 's1' exists already",
    )
    assert any(r in loser for r in refusals), loser[-3000:]
    assert "Traceback" not in loser and "[1/" not in loser, loser[-3000:]  # it started no trial
    check_consistent(sweep_dir, "s1", N)
    assert not (sweep_dir / "orphaned").exists()  # no trial folder was taken for another driver's orphan
    assert sorted(p.name for p in runs.iterdir()) == ["s1"]
