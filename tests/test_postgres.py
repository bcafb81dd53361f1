"""Optuna on a real PostgreSQL server: the storage a cluster's sweeps share.

The test starts its own throw-away server (``initdb`` + ``pg_ctl`` from the Debian package
``postgresql``, which .ci/run installs) on a free loopback port, with password authentication;
the password travels in ``PGPASSWORD``, never in the storage URL or the sweep folder. Two sweeps
write to one fresh database at once under different study names, and the ``optuna`` command-line
tool reads both studies back.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import optuna
import pytest
import yaml

from kdseg.sweep.ranking import read_leaderboard_csv
from tests.sweeps import write_space

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_bin() -> Path | None:
    """The folder of pg_ctl/initdb: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class Postgres:
    def __init__(self, bin_dir: Path, folder: Path, port: int, password: str, user: str | None):
        self.bin_dir, self.folder, self.port, self.password, self.user = bin_dir, folder, port, password, user
        self.data = folder / "data"

    def run(self, tool: str, *args: str, **kw):
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            user=self.user,  # initdb and postgres refuse to run as root
            capture_output=True,
            text=True,
            timeout=120,
            **kw,
        )

    def url(self, db: str = "kdseg") -> str:
        return f"postgresql://kdseg@127.0.0.1:{self.port}/{db}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, "WANDB_MODE": "offline"}

    def createdb(self, name: str) -> str:
        out = self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "kdseg", name, env=self.env)
        assert out.returncode == 0, out.stderr
        return self.url(name)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def postgres():
    bin_dir = _pg_bin()
    if bin_dir is None:
        msg = "PostgreSQL server binaries not found (Debian: apt-get install postgresql; .ci/run does it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    user = None
    folder = Path(tempfile.mkdtemp(prefix="kdpg", dir="/tmp"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, and there is no 'postgres' user to run the server as")
        user = "postgres"
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    password = secrets.token_hex(12)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if user:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
    pg = Postgres(bin_dir, folder, _free_port(), password, user)
    out = pg.run(
        "initdb", "-D", str(pg.data), "-U", "kdseg", f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
        "--auth-local=trust", "-E", "UTF8", "--no-sync",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    opts = (
        f"-p {pg.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    out = pg.run("pg_ctl", "-D", str(pg.data), "-o", opts, "-l", str(folder / "server.log"), "-w", "start")
    assert out.returncode == 0, out.stdout + out.stderr + (folder / "server.log").read_text()
    try:
        yield pg
    finally:
        pg.run("pg_ctl", "-D", str(pg.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def postgres_space(folder: Path, synth_dir: Path, storage: str) -> Path:
    return write_space(
        folder,
        synth_dir,
        base={"train": {"batch_size": 8, "max_steps_per_epoch": 2}},
        num_samples=2,
        max_t=1,
        storage=storage,
        max_concurrent=1,  # one trial actor, reused: these tests are about the storage, not concurrency
    )


@pytest.mark.e2e  # minutes-long scenario, run with -m e2e (keeps the default suite inside CI time)
@pytest.mark.slow
def test_two_sweeps_share_one_database(postgres, tmp_path, synth_dir, kdseg):
    url = postgres.createdb("sweeps")  # fresh: both sweeps race to create Optuna's tables
    space = postgres_space(tmp_path, synth_dir, url)
    runs = tmp_path / "runs"
    procs = {
        name: kdseg.popen("sweep", space, "--out", runs, "--name", name, env=postgres.env)
        for name in ("alpha", "beta")
    }
    outputs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outputs[name][-4000:]}"

    authed = url.replace("kdseg@", f"kdseg:{postgres.password}@")
    storage = optuna.storages.RDBStorage(authed.replace("postgresql://", "postgresql+psycopg://"))
    ray_ids = {}
    for name in ("alpha", "beta"):
        sweep_dir = runs / name
        assert not (sweep_dir / "optuna.db").exists()  # the study lives in PostgreSQL
        assert postgres.password not in (sweep_dir / "sweep.yaml").read_text()
        rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        assert len(rows) == len(trials) == 2
        ids = {t.user_attrs["ray_trial_id"] for t in trials}
        assert ids == {r["trial_id"] for r in rows}  # each study holds exactly its own sweep's trials
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        ray_ids[name] = ids
    assert not ray_ids["alpha"] & ray_ids["beta"]

    # the optuna command-line tool reads both studies back
    optuna_cli = [sys.executable, "-m", "optuna"] if shutil.which("optuna") is None else ["optuna"]
    out = subprocess.run(
        [*optuna_cli, "study-names", "--storage", url],
        env=postgres.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert {"alpha", "beta"} <= set(out.stdout.split())
    for name in ("alpha", "beta"):
        out = subprocess.run(
            [*optuna_cli, "trials", "--study-name", name, "--storage", url, "-f", "json"],
            env=postgres.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert len(listed) == 2 and {t["state"] for t in listed} == {"COMPLETE"}

    # the same study name again is refused before anything runs
    again = kdseg("sweep", space, "--out", tmp_path / "elsewhere", "--name", "alpha", env=postgres.env)
    assert again.returncode == 2 and "a study named 'alpha' exists already" in again.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_storage_errors_and_the_schema_race(postgres, monkeypatch):
    from kdseg.errors import ConfigError
    from kdseg.sweep.optuna_storage import open_storage

    monkeypatch.delenv("PGPASSWORD", raising=False)
    # a wrong password: refused at once (one attempt: only the schema race is retried), and the
    # message names the storage without the secret
    study = sys.modules[open_storage.__module__]
    real, attempts = study.SecretFreeRDBStorage, []
    monkeypatch.setattr(study, "SecretFreeRDBStorage", lambda *a, **k: attempts.append(a) or real(*a, **k))
    with pytest.raises(ConfigError, match="password authentication failed") as e:
        open_storage(postgres.url().replace("kdseg@", "kdseg:wrong-secret@"))
    assert "wrong-secret" not in str(e.value) and "kdseg:***@127.0.0.1" in str(e.value)
    assert len(attempts) == 1
    monkeypatch.setattr(study, "SecretFreeRDBStorage", real)
    # nothing listening
    with pytest.raises(ConfigError, match="cannot open"):
        open_storage(f"postgresql://kdseg@127.0.0.1:{_free_port()}/kdseg")

    # sweeps opening a fresh database at the same moment race to create Optuna's tables; all succeed
    url = postgres.createdb("race").replace("kdseg@", f"kdseg:{postgres.password}@")
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_and_create(i: int) -> None:
        barrier.wait()
        try:
            optuna.create_study(study_name=f"s{i}", storage=open_storage(url))
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=open_and_create, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert sorted(optuna.get_all_study_names(storage=open_storage(url))) == [f"s{i}" for i in range(6)]


def _holds(folder: Path, secret: bytes) -> list[str]:
    """Files under ``folder`` whose bytes contain ``secret`` (sockets and vanished files skipped)."""
    hits = []
    for p in folder.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and secret in p.read_bytes():
                hits.append(str(p))
        except OSError:
            pass
    return hits


@pytest.mark.slow
def test_password_never_touches_disk(postgres, tmp_path, synth_dir, kdseg):
    """A password in the storage URL (``?password=`` form) runs the sweep and resumes it (given again
    with --storage, or from PGPASSWORD), and is found nowhere: not in the sweep folder (sweep.yaml,
    Ray's tuner.pkl and searcher state), Ray's session folder, or anything printed."""
    url = postgres.createdb("secret")
    secret = postgres.password
    space = postgres_space(tmp_path, synth_dir, f"{url}?password={secret}")
    runs = tmp_path / "runs"
    ray_tmp = Path(tempfile.mkdtemp(prefix="kr", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {k: v for k, v in postgres.env.items() if k != "PGPASSWORD"}
    env.update(RAY_TMPDIR=str(ray_tmp), HOME=str(tmp_path))  # no ~/.pgpass either
    try:
        outputs = []

        def run(*args, env=env) -> subprocess.CompletedProcess:
            out = kdseg(*args, env=env)
            outputs.append(out.stdout + out.stderr)
            return out

        first = run("sweep", space, "--out", runs, "--name", "pw")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        sweep_dir = runs / "pw"
        assert (sweep_dir / "tune" / "tuner.pkl").exists()
        assert list((sweep_dir / "tune").glob("searcher-state-*.pkl"))

        # resume without any password: refused before Ray starts, saying where the password comes from
        bare = run("resume", sweep_dir)
        assert bare.returncode == 2, bare.stderr[-3000:]
        assert "PGPASSWORD" in bare.stderr and "--storage" in bare.stderr
        # the full URL given again (userinfo form this time), then PGPASSWORD alone
        authed = url.replace("kdseg@", f"kdseg:{secret}@")
        again = run("resume", sweep_dir, "--storage", authed)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        from_env = run("resume", sweep_dir, env={**env, "PGPASSWORD": secret})
        assert from_env.returncode == 0, from_env.stdout[-3000:] + from_env.stderr[-3000:]
        # another database's URL is not this sweep's storage
        other = run("resume", sweep_dir, "--storage", authed.replace("/secret", "/other"))
        assert other.returncode == 2 and "not the storage of this sweep" in other.stderr

        rows = read_leaderboard_csv(sweep_dir / "leaderboard.csv")
        storage = optuna.storages.RDBStorage(authed.replace("postgresql://", "postgresql+psycopg://"))
        trials = optuna.load_study(study_name="pw", storage=storage).get_trials()
        assert len(rows) == len(trials) == 2
        assert {t.user_attrs["ray_trial_id"] for t in trials} == {r["trial_id"] for r in rows}

        spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
        assert spec["storage"] == spec["storage_url"] == url  # the URL without its password
        assert not _holds(sweep_dir, secret.encode()), "password written under the sweep folder"
        assert list(ray_tmp.rglob("session_*")), "Ray's session folder is not where the test looks"
        assert not _holds(ray_tmp, secret.encode()), "password written under Ray's session folder"
        assert not [o for o in outputs if secret in o], "password printed"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
