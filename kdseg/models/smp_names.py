"""smp's architecture and encoder names, checked last.

Checking them needs ``import segmentation_models_pytorch`` (torch, timm: seconds). ``load_config`` and
the space loader are wrapped in :func:`model_names_checked_last`: a first pass skips (and notes) these
checks, so that a config wrong anywhere else is refused without that import; a second pass runs them
only when the first one succeeded and skipped one. The messages are those of one plain pass.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
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


def check_arch(name: str, own: tuple[str, ...]) -> str:
    """``name`` if it is one of ``own`` or an smp architecture (or the check is deferred); else ValueError."""
    if name in own or _smp_check_deferred():
        return name
    from kdseg.models.smp_import import import_smp

    smp = import_smp()  # lazy: seconds (torch, timm)

    if name.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        known = sorted(a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values()) + list(own)
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(known)}")
    return name


def check_encoder(name: str, own_arch: bool) -> str:
    """``name`` if it is an smp encoder, a timm one (``tu-NAME``), or ignored (``own_arch``); else ValueError."""
    if own_arch or name.startswith("tu-") or _smp_check_deferred():
        return name
    from kdseg.models.smp_import import import_smp

    smp = import_smp()  # lazy: seconds (torch, timm)

    names = smp.encoders.get_encoder_names()
    if name not in names:
        stem = name.split("-")[0].split("_")[0].rstrip("0123456789")
        close = [n for n in names if stem and n.startswith(stem)][:8]
        hint = f"; similar: {', '.join(close)}" if close else "; or any timm encoder as 'tu-NAME'"
        raise ValueError(f"unknown encoder {name!r}{hint}")
    return name
