"""Cluster paths: `kdseg submit/status/logs` against a real Ray head, and the docker/ manifests.

The head is started here on 127.0.0.1 (``ray start --head`` with its dashboard, so the Jobs API is
served) on free ports with its own ``--temp-dir`` and token, and stopped by killing exactly the
processes it started: never ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.sweeps import write_space

DOCKER = REPO / "docker"
# Ray's own log-tailing client (ray/dashboard/modules/job/sdk.py) still passes ssl=None to aiohttp.
pytestmark = [
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
    pytest.mark.xdist_group("cluster"),  # one pytest-xdist worker starts the module's Ray head once
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test in CI (CI=true) and skips it elsewhere."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (pip install -e '.[test]' provides it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# ------------------------------------------------------------------------------- the command


def kdseg_here(*args) -> int:
    """The same command line, run in this process; returns its exit status."""
    from kdseg.cli import app as cli

    ns = cli.build_parser().parse_args([str(a) for a in args])
    return cli._run(ns.func, ns)


# ------------------------------------------------------------------------------ a project to ship


def make_project(root: Path, data_root: Path, *, num_samples=3, max_t=2) -> Path:
    """A small project: pyproject marker, experiments/base.yaml, search_spaces/space.yaml, and things
    that must stay behind (outputs, data, a venv, .git, credentials)."""
    path = write_space(
        root / "experiments",
        data_root,
        base={"train": {"batch_size": 8, "max_steps_per_epoch": 2}},
        base_name="../experiments/base.yaml",
        space_path=root / "search_spaces" / "space.yaml",
        num_samples=num_samples,
        max_t=max_t,
    )
    (root / "pyproject.toml").write_text('[project]\nname = "kd-cluster-test"\nversion = "0"\n')
    # must not be shipped
    (root / ".env").write_text("WANDB_API_KEY=do-not-ship\n")
    (root / ".netrc").write_text("machine api.wandb.ai login user password do-not-ship\n")
    (root / "runs" / "old").mkdir(parents=True)
    (root / "runs" / "old" / "leaderboard.csv").write_text("trial_id\n")
    (root / "data").mkdir()
    (root / "data" / "images.bin").write_bytes(b"\0" * 1024)
    (root / "env" / "bin").mkdir(parents=True)
    (root / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    # must be shipped: a Python package with a subpackage named like a data folder
    (root / "helpers" / "data").mkdir(parents=True)
    (root / "helpers" / "__init__.py").write_text("")
    (root / "helpers" / "data" / "__init__.py").write_text("VALUE = 1\n")
    return path


NOT_SHIPPED = (
    ".env",
    ".netrc",
    "runs/old/leaderboard.csv",
    "data/images.bin",
    "env/pyvenv.cfg",
    ".git/config",
)
SHIPPED = (
    "pyproject.toml",
    "experiments/base.yaml",
    "search_spaces/space.yaml",
    "helpers/__init__.py",
    "helpers/data/__init__.py",
)


# -------------------------------------------------------------------------------- unit: planning


def test_plan_ships_project_without_outputs_data_or_credentials(tmp_path):
    from kdseg.cluster.submit import plan_job

    space = make_project(tmp_path / "proj", tmp_path / "scenes")
    plan = plan_job(space, out=str(tmp_path / "shared"), overrides=["sweep.num_samples=4"], env=["A=1"])
    assert plan.working_dir == (tmp_path / "proj").resolve()
    assert plan.space_rel == "search_spaces/space.yaml" and plan.name == "space"
    assert plan.files is not None
    for f in SHIPPED:
        assert f in plan.files, f
    for f in NOT_SHIPPED:
        assert f not in plan.files, f
    assert plan.entrypoint.startswith("kdseg-sweep search_spaces/space.yaml --out ")
    assert str((tmp_path / "shared").resolve()) in plan.entrypoint
    assert "--address auto" in plan.entrypoint and "--set sweep.num_samples=4" in plan.entrypoint
    assert plan.runtime_env["env_vars"]["A"] == "1"
    # trial actors on the cluster wait long enough for a finished trial's teardown before reuse
    assert float(plan.runtime_env["env_vars"]["TUNE_FUNCTION_THREAD_TIMEOUT_S"]) >= 30
    assert plan.metadata == {
        "kdseg_sweep": "space",
        "kdseg_out": str(tmp_path / "shared"),
        "kdseg_space": plan.space_rel,
    }


def test_plan_defaults_to_cluster_storage_and_refuses_what_cannot_ship(tmp_path):
    from kdseg.cluster.jobs import normalize_address
    from kdseg.cluster.submit import CLUSTER_OUT, plan_job
    from kdseg.errors import ConfigError

    space = make_project(tmp_path / "proj", tmp_path / "scenes")
    plan = plan_job(space, name="n1")
    assert f'--out "{CLUSTER_OUT}"' in plan.entrypoint and "--name n1" in plan.entrypoint

    # the base config must travel with the space file
    with pytest.raises(ConfigError, match="outside the folder shipped"):
        plan_job(space, working_dir=tmp_path / "proj" / "search_spaces")
    # a space file dropped by an ignore file would never reach the cluster
    (tmp_path / "proj" / ".rayignore").write_text("search_spaces/\n")
    with pytest.raises(ConfigError, match="would not be shipped"):
        plan_job(space)
    # so would half of a Python package (an unanchored data/ in .gitignore)
    (tmp_path / "proj" / ".rayignore").write_text("data/\n")
    with pytest.raises(ConfigError, match="helpers/data/__init__.py"):
        plan_job(space)
    (tmp_path / "proj" / ".rayignore").unlink()

    # bad input is refused before anything is sent
    with pytest.raises(ConfigError, match="sweep.asha"):
        plan_job(space, overrides=["sweep.asha.grace_period=9"])
    with pytest.raises(ConfigError, match="not found"):
        plan_job(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="--name"):
        plan_job(space, name="a/b")

    assert normalize_address("127.0.0.1:8265") == "http://127.0.0.1:8265"
    assert normalize_address("http://h:8265/") == "http://h:8265"
    with pytest.raises(ConfigError, match="Ray Client"):
        normalize_address("ray://h:10001")


@pytest.mark.parametrize("uri", ["s3://bucket/runs", "gs://bucket/runs", "file:///shared/runs"])
def test_a_uri_as_sweep_root_is_refused_before_anything_is_written(tmp_path, synth_dir, kdseg, uri):
    """kdseg writes the sweep folder with file operations from every node: --out is a (shared) path."""
    from kdseg.cluster.submit import plan_job
    from kdseg.errors import ConfigError

    space = make_project(tmp_path / "proj", synth_dir)
    with pytest.raises(ConfigError, match="--out .*: a URI; .*mounts") as e:
        plan_job(space, out=uri)
    assert uri in str(e.value) and e.value.exit_code == 2
    out = kdseg("sweep", space, "--out", uri, "--name", "u", cwd=tmp_path)
    assert out.returncode == 2 and f"--out {uri}: a URI" in out.stderr, out.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no "s3:" folder, nothing written


def test_submit_to_nothing_is_a_clear_error():
    from kdseg.cluster.jobs import connect
    from kdseg.errors import KdsegError

    port = _free_ports(1)[0]
    with pytest.raises(KdsegError, match="cannot reach the Ray Jobs API") as e:
        connect(f"127.0.0.1:{port}")
    assert f"http://127.0.0.1:{port}" in str(e.value) and e.value.exit_code == 2


# ---------------------------------------------------------------------------- a real Ray head


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class RayHead:
    def __init__(self, temp_dir: Path, address: str, env: dict[str, str], pgid: int):
        self.temp_dir, self.address, self.env, self.pgid = temp_dir, address, env, pgid

    def processes(self):
        """Every process this head started: its process group, anything naming its temp dir, their children."""
        import psutil

        found = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                mine = os.getpgid(p.pid) == self.pgid or str(self.temp_dir) in " ".join(
                    p.info["cmdline"] or []
                )
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
            if mine and p.pid != os.getpid():
                found[p.pid] = p
        for p in list(found.values()):
            try:
                for c in p.children(recursive=True):
                    found.setdefault(c.pid, c)
            except psutil.Error:
                pass
        return list(found.values())

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)

    def uploaded(self) -> list[Path]:
        """The working_dir packages the head unpacked for jobs."""
        return sorted(
            p
            for p in self.temp_dir.glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*")
            if p.is_dir()
        )


def ray_node_env(token_file: Path) -> dict[str, str]:
    """The environment of a Ray node the tests start: token auth from ``token_file``, no usage stats, W&B
    offline, and no inherited ``RAY_ADDRESS`` (it must not join another cluster)."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "offline",
    }
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with the dashboard (Jobs API), 2 CPUs, its own temp dir and token."""
    temp_dir = Path(tempfile.mkdtemp(prefix="kdray", dir="/tmp"))  # short: Ray's socket paths are limited
    token_file = temp_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    p = _free_ports(10)
    env = ray_node_env(token_file)
    cmd = [
        "ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", p[0],
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", p[1],
        "--dashboard-agent-listen-port", p[2], "--dashboard-agent-grpc-port", p[3],
        "--runtime-env-agent-port", p[4], "--metrics-export-port", p[5], "--node-manager-port", p[6],
        "--object-manager-port", p[7], "--ray-client-server-port", p[8],
        "--temp-dir", temp_dir, "--num-cpus", "2", "--num-gpus", "0",
        "--object-store-memory", str(300 * 1024**2), "--disable-usage-stats",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # every head process in one process group: stopped precisely below
    )
    head = RayHead(temp_dir, f"http://127.0.0.1:{p[1]}", env, os.getpgid(proc.pid))
    try:
        log, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            pytest.fail(f"ray start --head failed ({proc.returncode}):\n{log[-3000:]}")
        _wait_for_jobs_api(head)
        yield head
    finally:
        if proc.poll() is None:
            proc.kill()
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(head: RayHead, timeout: float = 90) -> None:
    """The dashboard answers before its agent can take jobs; wait for a trivial job to be accepted."""
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {Path(head.env['RAY_AUTH_TOKEN_PATH']).read_text()}"}
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = JobSubmissionClient(head.address, headers=headers)
            job = client.submit_job(entrypoint="true")
            while not client.get_job_status(job).is_terminal():
                time.sleep(0.3)
            return
        except Exception as e:  # connection refused / "No available agent" while the head starts
            last = e
            time.sleep(1)
    pytest.fail(f"the Ray Jobs API at {head.address} never accepted a job: {last}")


@pytest.mark.slow
def test_submit_runs_sweep_on_cluster(ray_head, tmp_path, synth_dir, kdseg):
    space = make_project(tmp_path / "proj", synth_dir, num_samples=2, max_t=2)
    shared = tmp_path / "shared"
    job = "kdseg-e2e-" + secrets.token_hex(3)
    started = time.perf_counter()
    out = kdseg(
        "submit", space, "--address", ray_head.address, "--name", "e2e", "--out", shared, "--job-id", job,
        env=ray_head.env,
    )  # fmt: skip
    took = time.perf_counter() - started
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert f"job {job}: SUCCEEDED" in out.stderr
    assert "best config:" in out.stdout and "leaderboard" in out.stdout  # the sweep's own output, streamed

    # the leaderboard and every trial's folder landed in the shared --out, not in the job's working dir
    sweep_dir = shared / "e2e"
    with open(sweep_dir / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"completed", "stopped"}
    for r in rows:
        assert (sweep_dir / "tune" / r["trial_id"] / "run" / "metrics.jsonl").exists()
    assert (sweep_dir / "best_config.yaml").exists() and (sweep_dir / "optuna.db").exists()

    # what the cluster received: the project, without outputs, data, venvs, .git or credentials
    pkgs = [p for p in ray_head.uploaded() if (p / "search_spaces" / "space.yaml").exists()]
    assert len(pkgs) == 1, ray_head.uploaded()
    for f in SHIPPED:
        assert (pkgs[0] / f).exists(), f
    for f in NOT_SHIPPED:
        assert not (pkgs[0] / f).exists(), f

    st = kdseg("status", job, "--address", ray_head.address, env=ray_head.env, timeout=120)
    assert st.returncode == 0 and "SUCCEEDED" in st.stdout and str(sweep_dir / "leaderboard.csv") in st.stdout
    logs = kdseg("logs", job, "--address", ray_head.address, env=ray_head.env, timeout=120)
    assert logs.returncode == 0 and "best config:" in logs.stdout
    print(f"submitted sweep: {took:.0f}s")


@pytest.mark.e2e  # minutes-long scenario, run with -m e2e (keeps the default suite inside CI time)
@pytest.mark.slow
def test_failing_job_exits_nonzero(ray_head, tmp_path, monkeypatch, capsys, kdseg):
    # valid here, fails on the cluster: the dataset folder does not exist there
    space = make_project(tmp_path / "proj", tmp_path / "no-such-dataset")
    address = ray_head.address
    job = "kdseg-fail-" + secrets.token_hex(3)
    out = kdseg(
        "submit", space, "--address", address, "--name", "again", "--no-wait", "--job-id", job,
        env=ray_head.env,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == job, out.stderr

    # meanwhile, the same failure followed to the end: the sweep's own exit status (bad input: 2)
    out = kdseg("submit", space, "--address", address, "--out", tmp_path / "shared", env=ray_head.env)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAILED" in out.stderr and "no-such-dataset" in out.stdout + out.stderr
    assert not (tmp_path / "shared" / "space").exists()  # nothing half-written

    # status and logs, in this process (the commands themselves ran as processes in the test above)
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(key, ray_head.env[key])
    assert kdseg_here("status", job, "--address", address, "--wait") == 2
    assert "FAILED" in capsys.readouterr().out
    assert kdseg_here("logs", job, "--address", address, "--follow") == 2
    assert "no-such-dataset" in capsys.readouterr().out
    assert kdseg_here("status", "kdseg-no-such-job", "--address", address) == 2
    assert "no job" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- docker/


def test_dockerfile_passes_hadolint():
    hadolint = need_tool("hadolint")
    out = subprocess.run(
        [hadolint, "--failure-threshold", "error", "--format", "tty", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_layout():
    text = (DOCKER / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms), froms  # pinned bases
    assert any("cuda" in f and "pytorch" in f for f in froms), froms  # a CUDA PyTorch runtime
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), users  # runs as a non-root user
    # dependencies are installed from pyproject.toml before the source is copied (a cached layer)
    copies = re.findall(r"^COPY\s.*$", text, re.M)
    deps = next(i for i, c in enumerate(copies) if "pyproject.toml" in c)
    code = next(i for i, c in enumerate(copies) if re.search(r"\skdseg/?\s", c))
    assert deps < code, copies
    for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, re.M):
        for item in src.split():
            assert (REPO / item).exists(), f"Dockerfile copies {item}, which does not exist"
    assert (REPO / ".dockerignore").exists() or (DOCKER / "Dockerfile.dockerignore").exists()


def _commands_exist(command: str, where: str) -> None:
    """kdseg and ray subcommands named in a manifest exist; repository files it names exist."""
    from ray.scripts.scripts import cli as ray_cli

    from kdseg.cli import app as cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    start = r"(?:^|(?<=[\s;&|(`'\"]))"
    for m in re.finditer(start + r"kdseg(-sweep)?[ \t]+([a-z][\w-]*)", command, re.M):
        if m.group(1) is None:
            assert m.group(2) in sub.choices, f"{where}: `kdseg {m.group(2)}` is not a kdseg command"
    for m in re.finditer(start + r"ray[ \t]+([a-z][a-z-]*)", command, re.M):
        assert m.group(1) in ray_cli.commands, f"{where}: `ray {m.group(1)}` is not a ray command"
    for path in re.findall(
        r"\b((?:search_spaces|experiments|docker)/[\w./-]+\.(?:ya?ml|sbatch|sh|txt))", command
    ):
        assert (REPO / path).exists(), f"{where}: {path} does not exist"


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_compose_manifest():
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = doc["services"]
    head, worker, db = services["ray-head"], services["ray-worker"], services["postgres"]
    assert any(str(p).endswith("8265:8265") for p in head["ports"])
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]
    assert db["image"].startswith("postgres:") and "healthcheck" in db
    for svc in (head, worker):
        build = svc.get("build")
        if build:
            ctx = (DOCKER / build["context"]).resolve()
            assert (ctx / build["dockerfile"]).exists()
        mounts = [str(v).split(":")[1] for v in svc["volumes"]]
        assert "/runs" in mounts  # the shared result storage, at the same path on every node
        assert svc["environment"]["KDSEG_RUNS"] == "/runs"
    assert set(doc["volumes"]) >= {"runs"}
    for s in _strings(doc):
        _commands_exist(s, "compose.yaml")


def test_ray_cluster_launcher_manifest():
    import json

    import jsonschema
    import ray.autoscaler

    doc = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(doc, schema)  # the launcher's own schema for cluster configs
    assert "--gpus all" in doc["docker"]["worker_run_options"]
    assert any("/runs" in o for o in doc["docker"]["run_options"])
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    gpu_types = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    for s in _strings(doc):
        _commands_exist(s, "ray-cluster.yaml")


def test_kuberay_rayjob_manifest():
    docs = [d for d in yaml.safe_load_all((DOCKER / "rayjob.yaml").read_text()) if d]
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert "kdseg-sweep" in job["spec"]["entrypoint"]
    spec = job["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"]
    workers = spec["workerGroupSpecs"]
    assert any(
        str(c["resources"]["limits"].get("nvidia.com/gpu", 0)) != "0"
        for w in workers
        for c in w["template"]["spec"]["containers"]
    )
    for d in docs:
        for s in _strings(d):
            _commands_exist(s, "rayjob.yaml")


def test_slurm_script():
    path = DOCKER / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    shellcheck = need_tool("shellcheck")
    out = subprocess.run([shellcheck, "-s", "bash", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = path.read_text()
    assert "#SBATCH" in text and "ray start --head" in text and "kdseg-sweep" in text and "ray stop" in text
    commands = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    _commands_exist(commands, "slurm.sbatch")


def test_docker_readme_covers_every_path():
    text = (DOCKER / "README.md").read_text()
    for needle in ("compose.yaml up", "kdseg submit", "kubectl apply", "ray up", "sbatch", "kdseg resume"):
        assert needle in text, needle
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        _commands_exist(block, "docker/README.md")
