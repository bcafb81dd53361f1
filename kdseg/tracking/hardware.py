"""Speed and memory of a run: peak RSS, the device, per-epoch hardware metrics."""

from __future__ import annotations

import os
import re
from typing import Any

# ---------------------------------------------------------------------------------- speed, memory


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB since start or the last :func:`reset_peak_rss`."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> bool:
    """Collect garbage and hand the heap it freed back to the OS (glibc ``malloc_trim``).

    Called when a trial ends: a reused Ray worker runs trial after trial, and glibc keeps what a
    finished trial freed (models, optimiser state, activations) mapped; the next trial's allocations
    then land beside it instead of in it (``benchmarks/trial_memory.py --trials-per-process 3``).
    False where there is no glibc.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


class HardwareMetrics:
    """Epoch hook: ``peak_rss_mb``, the trial process's peak resident memory during the epoch (for the
    whole process so far where the peak cannot be reset), next to train_kd's ``images_per_s`` and, on
    CUDA, ``peak_memory_mb`` (peak GPU memory allocated in the epoch)."""

    def __init__(self) -> None:
        reset_peak_rss()  # a reused Ray worker must not report the previous trial's peak

    def __call__(self, ctx) -> None:
        rss = peak_rss_mb()
        if rss is not None:
            ctx.metrics["peak_rss_mb"] = round(rss, 1)
        reset_peak_rss()


def hardware_info(device: Any = None) -> dict[str, Any]:
    """Where a run trains (logged to the W&B config): device, CPU count, torch threads, GPU name."""
    import platform

    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if device is not None:
        info["device"] = str(device)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def epoch_hooks(cfg, sink=None) -> list:
    """The epoch hooks every kdseg run gets: hardware metrics, and images unless ``log_images_every`` is 0."""
    from kdseg.tracking.images import EpochImages

    hooks: list = [HardwareMetrics()]
    every = cfg.tracking.wandb.log_images_every
    if every > 0:
        hooks.append(EpochImages(every, sink=sink))
    return hooks
