"""Planning a sweep: a search space file in, a validated :class:`SweepPlan` out, nothing written.

:func:`plan_sweep` loads and checks the space, its base config, its teachers, ``final_eval`` and its
storage, and refuses a sweep that exists already (in the output folder or in a shared study storage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.errors import ConfigError, KdsegError
from kdseg.fileio import require_writable
from kdseg.layout import LOCK_FILE


@dataclass
class SweepPlan:
    """Everything a sweep needs, validated, before anything is written."""

    spec: Any  # kdseg.space.SweepSpec
    name: str
    sweep_dir: Path
    storage_url: str
    address: str | None = None
    verbose: bool = False
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    sweep_dir: Path
    leaderboard: list[dict[str, Any]]
    best_config: Path | None
    wall_time_s: float


def plan_sweep(
    space_path: str | os.PathLike,
    *,
    out_root: str | os.PathLike = "runs",
    name: str | None = None,
    overrides: list[str] = (),
    address: str | None = None,
    verbose: bool = False,
) -> SweepPlan:
    """Load and validate a search space; refuse to overwrite an existing sweep."""
    from kdseg.sweep.final_eval import check_final_eval
    from kdseg.sweep.optuna_storage import check_new_study, storage_url
    from kdseg.sweep.shared_path import check_sweep_root
    from kdseg.sweep.space import load_space
    from kdseg.sweep.teacher_plan import plan_teachers

    check_sweep_root(out_root)  # a path (shared on a cluster), not a URI
    spec = load_space(space_path, overrides)
    where = "--name" if name else (f"{space_path}: name" if spec.name else f"{space_path}: its file name")
    name = name or spec.name or Path(space_path).stem
    _check_name(name, where)
    sweep_dir = (Path(out_root) / name).resolve()
    _check_data_keys(spec, space_path)
    plan_teachers(spec, str(space_path))  # teacher.checkpoint: train: its teachers known before the trials
    check_final_eval(spec, space_path)
    if sweep_dir.exists() and any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
        raise KdsegError(
            f"{sweep_dir}: a sweep named {name!r} exists already; `kdseg resume {sweep_dir}` continues it, "
            f"or pass --name to start another"
        )
    require_writable(sweep_dir, "sweep")
    url = storage_url(spec.storage, sweep_dir)
    if spec.storage is not None:  # a storage of its own: usable, and the study name must be new too
        try:
            check_new_study(url, name)
        except ConfigError as e:
            raise ConfigError(f"{space_path}: {e}") from None
    return SweepPlan(
        spec=spec, name=name, sweep_dir=sweep_dir, storage_url=url, address=address, verbose=verbose
    )


def _load_data(cfg, source):
    """Decode the sweep's dataset once; a dataset problem names the config it came from too."""
    from kdseg.data import load_data
    from kdseg.errors import DatasetError

    try:
        return load_data(cfg, progress=True)
    except DatasetError as e:
        raise DatasetError(f"{source}: data: {e}") from None


def _check_name(name: str, where: str = "--name") -> None:
    from kdseg.sweep.space import check_sweep_name

    check_sweep_name(name, where)


def _check_data_keys(spec, source) -> None:
    """Data is decoded once per sweep, so only augmentation may vary between trials."""
    from kdseg.sweep.space import searched_keys

    bad = [k for k in searched_keys(spec) if k.startswith("data.") and not k.startswith("data.augment.")]
    if bad:
        raise ConfigError(
            f"{source}: space: {', '.join(bad)}: data keys cannot be searched (the dataset is decoded once "
            f"per sweep); run one sweep per dataset setting"
        )
