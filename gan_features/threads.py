"""How many CPU threads torch gets, chosen when a command starts, before the work does.

OpenMP threads that outnumber the cores free to run them wait at every parallel region for a peer
the kernel has descheduled, spinning while they wait: on a 2-core Xeon with another process on one
core, a bf16 train step took 8.7 s at torch's default two threads and 0.92 s at one (0.63 s and 0.36 s on
a 2-core AMD EPYC: results/train_speed.md). So by default a
command gives torch no more threads than there are cores free when it starts (the others' share of
the CPU is sampled from ``/proc/stat`` over a fifth of a second), never more than torch's own choice.
``--threads N`` or ``OMP_NUM_THREADS`` in the environment decide instead, as do calls from Python
that never reach :func:`configure_threads`.

This module imports no torch at load time: the CLI calls it before the command's modules load.
"""
from __future__ import annotations

import math
import os
import time

SAMPLE_SECONDS = 0.2
BUSY_CORE = 0.5  # another process using at least half a core counts as holding it


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def busy_cores(sample_seconds: float | None = None) -> float | None:
    """How many of the machine's cores other processes kept busy over ``sample_seconds`` (default
    :data:`SAMPLE_SECONDS`; this process sleeps meanwhile); None where the kernel does not say."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(SAMPLE_SECONDS if sample_seconds is None else sample_seconds)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    share = (after[0] - before[0]) / (after[1] - before[1])
    return share * (os.cpu_count() or 1)


def free_core_threads(default: int, busy: float | None) -> int:
    """torch's ``default`` thread count lowered by the cores others hold (each at least
    :data:`BUSY_CORE` busy), at least one."""
    if busy is None:
        return default
    held = math.floor(busy + (1 - BUSY_CORE))
    return max(1, min(default, (os.cpu_count() or default) - held))


def configure_threads(requested: int | None = None) -> int:
    """Set torch's thread count for this command and return it: ``requested`` when given, torch's own
    (``OMP_NUM_THREADS`` where set) when the environment decides, else :func:`free_core_threads`."""
    import torch

    if requested:
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > 1:
        torch.set_num_threads(free_core_threads(torch.get_num_threads(), busy_cores()))
    return torch.get_num_threads()
