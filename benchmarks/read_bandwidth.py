"""Memory read bandwidth of this machine, as the L2-SVM's passes see it.

A pass of the torch solver is memory-bound (it streams the feature matrix once per product), so
``svm_speed.py`` reports its pass rate as a share of the machine's peak read bandwidth. That peak
differs between machines (28 GB/s was measured on the AMD EPYC machine of the first runs); this
script measures it where the solver runs, three ways, each the median of ``--repeats`` runs:

* ``sum``: ``X.sum()`` over a float32 matrix (the plain streaming read, the peak to compare with);
* ``X^T @ R``: the solver's gradient product, ``X`` float32 row-major, ``R`` with 16 columns (10 classes, zero-padded);
* ``bf16 X^T @ R``: the same on the bfloat16 copy the Hessian passes read (stored transposed).

Run it alone on a quiet machine::

    python benchmarks/read_bandwidth.py --gib 2 --out-dir results

Writes ``<out-dir>/read_bandwidth.md`` and ``.csv`` (with the machine, threads and load).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from gan_features.report import write_benchmark
from gan_features.svm import COLUMN_MULTIPLE  # the solver pads its class columns to this
from speed_common import median_seconds


def measure(gib: float, repeats: int, features: int = 28_672) -> pd.DataFrame:
    rows = max(1, int(gib * 2**30 / (4 * features)))
    X = torch.rand(rows, features)
    R = torch.rand(rows, COLUMN_MULTIPLE)
    X_t16 = X.T.contiguous().to(torch.bfloat16)  # the layout the Hessian passes stream
    R16 = R.to(torch.bfloat16)
    cases = [("sum", "float32", X.nbytes, lambda: X.sum()),
             ("X^T @ R", "float32", X.nbytes, lambda: X.T @ R),
             ("bf16 X^T @ R", "bfloat16", X_t16.nbytes, lambda: X_t16 @ R16)]
    table = []
    for name, dtype, nbytes, run in cases:
        seconds = median_seconds(run, repeats)
        table.append({"read": name, "dtype": dtype, "matrix": f"{rows} x {features}", "GB": round(nbytes / 1e9, 3),
                      "median_s": round(seconds, 4), "GB/s": round(nbytes / seconds / 1e9, 2)})
    return pd.DataFrame(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the float32 matrix (default 2 GiB)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    if args.gib <= 0 or args.repeats < 1:
        parser.error("--gib must be > 0 and --repeats >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    table = measure(args.gib, args.repeats)
    load_after = os.getloadavg()
    print(write_benchmark(args.out_dir, "read_bandwidth", "Memory read bandwidth", table,
                          [f"median of {args.repeats} runs each, after one warm-up; GB = 1e9 bytes of the matrix read"],
                          (load_before[0], load_after[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
