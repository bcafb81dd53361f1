"""Loading weights into models: pretrained downloads, local encoder files, full checkpoints.

Every failure a user can fix becomes one :class:`~kdseg.errors.WeightsError` (encoder weights) or
:class:`~kdseg.errors.CheckpointError` (full model state) whose message names the file and says
what to do. Files are always read with ``torch.load(path, map_location="cpu", weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdseg.errors import CheckpointError, KdsegError, WeightsError

__all__ = [
    "CHECKPOINT_ROLES",
    "download_error_message",
    "is_download_error",
    "load_model_checkpoint",
    "load_encoder_weights",
    "read_state_file",
]

# Keys under which a checkpoint dict may hold a model state dict, see ``select_state_dict``.
CHECKPOINT_ROLES = ("model", "student", "teacher")
# Prefixes that wrappers add to every key: DDP / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Prefixes stripped (keeping only the keys that carry them) when matching an encoder file.
_ENCODER_PREFIXES = ("module.", "_orig_mod.", "encoder.", "backbone.", "model.", "net.")
# Classification-head keys of ImageNet checkpoints that an encoder legitimately lacks.
_HEAD_PREFIXES = ("fc.", "last_linear.", "classifier.", "head.", "_fc.")
_SHOW = 5  # keys shown per category in messages


def _cause(exc: BaseException, limit: int = 200) -> str:
    """``"Type: first line of the message"``, shortened to ``limit`` characters."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    out = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


# ------------------------------------------------------------------------------------- reading


def read_state_file(path: str | os.PathLike, error: type[KdsegError], what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one clear error per failure."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} file not found")
    if path.is_dir():
        raise error(f"{path}: {what} path is a directory, expected a file saved with torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch.save writes a zip archive: anything else is damaged (or not a checkpoint at all)
        safe_load_refused = "weights only" in str(e).lower() or "weights_only" in str(e).lower()
        if safe_load_refused and zipfile.is_zipfile(path):
            raise error(
                f"{path}: {what} file holds objects that cannot be loaded safely with weights_only=True "
                "(save a state_dict with torch.save(model.state_dict(), path), not a whole model)"
            ) from None
        raise error(f"{path}: {what} file is truncated or corrupt ({_cause(e)})") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} file ({e.strerror or e})") from None
    except Exception as e:  # RuntimeError (bad zip), EOFError, KeyError, ValueError, ...
        raise error(f"{path}: {what} file is truncated or corrupt ({_cause(e)})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def select_state_dict(
    obj: Any, path: Path, error: type[KdsegError], role: str | None = None
) -> dict[str, torch.Tensor]:
    """The model state dict inside a loaded file.

    Accepted: a raw state dict (every value a tensor), or a dict holding one under a key. The key is
    ``role`` when given and present ("model", "student" or "teacher"), else "model", else
    "state_dict", else the only one of "student"/"teacher" present. A file holding both a student
    and a teacher and no "model" needs ``role``.
    """
    if _is_state_dict(obj):
        return dict(obj)
    if not isinstance(obj, Mapping):
        raise error(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    order = [role] if role else []
    order += ["model", "state_dict"]
    present = [k for k in ("student", "teacher") if k in obj]
    if role is None and len(present) == 1:
        order.append(present[0])
    for key in order:
        if key in obj and _is_state_dict(obj[key]):
            return dict(obj[key])
    if role is None and len(present) == 2:
        raise error(
            f"{path}: checkpoint holds both a 'student' and a 'teacher' state dict; "
            "say which one to load (role='student' or role='teacher')"
        )
    keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
    wanted = " or ".join(repr(k) for k in dict.fromkeys(order))
    raise error(f"{path}: no model state dict found (looked for {wanted}; the file has keys: {keys})")


# ------------------------------------------------------------------------------------ matching


def _strip_common(sd: dict[str, Any], prefixes: Iterable[str], target: set[str]) -> dict[str, Any]:
    """Strip wrapper prefixes carried by every key (and by no model key)."""
    changed = True
    while changed and sd:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in sd) and not any(k.startswith(p) for k in target):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def _candidates(sd: dict[str, Any], target: set[str]) -> list[dict[str, Any]]:
    """``sd`` and variants with known prefixes stripped (keeping only the keys that had them)."""
    out, frontier = [sd], [sd]
    for _ in range(3):
        nxt = []
        for c in frontier:
            for p in _ENCODER_PREFIXES:
                sub = {k[len(p) :]: v for k, v in c.items() if k.startswith(p)}
                if sub:
                    nxt.append(sub)
        out += nxt
        frontier = nxt
    # timm-universal encoders keep their timm model under ``model.``: a bare timm state dict fits
    # once the prefix is added.
    if target and all(k.startswith("model.") for k in target):
        out += [{"model." + k: v for k, v in c.items()} for c in list(out)]
    return out


def _key_problems(
    sd: Mapping[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor], ignore_unexpected=()
) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in model_sd if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in model_sd and not k.startswith(tuple(ignore_unexpected))]
    mismatched = [
        f"{k} (file {list(sd[k].shape)} vs model {list(model_sd[k].shape)})"
        for k in sd
        if k in model_sd and tuple(sd[k].shape) != tuple(model_sd[k].shape)
    ]
    return missing, unexpected, mismatched


def _describe(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    def few(items: list[str]) -> str:
        more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
        return ", ".join(items[:_SHOW]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} with the wrong shape: {few(mismatched)}")
    return "; ".join(parts)


def _load_checked(module: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    # Keys and shapes were checked already; strict=False only tolerates num_batches_tracked
    # (BatchNorm fills it in) and head keys that the caller chose to ignore.
    nn.Module.load_state_dict(module, sd, strict=False)


# --------------------------------------------------------------------------------- public loaders


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike, label: str = "encoder") -> None:
    """Load an encoder state dict from a local file into ``encoder``.

    The file may hold a raw state dict or a dict with a "state_dict"/"model" key; common prefixes
    ("module.", "encoder.", "backbone.", "model.") are stripped, so a full smp model state dict or a
    torchvision/timm classification checkpoint (its head keys ignored) also fits.
    """
    path = Path(path)
    obj = read_state_file(path, WeightsError, "encoder weights")
    if not _is_state_dict(obj) and isinstance(obj, Mapping):
        for key in ("state_dict", "model", "encoder"):
            if key in obj and _is_state_dict(obj[key]):
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        raise WeightsError(
            f"{path}: expected an encoder state_dict (a dict of tensors, or a dict with a "
            f"'state_dict' or 'model' key holding one), got {type(obj).__name__}"
        )
    model_sd = encoder.state_dict()
    target = set(model_sd)

    def score(c: dict[str, Any]) -> tuple[int, int]:
        hits = len(target.intersection(c))
        return hits, -len(c)

    best = max(_candidates(dict(obj), target), key=score)
    head_keys = _HEAD_PREFIXES + tuple("model." + p for p in _HEAD_PREFIXES)
    problems = _key_problems(best, model_sd, ignore_unexpected=head_keys)
    if any(problems) or not target.intersection(best):
        raise WeightsError(
            f"{path}: encoder weights do not fit the {label}: {_describe(*problems)}. "
            "The file must hold a state_dict of the same encoder (e.g. "
            "torch.save(model.encoder.state_dict(), path))"
        )
    _load_checked(encoder, {k: v for k, v in best.items() if k in target})


def load_model_checkpoint(
    model: nn.Module, path: str | os.PathLike, role: str | None = None, num_classes: int | None = None
) -> None:
    """Load a full model state dict from ``path`` into ``model`` (strict; see ``select_state_dict``).

    With ``num_classes`` (the model's output classes), a checkpoint that differs from the model only in
    its number of classes says so.
    """
    path = Path(path)
    obj = read_state_file(path, CheckpointError, "checkpoint")
    sd = select_state_dict(obj, path, CheckpointError, role)
    model_sd = model.state_dict()
    sd = _strip_common(sd, _WRAPPER_PREFIXES, set(model_sd))
    problems = _key_problems(sd, model_sd)
    other = _class_count(sd, model_sd, num_classes) if any(problems) and num_classes else None
    if other is not None:
        raise CheckpointError(
            f"{path}: the checkpoint predicts {other} classes but the config's data.num_classes is "
            f"{num_classes}; evaluate it with the data it was trained for"
        )
    if any(problems):
        raise CheckpointError(
            f"{path}: checkpoint does not fit the {type(model).__name__} built from the config "
            f"({_describe(*problems)}); check arch, encoder, width and data.num_classes"
        )
    model.load_state_dict(sd, strict=False)


def _class_count(
    sd: Mapping[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor], num_classes: int
) -> int | None:
    """The file's number of classes when it differs from the model's only there (the head's first
    dimension), else None."""
    if set(sd) != {k for k in model_sd if not k.endswith("num_batches_tracked") or k in sd}:
        return None
    found = set()
    for k, v in sd.items():
        m = model_sd[k]
        if tuple(v.shape) == tuple(m.shape):
            continue
        if v.ndim == 0 or m.shape[0] != num_classes or tuple(v.shape[1:]) != tuple(m.shape[1:]):
            return None
        found.add(int(v.shape[0]))
    return found.pop() if len(found) == 1 else None


# ------------------------------------------------------------------------------------ downloads

_NETWORK_MODULES = ("huggingface_hub", "requests", "urllib3", "httpx", "httpcore", "urllib", "socket", "ssl")


def is_download_error(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a failed download (offline machine, DNS, HTTP error, no cache)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
            return True
        if type(exc).__module__.split(".")[0] in _NETWORK_MODULES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _cache_dirs() -> str:
    dirs = []
    try:
        from huggingface_hub import constants

        dirs.append(f"Hugging Face cache {constants.HF_HUB_CACHE}")
    except Exception:  # pragma: no cover - huggingface_hub is an smp dependency
        pass
    dirs.append(f"torch hub cache {torch.hub.get_dir()}")
    return " / ".join(dirs)


def download_error_message(encoder: str, exc: BaseException, key: str = "weights") -> str:
    cause = _cause(exc)
    return (
        f"{key}: could not download the 'imagenet' weights of encoder '{encoder}' "
        f"(is this machine offline? {cause}). To fix: download them once on a machine with internet "
        f"into the {_cache_dirs()} and copy that folder here; or set {key}: /path/to/encoder.pth "
        f"(a local encoder state_dict); or set {key}: null to start from random weights"
    )
