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

This module plans the job (:func:`plan_job`); :mod:`kdseg.cluster.upload` decides what is shipped,
:mod:`kdseg.cluster.jobs` talks to the Jobs API.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kdseg.cluster.upload import DEFAULT_EXCLUDES, find_excludes, find_project_root, inside_project, preflight
from kdseg.errors import ConfigError
from kdseg.sweep.ray_private import trial_actor_env
from kdseg.sweep.shared_path import check_sweep_root

# Where a job's sweep writes when --out is not given: the cluster's $KDSEG_RUNS, else ~/kdseg-runs.
CLUSTER_OUT = "${KDSEG_RUNS:-$HOME/kdseg-runs}"

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
    from kdseg.sweep.space import check_sweep_name, load_space
    from kdseg.yaml_io import read_yaml

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
    space_rel = inside_project(space_path, root, "the space file")
    base_rel = None
    if spec.base and Path(spec.base) != space_path and "base_config" not in read_yaml(space_path):
        base_rel = inside_project(Path(spec.base), root, "its base config (base:)")

    if out is not None:
        check_sweep_root(out)  # a path every node mounts, not a URI
    out_arg = CLUSTER_OUT if out is None else str(Path(out).expanduser().absolute())
    space_rel, overrides, left_out = _without_password(space_path, space_rel, overrides)
    all_excludes = [*DEFAULT_EXCLUDES, *find_excludes(root), *excludes, *left_out]
    env_vars = {"PYTHONUNBUFFERED": "1", **trial_actor_env(), **_env_vars(env)}
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
    from kdseg.sweep.dburl import has_password, strip_password
    from kdseg.yaml_io import dump_yaml, read_yaml

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
    from kdseg.yaml_io import read_yaml

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
