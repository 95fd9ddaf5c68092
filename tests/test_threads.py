"""The default thread count: torch's own, lowered by the cores other processes hold."""
import subprocess
import sys
import time

import pytest

from gan_features import threads


def test_free_core_threads_lowers_torch_default_by_held_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    assert threads.free_core_threads(8, 0.0) == 8
    assert threads.free_core_threads(8, 0.4) == 8  # under half a core: noise, not a held core
    assert threads.free_core_threads(8, 0.6) == 7
    assert threads.free_core_threads(8, 2.5) == 5
    assert threads.free_core_threads(4, 2.0) == 4  # 6 cores free: never above torch's own choice
    assert threads.free_core_threads(8, 9.0) == 1  # at least one
    assert threads.free_core_threads(8, None) == 8  # no /proc/stat: torch's choice


def test_busy_cores_sees_a_spinning_process():
    if threads.busy_cores(0.01) is None:
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        busy = threads.busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.8  # one core held (other work on a shared machine only adds to it)


def test_configure_threads_honours_an_explicit_count():
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
