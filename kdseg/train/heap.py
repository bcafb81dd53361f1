"""How the C heap holds a training process's tensors on the CPU (glibc only; elsewhere nothing changes).

PyTorch's CPU allocator is glibc's ``malloc``. glibc serves a large block from its own ``mmap`` (returned
to the OS when freed) only above a threshold that it raises, up to 32 MiB, each time such a block is
freed: after the first steps, a network's gradients, activations and temporaries come from the heap,
whose freed pieces stay resident and fragment. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``,
what the ``MALLOC_MMAP_THRESHOLD_`` environment variable sets at start-up) gives each tensor of
``MMAP_THRESHOLD`` bytes or more its own mapping, unmapped when freed. 4 MiB: the quickstart trial's peak
83 MB lower and no slower; 128 KiB (glibc's initial value) saves 145 MB but maps and faults in every
activation afresh each step, 1.29x the step time at 128x128 (docs/performance.md).
"""

from __future__ import annotations

import os

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 4 * 2**20  # fixed, no longer raised by glibc
ENV = "MALLOC_MMAP_THRESHOLD_"  # set by the user: theirs is kept


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold for this process (once is enough); False where there is no glibc or
    the user set ``MALLOC_MMAP_THRESHOLD_``."""
    if ENV in os.environ:
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
