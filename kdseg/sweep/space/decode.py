"""Trials: sampled parameters -> the trial's training config, its label and description."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdseg.config import KDConfig, config_to_dict, validate_config
from kdseg.errors import ConfigError
from kdseg.overrides import set_dotted
from kdseg.sweep.selection import CONTROL_KEY
from kdseg.sweep.space.controls import controls, describe_model, search_labels
from kdseg.sweep.space.domains import _short
from kdseg.sweep.space.schema import SweepSpec

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


def describe_trial(cfg: KDConfig) -> dict[str, Any]:
    """The leaderboard's descriptive columns of one trial config.

    With ``distill.mode: none`` there is no teacher: ``teacher`` is ``"-"`` and the KD-only columns
    (temperature, alpha, distill_site, alternation) are None.
    """
    kd = cfg.distill.mode != "none"
    return {
        "teacher": describe_model(cfg.teacher) if kd else "-",
        "student": describe_model(cfg.student),
        "mode": cfg.distill.mode,
        "temperature": cfg.distill.temperature if kd else None,
        "alpha": cfg.distill.alpha if kd else None,
        "distill_site": "+".join(cfg.distill.sites) if kd else None,
        "alternation": cfg.distill.alternation if kd else None,
    }
