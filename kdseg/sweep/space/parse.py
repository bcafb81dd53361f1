"""Reading a space file (and a resolved sweep.yaml) into a validated SweepSpec; --set overrides."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdseg.config import config_to_dict, validate_overridden
from kdseg.errors import ConfigError
from kdseg.layout import SPEC_FILE
from kdseg.models.smp_names import model_names_checked_last
from kdseg.overrides import apply_overrides, parse_override, set_dotted
from kdseg.sweep.space.controls import controls, initial_points
from kdseg.sweep.space.decode import trial_config
from kdseg.sweep.space.domains import _check_config_key, _check_overlaps, _parse_entry
from kdseg.sweep.space.schema import (
    _URL,
    CONFIG_SECTIONS,
    DEFAULT_GRACE_PERIOD,
    SPACE_KEYS,
    SweepSpec,
    _SpaceFile,
    check_sweep_name,
)
from kdseg.validation_errors import format_validation_error
from kdseg.yaml_io import read_yaml

# ----------------------------------------------------------------------------------------- loading


@model_names_checked_last
def load_space(path: str | os.PathLike, overrides: Iterable[str | tuple[str, Any]] = ()) -> SweepSpec:
    """Read, override and validate a search-space file (see the module docstring for the rules)."""
    path = Path(path)
    return _load(read_yaml(path), path, overrides)


@model_names_checked_last
def load_resolved(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep folder's ``sweep.yaml`` (written from :func:`spec_to_dict`) back into a spec.

    ``path`` is the file or the sweep folder. Top-level keys other than a space file's (e.g. what the
    sweep driver adds next to the spec) are kept, unvalidated, in ``spec.extra``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    doc = read_yaml(path)
    if "base_config" not in doc:
        raise ConfigError(f"{path}: base_config: missing; not a resolved sweep.yaml (written by kdseg-sweep)")
    extra = {k: doc.pop(k) for k in list(doc) if k not in SPACE_KEYS}
    spec = _load(doc, path, ())
    spec.extra = extra
    return spec


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """Plain YAML-safe data for ``sweep.yaml``: the spec as run, base config inline (``spec.extra`` kept)."""
    return {
        "name": spec.name,
        "base": str(spec.base),
        "space": {key: d.to_yaml() for key, d in spec.space.items()},
        "sweep": spec.sweep.model_dump(mode="json"),
        "storage": spec.storage,
        **({"faults": [r.model_dump(mode="json") for r in spec.faults]} if spec.faults else {}),
        **copy.deepcopy(spec.extra),
        "base_config": config_to_dict(spec.base_config),
    }


def searched_keys(spec: SweepSpec) -> list[str]:
    """The dotted config keys a trial may change: direct keys and every key set by a group."""
    keys: list[str] = []
    for key, d in spec.space.items():
        for k in [k for v in d.values for k in v] if d.group else [key]:
            if k not in keys:
                keys.append(k)
    return keys


def _load(doc: dict[str, Any], path: Path, overrides: Iterable[str | tuple[str, Any]]) -> SweepSpec:
    src = str(path)
    space_ov, base_ov = _route_overrides(overrides, src)
    for key, value in space_ov:
        _apply_space_override(doc, key, value, src)
    try:
        raw = _SpaceFile.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, src)) from None

    # -- the base config
    if raw.base_config is not None:
        base_path = _resolve_base_path(raw.base, path) if raw.base else path.resolve()
        base_src = f"{src}: base_config"
        base_doc = raw.base_config
    else:
        if not raw.base:
            raise ConfigError(
                f"{src}: base: missing; name the training config to search (relative to this file)"
            )
        base_path = _resolve_base_path(raw.base, path)
        if base_path.is_dir():
            raise ConfigError(f"{src}: base: {base_path} is a folder; name the training config file in it")
        if not base_path.is_file():
            raise ConfigError(f"{src}: base: file not found: {base_path}")
        base_src = str(base_path)
        base_doc = read_yaml(base_path)
        if "space" in base_doc and "base" in base_doc:
            raise ConfigError(
                f"{src}: base: {base_path} is a search space, not a training config; base names the "
                f"training config every trial starts from"
            )
    try:
        apply_overrides(base_doc, base_ov)
    except ConfigError as e:
        raise ConfigError(f"{src}: --set: {e}") from None
    try:
        base_config = validate_overridden(base_doc, base_ov, source=base_src)
    except ConfigError as e:
        text = str(e)
        if text.startswith("--set "):
            raise ConfigError("\n".join(f"{src}: {line}" for line in text.splitlines())) from None
        raise

    # -- sweep settings that depend on the base
    sweep = raw.sweep.model_copy(deep=True)
    if sweep.asha.max_t is None:
        sweep.asha.max_t = base_config.train.epochs
    if sweep.asha.grace_period is None:
        sweep.asha.grace_period = min(DEFAULT_GRACE_PERIOD, sweep.asha.max_t)
    if sweep.asha.grace_period > sweep.asha.max_t:
        raise ConfigError(
            f"{src}: sweep.asha.grace_period: {sweep.asha.grace_period} exceeds sweep.asha.max_t "
            f"({sweep.asha.max_t}); need max_t >= grace_period >= 1"
        )
    storage = _check_storage(raw.storage, src)
    if raw.name is not None:
        check_sweep_name(raw.name, f"{src}: name")

    # -- domains
    if not raw.space:
        raise ConfigError(f"{src}: space: empty; name at least one key to search, e.g. distill.alpha")
    base_dump = config_to_dict(base_config)
    space = {key: _parse_entry(key, value, base_dump, src) for key, value in raw.space.items()}
    _check_overlaps(space, src)
    for i, rule in enumerate(raw.faults):
        for k in rule.when:
            _check_config_key(k, f"{src}: faults[{i}].when.{k}")

    spec = SweepSpec(
        base=base_path,
        base_config=base_config,
        space=space,
        sweep=sweep,
        storage=storage,
        name=raw.name,
        source=path.resolve(),
        faults=raw.faults,
    )
    n_grid = len(initial_points(spec))
    n_controls = len(controls(spec))
    if sweep.num_samples < n_grid + n_controls:
        raise ConfigError(
            f"{src}: sweep.num_samples: {sweep.num_samples} is less than the {n_grid} grid "
            f"combination{'s' * (n_grid != 1)} and {n_controls} no-KD control{'s' * (n_controls != 1)}; "
            f"they all run first, so num_samples must be at least {n_grid + n_controls}"
        )
    for point in initial_points(spec):  # combinations of valid values can still clash
        trial_config(spec, point)
    return spec


def _route_overrides(
    overrides: Iterable[str | tuple[str, Any]], src: str
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    space_ov: list[tuple[str, Any]] = []
    base_ov: list[tuple[str, Any]] = []
    for item in overrides:
        try:
            key, value = parse_override(item) if isinstance(item, str) else item
        except ConfigError as e:
            raise ConfigError(f"{src}: {e}") from None
        head = key.split(".", 1)[0]
        if head in SPACE_KEYS:
            space_ov.append((key, value))
        elif head in CONFIG_SECTIONS:
            base_ov.append((key, value))
        else:
            raise ConfigError(
                f"{src}: --set {key}: unknown key; space-file keys start with {', '.join(SPACE_KEYS)}; "
                f"base-config keys start with {', '.join(CONFIG_SECTIONS)}"
            )
    return space_ov, base_ov


def _apply_space_override(doc: dict[str, Any], key: str, value: Any, src: str) -> None:
    if key.startswith("space."):  # the rest is one (dotted) search key
        space = doc.get("space")
        if space is None:
            space = doc["space"] = {}
        if not isinstance(space, dict):
            raise ConfigError(f"{src}: space: expected a mapping of keys to domains")
        space[key.removeprefix("space.")] = value
        return
    try:
        set_dotted(doc, key, value)
    except ConfigError as e:
        raise ConfigError(f"{src}: --set {key}: {e}") from None


def _resolve_base_path(base: str, space_file: Path) -> Path:
    p = Path(base).expanduser()
    return (p if p.is_absolute() else space_file.resolve().parent / p).resolve()


def _check_storage(storage: str | None, src: str) -> str | None:
    if storage is None:
        return None
    storage = storage.strip()
    if storage.startswith("journal:"):
        target = storage.removeprefix("journal:")
        if not target:
            raise ConfigError(f"{src}: storage: journal: needs a file path, e.g. journal:runs/optuna.log")
        return "journal:" + str(Path(target).expanduser().resolve())
    if _URL.match(storage):
        from kdseg.sweep.dburl import strip_password

        return strip_password(storage)  # the password stays in memory, never in the spec (kdseg.dburl)
    from kdseg.sweep.dburl import redact

    raise ConfigError(
        f"{src}: storage: {redact(storage)!r} is neither an SQLAlchemy URL (sqlite:///optuna.db, "
        "postgresql://user@host/db) nor journal:PATH; use null for the sweep folder's optuna.db"
    )
