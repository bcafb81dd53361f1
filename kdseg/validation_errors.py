"""Pydantic validation errors as kdseg's messages: one line per problem, naming the file and key path.

:func:`format_validation_error` blames the file (``source: key.path: problem``);
:func:`blame_overrides` blames the ``--set KEY`` that brought a bad value in.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] not in ("value_error", "missing") and isinstance(e.get("input"), (str, int, float)):
            msg += f", got {e['input']!r}"  # pydantic's own checks do not say what they were given
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def blame_overrides(err: ValidationError, keys: Sequence[str], source: str) -> str:
    """``err`` (of a document with overrides applied) with each problem blamed on the ``--set KEY``
    whose key covers its key path (``--set KEY: problem (source)``)."""
    lines = []
    for line in format_validation_error(err, "").splitlines():
        loc = line.removeprefix(": ").split(": ", 1)[0]
        key = next((k for k in keys if loc == k or loc.startswith(k + ".") or k.startswith(loc)), None)
        lines.append(f"--set {key or loc}: {line.removeprefix(': ').split(': ', 1)[-1]} ({source})")
    return "\n".join(lines)
