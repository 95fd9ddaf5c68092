"""Freed memory kept for reuse (glibc's malloc thresholds): a freed large block is reused, not faulted in again."""
import os
import platform
import subprocess
import sys

import pytest

from gan_features import allocator

# Faults taken by a 64 MiB block allocated and written after an equal one was freed, in a fresh
# interpreter: glibc unmaps such a block at free (above its largest automatic mmap threshold, 32 MiB).
FAULTS_OF_A_SECOND_BLOCK = """
import resource, sys
import numpy as np
from gan_features.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(64 << 20, dtype=np.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(faults())
"""


def _faults(mode: str) -> int:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_SECOND_BLOCK, mode], env=env, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc thresholds are glibc's")
def test_a_freed_large_block_is_reused_not_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    assert default >= 32  # 64 MiB mapped afresh: 32 huge pages at the very least
    assert kept <= 4, f"{kept} page faults for a block the heap already held (default: {default})"


def test_allocator_settings_in_the_environment_win(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert allocator.keep_freed_memory() is False


def test_commands_that_compute_keep_freed_memory(monkeypatch):
    import argparse

    from gan_features import cli, threads

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(threads, "configure_threads", lambda requested: 1)
    cli._configure(argparse.Namespace(command="svm", threads=None))
    assert calls == ["kept"]
    cli._configure(argparse.Namespace(command="archs"))  # lists, computes nothing
    assert calls == ["kept"]
