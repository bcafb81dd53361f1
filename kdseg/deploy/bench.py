"""What a config's networks cost: ``kdseg bench`` and the cost cache of sweep trials.

- :func:`bench_config`: the teacher (unless ``distill.mode`` is ``none``) and the student of a training
  config, built *without* pretrained weights or checkpoints (weights do not change speed, and a
  benchmark must not need the network), profiled by :mod:`kdseg.deploy.profile`.
- :func:`student_cost`: a student's GFLOPs, batch-1 CPU latency and parameters, measured once per
  (architecture, encoder, width, classes, input size, torch version, device, threads) and cached in
  ``profile_cache.json`` so that every sweep trial can ask for it cheaply.

The ``kdseg bench`` command itself is :mod:`kdseg.cli.bench`. Heavy libraries (torch, smp) are imported
inside the functions.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.deploy.profile import FLOPS_NOTE, BenchError, profile_interleaved, profile_model, resolve_device
from kdseg.layout import PROFILE_CACHE_FILE

if TYPE_CHECKING:  # pragma: no cover
    from kdseg.config import KDConfig, ModelConfig


__all__ = ["BenchError", "bench_config", "cost_key", "default_cache_dir", "student_cost"]

CACHE_VERSION = 1  # bump when the way costs are measured changes: old entries are then ignored


# ------------------------------------------------------------------------------------- configs


def _label(m: ModelConfig) -> str:
    if m.arch == "lightweight_unet":
        return f"lightweight_unet(width={m.width:g})"
    if m.arch == "fcn_resnet50":
        return m.arch
    return f"{m.arch}/{m.encoder}"


def _check_size(size: Any, where: str = "--size") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: expected [H, W], got {size!r}") from None
    if min(h, w) < 32 or h % 32 or w % 32:
        raise BenchError(
            f"{where}: {h}x{w} is not a multiple of 32 (UNet encoders downsample 32x); e.g. 512x512"
        )
    return h, w


def _random_init(m: ModelConfig) -> ModelConfig:
    """The same architecture without pretrained weights or checkpoint: speed does not depend on them."""
    return m.model_copy(update={"weights": None, "checkpoint": None})


def bench_config(
    cfg: KDConfig,
    size: tuple[int, int] | None = None,
    batch: int = 1,
    device: str = "cpu",
    channels_last: bool = False,
    bf16: bool = False,
    warmup: int = 5,
    iters: int = 20,
    on_model: Callable[[str, str], None] | None = None,
    rounds: int = 4,
) -> dict[str, Any]:
    """Profile the config's teacher (skipped when ``distill.mode`` is ``none``) and student.

    Models are built with random weights (``weights``/``checkpoint`` set to None). ``size`` defaults
    to ``cfg.data.image_size``. On the CPU both are timed in ``rounds`` alternating rounds
    (:func:`profile_interleaved`); on CUDA one after the other (:func:`profile_model`), so that each
    one's peak memory is its own. Returns the settings, ``student`` and (when there is one)
    ``teacher`` profiles (see :func:`profile_model`, plus ``role`` and ``model``), and
    ``teacher_over_student`` ratios of params, GFLOPs and p50 latency. ``on_model(role, label)`` is
    called before models are built.
    """
    import gc

    import torch

    from kdseg.models import build_model

    h, w = _check_size(size if size is not None else cfg.data.image_size)
    dev = resolve_device(device)
    roles = ["student"] if cfg.distill.mode == "none" else ["teacher", "student"]
    result: dict[str, Any] = {
        "config": cfg.name,
        "size": [h, w],
        "batch": batch,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "dtype": "bf16" if bf16 else "fp32",
        "channels_last": bool(channels_last),
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "num_classes": cfg.data.num_classes,
        "flops_note": FLOPS_NOTE,
    }
    labels = {role: _label(_random_init(getattr(cfg, role))) for role in roles}
    if dev.type == "cpu":
        # Both models at once, timed in alternating rounds: a busy CPU slows both alike.
        if on_model is not None:
            on_model(" and ".join(roles), ", ".join(labels.values()))
        models = {
            role: build_model(_random_init(getattr(cfg, role)), cfg.data.num_classes, role=role)
            for role in roles
        }
        profs = profile_interleaved(models, (h, w), batch, channels_last, bf16, warmup, iters, rounds)
        for role in roles:
            result[role] = {"role": role, "model": labels[role], **profs[role]}
        result["rounds"] = max(1, min(rounds, iters))
    else:
        # One model at a time on the GPU: its peak memory is its own.
        for role in roles:
            if on_model is not None:
                on_model(role, labels[role])
            model = build_model(_random_init(getattr(cfg, role)), cfg.data.num_classes, role=role)
            prof = profile_model(model, (h, w), batch, dev, channels_last, bf16, warmup, iters)
            result[role] = {"role": role, "model": labels[role], **prof}
            del model
            gc.collect()
            torch.cuda.empty_cache()
    if "teacher" in result:
        t, s = result["teacher"], result["student"]
        result["teacher_over_student"] = {
            "params": t["params"] / s["params"],
            "gflops": t["gflops"] / s["gflops"] if s["gflops"] else None,
            "latency_p50": t["latency_ms_p50"] / s["latency_ms_p50"],
        }
    return result


def cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- the cost cache


def default_cache_dir() -> Path:
    """``$KDSEG_CACHE``, else ``$XDG_CACHE_HOME/kdseg``, else ``~/.cache/kdseg``."""
    if os.environ.get("KDSEG_CACHE"):
        return Path(os.environ["KDSEG_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kdseg"


def cost_key(
    model_cfg: ModelConfig, num_classes: int, size: tuple[int, int], device: str = "cpu", threads: int = 1
) -> str:
    """The cache key: what the cost depends on (fields a given arch ignores are normalised away)."""
    import torch

    from kdseg.models.registry import own_archs

    h, w = (int(v) for v in size)
    encoder = "-" if model_cfg.arch in own_archs() else model_cfg.encoder
    width = f"{model_cfg.width:g}" if model_cfg.arch == "lightweight_unet" else "-"
    return (
        f"v{CACHE_VERSION}|{model_cfg.arch}|{encoder}|width={width}|classes={num_classes}|{h}x{w}"
        f"|torch={torch.__version__}|{device}|threads={threads}"
    )


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's valid entries; a missing, unreadable or corrupt file is an empty cache."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if _valid_entry(v)}  # damaged entries are re-measured


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, Mapping):
        return False
    for k in ("gflops", "latency_ms", "params"):
        v = entry.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            return False
    return True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` + ".lock" (no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _store(path: Path, key: str, entry: Mapping[str, Any]) -> None:
    """Merge one entry into the cache: lock, re-read, add, atomic rename (concurrent writers are safe)."""
    from kdseg.fileio import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        entries = _read_cache(path)
        entries[key] = dict(entry)
        with atomic_write(path, "w") as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=1, sort_keys=True)


def _measure_cost(
    model_cfg: ModelConfig, num_classes: int, size: tuple[int, int], device: str, threads: int
) -> dict[str, Any]:
    """Build the model (random weights) and measure it briefly: batch 1, about a second."""
    from kdseg.models import build_model

    model = build_model(_random_init(model_cfg), num_classes, role="student")
    prof = profile_model(
        model, size, batch=1, device=device, warmup=2, iters=25, threads=threads, budget_s=0.5
    )
    return {
        "gflops": prof["gflops"],
        "latency_ms": prof["latency_ms_p50"],
        "params": prof["params"],
        "latency_ms_p95": prof["latency_ms_p95"],
        "iters": prof["iters"],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def student_cost(
    model_cfg: ModelConfig,
    num_classes: int,
    size: tuple[int, int],
    cache_dir: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    threads: int = 1,
) -> dict[str, Any]:
    """``{"gflops", "latency_ms", "params"}`` of a student, measured once and cached.

    ``gflops``: one forward pass of one image (a multiply-add = 2 FLOPs). ``latency_ms``: median
    batch-1 latency on ``device`` (CPU by default) with ``threads`` torch threads (1 by default: trials
    that run side by side then measure alike), from a short measurement (about a second). The result
    is cached in ``cache_dir/profile_cache.json`` (default ``$KDSEG_CACHE`` or ``~/.cache/kdseg``) under
    (arch, encoder, width, num_classes, size, torch version, device, threads); concurrent trials may
    share the file. A corrupt cache file is ignored and rewritten; an unwritable one only warns.
    """
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / PROFILE_CACHE_FILE
    key = cost_key(model_cfg, num_classes, size, device, threads)
    entry = _read_cache(path).get(key)
    if not _valid_entry(entry):
        entry = _measure_cost(model_cfg, num_classes, tuple(size), device, threads)
        try:
            _store(path, key, entry)
        except OSError as e:
            warnings.warn(f"{path}: cannot write the profile cache ({e}); costs are not cached", stacklevel=2)
    return {
        "gflops": float(entry["gflops"]),
        "latency_ms": float(entry["latency_ms"]),
        "params": int(entry["params"]),
    }
