"""What a spec gives Ray Tune and Optuna: the param space, the grid points first, the no-KD controls."""

from __future__ import annotations

import itertools
import math
from typing import Any

from kdseg.config import config_to_dict
from kdseg.models.registry import own_archs
from kdseg.sweep.selection import CONTROL_KEY
from kdseg.sweep.space.distributions import Domain, Grid
from kdseg.sweep.space.distributions import same_value as _same
from kdseg.sweep.space.domains import _get_dotted, _validate_with
from kdseg.sweep.space.schema import SweepSpec, _Strict

# --------------------------------------------------------------------------------------- to Ray Tune


def to_tune_space(spec: SweepSpec) -> dict[str, Any]:
    """Ray Tune domains (flat, dotted names) for ``Tuner(param_space=...)`` with OptunaSearch."""
    out: dict[str, Any] = {}
    for key, d in spec.space.items():
        if not d.categorical:
            out[key] = d.to_tune()
        elif labels := search_labels(key, d):  # a domain of no-KD controls only is not searched
            out[key] = d.to_tune(labels)  # grid combinations come from initial_points
    return out


def grid_size(spec: SweepSpec) -> int:
    """Number of combinations of the ``grid`` keys (1 when there are none); controls are not in it."""
    return math.prod(len(search_labels(k, d)) or 1 for k, d in spec.space.items() if isinstance(d, Grid))


def _default_param(d: Domain, key: str, base_dump: dict[str, Any]) -> Any:
    """The base config's value when it lies in the domain, else the domain's midpoint/first choice."""
    if not d.categorical:
        base_value = _get_dotted(base_dump, key)
        return base_value if d.contains(base_value) else d.midpoint()
    labels = search_labels(key, d) or list(d.labels)
    if d.group:
        for v, label in zip(d.values, d.labels, strict=True):
            if label in labels and all(_same(_get_dotted(base_dump, k), x) for k, x in v.items()):
                return label
        return labels[0]
    base_value = _get_dotted(base_dump, key)
    if any(_same(v, base_value) for v in d.values) and d.encode(base_value) in labels:
        return d.encode(base_value)
    return labels[0]


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
    if not d.categorical:
        return []
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
                student = describe_model(cfg.student)
                if student not in seen:
                    seen.add(student)
                    found.append((student, settings))
            for student, settings in found:
                name = str(label) if len(found) == 1 else f"{label} ({student})"
                out.append(Control(label=name, settings=settings))
    return out


def control_params(spec: SweepSpec, control: Control) -> dict[str, Any]:
    """The parameters of a control trial: the defaults of every searched key, and the control's label."""
    return {**default_params(spec), CONTROL_KEY: control.label}


def initial_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Full parameter dicts, one per combination of the grid keys, for ``points_to_evaluate``."""
    grid_keys = [k for k, d in spec.space.items() if isinstance(d, Grid) and search_labels(k, d)]
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


def describe_model(m: Any) -> str:
    if m.arch == "lightweight_unet":
        return f"lightweight_unet@{float(m.width)}"
    if m.arch in own_archs():
        return m.arch
    return f"{m.arch}/{m.encoder}"
