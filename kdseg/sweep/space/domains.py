"""Parsing the domains of a space file: every value checked against the training config's schema."""

from __future__ import annotations

import copy
import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from kdseg.config import KDConfig, config_to_dict, validate_config
from kdseg.errors import ConfigError
from kdseg.overrides import set_dotted
from kdseg.sweep.space.distributions import (
    CATEGORICAL_KINDS,
    DOMAIN_CLASSES,
    DOMAIN_KINDS,
    GROUP_LABEL,
    Domain,
    QUniform,
    RandInt,
    RangeDomain,
)
from kdseg.sweep.space.schema import _GROUP_NAME, _PRIMITIVES, RESERVED_KEYS

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


def _parse_numeric(
    key: str, kind: str, args: Any, field: Any, base_dump: dict[str, Any], where: str
) -> Domain:
    cls = DOMAIN_CLASSES[kind]
    assert issubclass(cls, RangeDomain)
    try:
        domain = cls.from_args(args, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    numeric = _numeric_kind(field)
    if numeric == "other":
        raise ConfigError(f"{where}: {key} is not a number; search it with choice or grid")
    if numeric == "int":
        if not isinstance(domain, (RandInt, QUniform)):
            raise ConfigError(
                f"{where}: {key} is an integer; use randint, quniform with integer q, or choice"
            )
        if not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: {key} is an integer; quniform needs integer low, high and q")
    for name, value in (("low", domain.low), ("high", domain.high)):
        v = int(value) if numeric == "int" else value
        _validate_with(base_dump, {key: v}, f"{where}: {name} {v}")
    return domain


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
    return DOMAIN_CLASSES[kind](values=values, labels=labels)


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
    return DOMAIN_CLASSES[kind](values=values, labels=labels, group=True)


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
