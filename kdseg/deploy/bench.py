"""Inference cost of kdseg's networks: parameters, FLOPs, latency and throughput.

- :func:`profile_model`: one ``nn.Module`` at one input size: parameters, GFLOPs per image, latency
  p50/p95 per batch, images/s and (on CUDA) peak memory. Eval mode, ``torch.inference_mode``,
  warm-up iterations first, CUDA synchronised around every timed forward, bf16 through autocast.
- :func:`bench_config`: the teacher (unless ``distill.mode`` is ``none``) and the student of a training
  config, built *without* pretrained weights or checkpoints (weights do not change speed, and a
  benchmark must not need the network).
- :func:`student_cost`: a student's GFLOPs, batch-1 CPU latency and parameters, measured once per
  (architecture, encoder, width, classes, input size, torch version, device, threads) and cached in
  ``profile_cache.json`` so that every sweep trial can ask for it cheaply.
- :func:`add_bench_parser`: the ``kdseg bench`` command (a table and a JSON file).

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of one
image: a multiply-add counts as 2 FLOPs, and only the operators it has formulas for are counted
(convolutions, transposed convolutions, matrix products, attention); element-wise operations,
normalisation, pooling and resizing are not. Latency is wall-clock time per batch.

Heavy libraries (torch, smp) are imported inside the functions, so registering the command is free.
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

from kdseg.errors import KdsegError
from kdseg.layout import PROFILE_CACHE_FILE

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from kdseg.config import KDConfig, ModelConfig

__all__ = [
    "FLOPS_NOTE",
    "BenchError",
    "bench_config",
    "default_cache_dir",
    "cost_key",
    "count_flops",
    "profile_interleaved",
    "profile_model",
    "student_cost",
]

CACHE_VERSION = 1  # bump when the way costs are measured changes: old entries are then ignored
FLOPS_NOTE = (
    "GFLOPs: one forward pass of one image, counted by torch.utils.flop_counter.FlopCounterMode "
    "(a multiply-add = 2 FLOPs; convolutions and matrix products only)"
)


class BenchError(KdsegError):
    """A benchmark cannot run as asked (bad size, CUDA requested without CUDA, ...)."""


# ------------------------------------------------------------------------------------- devices


def resolve_device(device: str | Any) -> Any:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` -> a ``torch.device``; BenchError if absent."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BenchError(f"--device: unknown device {device!r} (use cpu or cuda)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(
                "--device cuda: CUDA is not available on this machine "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise BenchError(f"--device: {dev.type} is not supported (use cpu or cuda)")
    return dev


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` (None: leave it), restored afterwards."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _in_channels(model: nn.Module) -> int:
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of a non-empty list."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ------------------------------------------------------------------------------------ profiling


def count_flops(model: nn.Module, x: Any) -> int:
    """FLOPs of ``model(x)`` (FlopCounterMode: a multiply-add = 2 FLOPs), in inference mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


def _timed_forwards(
    model: nn.Module,
    x: Any,
    dev: Any,
    bf16: bool,
    warmup: int,
    iters: int,
    budget_s: float | None = None,
    min_iters: int = 3,
) -> tuple[list[float], int]:
    """Seconds per forward for ``iters`` timed runs after ``warmup`` untimed ones.

    With ``budget_s``, warm-up stops early once it has used the budget, and timing stops once
    ``min_iters`` runs are done and the budget is spent. Returns the times and the warm-up count.
    """
    import torch

    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16)
    times: list[float] = []
    done_warmup = 0
    with torch.inference_mode(), autocast:
        started = time.perf_counter()
        for _ in range(warmup):
            model(x)
            done_warmup += 1
            if budget_s is not None and time.perf_counter() - started > budget_s:
                break
        _sync(dev)
        started = time.perf_counter()
        for i in range(iters):
            t0 = time.perf_counter()
            model(x)
            _sync(dev)
            times.append(time.perf_counter() - t0)
            if budget_s is not None and i + 1 >= min_iters and time.perf_counter() - started > budget_s:
                break
    return times, done_warmup


def _check_args(batch: int, warmup: int, iters: int) -> None:
    if batch < 1 or warmup < 0 or iters < 1:
        raise BenchError(f"batch and iters must be >= 1 and warmup >= 0 (got {batch}, {iters}, {warmup})")


def _prepare(model: nn.Module, size: tuple[int, int], batch: int, dev: Any, channels_last: bool) -> Any:
    """Eval mode, moved to ``dev`` in the memory format; returns a random input batch."""
    import torch

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.eval().to(dev, memory_format=memory_format)
    h, w = size
    return torch.randn(batch, _in_channels(model), h, w, device=dev).contiguous(memory_format=memory_format)


def _checked_flops(model: nn.Module, x: Any) -> int:
    try:
        return count_flops(model, x[:1])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        h, w = x.shape[-2:]
        raise BenchError(f"{type(model).__name__} cannot run on a {h}x{w} input: {first[:300]}") from None


def _summary(
    model: nn.Module,
    flops: int,
    times: list[float],
    done_warmup: int,
    x: Any,
    dev: Any,
    bf16: bool,
    channels_last: bool,
    peak_mib: float | None,
    threads: int | None,
) -> dict[str, Any]:
    from kdseg.models import count_params

    ms = [t * 1000.0 for t in times]
    return {
        "params": count_params(model),
        "flops": flops,
        "gflops": flops / 1e9,
        "latency_ms_p50": _percentile(ms, 50),
        "latency_ms_p95": _percentile(ms, 95),
        "latency_ms_mean": sum(ms) / len(ms),
        "images_per_s": x.shape[0] * len(times) / sum(times),
        "peak_mem_mib": peak_mib,
        "size": [int(x.shape[-2]), int(x.shape[-1])],
        "batch": int(x.shape[0]),
        "device": str(dev),
        "dtype": "bf16" if bf16 else "fp32",
        "channels_last": bool(channels_last),
        "warmup": done_warmup,
        "iters": len(times),
        "threads": threads,
    }


def profile_model(
    model: nn.Module,
    size: tuple[int, int] = (512, 512),
    batch: int = 1,
    device: str | Any = "cpu",
    channels_last: bool = False,
    bf16: bool = False,
    warmup: int = 5,
    iters: int = 20,
    *,
    threads: int | None = None,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Parameters, FLOPs, latency and throughput of ``model`` on random ``[batch, C, H, W]`` input.

    The model is put in eval mode and moved to ``device`` (in place). ``gflops`` is per image for one
    forward pass (FlopCounterMode: a multiply-add = 2 FLOPs; counted in float32 on one image: the count
    does not depend on dtype or batch). ``latency_ms_p50``/``_p95`` are per *batch*, measured after
    ``warmup`` untimed forwards, with CUDA synchronised around each timed forward; ``images_per_s``
    is ``batch * iters / total time``. ``peak_mem_mib`` is the peak CUDA memory allocated during the
    timed runs (None on CPU). ``threads`` sets torch's CPU threads for the measurement; ``budget_s``
    bounds the time spent (at least 3 timed runs).
    """
    import torch

    _check_args(batch, warmup, iters)
    dev = resolve_device(device)
    if bf16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BenchError("--bf16: this GPU does not support bfloat16")
    x = _prepare(model, (int(size[0]), int(size[1])), batch, dev, channels_last)
    with _threads(threads if dev.type == "cpu" else None):
        flops = _checked_flops(model, x)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        times, done_warmup = _timed_forwards(model, x, dev, bf16, warmup, iters, budget_s)
        n_threads = torch.get_num_threads() if dev.type == "cpu" else None
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return _summary(model, flops, times, done_warmup, x, dev, bf16, channels_last, peak, n_threads)


def profile_interleaved(
    models: Mapping[str, nn.Module],
    size: tuple[int, int],
    batch: int = 1,
    channels_last: bool = False,
    bf16: bool = False,
    warmup: int = 5,
    iters: int = 20,
    rounds: int = 4,
) -> dict[str, dict[str, Any]]:
    """:func:`profile_model` for several models on the CPU, timed in alternating rounds.

    Each model's ``iters`` timed forwards are split into ``rounds`` chunks run in ABBA order
    (A B, B A, A B, ...), so that load from other processes, which drifts over seconds, hits every
    model alike: their latency *ratio* stays meaningful on a busy machine.
    """
    import torch

    _check_args(batch, warmup, iters)
    dev = torch.device("cpu")
    xs = {name: _prepare(m, size, batch, dev, channels_last) for name, m in models.items()}
    flops = {name: _checked_flops(m, xs[name]) for name, m in models.items()}
    warm = {name: _timed_forwards(m, xs[name], dev, bf16, warmup, 0)[1] for name, m in models.items()}
    n = max(1, min(rounds, iters))
    chunks = [iters // n + (1 if i < iters % n else 0) for i in range(n)]
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for i, chunk in enumerate(chunks):
        for name in order if i % 2 == 0 else reversed(order):
            times[name] += _timed_forwards(models[name], xs[name], dev, bf16, 0, chunk)[0]
    threads = torch.get_num_threads()
    return {
        name: _summary(
            m, flops[name], times[name], warm[name], xs[name], dev, bf16, channels_last, None, threads
        )
        for name, m in models.items()
    }


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
