"""The k-NN probe's speed on features extracted in bfloat16: raw bfloat16 GEMMs against normalised float32.

Features extracted in bf16 are bfloat16 numbers, so ``gan_features.knn`` multiplies the raw rows as
bfloat16 GEMMs with float32 accumulation and divides by the norms afterwards (see its docstring).
This script times ``knn_predict`` both ways on the same seeded matrix in one process, alternating:

* ``raw bf16 GEMMs``: the probe as it runs on such features;
* ``normalised fp32``: the probe with the bfloat16 path switched off (as for features that are not
  bfloat16 numbers), the way every probe ran before.

It reports the median of ``--repeats`` runs each, their ratio, and how many predictions agree (the
two differ only in float32 rounding, so only near-ties may flip). Run it alone on a quiet machine::

    python benchmarks/knn_speed.py --out-dir results

Writes ``<out-dir>/knn_speed.md`` and ``.csv`` (with the machine, threads and load).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch

from gan_features import knn
from gan_features.report import write_benchmark
from gan_features.svm.tensors import _fast_bfloat16

CASES = ("raw bf16 GEMMs", "normalised fp32")


def features(rows: int, dimension: int, seed: int) -> np.ndarray:
    """Non-negative bfloat16 numbers as float32 (max-pooled LeakyReLU activations are mostly positive)."""
    values = torch.from_numpy(np.random.default_rng(seed).gamma(0.5, 1.0, (rows, dimension)).astype(np.float32))
    return values.bfloat16().float().numpy()


def predict(case: str, train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> tuple[float, dict]:
    switched_off = mock.patch.object(knn, "exact_in_bfloat16", lambda X: False)
    with switched_off if case == "normalised fp32" else nullcontext():
        start = time.perf_counter()
        predicted = knn.knn_predict(train, labels, test)
        return time.perf_counter() - start, predicted


def measure(n_train: int, n_test: int, dimension: int, repeats: int) -> tuple[pd.DataFrame, str]:
    train, test = features(n_train, dimension, 0), features(n_test, dimension, 1)
    labels = np.random.default_rng(2).integers(0, 10, n_train)
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    answers: dict[str, dict] = {}
    for case in CASES:  # warm-up: thread start, page faults, kernel choice
        _, answers[case] = predict(case, train, labels, test)
    for _ in range(repeats):
        for case in CASES:
            elapsed, _ = predict(case, train, labels, test)
            seconds[case].append(elapsed)
    flop = 2.0 * n_train * n_test * dimension
    table = pd.DataFrame([{"probe": case, "train x test x dimension": f"{n_train} x {n_test} x {dimension}",
                           "median_s": round(statistics.median(seconds[case]), 3),
                           "similarity GFLOP/s": round(flop / statistics.median(seconds[case]) / 1e9, 1),
                           "runs_s": " ".join(f"{s:.2f}" for s in seconds[case])} for case in CASES])
    ratio = statistics.median(seconds["normalised fp32"]) / statistics.median(seconds["raw bf16 GEMMs"])
    agree = ", ".join(f"k={k}: {np.mean(answers[CASES[0]][k] == answers[CASES[1]][k]):.2%}" for k in knn.KS)
    note = (f"raw bf16 GEMMs {ratio:.2f}x as fast as normalised fp32 (ratio of medians, alternating runs); "
            f"predictions agree {agree}; bfloat16 native on this CPU: {_fast_bfloat16(torch.device('cpu'))}")
    return table, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=10_000)
    parser.add_argument("--test-rows", type=int, default=2_000)
    parser.add_argument("--dimension", type=int, default=28_672)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    if min(args.train_rows, args.test_rows, args.dimension, args.repeats) < 1 or args.train_rows < max(knn.KS):
        parser.error(f"sizes and --repeats must be >= 1, and --train-rows >= {max(knn.KS)} (the largest k)")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    table, note = measure(args.train_rows, args.test_rows, args.dimension, args.repeats)
    load_after = os.getloadavg()
    print(write_benchmark(args.out_dir, "knn_speed", "k-NN probe speed on bfloat16 features", table,
                          [note, f"median of {args.repeats} runs each, after one warm-up of each"],
                          (load_before[0], load_after[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
