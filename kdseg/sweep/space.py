"""Search spaces: which keys of a training config a sweep searches, and over what.

A search-space file names a base training config and the keys to search::

    base: ../experiments/carla_online_r34_r18.yaml   # relative to this file
    space:
      distill.temperature: {loguniform: [1, 10]}
      distill.alpha: {uniform: [0.3, 0.9]}
      distill.feature_weight: {quniform: [0.5, 2.0, 0.5]}
      train.batch_size: {choice: [4, 8]}
      train.seed: {randint: [0, 3]}                     # inclusive: 0, 1, 2 or 3
      distill.sites: {choice: [[logits], [logits, decoder]]}
      distill.alternation: {grid: [none, step]}
      pair: {choice: [{teacher.encoder: resnet34, student.encoder: resnet18},
                      {distill.mode: none, label: baseline}]}
    sweep: {num_samples: 32, metric: val_miou, mode: max, objective: iou_per_mparam,
            asha: {max_t: 40, grace_period: 4, reduction_factor: 3},
            resources_per_trial: {cpu: 2, gpu: 0.5}, max_concurrent: 8, seed: 0, max_failures: 0}
    storage: null   # null: sqlite optuna.db in the sweep folder; an SQLAlchemy URL; or journal:PATH
    name: null      # default sweep name (the command line's --name wins)
    faults: []      # fault injection for testing kdseg itself (kdseg.faults); never needed otherwise

:func:`load_space` turns it into a validated :class:`SweepSpec`; every problem is a
:class:`~kdseg.errors.ConfigError` naming the file and the key path, raised before anything runs.

Rules
-----
Keys of ``space``
    A key with a dot (``distill.alpha``) is a key of the training config (:class:`KDConfig`); it must
    exist in the schema. A key without a dot (``pair``) is a *grouped choice*: its ``choice`` or
    ``grid`` values are mappings of dotted config keys set together, plus an optional ``label``.
    A group may not be named like a config section (``train``...). One config key may be set by only
    one entry (directly or by one group). ``train.epochs`` and ``name`` cannot be searched (below), nor
    ``data.*`` other than ``data.augment.*``: the dataset is decoded once per sweep, shared by all trials.

Domains
    ``uniform: [low, high]``, ``loguniform: [low, high]`` (low > 0), ``quniform: [low, high, q]``
    (q > 0; low and high must be multiples of q, as Ray requires; values are low + k*q),
    ``randint: [low, high]`` with **both bounds inclusive** (mapped to Ray's ``tune.randint(low, high + 1)``,
    whose upper bound is exclusive), ``choice: [v, ...]`` (any YAML values, lists included) and
    ``grid: [v, ...]``. Integer config fields accept ``randint``, ``choice`` and ``grid`` (and ``quniform``
    with integer bounds and q), not ``uniform``/``loguniform``. Every choice/grid value and both endpoints
    of a numeric domain are applied to the base config and validated when the file is loaded, so
    ``distill.alpha: {uniform: [0.5, 1.5]}`` or ``student.encoder: resnet999`` in a group fail at once.
    Choice and grid values are stored as the validated config holds them (``distill.sites: [logits,
    decoder]`` becomes ``[decoder, logits]``, the schema's input-to-output order).

Grid keys
    OptunaSearch cannot run ``tune.grid_search``. A ``grid`` key is therefore an ordinary categorical
    parameter for Optuna, and :func:`initial_points` returns the cartesian product of all grid keys as
    ``points_to_evaluate`` (every other key at the base config's value when it lies in its domain, else
    the domain's midpoint - geometric for loguniform - or its first choice). Optuna enqueues them, so
    every grid combination runs first and the sampler takes over afterwards; ``sweep.num_samples`` must
    be at least the number of grid combinations. Without grid keys there are no initial points.

Parameter names and values seen by Ray Tune and Optuna
    Parameter names are the dotted keys as written (``distill.alpha``) and group names (``pair``). Ray
    flattens nested param spaces with ``/`` (``ray/tune/search/optuna/optuna_search.py`` calls
    ``flatten_dict(spec, prevent_delimiter=True)`` and ``unflatten_dict`` with delimiter ``/``), so
    dots pass through untouched; ``/`` is never used in a name. Optuna's categorical values must be
    None, bool, int, float or str, so when any value of a choice/grid is a list or a mapping, all its
    values are encoded as string labels: lists as ``"decoder+logits"``, groups as their ``label`` or an
    automatic one (``"resnet34>resnet18"``: teacher settings ``>`` student settings, other settings as
    ``key=value``). :func:`trial_config` decodes them; labels are part of the spec, so a resumed sweep
    decodes the same way.

Epochs
    ASHA's time budget and the trainer must agree: every trial config gets ``train.epochs =
    sweep.asha.max_t``. ``max_t`` defaults to the base config's ``train.epochs``.

Overrides (``load_space(path, overrides)``, the command line's ``--set key.path=value``)
    Values are parsed as YAML (``kdseg.config.parse_override``). A key whose first part is a top-level
    key of the space file (``sweep.num_samples=4``, ``sweep.asha.max_t=2``, ``storage=journal:x.log``,
    ``name=try1``, ``base=other.yaml``) changes the space file; ``space.KEY=DOMAIN`` replaces or adds one
    search key (``space.distill.alpha={uniform: [0.1, 0.2]}``). A key whose first part is a section of
    the training config (``data``, ``teacher``, ``student``, ``distill``, ``train``, ``tracking``) changes
    the base config before anything is validated (``train.lr=3e-4``, ``data.root=/data/carla``); a
    searched key keeps its search domain, so overriding it only moves the initial points. Any other key
    is an error. ``name`` always means the sweep name (trial configs get their own).

Storage
    ``null`` (the sweep folder's ``optuna.db``), an SQLAlchemy URL (``scheme://...``), or
    ``journal:PATH`` (an Optuna journal file; a relative PATH is resolved against the working directory,
    like the paths of a training config).

Resolved spec
    :func:`spec_to_dict` gives what ``sweep.yaml`` holds: the spec as run, with the resolved base config
    inline under ``base_config`` (and its original path under ``base``). Such a file is itself a valid
    space file (the inline config wins over ``base``); :func:`load_resolved` reads it back, keeping any
    other top-level keys (added by the sweep driver) in ``spec.extra``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdseg.config import (
    OWN_ARCHS,
    KDConfig,
    apply_overrides,
    config_to_dict,
    format_validation_error,
    parse_override,
    read_yaml,
    set_dotted,
    validate_config,
    validate_overridden,
)
from kdseg.errors import ConfigError
from kdseg.layout import SPEC_FILE
from kdseg.sweep.selection import CONTROL_KEY, DEFAULT_QUALITY_FLOOR, check_objective

__all__ = [
    "DOMAIN_KINDS",
    "AshaSettings",
    "Domain",
    "Resources",
    "SweepSettings",
    "SweepSpec",
    "CONTROL_KEY",
    "Control",
    "control_params",
    "controls",
    "decode_params",
    "default_params",
    "describe_trial",
    "grid_size",
    "initial_points",
    "load_resolved",
    "load_space",
    "search_labels",
    "searched_keys",
    "spec_to_dict",
    "to_tune_space",
    "trial_config",
    "trial_label",
]

DomainKind = Literal["uniform", "loguniform", "quniform", "randint", "choice", "grid"]
DOMAIN_KINDS: tuple[str, ...] = typing.get_args(DomainKind)
NUMERIC_KINDS = ("uniform", "loguniform", "quniform", "randint")
CATEGORICAL_KINDS = ("choice", "grid")


# Top-level keys of a space file; overrides starting with these change the space file.
class FaultRule(BaseModel):
    """One rule of the ``faults:`` list (a testing aid; :mod:`kdseg.sweep.faults` fires them)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["raise", "corrupt_checkpoint"] = "raise"
    epoch: int = Field(1, ge=1, description="1-based epoch at which the fault happens")
    step: int = Field(1, ge=1, description="1-based training step within that epoch")
    times: int | None = Field(None, ge=1, description="fires at most this often per trial; null: always")
    when: dict[str, Any] = Field(default_factory=dict, description="dotted config keys the trial must match")


SPACE_KEYS = ("base", "base_config", "space", "sweep", "storage", "name", "faults")
# Sections of the training config; overrides starting with these change the base config.
CONFIG_SECTIONS = tuple(k for k in KDConfig.model_fields if k != "name")
# Config keys a space may not search: the sweep sets them for every trial.
RESERVED_KEYS = {
    "train.epochs": "every trial runs sweep.asha.max_t epochs; set sweep.asha.max_t instead",
    "name": "every trial gets its own name",
}
GROUP_LABEL = "label"
_GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_sweep_name(name: str, where: str) -> str:
    """The one rule for sweep names (``--name``, a space file's ``name:``, ``kdseg submit --name``)."""
    if not isinstance(name, str) or not _SWEEP_NAME.match(name):
        raise ConfigError(
            f"{where}: sweep name {name!r}: must be a plain folder name (letters, digits, . _ -; "
            f"starting with a letter or digit)"
        )
    return name


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PRIMITIVES = (type(None), bool, int, float, str)


# ------------------------------------------------------------------------------------------ models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AshaSettings(_Strict):
    """ASHA early stopping; the time unit is the epoch (one ``training_iteration`` per epoch)."""

    max_t: int | None = Field(
        None, ge=1, description="epochs of a trial that is never stopped; default: base train.epochs"
    )
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped")
    reduction_factor: float = Field(
        3.0, gt=1.0, description="1/reduction_factor of trials go on at each rung"
    )


class Resources(_Strict):
    """What one trial reserves (fractions of a GPU share it)."""

    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)


class FinalEval(_Strict):
    """After the sweep, the chosen students on the test split, once; never used for selection
    (:mod:`kdseg.final_eval`)."""

    split: Literal["test"] = "test"
    top_k: int | None = Field(None, ge=1, description="the K best rows of the leaderboard (default 3)")
    pareto: bool = Field(False, description="the Pareto front instead of the top K")

    @model_validator(mode="after")
    def _one_selection(self) -> FinalEval:
        if self.pareto and self.top_k is not None:
            raise ValueError("top_k and pareto: choose one")
        if not self.pareto and self.top_k is None:
            self.top_k = 3
        return self


class SweepSettings(_Strict):
    num_samples: int = Field(
        8, ge=1, description="trials to run (grid combinations and no-KD controls included)"
    )
    metric: Literal["val_miou"] = Field(
        "val_miou",
        description="the accuracy every objective is built from (train.metric chooses its definition)",
    )
    mode: Literal["max"] = "max"
    objective: str = Field(
        "iou_per_mparam",
        description="what the study, the searcher, ASHA and the leaderboard optimise (kdseg.selection)",
    )
    cost: Literal["student_params", "gflops", "latency_ms"] = Field(
        "student_params", description="objective: pareto minimises this next to maximising val mIoU"
    )
    quality_floor: float = Field(
        DEFAULT_QUALITY_FLOOR,
        ge=0.0,
        le=1.0,
        description="a trial counts for the objective only at >= this fraction of its teacher's val mIoU",
    )
    asha: AshaSettings = AshaSettings()
    resources_per_trial: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1, description="null: as many as resources allow")
    seed: int | None = Field(0, description="seed of the Optuna sampler")
    max_failures: int = Field(0, ge=-1, description="retries of a failed trial (-1: unlimited)")
    final_eval: FinalEval | None = Field(
        None, description="measure the top_k (or pareto) trials on the test split after the sweep"
    )

    @field_validator("final_eval", mode="before")
    @classmethod
    def _final_eval_short(cls, v: Any) -> Any:
        # final_eval: pareto | true | K  as short forms of the mapping; false = off
        if v is False:
            return None
        if v is True:
            return {}
        if v == "pareto":
            return {"pareto": True}
        return {"top_k": v} if isinstance(v, int) else v

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        return check_objective(v)


class _SpaceFile(_Strict):
    """The raw top level of a space file (before the base config and domains are resolved)."""

    base: str | None = None
    base_config: dict[str, Any] | None = None
    space: dict[str, Any] | None = None
    sweep: SweepSettings = SweepSettings()
    storage: str | None = None
    name: str | None = None
    faults: list[FaultRule] = []


class Domain(_Strict):
    """One searched entry: a numeric range or a list of categorical values.

    ``values`` are the decoded values (for a group: mappings of dotted config keys); ``labels`` are what
    Ray Tune and Optuna see (primitives; equal to ``values`` when those are primitives already).
    """

    kind: DomainKind
    low: int | float | None = None
    high: int | float | None = None
    q: int | float | None = None
    values: list[Any] = []
    labels: list[Any] = []
    group: bool = False

    @property
    def categorical(self) -> bool:
        return self.kind in CATEGORICAL_KINDS

    def encode(self, value: Any) -> Any:
        """A decoded value -> the parameter value Tune/Optuna uses."""
        if not self.categorical:
            return value
        for v, label in zip(self.values, self.labels, strict=True):
            if _same(v, value):
                return label
        raise ValueError(f"{value!r} is not one of the {self.kind} values")

    def decode(self, param: Any) -> Any:
        """A parameter value from Tune/Optuna (a label, or a value itself) -> the decoded value."""
        if self.categorical:
            for v, label in zip(self.values, self.labels, strict=True):
                if _same(label, param):
                    return copy.deepcopy(v)
            for v in self.values:
                if _same(v, param):
                    return copy.deepcopy(v)
            raise ValueError(f"{param!r} is not one of {self.labels}")
        if isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"expected a number, got {param!r}")
        tol = 1e-9 * max(1.0, abs(self.high))
        if not (self.low - tol <= param <= self.high + tol):
            raise ValueError(f"{param!r} is outside [{self.low}, {self.high}]")
        if self.kind == "randint":
            if float(param) != int(param):
                raise ValueError(f"expected an integer, got {param!r}")
            return int(param)
        return param

    def contains(self, value: Any) -> bool:
        try:
            decoded = self.decode(value)
        except ValueError:
            return False
        if self.kind == "quniform":
            k = (decoded - self.low) / self.q
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True

    def midpoint(self) -> Any:
        """A deterministic value inside the domain (first label for categoricals)."""
        if self.categorical:
            return self.labels[0]
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        if self.kind == "loguniform":
            return math.sqrt(self.low * self.high)
        if self.kind == "quniform":
            steps = round((self.high - self.low) / self.q / 2)
            return _round_q(self.low + steps * self.q, self.q)
        return (int(self.low) + int(self.high)) // 2  # randint

    def to_yaml(self) -> dict[str, Any]:
        """The space-file form, e.g. ``{"uniform": [0.3, 0.9]}``; parsing it gives this domain back."""
        if self.kind == "quniform":
            return {"quniform": [self.low, self.high, self.q]}
        if not self.categorical:
            return {self.kind: [self.low, self.high]}
        if self.group:
            return {
                self.kind: [{**v, GROUP_LABEL: lab} for v, lab in zip(self.values, self.labels, strict=True)]
            }
        return {self.kind: copy.deepcopy(self.values)}


class SweepSpec(_Strict):
    """A validated search space: the base training config, the searched domains, the sweep settings."""

    base: Path = Field(description="absolute path of the base training config")
    base_config: KDConfig
    space: dict[str, Domain]
    sweep: SweepSettings
    storage: str | None = None
    name: str | None = None
    source: Path | None = Field(None, description="the file this spec was loaded from")
    faults: list[FaultRule] = Field(default_factory=list, description="fault injection (a testing aid)")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="other top-level keys of a resolved sweep.yaml (not validated)"
    )

    @property
    def max_t(self) -> int:
        return int(self.sweep.asha.max_t)


# ----------------------------------------------------------------------------------------- loading


def load_space(path: str | os.PathLike, overrides: Iterable[str | tuple[str, Any]] = ()) -> SweepSpec:
    """Read, override and validate a search-space file (see the module docstring for the rules)."""
    path = Path(path)
    return _load(read_yaml(path), path, overrides)


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


# ----------------------------------------------------------------------------------------- schema


def _schema_field(key: str) -> Any | None:
    """The pydantic FieldInfo of a dotted KDConfig key, or None when the schema has no such key."""
    model: Any = KDConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        if i == len(parts) - 1:
            return field
        model = field.annotation
    return None


def _all_keys(model: type[BaseModel] = KDConfig, prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        key = prefix + name
        out.append(key)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_all_keys(ann, key + "."))
    return out


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, [k for k in _all_keys() if "." in k], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key!r}{hint}"


def _numeric_kind(field: Any) -> str:
    """'int', 'float' or 'other' for a schema field (None allowed in unions)."""
    ann = field.annotation
    origin = typing.get_origin(ann)
    if origin is None:
        args = [ann]
    elif origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
    else:  # Literal, tuple, list...
        return "other"
    if float in args:
        return "float"
    if int in args and bool not in args:
        return "int"
    return "other"


def _check_config_key(key: str, where: str) -> Any:
    if key in RESERVED_KEYS:
        raise ConfigError(f"{where}: {key} cannot be searched: {RESERVED_KEYS[key]}")
    if key.startswith("data.") and not key.startswith("data.augment."):
        raise ConfigError(
            f"{where}: {key} cannot be searched: the dataset is decoded once per sweep and shared by all "
            "trials (only data.augment.* may vary); run one sweep per data setting"
        )
    field = _schema_field(key)
    if field is None:
        raise ConfigError(f"{where}: {_unknown_key(key)}")
    return field


# ----------------------------------------------------------------------------------------- domains


def _parse_entry(key: str, raw: Any, base_dump: dict[str, Any], src: str) -> Domain:
    where = f"{src}: space.{key}"
    if "/" in key:
        raise ConfigError(f"{where}: '/' is not allowed in a search key (Ray Tune uses it to nest keys)")
    group = "." not in key
    if group:
        if key in KDConfig.model_fields:
            raise ConfigError(
                f"{where}: {key!r} is a config section; search dotted keys ({key}.x) or give the group "
                "another name (e.g. pair)"
            )
        if not _GROUP_NAME.match(key):
            raise ConfigError(f"{where}: a group name is letters, digits, _ and - (e.g. pair)")
        field = None
    else:
        field = _check_config_key(key, where)

    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(
            f"{where}: expected one domain, e.g. {{uniform: [low, high]}}, {{choice: [a, b]}}; "
            f"domains: {', '.join(DOMAIN_KINDS)}"
        )
    kind, args = next(iter(raw.items()))
    if kind not in DOMAIN_KINDS:
        raise ConfigError(f"{where}: unknown domain {kind!r}; use one of {', '.join(DOMAIN_KINDS)}")
    where = f"{where}.{kind}"
    if group and kind not in CATEGORICAL_KINDS:
        raise ConfigError(
            f"{where}: {key!r} has no dot, so it is a grouped choice: use choice or grid with mappings "
            "of dotted config keys (or search a dotted config key)"
        )
    if kind in CATEGORICAL_KINDS:
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: expected a non-empty list of values")
        if group:
            return _parse_group(kind, args, base_dump, where)
        return _parse_choice(key, kind, args, base_dump, where)
    return _parse_numeric(key, kind, args, field, base_dump, where)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _round_q(x: float, q: float) -> float:
    return round(round(x / q) * q, 12)


def _parse_numeric(
    key: str, kind: str, args: Any, field: Any, base_dump: dict[str, Any], where: str
) -> Domain:
    n = 3 if kind == "quniform" else 2
    form = "[low, high, q]" if kind == "quniform" else "[low, high]"
    if not isinstance(args, list) or len(args) != n or not all(_is_number(a) for a in args):
        raise ConfigError(f"{where}: expected {form} with finite numbers, got {args!r}")
    low, high = args[0], args[1]
    q = args[2] if kind == "quniform" else None
    if low > high:
        raise ConfigError(f"{where}: low {low} is greater than high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs 0 < low <= high, got low {low}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: randint bounds must be integers (both inclusive), got {args!r}")
    if kind == "quniform":
        if q <= 0:
            raise ConfigError(f"{where}: q must be > 0, got {q}")
        for name, b in (("low", low), ("high", high)):
            if not math.isclose(b / q, round(b / q), abs_tol=1e-9):
                raise ConfigError(f"{where}: {name} {b} is not a multiple of q {q} (Ray Tune requires it)")
    numeric = _numeric_kind(field)
    if numeric == "other":
        raise ConfigError(f"{where}: {key} is not a number; search it with choice or grid")
    if numeric == "int":
        if kind in ("uniform", "loguniform"):
            raise ConfigError(
                f"{where}: {key} is an integer; use randint, quniform with integer q, or choice"
            )
        if kind == "quniform" and not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: {key} is an integer; quniform needs integer low, high and q")
    if kind != "randint":
        low, high = float(low), float(high)
        q = None if q is None else float(q)
    for name, value in (("low", low), ("high", high)):
        v = int(value) if numeric == "int" else value
        _validate_with(base_dump, {key: v}, f"{where}: {name} {v}")
    return Domain(kind=kind, low=low, high=high, q=q)


def _parse_choice(key: str, kind: str, args: list[Any], base_dump: dict[str, Any], where: str) -> Domain:
    values = []
    for i, value in enumerate(args):
        cfg = _validate_with(base_dump, {key: value}, f"{where}[{i}] ({_short(value)})")
        values.append(_get_dotted(config_to_dict(cfg), key))
    _check_unique(values, [_short(a) for a in args], where)
    if all(isinstance(v, _PRIMITIVES) for v in values):
        labels = list(values)
    else:
        labels = [_label(v) for v in values]
        _check_unique_labels(labels, where, hint="")
    return Domain(kind=kind, values=values, labels=labels)


def _parse_group(kind: str, args: list[Any], base_dump: dict[str, Any], where: str) -> Domain:
    values: list[dict[str, Any]] = []
    labels: list[str] = []
    for i, option in enumerate(args):
        at = f"{where}[{i}]"
        if not isinstance(option, dict):
            raise ConfigError(
                f"{at}: a grouped choice's values are mappings of dotted config keys, got {_short(option)}"
            )
        settings = {k: v for k, v in option.items() if k != GROUP_LABEL}
        label = option.get(GROUP_LABEL)
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError(f"{at}.{GROUP_LABEL}: expected a non-empty string")
        if not settings:
            raise ConfigError(f"{at}: sets no config key")
        for k in settings:
            if not isinstance(k, str) or "." not in k:
                raise ConfigError(
                    f"{at}: {k!r}: group keys are dotted config keys (teacher.encoder) or {GROUP_LABEL!r}"
                )
            _check_config_key(k, f"{at}.{k}")
        cfg = _validate_with(base_dump, settings, f"{at} ({label or _short(settings)})")
        dump = config_to_dict(cfg)
        normalized = {k: _get_dotted(dump, k) for k in settings}
        values.append(normalized)
        labels.append(label.strip() if label else _auto_label(normalized))
    _check_unique(values, [str(lab) for lab in labels], where)
    _check_unique_labels(labels, where, hint=f"; give each option a distinct {GROUP_LABEL!r}")
    return Domain(kind=kind, values=values, labels=labels, group=True)


def _validate_with(base_dump: dict[str, Any], settings: Mapping[str, Any], where: str) -> KDConfig:
    doc = copy.deepcopy(base_dump)
    for k, v in settings.items():
        try:
            set_dotted(doc, k, copy.deepcopy(v))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return validate_config(doc, source=where)


def _check_overlaps(space: dict[str, Domain], src: str) -> None:
    owner: dict[str, str] = {}
    for entry, d in space.items():
        keys = set().union(*(v.keys() for v in d.values)) if d.group else {entry}
        for k in sorted(keys):
            for other, who in owner.items():
                if other == k or k.startswith(other + ".") or other.startswith(k + "."):
                    how = "directly" if who == other else f"by group {who!r}"
                    raise ConfigError(
                        f"{src}: space.{entry}: {k} is also set {how}; a config key may be searched by "
                        "one entry only"
                    )
            owner[k] = entry


def _check_unique(values: list[Any], shown: list[str], where: str) -> None:
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        k = json.dumps(v, sort_keys=True, default=str)
        if k in seen:
            raise ConfigError(f"{where}: values {seen[k]} and {i} are the same ({shown[i]})")
        seen[k] = i


def _check_unique_labels(labels: list[Any], where: str, hint: str) -> None:
    seen = set()
    for lab in labels:
        if lab in seen:
            raise ConfigError(f"{where}: two values encode to the same label {lab!r}{hint}")
        seen.add(lab)


def _atom(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(v)
    if isinstance(v, (list, tuple)):
        return "+".join(_atom(x) for x in v) if v else "[]"
    if isinstance(v, dict):
        return ",".join(f"{k}={_atom(x)}" for k, x in v.items())
    return "null" if v is None else str(v)


def _label(value: Any) -> str:
    """String label of a list or mapping choice value: [a, b] -> 'a+b'."""
    return _atom(value)


def _auto_label(settings: Mapping[str, Any]) -> str:
    """'resnet34>resnet18' for a group setting teacher.* and student.* keys; others as key=value."""
    teacher = [_atom(v) for k, v in settings.items() if k.startswith("teacher.")]
    student = [_atom(v) for k, v in settings.items() if k.startswith("student.")]
    rest = [
        f"{k.rsplit('.', 1)[-1]}={_atom(v)}"
        for k, v in settings.items()
        if k.split(".")[0] not in ("teacher", "student")
    ]
    parts = []
    if teacher or student:
        parts.append(f"{'-'.join(teacher)}>{'-'.join(student)}")
    parts.extend(rest)
    return ",".join(parts)


def _short(value: Any, n: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= n else text[: n - 3] + "..."


def _get_dotted(doc: Mapping[str, Any], key: str) -> Any:
    node: Any = doc
    for part in key.split("."):
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(b, tuple):
        b = list(b)
    return a == b


# --------------------------------------------------------------------------------------- to Ray Tune


def to_tune_space(spec: SweepSpec) -> dict[str, Any]:
    """Ray Tune domains (flat, dotted names) for ``Tuner(param_space=...)`` with OptunaSearch."""
    from ray import tune  # lazy: heavy import

    out: dict[str, Any] = {}
    for key, d in spec.space.items():
        if d.kind == "uniform":
            out[key] = tune.uniform(d.low, d.high)
        elif d.kind == "loguniform":
            out[key] = tune.loguniform(d.low, d.high)
        elif d.kind == "quniform":
            out[key] = tune.quniform(d.low, d.high, d.q)
        elif d.kind == "randint":
            out[key] = tune.randint(int(d.low), int(d.high) + 1)  # Ray's upper bound is exclusive
        else:  # choice and grid: categorical for Optuna; grid combinations come from initial_points
            labels = search_labels(key, d)
            if labels:  # a domain of no-KD controls only is not searched
                out[key] = tune.choice(labels)
    return out


def grid_size(spec: SweepSpec) -> int:
    """Number of combinations of the ``grid`` keys (1 when there are none); controls are not in it."""
    return math.prod(len(search_labels(k, d)) or 1 for k, d in spec.space.items() if d.kind == "grid")


def _default_param(d: Domain, key: str, base_dump: dict[str, Any]) -> Any:
    """The base config's value when it lies in the domain, else the domain's midpoint/first choice."""
    labels = search_labels(key, d) or list(d.labels)
    if d.group:
        for v, label in zip(d.values, d.labels, strict=True):
            if label in labels and all(_same(_get_dotted(base_dump, k), x) for k, x in v.items()):
                return label
        return labels[0]
    base_value = _get_dotted(base_dump, key)
    if d.categorical:
        if any(_same(v, base_value) for v in d.values) and d.encode(base_value) in labels:
            return d.encode(base_value)
        return labels[0]
    return base_value if d.contains(base_value) else d.midpoint()


def default_params(spec: SweepSpec) -> dict[str, Any]:
    """One value per searched key: the base config's where it lies in the domain (never a control)."""
    base_dump = config_to_dict(spec.base_config)
    return {k: _default_param(d, k, base_dump) for k, d in spec.space.items()}


# ------------------------------------------------------------------------------------ no-KD controls
# A grouped-choice option (or a ``distill.mode`` value) with ``distill.mode: none`` is the experiment's
# control: the student trained alone. It is not a search point: it runs once per distinct student at the
# full budget (never stopped early, never resampled), with the base config's values for every other key,
# and every KD trial of the same student is compared with it epoch by epoch (``kd_gain``).


class Control(_Strict):
    label: str
    settings: dict[str, Any]


def _is_control(key: str, d: Domain, value: Any) -> bool:
    if d.group:
        return isinstance(value, dict) and value.get("distill.mode") == "none"
    return key == "distill.mode" and value == "none"


def search_labels(key: str, d: Domain) -> list[Any]:
    """The labels of a categorical domain that the searcher samples (its no-KD controls left out)."""
    return [lab for v, lab in zip(d.values, d.labels, strict=True) if not _is_control(key, d, v)]


def controls(spec: SweepSpec) -> list[Control]:
    """The sweep's no-KD controls: one per control option and distinct student.

    A control option that sets ``student.*`` keys is one control. One that does not is expanded over
    the students of its group's other options (and of categorical ``student.*`` keys): the student
    alone, once per student the sweep distils into.
    """
    base_dump = config_to_dict(spec.base_config)
    plain_students = [
        [{k: v} for v in d.values]
        for k, d in spec.space.items()
        if k.startswith("student.") and d.categorical and not d.group
    ]
    out: list[Control] = []
    seen: set[str] = set()
    for key, d in spec.space.items():
        if not d.categorical:
            continue
        for value, label in zip(d.values, d.labels, strict=True):
            if not _is_control(key, d, value):
                continue
            own = dict(value) if d.group else {key: value}
            if any(k.startswith("student.") for k in own):
                variants: list[dict[str, Any]] = [{}]
            else:
                siblings = [
                    {k: x for k, x in v.items() if k.startswith("student.")}
                    for v in d.values
                    if d.group and not _is_control(key, d, v)
                ] or [{}]
                variants = [
                    {k: x for part in combo for k, x in part.items()}
                    for combo in itertools.product(siblings, *plain_students)
                ]
            found = []
            for extra in variants:
                settings = {**own, **extra}
                cfg = _validate_with(base_dump, settings, f"{spec.source or 'sweep'}: space: {key}: {label}")
                student = _describe_model(cfg.student)
                if student not in seen:
                    seen.add(student)
                    found.append((student, settings))
            for student, settings in found:
                name = str(label) if len(found) == 1 else f"{label}:{student}"
                out.append(Control(label=name, settings=settings))
    return out


def control_params(spec: SweepSpec, control: Control) -> dict[str, Any]:
    """The parameters of a control trial: the defaults of every searched key, and the control's label."""
    return {**default_params(spec), CONTROL_KEY: control.label}


def initial_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Full parameter dicts, one per combination of the grid keys, for ``points_to_evaluate``."""
    grid_keys = [k for k, d in spec.space.items() if d.kind == "grid" and search_labels(k, d)]
    if not grid_keys:
        return []
    base_dump = config_to_dict(spec.base_config)
    defaults = {k: _default_param(d, k, base_dump) for k, d in spec.space.items() if k not in grid_keys}
    points = []
    for combo in itertools.product(*(search_labels(k, spec.space[k]) for k in grid_keys)):
        point = {}
        for key in spec.space:  # keep the file's key order
            point[key] = combo[grid_keys.index(key)] if key in grid_keys else defaults[key]
        points.append(point)
    return points


# ------------------------------------------------------------------------------------------- trials


def decode_params(spec: SweepSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Tune/Optuna parameters -> dotted config keys and their values (groups expanded)."""
    where = f"{spec.source or 'sweep'}: trial parameters"
    unknown = sorted(set(params) - set(spec.space) - {CONTROL_KEY})
    if unknown:
        raise ConfigError(f"{where}: {', '.join(unknown)}: not in the search space ({', '.join(spec.space)})")
    out: dict[str, Any] = {}
    for key, d in spec.space.items():
        if key not in params and d.categorical and not search_labels(key, d):
            continue  # only controls: not a parameter of searched trials
        if key not in params:
            raise ConfigError(f"{where}: {key}: missing")
        try:
            value = d.decode(params[key])
        except ValueError as e:
            raise ConfigError(f"{where}: {key}: {e}") from None
        if d.group:
            out.update(value)
        else:
            out[key] = value
    return out


def trial_config(spec: SweepSpec, params: Mapping[str, Any], name: str | None = None) -> KDConfig:
    """The training config of one trial: base + decoded params, ``train.epochs = max_t``, validated."""
    if params.get(CONTROL_KEY) is not None:  # a no-KD control: the base config and its own settings
        found = {c.label: c for c in controls(spec)}
        if params[CONTROL_KEY] not in found:
            raise ConfigError(
                f"{spec.source or 'sweep'}: no-KD control {params[CONTROL_KEY]!r} is not in the space "
                f"({', '.join(found) or 'it has none'})"
            )
        decoded = dict(found[params[CONTROL_KEY]].settings)
    else:
        decoded = decode_params(spec, params)
    doc = config_to_dict(spec.base_config)
    for key, value in decoded.items():
        set_dotted(doc, key, value)
    doc["train"]["epochs"] = spec.max_t
    doc["name"] = name or spec.name or doc.get("name")
    shown = ", ".join(f"{k}={_short(v, 30)}" for k, v in params.items())
    return validate_config(doc, source=f"{spec.source or 'sweep'}: trial {{{shown}}}")


def trial_label(spec: SweepSpec, params: Mapping[str, Any]) -> str:
    """A trial's short name: its control label, or the labels of its grouped choices (``r34-r18``)."""
    if params.get(CONTROL_KEY) is not None:
        return str(params[CONTROL_KEY])
    return ",".join(str(params[k]) for k, d in spec.space.items() if d.group and k in params)


def _describe_model(m: Any) -> str:
    if m.arch == "lightweight_unet":
        return f"lightweight_unet@{float(m.width)}"
    if m.arch in OWN_ARCHS:
        return m.arch
    return f"{m.arch}/{m.encoder}"


def describe_trial(cfg: KDConfig) -> dict[str, Any]:
    """The leaderboard's descriptive columns of one trial config.

    With ``distill.mode: none`` there is no teacher: ``teacher`` is ``"-"`` and the KD-only columns
    (temperature, alpha, distill_site, alternation) are None.
    """
    kd = cfg.distill.mode != "none"
    return {
        "teacher": _describe_model(cfg.teacher) if kd else "-",
        "student": _describe_model(cfg.student),
        "mode": cfg.distill.mode,
        "temperature": cfg.distill.temperature if kd else None,
        "alpha": cfg.distill.alpha if kd else None,
        "distill_site": "+".join(cfg.distill.sites) if kd else None,
        "alternation": cfg.distill.alternation if kd else None,
    }
