"""Measuring one network's inference cost: parameters, FLOPs, latency and throughput.

- :func:`profile_model`: one ``nn.Module`` at one input size: parameters, GFLOPs per image, latency
  p50/p95 per batch, images/s and (on CUDA) peak memory. Eval mode, ``torch.inference_mode``,
  warm-up iterations first, CUDA synchronised around every timed forward, bf16 through autocast.
- :func:`profile_interleaved`: several models timed in alternating rounds, so that they see the same
  machine load.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of one
image: a multiply-add counts as 2 FLOPs, and only the operators it has formulas for are counted
(convolutions, transposed convolutions, matrix products, attention); element-wise operations,
normalisation, pooling and resizing are not. Latency is wall-clock time per batch.

torch is imported inside the functions. What a config costs is :mod:`kdseg.deploy.bench`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kdseg.errors import KdsegError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


__all__ = [
    "FLOPS_NOTE",
    "BenchError",
    "count_flops",
    "profile_interleaved",
    "profile_model",
    "resolve_device",
]

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
