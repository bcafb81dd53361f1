"""A sweep on a two-node Ray cluster: a head and a worker node on 127.0.0.1, submitted with ``kdseg submit``.

Each node is started here with ``ray start`` (the worker with ``--address``), its own short ``--temp-dir``,
its own ports, one CPU and a custom resource that names it (``kdseg_head``, ``kdseg_worker``), and is
stopped by killing exactly the processes it started (never ``ray stop``). Each trial is a Ray Train job of
2 workers x 1 CPU (``resources_per_trial.workers``): no node holds both, so every trial spans both nodes
(DDP over gloo between them); each result names the nodes its workers ran on (``worker_nodes``), which the
test maps to the nodes by their custom resources. (One-process trials are not placed deterministically:
Tune hands a pending trial to a warm actor on the head before a new one starts on the other node.)

The sweep folder is a local path both nodes see (one host: the shared filesystem a real cluster needs);
the Train runs' checkpoints land in it. The job's driver is killed (SIGKILL, by the pid its sweep lock
names) once Ray Train has registered a first epoch's checkpoint and Tune has recorded a trial's final
epoch, which has no checkpoint (a sweep trial skips the last full one), while its Train run winds down;
``kdseg resume`` finishes the sweep from this machine, joining the cluster with ``--address``: the
interrupted trial's Train run restores from its last registered checkpoint and trains the epochs after it
again. Tune's ``result.json`` logs every report it received, over all attempts (as for one-process trials
in test_faults.py), so it lists those epochs twice; kdseg's records (``run/metrics.jsonl``, the leaderboard,
the Optuna trial's values) hold each epoch once.

Minutes on a loaded 2-core machine: marked ``multinode``, deselected by default (``addopts`` in
pyproject.toml); CI runs it with ``pytest -m multinode``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.sweeps import check_consistent, study_trials
from tests.test_cluster import RayHead, _free_ports, _wait_for_jobs_api, make_project, ray_node_env

pytestmark = [
    pytest.mark.multinode,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]

MAX_T = 2  # each trial's epochs; the last has no full checkpoint (a sweep trial skips it)


def _ray_start(args: list, temp_dir: Path, env: dict[str, str]) -> RayHead:
    """``ray start ARGS`` in a process group of its own; the node, with what stops it (RayHead.stop)."""
    proc = subprocess.Popen(
        ["ray", "start", *map(str, args), "--temp-dir", str(temp_dir), "--disable-usage-stats"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    node = RayHead(temp_dir, "", env, os.getpgid(proc.pid))
    try:
        log, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        node.stop()
        raise
    if proc.returncode != 0:
        node.stop()
        pytest.fail(f"ray start {' '.join(map(str, args[:2]))} failed ({proc.returncode}):\n{log[-3000:]}")
    return node


def _agent_ports(p: list[int]) -> list:
    return [
        "--node-manager-port", p[0], "--object-manager-port", p[1], "--metrics-export-port", p[2],
        "--dashboard-agent-listen-port", p[3], "--dashboard-agent-grpc-port", p[4],
        "--runtime-env-agent-port", p[5],
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    """A head (dashboard: Jobs API) and a worker node on 127.0.0.1, one CPU each, one token."""
    head_dir = Path(tempfile.mkdtemp(prefix="kdmh", dir="/tmp"))  # short: Ray's socket paths are limited
    worker_dir = Path(tempfile.mkdtemp(prefix="kdmw", dir="/tmp"))
    token_file = head_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = ray_node_env(token_file)
    p = _free_ports(17)
    gcs = f"127.0.0.1:{p[0]}"
    nodes: list[RayHead] = []
    try:
        head = _ray_start(
            [
                "--head", "--node-ip-address", "127.0.0.1", "--port", p[0],
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", p[1],
                "--ray-client-server-port", p[2], *_agent_ports(p[3:9]),
                "--num-cpus", 1, "--num-gpus", 0, "--resources", json.dumps({"kdseg_head": 1}),
                "--object-store-memory", 200 * 1024**2,
            ],
            head_dir,
            env,
        )  # fmt: skip
        head.address = f"http://127.0.0.1:{p[1]}"
        nodes.append(head)
        nodes.append(
            _ray_start(
                [
                    "--address", gcs, "--node-ip-address", "127.0.0.1", *_agent_ports(p[9:15]),
                    "--num-cpus", 1, "--num-gpus", 0, "--resources", json.dumps({"kdseg_worker": 1}),
                    "--object-store-memory", 200 * 1024**2,
                ],
                worker_dir,
                env,
            )
        )  # fmt: skip
        _wait_for_jobs_api(head)
        yield head, gcs, _node_ids(gcs, env)
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(worker_dir, ignore_errors=True)


def _node_ids(gcs: str, env: dict[str, str], timeout: float = 90) -> dict[str, str]:
    """``{"kdseg_head": node id, "kdseg_worker": node id}`` once both nodes have joined."""
    code = (
        f"import json, ray; ray.init(address={gcs!r}, logging_level='ERROR'); "
        "print(json.dumps({r: n['NodeID'] for n in ray.nodes() if n['Alive'] "
        "for r in n['Resources'] if r.startswith('kdseg_')}))"
    )
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        if out.returncode == 0:
            found = json.loads(out.stdout.strip().splitlines()[-1])
            if len(found) == 2:
                return found
        time.sleep(2)
    pytest.fail(f"the worker node never joined the cluster at {gcs}: {found}")


def _driver(head: RayHead, sweep_dir: Path):
    """The job's driver: the pid its sweep lock names (``kdseg-sweep`` itself, not the job's shell),
    checked to be one of the head's processes."""
    pid = int((sweep_dir / ".driver.lock").read_text().split()[0])
    return next((p for p in head.processes() if p.pid == pid), None)


def _committed(sweep_dir: Path) -> dict[str, int]:
    """Each trial's last epoch whose checkpoint Ray Train has registered (its run snapshot's latest): what
    a restarted trial resumes after. (An epoch reported but not yet registered, a window of Train's ~2 s
    poll, and a final epoch, which has no checkpoint, are trained again after a crash.)"""
    out = {}
    for snap in (sweep_dir / "tune").glob("*/train/checkpoint_manager_snapshot.json"):
        try:
            out[snap.parent.parent.name] = json.loads(snap.read_text())["latest_checkpoint_result"][
                "metrics"
            ]["epoch"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return out


def _reported(sweep_dir: Path) -> dict[str, list[dict]]:
    """Every result Tune has logged per trial (its ``result.json``; a line being written is skipped)."""
    out = {}
    for path in (sweep_dir / "tune").glob("*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        out[path.parent.name] = rows
    return out


def _attempts(epochs: list[int]) -> list[list[int]]:
    """``epochs`` cut into runs of consecutive epochs: one per attempt that reported (a restart goes back)."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return runs


def test_sweep_on_two_nodes_submitted_killed_and_resumed(cluster, tmp_path, synth_dir, kdseg):
    import yaml

    head, gcs, node_ids = cluster
    space = make_project(tmp_path / "proj", synth_dir, num_samples=2, max_t=MAX_T)
    doc = yaml.safe_load(space.read_text())
    doc["sweep"].update(resources_per_trial={"workers": 2, "cpu": 1}, max_concurrent=None)
    space.write_text(yaml.safe_dump(doc))
    shared = tmp_path / "shared"  # both nodes see it: one host
    name, job = "mn", "kdseg-mn-" + secrets.token_hex(3)
    out = kdseg(
        "submit", space, "--address", head.address, "--name", name, "--out", shared, "--job-id", job,
        "--no-wait", env=head.env,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == job, out.stdout[-2000:] + out.stderr[-2000:]
    sweep_dir = shared / name

    # the job's driver: killed once an epoch is checkpointed and Tune has a trial's final epoch (not
    # checkpointed), before the sweep is done: most often while that trial's Train run is still ending
    deadline = time.monotonic() + 600
    while not (
        sweep_dir.exists()
        and _committed(sweep_dir)
        and any(x.get("epoch") == MAX_T for rows in _reported(sweep_dir).values() for x in rows)
    ):
        assert time.monotonic() < deadline, "no trial finished its epochs within 10 minutes"
        assert not (sweep_dir / "leaderboard.csv").exists()
        time.sleep(0.2)
    driver = _driver(head, sweep_dir)
    assert driver is not None, "the job's driver process was not found among the head's processes"
    os.kill(driver.pid, signal.SIGKILL)
    st = kdseg("status", job, "--address", head.address, "--wait", env=head.env, timeout=300)
    assert "FAILED" in st.stdout, st.stdout + st.stderr
    assert not (sweep_dir / "leaderboard.csv").exists()
    committed = _committed(sweep_dir)  # what each interrupted Train run can restore from

    # resumed from this machine, joining the cluster: trials again scheduled on its nodes
    res = kdseg("resume", sweep_dir, "--address", gcs, env=head.env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = check_consistent(sweep_dir, name, 2)  # leaderboard = trial folders = Optuna trials, none RUNNING
    assert {r["status"] for r in rows} <= {"completed", "stopped"}
    assert (sweep_dir / "best_config.yaml").exists()

    both = ",".join(sorted(node_ids.values()))
    values = {t.user_attrs["ray_trial_id"]: t.intermediate_values for t in study_trials(sweep_dir, name)}
    every = {r["trial_id"]: list(range(1, r["epochs"] + 1)) for r in rows}
    for r in rows:
        trial = sweep_dir / "tune" / r["trial_id"]
        results = [json.loads(x) for x in (trial / "result.json").read_text().splitlines()]
        # kdseg's records: each epoch once (metrics.jsonl; Optuna's values, their step the epoch)
        lines = (trial / "run" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == every[r["trial_id"]]
        assert json.loads(lines[-1])["val_miou"] == pytest.approx(r["val_miou"])  # the leaderboard's
        if not r["control"]:  # a searched trial's values (a no-KD control is added to the study at the end)
            assert sorted(values[r["trial_id"]]) == every[r["trial_id"]]
        # Tune's log: every epoch, from 1; a resumed attempt goes on after its last registered checkpoint
        # (not from scratch), repeating only the epochs after it (none lost)
        runs = _attempts([x["epoch"] for x in results])
        assert runs[0][0] == 1 and runs[-1][-1] == r["epochs"] and len(runs) <= 2, (runs, committed)
        if len(runs) == 2:
            assert committed.get(r["trial_id"], 0) + 1 <= runs[1][0] <= runs[0][-1] + 1, (runs, committed)
        assert {x["worker_nodes"] for x in results} == {both}, (results, node_ids)  # on both nodes
        assert {x["workers"] for x in results} == {2}
        assert (trial / "run" / "student.pt").exists()
        assert list((trial / "train").glob("checkpoint_*/metrics.jsonl")), "no checkpoint collected"
