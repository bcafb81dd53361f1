"""smp's architecture and encoder names, checked last, and without importing smp when they are known.

Checking them needs ``import segmentation_models_pytorch`` (torch, timm: 4 to 10 s). Two things keep
that off the path of a sweep's driver and of a refused config:

- ``kdseg/models/smp_known.py`` lists the names of one smp version; when that version is the installed one,
  names are checked against it, without the import (another smp version: the import and smp's own lists
  decide, with the same messages). ``python -m kdseg.models.smp_names`` rewrites it for
  the installed smp; ``tests/test_models.py`` fails when it and smp disagree.
- ``load_config`` and the space loader are wrapped in :func:`model_names_checked_last`: a first pass skips
  (and notes) these checks, so that a config wrong anywhere else is refused without that import; a second
  pass runs them only when the first one succeeded and skipped one. The messages are those of one plain
  pass.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SMP_DEFERRED: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "smp_deferred", default=None
)


def _smp_check_deferred() -> bool:
    """Inside a first pass of :func:`model_names_checked_last`: skip (and note) the smp check."""
    skipped = _SMP_DEFERRED.get()
    if skipped is None:
        return False
    skipped.append(True)
    return True


def model_names_checked_last(fn: Callable) -> Callable:
    """Run ``fn`` (a loader that validates configs) once with smp's name checks skipped, and again
    with them only when that pass succeeded and skipped one: every other error comes first and
    without importing smp and torch; the messages are those of one plain pass."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _SMP_DEFERRED.get() is not None:  # an outer loader's second pass checks them
            return fn(*args, **kwargs)
        skipped: list[bool] = []
        token = _SMP_DEFERRED.set(skipped)
        try:
            result = fn(*args, **kwargs)
        finally:
            _SMP_DEFERRED.reset(token)
        return fn(*args, **kwargs) if skipped else result

    return wrapper


@functools.lru_cache(maxsize=1)
def known_names():
    """:mod:`kdseg.models.smp_known` when it was written for the installed smp, else None."""
    from importlib.metadata import PackageNotFoundError, version

    from kdseg.models import smp_known

    try:
        installed = version("segmentation_models_pytorch")
    except PackageNotFoundError:
        return None
    return smp_known if smp_known.SMP_VERSION == installed else None


def installed_names() -> tuple[dict[str, str], list[str]]:
    """The installed smp's own lists (imports it): {lower-case arch: class name}, encoders in smp's order."""
    from kdseg.models.smp_import import import_smp

    smp = import_smp()
    archs = {k: v.__name__ for k, v in sorted(smp.MODEL_ARCHITECTURES_MAPPING.items())}
    return archs, list(smp.encoders.get_encoder_names())


def _names() -> tuple[dict[str, str], list[str]]:
    known = known_names()
    return (known.ARCHITECTURES, list(known.ENCODERS)) if known is not None else installed_names()


def check_arch(name: str, own: tuple[str, ...]) -> str:
    """``name`` if it is one of ``own`` or an smp architecture (or the check is deferred); else ValueError."""
    if name in own or _smp_check_deferred():
        return name
    archs, _ = _names()
    if name.lower() not in archs:
        listed = sorted(archs.values()) + list(own)
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(listed)}")
    return name


def check_encoder(name: str, own_arch: bool) -> str:
    """``name`` if it is an smp encoder, a timm one (``tu-NAME``), or ignored (``own_arch``); else ValueError."""
    if own_arch or name.startswith("tu-") or _smp_check_deferred():
        return name
    _, names = _names()
    if name not in names:
        stem = name.split("-")[0].split("_")[0].rstrip("0123456789")
        close = [n for n in names if stem and n.startswith(stem)][:8]
        hint = f"; similar: {', '.join(close)}" if close else "; or any timm encoder as 'tu-NAME'"
        raise ValueError(f"unknown encoder {name!r}{hint}")
    return name


def write_known(path: Path | None = None) -> Path:
    """Write ``smp_known.py`` (default: beside this module) from the installed smp's own lists."""
    import json
    from importlib.metadata import version

    archs, encoders = installed_names()  # encoders in smp's order: the hint lists close names in it
    path = path or Path(__file__).with_name("smp_known.py")
    lines = [
        '"""smp\'s architecture and encoder names, for :mod:`kdseg.models.smp_names` (no smp import needed).',
        "",
        "Written by ``python -m kdseg.models.smp_names`` from the installed smp; used only when that is",
        "SMP_VERSION. Do not edit by hand.",
        '"""',
        "",
        f"SMP_VERSION = {json.dumps(version('segmentation_models_pytorch'))}",
        "",
        "# lower-case name (what smp.create_model matches) -> class name",
        "ARCHITECTURES = {",
        *[f"    {json.dumps(k)}: {json.dumps(v)}," for k, v in archs.items()],
        "}",
        "",
        "# in smp's order",
        "ENCODERS = (",
        *[f"    {json.dumps(e)}," for e in encoders],
        ")",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    print(f"wrote {write_known()}")
