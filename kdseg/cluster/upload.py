"""What ``kdseg submit`` ships: the project folder, less outputs, data, environments and credentials.

The project is the nearest folder above the space file holding ``pyproject.toml``, ``setup.py`` or
``.git`` (or ``--working-dir``). :data:`DEFAULT_EXCLUDES` plus the data folders and virtual environments
found by :func:`find_excludes` stay behind; Ray also honours the project's ``.gitignore`` and
``.rayignore``. :func:`preflight` lists exactly what Ray will upload (Ray's own traversal) and refuses an
upload that would lose the space file, its base config or part of a Python package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kdseg.errors import ConfigError
from kdseg.layout import DEFAULT_DB

if TYPE_CHECKING:
    from kdseg.cluster.submit import JobPlan

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


def inside_project(path: Path, root: Path, what: str) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ConfigError(
            f"{path}: {what} lies outside the folder shipped to the cluster ({root}); pass "
            f"--working-dir with a folder holding both, or move it into the project"
        ) from None


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
