"""Reading and writing kdseg's YAML files: aliases refused, errors that name the file and line.

:func:`read_yaml` reads a mapping (a config, a search space, a sweep's ``sweep.yaml``) and turns every
problem into one :class:`~kdseg.errors.ConfigError`; :func:`dump_yaml` writes atomically. No pydantic
here: ``kdseg --help`` and the report's loaders use these without the config schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kdseg.errors import ConfigError
from kdseg.fileio import atomic_write


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``) as it reads them.

    An alias shares a node; nested aliases grow exponentially when the data is copied or written
    (the "billion laughs" bomb). kdseg's files never need them, so they are refused at load time.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not accepted in kdseg files; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` without aliases (see :class:`_NoAliasLoader`)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load`` (aliases refused); a clear ConfigError for any problem."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        doc = safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(doc).__name__}")
    return doc


def dump_yaml(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write YAML atomically (temp file in the same folder, then rename)."""
    with atomic_write(path, "w") as f:
        yaml.safe_dump(dict(data), f, sort_keys=False, default_flow_style=None)
    return Path(path)
