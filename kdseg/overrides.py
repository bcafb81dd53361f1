"""``--set key.path=value`` overrides, and dotted keys into nested mappings.

Values are parsed as YAML scalars (``train.lr=3e-4`` is a float, ``distill.sites=[logits,decoder]`` a
list); a key names a path through nested mappings (``a.b.c``). Used by the training config
(:func:`kdseg.config.load_config`) and by search spaces, whose keys are dotted paths too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from kdseg.errors import ConfigError
from kdseg.yaml_io import safe_load


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ``("train.lr", 0.0003)``; the value is parsed as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.composer.ComposerError as e:
        raise ConfigError(f"--set {key}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, float) or _looks_like_float(raw):
        value = float(raw) if _looks_like_float(raw) else value
    return key, value


def _looks_like_float(raw: str) -> bool:
    # YAML 1.1 reads "1e-3" as a string; users mean a number.
    try:
        float(raw)
    except ValueError:
        return False
    return any(c in raw.lower() for c in ".e") and raw.strip().lower() not in ("nan", "inf", "-inf")


def override_keys(overrides: Iterable[str | tuple[str, Any]]) -> list[str]:
    """The keys of ``key.path=value`` strings or ``(key, value)`` pairs, in order."""
    return [(parse_override(o) if isinstance(o, str) else o)[0] for o in overrides]


def get_dotted(doc: Mapping[str, Any], key: str) -> Any:
    """``doc[a][b][c]`` for ``key == "a.b.c"``, or None where the path does not exist."""
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``doc[a][b][c] = value`` for ``key == "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    node = doc
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section; cannot set {key}")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(doc: Mapping[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``key.path=value`` overrides applied."""
    out = copy.deepcopy(dict(doc))
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(out, key, value)
    return out
