"""What train_speed.py, extract_speed.py and prepare_speed.py share: each measurement in a fresh
worker process (its own environment and thread count, no allocator state from the one before), the
machine's matmul peak to set achieved GFLOP/s against, and a spinning process that holds one core."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

RESULT_MARK = "RESULT "


def worker_main(measure: Callable[[dict], dict]) -> bool:
    """In a worker (``--worker JSON`` on the command line): run ``measure(payload)``, print its result
    and return True; in the parent, return False."""
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(RESULT_MARK + json.dumps(measure(json.loads(sys.argv[2]))), flush=True)
        return True
    return False


def run_worker(script: str, payload: dict, env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    """``payload`` measured by ``script`` in a fresh Python, with ``env`` added to this environment."""
    done = subprocess.run([sys.executable, script, "--worker", json.dumps(payload)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:]) or "(no output)"
        raise RuntimeError(f"worker {payload} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def random_images(count: int, size: int = 32):
    """``count`` seeded random uint8 images (N, 3, size, size): dense convolutions cost the same whatever
    the pixels."""
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (count, 3, size, size), dtype=np.uint8)


def random_dataset(images):
    """``images`` (uint8, from :func:`random_images`) as an in-memory dataset of one class."""
    from gan_features.data import ArrayImageDataset

    return ArrayImageDataset(images, [0] * len(images), ["random"], name="random", split="train",
                             source="random uint8", image_size=images.shape[-1])


def set_threads(threads) -> int:
    """``None``: torch's default; ``"auto"``: what a ``gan-features`` command chooses; N: N."""
    import torch

    if threads == "auto":
        from gan_features.threads import configure_threads

        return configure_threads(None)
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``run``, after one untimed call (thread start, page
    faults, kernel choice are not what is measured)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gflops(dtype: str, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s in ``dtype`` (float32 or bfloat16) of a 4096-square matmul and of a 1x1 convolution of
    1,024 channels over 16 x 32 x 32 pixels (the same GEMM through oneDNN, the library the networks'
    convolutions use: on AMD CPUs MKL's matmul falls well short of it), each the median of ``repeats``."""
    import torch
    import torch.nn.functional as F

    kind = getattr(torch, dtype)
    a, b = (torch.randn(4096, 4096).to(kind) for _ in range(2))
    x = torch.randn(16, 1024, 32, 32).to(kind).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1024, 1024, 1, 1).to(kind).contiguous(memory_format=torch.channels_last)
    return {"matmul": 2 * 4096 ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9,
            "conv1x1": 2 * 16 * 32 * 32 * 1024 * 1024 / median_seconds(lambda: F.conv2d(x, w), repeats) / 1e9}


def describe_peaks(peaks: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{dtype} {values['matmul']:.0f} GFLOP/s matmul (4096-square), {values['conv1x1']:.0f} "
                     f"1x1 conv (oneDNN)" for dtype, values in peaks.items()) + \
        "; the higher of each pair is the peak the % column uses"


def flops(run: Callable[[], object]) -> int:
    """The floating-point operations ``run()`` performs, counted by torch's FlopCounterMode (matmuls and
    convolutions, forward and backward: the work that sets the pace)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


@contextmanager
def one_core_held() -> Iterator[None]:
    """Another process spinning on one core for the duration: a shared machine's worst ordinary case."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def load_average() -> float:
    return os.getloadavg()[0]
