"""The memory allocator of a training process: freed memory is kept and reused, not returned to the system.

glibc's malloc hands blocks of 128 KiB and more to ``mmap`` and gives them back with ``munmap`` when freed, and
trims the heap's top when it shrinks. A training loop frees and reallocates the same activations and gradients
every step, so each step faults in fresh zeroed pages: on the arena's CPU runs that was about a third of a
worker's time spent in the kernel, and two workers on two cores then contend for it (``python
benchmarks/arena_overhead.py --workers 2``: 1.54 × the runs per hour of one; with reuse, 1.80 ×, and each worker
faster). The arena's commands (``compare``, ``worker``, ``run``, ``evidence``) therefore keep freed memory for
reuse: no ``mmap`` for large blocks, no trimming. The process's resident memory stays at its peak, which a
training process reaches on its first step anyway. ``OPTARENA_MALLOC=system`` leaves glibc's defaults; elsewhere
than glibc (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
ENV = "OPTARENA_MALLOC"
POLICIES = ("reuse", "system")


def keep_freed_memory() -> str:
    """Set this process's malloc to reuse freed memory (see the module docstring); returns what was done."""
    policy = os.environ.get(ENV, "reuse")
    if policy not in POLICIES:
        raise ValueError(f"Invalid {ENV}: {policy!r}; expected one of {', '.join(map(repr, POLICIES))}")
    if policy == "system":
        return "system malloc (OPTARENA_MALLOC=system)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "system malloc (no glibc mallopt here)"
    if mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1:
        return "reuse (glibc mallopt: no mmap, no trim)"
    return "system malloc (mallopt refused)"
