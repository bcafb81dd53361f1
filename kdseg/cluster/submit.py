"""Run a sweep on a Ray cluster as a Ray job: ``kdseg submit``, ``kdseg status``, ``kdseg logs``.

``kdseg submit SPACE.yaml --address http://HEAD:8265`` validates the space file here, then submits a
job through the Ray Jobs API (:class:`ray.job_submission.JobSubmissionClient`, served by the head's
dashboard; needs ``ray[default]``):

- the **runtime_env** ships the project: the nearest folder above the space file holding
  ``pyproject.toml``, ``setup.py`` or ``.git`` (or ``--working-dir``), with the space file and its
  base config inside. Sweep outputs (``runs/``), datasets (``data/``, ``datasets/``), ``wandb/``,
  ``.git``, virtual environments, caches, checkpoints and credentials files (``.env``, ``.netrc``,
  ``.pgpass``, keys, ...) stay behind: :data:`DEFAULT_EXCLUDES` plus the folders found by
  :func:`find_excludes`; Ray also honours the project's ``.gitignore`` and ``.rayignore``.
  Before anything is sent, :func:`preflight` lists exactly what Ray will upload and refuses an upload
  that would lose the space file, its base config or part of a Python package.
- the **entrypoint** runs ``kdseg-sweep SPACE --name NAME --out OUT --address auto [--set ...]`` in
  the shipped project on the cluster: the sweep joins the job's cluster (``RAY_ADDRESS`` is set for a
  job's driver), so trials are scheduled on every node by their resource requests.
- **OUT**, the sweep root, must be storage that every node sees at the same path (NFS, EFS, a
  ReadWriteMany volume, a SLURM scratch file system): trial folders, Tune checkpoints, the leaderboard
  and ``best_config.yaml`` land in ``OUT/NAME``, so ``kdseg resume OUT/NAME`` works from any node.
  ``--out`` is resolved to an absolute path here; without it the cluster's ``$KDSEG_RUNS`` (the
  docker image sets ``/runs``) or else ``~/kdseg-runs`` on the head node is used.

The command streams the job's logs until it ends (the sweep prints its leaderboard at the end) and
exits 0 when the job SUCCEEDED, with the sweep's own exit status when it FAILED (2 for bad input,
as locally), 1 when it was STOPPED. ``--no-wait`` prints the job id instead.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kdseg.errors import ConfigError, KdsegError
from kdseg.layout import DEFAULT_DB

# Where a job's sweep writes when --out is not given: the cluster's $KDSEG_RUNS, else ~/kdseg-runs.
CLUSTER_OUT = "${KDSEG_RUNS:-$HOME/kdseg-runs}"

PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")

# gitignore-style patterns Ray applies to the working_dir upload (matched relative to the project).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    # outputs and data
    "/runs/",
    "/data/",
    "/datasets/",
    "wandb/",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.safetensors",
    DEFAULT_DB,
    "*.db-journal",
    # version control, environments, caches, build outputs
    ".git/",
    ".hg/",
    ".svn/",
    ".venv/",
    "venv/",
    ".tox/",
    ".nox/",
    ".conda/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ruff_cache/",
    ".mypy_cache/",
    ".ipynb_checkpoints/",
    "*.egg-info/",
    "/build/",
    "/dist/",
    "node_modules/",
    ".benchmarks/",
    # credentials
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    ".aws/",
    ".azure/",
    ".gcloud/",
    ".config/gcloud/",
    ".config/wandb/",
    ".ssh/",
    ".gnupg/",
    ".docker/",
    ".kube/",
    ".ray/",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "credentials.json",
    "*credentials*.json",
    "service-account*.json",
    "*.kubeconfig",
    "kubeconfig",
)

# Folders with these names are data, not code, wherever they are (unless they are Python packages).
DATA_FOLDER_NAMES = ("runs", "data", "datasets", "wandb")

# Ray job statuses, as strings (ray.job_submission.JobStatus values).
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


# ------------------------------------------------------------------------------------- the job


@dataclass
class JobPlan:
    """Everything ``submit_job`` needs, validated here before anything is sent."""

    space: Path  # the space file, absolute
    name: str  # the sweep name (= folder and Optuna study name)
    working_dir: Path
    space_rel: str  # the space file relative to working_dir (posix)
    out: str  # the sweep root on the cluster (absolute path, or CLUSTER_OUT)
    entrypoint: str
    runtime_env: dict[str, Any]
    submission_id: str
    metadata: dict[str, str]
    files: list[str] | None = None  # what Ray will upload (None: could not be listed)
    upload_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def plan_job(
    space: str | os.PathLike,
    *,
    name: str | None = None,
    out: str | None = None,
    overrides: Sequence[str] = (),
    working_dir: str | os.PathLike | None = None,
    excludes: Sequence[str] = (),
    env: Sequence[str] = (),
    verbose: bool = False,
    submission_id: str | None = None,
) -> JobPlan:
    """Validate a space file locally and build the Ray job that runs it (nothing is sent)."""
    from kdseg.config import read_yaml
    from kdseg.sweep.space import check_sweep_name, load_space

    space_path = Path(space).expanduser()
    if not space_path.is_file():
        raise ConfigError(f"{space}: search space file not found")
    space_path = space_path.resolve()
    spec = load_space(space_path, list(overrides))  # bad input fails here, exit 2, nothing submitted
    name = name or spec.name or space_path.stem
    check_sweep_name(name, "--name")

    root = Path(working_dir).expanduser().resolve() if working_dir else find_project_root(space_path)
    if not root.is_dir():
        raise ConfigError(f"--working-dir {working_dir}: not a folder")
    space_rel = _inside(space_path, root, "the space file")
    base_rel = None
    if spec.base and Path(spec.base) != space_path and "base_config" not in read_yaml(space_path):
        base_rel = _inside(Path(spec.base), root, "its base config (base:)")

    out_arg = CLUSTER_OUT if out is None else str(Path(out).expanduser().absolute())
    space_rel, overrides, left_out = _without_password(space_path, space_rel, overrides)
    all_excludes = [*DEFAULT_EXCLUDES, *find_excludes(root), *excludes, *left_out]
    env_vars = {"PYTHONUNBUFFERED": "1", **_env_vars(env)}
    runtime_env: dict[str, Any] = {"working_dir": str(root), "excludes": all_excludes, "env_vars": env_vars}

    argv = ["kdseg-sweep", space_rel, "--name", name, "--address", "auto"]
    for item in overrides:
        argv += ["--set", item]
    if verbose:
        argv.append("--verbose")
    out_part = f'--out "{out_arg}"' if out is None else f"--out {shlex.quote(out_arg)}"
    entrypoint = f"{shlex.join(argv[:2])} {out_part} {shlex.join(argv[2:])}"

    plan = JobPlan(
        space=space_path,
        name=name,
        working_dir=root,
        space_rel=space_rel,
        out=out_arg,
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        submission_id=submission_id or f"kdseg-{name}-{secrets.token_hex(4)}",
        metadata={"kdseg_sweep": name, "kdseg_out": out_arg, "kdseg_space": space_rel},
    )
    preflight(plan, [space_rel, *([base_rel] if base_rel else [])])
    plan.notes += _relative_path_notes(space_path, base_rel and Path(spec.base), overrides)
    return plan


def _without_password(
    space: Path, space_rel: str, overrides: Sequence[str]
) -> tuple[str, list[str], list[str]]:
    """What to ship so that no storage password reaches the cluster: (space file, --set items, excludes).

    A job's files and entrypoint are kept on the cluster. ``--set storage=URL`` loses its password; a space
    file whose ``storage:`` holds one is left out and shipped as a copy without it (written beside it,
    removed when this process exits). The job's nodes give the password (PGPASSWORD, ~/.pgpass).
    """
    from kdseg.config import dump_yaml, read_yaml
    from kdseg.sweep.dburl import has_password, strip_password

    items = [
        f"storage={strip_password(i.partition('=')[2])}" if i.startswith("storage=") else i for i in overrides
    ]
    raw = read_yaml(space)
    if not (isinstance(raw.get("storage"), str) and has_password(raw["storage"])):
        return space_rel, items, []
    copy = dump_yaml(
        {**raw, "storage": strip_password(raw["storage"])},
        space.with_name(f"{space.stem}.kdseg-submit-{secrets.token_hex(4)}{space.suffix}"),
    )
    atexit.register(copy.unlink, missing_ok=True)
    escaped = re.sub(r"([\\\[\]*?!# ])", r"\\\1", space_rel)  # gitignore-style, anchored
    return str(PurePosixPath(space_rel).with_name(copy.name)), items, [f"/{escaped}"]


def _relative_path_notes(space: Path, base: Path | None, overrides: Sequence[str]) -> list[str]:
    """Relative paths resolve on the cluster inside the job's (temporary) copy of the project."""
    from kdseg.config import read_yaml

    notes = []
    raw_storage = read_yaml(space).get("storage")
    for item in overrides:
        if item.startswith("storage="):
            raw_storage = item.partition("=")[2]
    if isinstance(raw_storage, str):
        target = raw_storage.removeprefix("journal:") if raw_storage.startswith("journal:") else None
        if raw_storage.startswith("sqlite:///"):
            target = raw_storage.removeprefix("sqlite:///")
        if target is not None and not target.startswith(("/", "~")):
            notes.append(
                f"storage {raw_storage!r} is relative: on the cluster it lands in the job's temporary copy "
                f"of the project; use an absolute path on shared storage or a database URL"
            )
    data = (read_yaml(base).get("data") or {}) if base else {}
    root = data.get("root") if isinstance(data, dict) else None
    if any(item.startswith("data.root=") for item in overrides):
        root = next(i for i in overrides if i.startswith("data.root=")).partition("=")[2]
    if isinstance(root, str) and root and not root.startswith(("/", "~")):
        notes.append(
            f"data.root {root!r} is relative: on the cluster it resolves inside the job's copy of the project, "
            f"where data folders are not shipped; use an absolute path (--set data.root=/shared/...)"
        )
    return notes


def find_project_root(space: Path) -> Path:
    """The nearest folder above ``space`` with a project marker; else the space file's own folder."""
    for folder in space.resolve().parents:
        if any((folder / m).exists() for m in PROJECT_MARKERS):
            return folder
    return space.resolve().parent


def find_excludes(root: Path) -> list[str]:
    """Anchored patterns for data folders and virtual environments found under ``root``.

    Ray's ``excludes`` are gitignore patterns; ``data/`` there would also drop a Python package
    named ``data`` (``kdseg/data``), so data folders are found here and excluded one by one, and
    a virtual environment is recognised by its ``pyvenv.cfg`` whatever its name.
    """
    found: list[str] = []
    skip = {".git", "node_modules", "__pycache__"}

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            rel = "/" + child.relative_to(root).as_posix() + "/"
            if (child / "pyvenv.cfg").exists() or (child / "conda-meta").is_dir():
                found.append(rel)
            elif child.name in DATA_FOLDER_NAMES and not (child / "__init__.py").exists():
                found.append(rel)
            elif child.name not in skip and depth < 6:
                walk(child, depth + 1)

    walk(root, 0)
    return found


def _inside(path: Path, root: Path, what: str) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ConfigError(
            f"{path}: {what} lies outside the folder shipped to the cluster ({root}); pass "
            f"--working-dir with a folder holding both, or move it into the project"
        ) from None


# Environment variables that hold credentials. A job's runtime_env is kept in the job's record on the
# cluster (the dashboard and `ray job list` show it), so these never go into a payload.
_SECRET_ENV = re.compile(r"API_?KEY|(^|_)KEY$|TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|NETRC", re.IGNORECASE)


def _env_vars(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"--env {item!r}: expected NAME=VALUE or NAME (copied from this environment)")
        if _SECRET_ENV.search(key):
            raise ConfigError(
                f"--env {key}: looks like a credential, and a job's environment is stored in its record on "
                f"the cluster (shown by the dashboard and `ray job list`); give the cluster's nodes {key} "
                f"themselves (their environment, a Kubernetes secret, or `wandb login` there for W&B)"
            )
        if not sep:
            if key not in os.environ:
                raise ConfigError(f"--env {key}: not set in this environment")
            value = os.environ[key]
        env[key] = value
    return env


# ----------------------------------------------------------------------------------- preflight


def shipped_files(root: Path, excludes: Sequence[str]) -> list[str] | None:
    """The files (posix paths relative to ``root``) Ray's working_dir upload will contain.

    Uses Ray's own traversal (excludes, ``.gitignore`` unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1,
    ``.rayignore``), so the list is what Ray zips. None when this Ray version's internals differ.
    """
    try:
        from ray._private.runtime_env.packaging import _dir_travel, _get_excludes
    except ImportError:
        return None
    root = root.resolve()
    files: list[str] = []

    def handler(p: Path) -> None:
        if p.is_file():
            files.append(p.relative_to(root).as_posix())

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    quiet = logging.getLogger("kdseg.submit.upload")
    quiet.setLevel(logging.WARNING)
    try:
        _dir_travel(
            root,
            [_get_excludes(root, list(excludes))],
            handler,
            include_gitignore=include_gitignore,
            logger=quiet,
        )
    except TypeError:  # Ray before .gitignore support took no include_gitignore
        files.clear()
        try:
            _dir_travel(root, [_get_excludes(root, list(excludes))], handler, logger=quiet)
        except Exception:
            return None
    return sorted(files)


def preflight(plan: JobPlan, required: Iterable[str]) -> None:
    """Refuse an upload that would lose the space file, its base config or part of a Python package."""
    root = plan.working_dir
    files = shipped_files(root, plan.runtime_env["excludes"])
    if files is None:
        plan.notes.append("could not list the upload with this Ray version; shipping it unchecked")
        return
    shipped = set(files)
    hint = "(an exclude pattern, .gitignore or .rayignore drops it; anchor the pattern, e.g. /data/)"
    for rel in required:
        if rel not in shipped:
            raise ConfigError(f"{root / rel}: would not be shipped to the cluster {hint}")
    missing = _partial_packages(root, shipped)
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ConfigError(
            f"{root}: Python package files would not be shipped to the cluster: {listed} {hint}; the job "
            f"would import an incomplete package"
        )
    plan.files = files
    plan.upload_bytes = sum((root / f).stat().st_size for f in files)


def _partial_packages(root: Path, shipped: set[str]) -> list[str]:
    """Modules of shipped top-level packages that the upload would leave out."""
    missing = []
    for init in sorted(root.glob("*/__init__.py")):
        pkg = init.parent
        if f"{pkg.name}/__init__.py" not in shipped:
            continue
        for py in sorted(pkg.rglob("*.py")):
            rel = py.relative_to(root).as_posix()
            if "__pycache__" in py.parts or rel in shipped:
                continue
            missing.append(rel)
    return missing


# --------------------------------------------------------------------------------- Ray Jobs API


def normalize_address(address: str | None) -> str:
    """``http://HOST:8265`` for the Jobs API; ``HOST:PORT`` gets ``http://``; env vars as Ray's CLI."""
    address = (
        address or os.environ.get("RAY_API_SERVER_ADDRESS") or _http_or_none(os.environ.get("RAY_ADDRESS"))
    )
    if not address:
        raise ConfigError(
            "--address: missing; give the Ray Jobs API of the cluster's head, e.g. "
            "--address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)"
        )
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise ConfigError(
            f"--address {address}: that is a Ray Client address; kdseg submit talks to the Jobs API "
            f"served by the head's dashboard, e.g. http://HEAD:8265"
        )
    if "://" not in address:
        address = "http://" + address
    if not re.match(r"^https?://[^/]+", address):
        raise ConfigError(f"--address {address}: expected http://HOST:PORT (the head's dashboard)")
    return address


def _http_or_none(value: str | None) -> str | None:
    return value if value and value.startswith(("http://", "https://")) else None


def _auth_token() -> str | None:
    """The cluster token as Ray's own clients find it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def connect(address: str | None):
    """A JobSubmissionClient for the head at ``address``; unreachable heads are KdsegErrors (exit 2)."""
    address = normalize_address(address)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # ray without the [default] extra has no job SDK dependencies
        raise KdsegError(
            f"the Ray Jobs client is not installed ({e}); install ray[default] (pip install 'ray[default]')"
        ) from None
    from ray.exceptions import AuthenticationError

    token = _auth_token()
    send_token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token" or bool(
        os.environ.get("RAY_AUTH_TOKEN")
    )
    attempts = [True] if send_token and token else [False, True] if token else [False]
    for with_token in attempts:
        headers = {"Authorization": f"Bearer {token}"} if with_token else None
        try:
            return JobSubmissionClient(address, headers=headers)
        except AuthenticationError as e:
            if not with_token and token:
                continue  # the head wants its token: send ours
            first = str(e).strip().splitlines()[0]
            raise KdsegError(
                f"--address {address}: {first}; put the cluster's token in RAY_AUTH_TOKEN or a file "
                f"named by RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
            ) from None
        except (OSError, RuntimeError, ValueError) as e:  # requests' errors are OSErrors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KdsegError(
                f"--address {address}: cannot reach the Ray Jobs API ({first[:300]}); is a Ray head running "
                f"there with its dashboard (ray start --head --dashboard-host 0.0.0.0, port 8265 by default)?"
            ) from None
    raise AssertionError("unreachable")


def _job_call(fn, job_id: str, address: str):
    try:
        return fn(job_id)
    except RuntimeError as e:
        text = str(e)
        if "404" in text or "does not exist" in text:
            raise KdsegError(f"no job {job_id!r} on {address} (use the id kdseg submit printed)") from None
        raise KdsegError(f"{address}: job {job_id}: {text.strip().splitlines()[0][:300]}") from None


def _status_name(status) -> str:
    return str(getattr(status, "value", status)).upper()


def exit_status(info) -> int:
    """0 SUCCEEDED; the sweep's own exit status (else 1) FAILED; 1 STOPPED; 0 still PENDING/RUNNING."""
    status = _status_name(info.status)
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED":
        code = getattr(info, "driver_exit_code", None)
        return code if isinstance(code, int) and 0 < code < 256 else 1
    if status == "STOPPED":
        return 1
    return 0


def follow(client, job_id: str, *, out=None) -> None:
    """Stream a job's logs to ``out`` until the job ends."""
    out = out or sys.stdout

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())


def wait_terminal(client, job_id: str, poll: float = 0.5):
    """Job info once the job has ended (a log stream can close before that: a moment, or a dropped link)."""
    while True:
        info = client.get_job_info(job_id)
        if _status_name(info.status) in TERMINAL:
            return info
        time.sleep(poll)
        poll = min(poll * 1.5, 5.0)


def _summary(job_id: str, info, address: str) -> str:
    status = _status_name(info.status)
    meta = info.metadata or {}
    took = ""
    if info.start_time and info.end_time:
        took = f" in {(info.end_time - info.start_time) / 1000:.0f}s"
    text = f"job {job_id}: {status}{took}"
    if info.message and status != "SUCCEEDED":
        text += f" ({info.message.strip().splitlines()[-1][:300]})"
    name, out = meta.get("kdseg_sweep"), meta.get("kdseg_out")
    if name:
        folder = (
            f"{out}/{name}"
            if out and out != CLUSTER_OUT
            else f"$KDSEG_RUNS/{name} (else ~/kdseg-runs/{name})"
        )
        text += f"\nsweep {name}: {folder} on the cluster's storage"
        if status == "SUCCEEDED":
            text += f"\nleaderboard: {folder.split(' ')[0]}/leaderboard.csv"
    return text
