"""Freed memory kept in the process for reuse: glibc's malloc thresholds, raised when a command starts.

glibc serves every block above its mmap threshold (at most 32 MiB by its own tuning) from a fresh
mapping and unmaps it when freed, so torch's activations of each batch, the solvers' work arrays and
each draw's rows are faulted in again, page by page, every time. On the VMs this toolkit runs on a
fault costs a few microseconds (the freshly mapped memory ~0.8 s of system time per GB): the CI-scale
Tables 1-2 took 30 million page faults and 117 s of system time out of 805 s of CPU. With blocks up to
:data:`HEAP_BLOCK_MAX_BYTES` kept on the heap, 2.7 million and 45 s, and the run took 383 s instead of
442 s with the same numbers (AMD EPYC, 2 cores, quiet; results/README.md, Cost). Larger blocks (whole
feature matrices) are still mapped and returned to the system when freed, so the kept memory stays a
small part of a run's peak.

It changes how much memory the process keeps mapped, not any result. Allocator settings made in the
environment (``MALLOC_*``, ``GLIBC_TUNABLES``) win; elsewhere than glibc this does nothing. This module
imports no torch: the CLI calls it before the command's modules load.
"""
from __future__ import annotations

import ctypes
import os
import platform

HEAP_BLOCK_MAX_BYTES = 1 << 30  # blocks up to this size come from the heap and are reused once freed
HEAP_FREE_TOP_MAX_BYTES = 1 << 30  # free memory at the heap's top beyond this is returned to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if they were set (glibc, and
    the environment sets no allocator option of its own)."""
    if any(key.startswith("MALLOC_") for key in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # The trim threshold first: a heap that may grow to hold 1 GiB blocks must not hand them back at once.
    return bool(mallopt(_M_TRIM_THRESHOLD, HEAP_FREE_TOP_MAX_BYTES)) and \
        bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_MAX_BYTES))
