"""Wall clock, peak memory and test accuracy of the L2-SVM backends, side by side.

Fits liblinear (scikit-learn ``LinearSVC``) and the torch TRON solver on the first ``--rows``
rows of a training feature store, for one C and for a C grid (warm-started path for torch,
independent fits for liblinear), then scores the test store. Every (rows, mode, solver) runs in
its own subprocess, so each peak-memory figure is that solver's alone.

The real run (quiet machine, CIFAR-10 features of a radford-imagenet32 discriminator)::

    python benchmarks/svm_speed.py --train cifar10-train.h5 --test cifar10-test.h5 --rows 10000 all

Smoke run on synthetic stores written by the script itself::

    python benchmarks/svm_speed.py --synthetic 2500x300 --rows 2000 --out-dir /tmp/svm-speed

The single C defaults to 1e-3, the geometric centre of the grid [1e-4, 1e-2]: both solvers slow
down as C grows (the problem gets worse conditioned), so the centre is a representative cost,
and it is chosen before looking at any accuracy (no hyperparameter is picked on test data;
the grid's accuracies are reported for every C, not maximised).

liblinear needs ~6x the float32 matrix (float64 copy plus its own 16-byte-per-value rows); it
runs at a size only if the growth it showed at a smaller size (else 6x) fits in the memory
available, and the table says so otherwise.

Writes ``<out-dir>/svm_speed.md`` (tables, machine load, commit) and ``<out-dir>/svm_speed.csv``
(one row per rows x mode x solver), plus ``svm_speed_grid.csv`` (accuracy and objective per C).

Long runs (the grid on all 50,000 rows is hours here) survive a stop: every finished run is kept as
``<out-dir>/runs/<key>.json`` and every fitted C of a torch run as ``<out-dir>/runs/<key>.fits/``;
``--resume`` reuses the finished runs and continues a stopped torch run from its last saved C. Such a
run's fit_s is its last process's fit time plus the solve time the saved Cs recorded, and its
``earlier_runs`` column says so; its peak memory is the last process's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

GRID = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]
SINGLE_C = 1e-3
PEAK_BANDWIDTH_GBS = 28.0  # measured read bandwidth of the reference machine
LIBLINEAR_MEMORY_PRIOR = 6.0  # x the float32 matrix, before any liblinear run measured it
RESULT_MARK = "SVM_SPEED_RESULT "
PROGRESS_MARK = "SVM_SPEED_PROGRESS "


# ------------------------------------------------------------------------------------------
# Measurement helpers (used inside the worker processes)
# ------------------------------------------------------------------------------------------

def _status_bytes(field: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (Linux >= 4.0), so the next peak is the fit's own."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(args: argparse.Namespace) -> dict:
    """Fit one solver in one mode on the first ``args.rows`` rows; everything measured here, in the
    process setting a ``gan-features`` command runs with (freed memory kept for reuse), whichever solver."""
    import torch

    from gan_features.allocator import keep_freed_memory

    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gan_features.store import FeatureStore
    from gan_features.svm import LinearL2SVM, fit_c_path, primal_objective

    Cs = [args.C] if args.mode == "single" else args.grid
    rss_start = _status_bytes("VmRSS")
    with FeatureStore(args.train) as store:
        rows = len(store) if args.rows == "all" else min(int(args.rows), len(store))
        start = time.perf_counter()
        X, y = store.load(slice(0, rows))
        load_seconds = time.perf_counter() - start
    matrix_bytes = X.nbytes
    backend, overrides = parse_solver(args.solver)
    params = {"backend": backend, "max_iter": args.max_iter}
    if backend == "torch":
        params.update(device=args.device, hessian_dtype=args.hessian_dtype)
    params.update(overrides)
    # A small untimed fit first: code pages of torch/MKL/liblinear touched for the first time
    # count in RSS (~100 MB measured), and would otherwise pass for the fit's data memory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LinearL2SVM(C=Cs[0], **{**params, "max_iter": 2}).fit(X[:256], y[:256])
    rss_before_fit = _status_bytes("VmRSS")
    reset = _reset_peak_rss()
    load_before = os.getloadavg()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        if backend == "liblinear":
            # Independent fits, each reported as it ends: a timed-out grid still says how far it got.
            models = []
            for C in Cs:
                models.append(LinearL2SVM(C=C, **params).fit(X, y))
                print(PROGRESS_MARK + json.dumps({"C": C, "seconds": time.perf_counter() - start}), flush=True)
        else:
            models = fit_c_path(X, y, Cs, checkpoint_dir=args.checkpoint_dir, **params)
        fit_seconds = time.perf_counter() - start
    fit_peak = _peak_rss()
    load_after = os.getloadavg()
    not_converged = sum("converge" in str(w.message).lower() for w in caught)

    objectives = [float(primal_objective(model, X, y, model.C).sum()) for model in models]
    features = X.shape[1]
    del X
    with FeatureStore(args.test) as store:
        X_test, y_test = store.load()
    accuracies = [float(model.score(X_test, y_test)) for model in models]

    result = {"rows": rows, "features": features, "mode": args.mode, "solver": args.solver,
              "status": "ok", "Cs": Cs, "accuracies": accuracies, "objectives": objectives,
              "fit_seconds": fit_seconds, "load_seconds": load_seconds, "matrix_bytes": matrix_bytes,
              "rss_start": rss_start, "rss_before_fit": rss_before_fit, "fit_peak_rss": fit_peak,
              "peak_is_fit_only": reset, "process_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "not_converged_warnings": not_converged, "load_before": load_before, "load_after": load_after,
              "n_iter": [int(model.n_iter_) for model in models], "threads": torch.get_num_threads()}
    if backend == "torch":
        stats = [model.solver_stats_ for model in models]
        resumed = [s for s in stats if "resumed_from" in s]  # Cs a stopped earlier process fitted
        recorded = [s["solve_seconds"] for s in resumed if "solve_seconds" in s]
        result.update(resumed_fits=len(resumed), resumed_seconds_recorded=len(recorded) == len(resumed),
                      fit_seconds=fit_seconds + sum(recorded))
        result.update({key: sum(s.get(key, 0) for s in stats) for key in
                       ("exact_passes", "hessian_passes", "bytes_streamed", "seconds", "cg_iterations",
                        "newton_iterations", "check_exact_passes", "check_hessian_passes")})
        result["hessian_dtype"] = stats[0]["hessian_dtype"]
        result["solver_used"] = stats[0]["solver"]
        result["gram_seconds"] = stats[0].get("gram_seconds", 0.0)  # the path computes L once
        result["tol"] = models[0].tol
    return result


def parse_solver(spec: str) -> tuple[str, dict]:
    """'liblinear', 'torch' or 'torch:tol=1e-3,solver=primal' -> (backend, LinearL2SVM overrides)."""
    backend, _, options = spec.partition(":")
    if backend not in ("liblinear", "torch"):
        raise ValueError(f"solver {spec!r}: the backend must be liblinear or torch")
    overrides: dict = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key not in ("tol", "solver", "hessian_dtype", "preconditioner_rank"):
            raise ValueError(f"solver {spec!r}: options are tol, solver, hessian_dtype and preconditioner_rank, "
                             f"got {key!r}")
        overrides[key] = float(value) if key == "tol" else \
            int(value) if key == "preconditioner_rank" and value != "auto" else value
    return backend, overrides


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------

def _memory_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _commit() -> str:
    from gan_features.provenance import package_source_state

    commit, dirty = package_source_state()  # read once: the runs take hours, HEAD may move meanwhile
    return "unknown" if commit is None else commit[:12] + ("+dirty" if dirty else "")


def _run_key(args: argparse.Namespace, solver: str, mode: str, rows: str) -> str:
    """A run's identity for --resume: the stores (path, size, mtime), rows, mode, solver, Cs, settings."""
    def store(path: str) -> list:
        stat = Path(path).stat()
        return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]

    inputs = [store(args.train), store(args.test), rows, mode, solver, args.C if mode == "single" else args.grid,
              args.device, args.hessian_dtype, args.max_iter, args.threads]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:24]


def run_worker(args: argparse.Namespace, solver: str, mode: str, rows: str, checkpoint_dir: Path | None) -> dict:
    command = [sys.executable, __file__, "--worker", "--solver", solver, "--mode", mode, "--rows", rows,
               "--train", args.train, "--test", args.test, "--C", repr(args.C), "--grid", *map(repr, args.grid),
               "--device", args.device, "--hessian-dtype", args.hessian_dtype, "--max-iter", str(args.max_iter)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if checkpoint_dir is not None:
        command += ["--checkpoint-dir", str(checkpoint_dir)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        progress = [json.loads(line[len(PROGRESS_MARK):]) for line in output.splitlines()
                    if line.startswith(PROGRESS_MARK)]
        fitted = "; ".join(f"C={p['C']:g} done at {p['seconds']:.0f} s" for p in progress) or "no C finished"
        return {"solver": solver, "mode": mode, "status": f"timeout after {args.timeout:.0f} s ({fitted})"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"solver": solver, "mode": mode, "status": f"failed (exit {done.returncode}): {tail}"}
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def synthesize(spec: str, directory: Path, n_classes: int = 10, seed: int = 0) -> tuple[str, str]:
    """Train/test stores of class-structured non-negative features (like pooled activations),
    written chunk by chunk; reused when already there."""
    from gan_features.store import FeatureWriter

    n, d = (int(part) for part in spec.lower().split("x"))
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.gamma(1.0, 0.3, size=(n_classes, d)).astype(np.float32)
    paths = []
    for split, count in (("train", n), ("test", max(n_classes, n // 4))):
        path = directory / f"synthetic-{spec}-{split}.h5"
        paths.append(str(path))
        if path.exists():
            continue
        attrs = {"dataset": "synthetic", "split": split, "architecture": "none", "feature_spec": spec,
                 "checkpoint_sha256": "none"}
        with FeatureWriter(path, count, d, attrs) as writer:
            for start in range(0, count, 4096):
                m = min(4096, count - start)
                labels = rng.integers(0, n_classes, size=m)
                rows = np.abs(means[labels] + rng.standard_normal((m, d), dtype=np.float32))
                writer.append(rows, labels)
    return paths[0], paths[1]


def _gib(value: float | None) -> float:
    return float("nan") if value is None else value / 2**30


def _earlier_runs(result: dict) -> str:
    """What of a run was measured by an earlier invocation (--resume); empty when nothing was."""
    if result.get("reused_from"):
        return f"whole run reused, measured {result['reused_from']}"
    fits = result.get("resumed_fits", 0)
    if not fits:
        return ""
    if result.get("resumed_seconds_recorded", True):
        return f"{fits} of {len(result['Cs'])} Cs fitted by a stopped earlier process (their solve time is in fit_s)"
    return f"{fits} of {len(result['Cs'])} Cs fitted by a stopped earlier process (time not recorded: not in fit_s)"


def summarise(results: list[dict], peak_bandwidth: float):
    """The main table (one row per rows x mode x solver) and the per-C table."""
    import pandas as pd

    table, per_c = [], []
    for r in results:
        row = {"rows": r.get("rows_label"), "mode": r["mode_label"], "solver": r["solver"], "status": r["status"],
               "earlier_runs": _earlier_runs(r)}
        if r["status"] == "ok":
            growth = r["fit_peak_rss"] - r["rss_before_fit"]
            row.update({
                "fit_s": round(r["fit_seconds"], 2),
                "load_s": round(r["load_seconds"], 2),
                "matrix_GiB": round(_gib(r["matrix_bytes"]), 3),
                "fit_peak_RSS_GiB": round(_gib(r["fit_peak_rss"]), 3),
                "fit_growth_x_matrix": round(growth / r["matrix_bytes"], 2),
                "total_x_matrix": round((r["fit_peak_rss"] - r["rss_start"]) / r["matrix_bytes"], 2),
                "test_accuracy": round(r["accuracies"][0], 4) if len(r["accuracies"]) == 1 else float("nan"),
                "iterations": sum(r["n_iter"]),
                "not_converged": r["not_converged_warnings"],
                "load_avg_1min": f'{r["load_before"][0]:.2f}->{r["load_after"][0]:.2f}',
            })
            if r["solver"].startswith("torch"):
                passes = r["exact_passes"] + r["hessian_passes"]
                rate = r["bytes_streamed"] / r["seconds"] / 1e9 if r["seconds"] else float("nan")
                row.update({"passes(exact+hessian)": f'{passes} ({r["exact_passes"]}+{r["hessian_passes"]})',
                            "GB_per_pass": round(r["bytes_streamed"] / max(passes, 1) / 1e9, 3),
                            "pass_GB/s": round(rate, 2), "%_of_peak_bw": round(100 * rate / peak_bandwidth, 1),
                            "time_in_passes_%": round(100 * r["seconds"] / r["fit_seconds"], 1),
                            "hessian_dtype": r["hessian_dtype"], "solver_used": r["solver_used"],
                            "gram_s": round(r["gram_seconds"], 1),
                            "check_passes": f'{r["check_exact_passes"]}+{r["check_hessian_passes"]}'})
            for C, accuracy, objective in zip(r["Cs"], r["accuracies"], r["objectives"]):
                per_c.append({"rows": r["rows_label"], "mode": r["mode"], "C": C, "solver": r["solver"],
                              "test_accuracy": accuracy, "objective": objective})
        table.append(row)
    table = pd.DataFrame(table)
    if "fit_s" in table:
        # Side by side in this run: liblinear's time for the same rows and mode over this row's.
        reference = table[table["solver"] == "liblinear"].set_index(["rows", "mode"])["fit_s"]
        table.insert(5, "x_faster_than_liblinear", [
            round(reference.get((rows, mode), float("nan")) / fit, 1) if fit == fit else float("nan")
            for rows, mode, fit in zip(table["rows"], table["mode"], table["fit_s"])])
    per_c = pd.DataFrame(per_c)
    if len(per_c):
        per_c = per_c.pivot_table(index=["rows", "mode", "C"], columns="solver",
                                  values=["test_accuracy", "objective"]).reset_index()
        per_c.columns = ["_".join(str(part) for part in column if part) for column in per_c.columns]
        if "objective_liblinear" in per_c:
            for spec in sorted({r["solver"] for r in results if r["solver"] != "liblinear"}):
                if f"objective_{spec}" in per_c:
                    per_c[f"objective_rel_diff_{spec}"] = (per_c[f"objective_{spec}"] - per_c["objective_liblinear"]) \
                        / per_c["objective_liblinear"]
                    per_c[f"accuracy_diff_points_{spec}"] = 100 * (per_c[f"test_accuracy_{spec}"]
                                                                   - per_c["test_accuracy_liblinear"])
    return table, per_c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="training feature store (.h5)")
    parser.add_argument("--test", help="test feature store (.h5)")
    parser.add_argument("--synthetic", metavar="NxD", help="write and use synthetic train/test stores of N rows x D")
    parser.add_argument("--rows", nargs="+", default=["10000", "all"],
                        help="training rows to use, first rows of the store ('all': every row); default: 10000 all")
    parser.add_argument("--C", type=float, default=SINGLE_C, help=f"the single C (default {SINGLE_C:g})")
    parser.add_argument("--grid", type=float, nargs="+", default=GRID, help="the C grid (default: 7 values)")
    parser.add_argument("--solvers", nargs="+", default=["liblinear", "torch"], metavar="SPEC",
                        help="liblinear, torch, or torch with LinearL2SVM options, e.g. torch:tol=1e-3 "
                             "torch:solver=primal torch:preconditioner_rank=256 (default: liblinear torch)")
    parser.add_argument("--modes", nargs="+", default=["single", "grid"], choices=["single", "grid"])
    parser.add_argument("--skip", nargs="+", default=[], metavar="SOLVER:MODE",
                        help="pairs not to run, e.g. liblinear:grid (reported as not run, with the reason)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the workers (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hessian-dtype", default="auto", choices=["auto", "float32", "float64", "bfloat16"])
    parser.add_argument("--max-iter", type=int, default=1000, help="max_iter of both solvers")
    parser.add_argument("--peak-bandwidth", type=float, default=PEAK_BANDWIDTH_GBS, help="GB/s, for the %% column")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per worker (default: none)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse runs an earlier invocation finished (same stores, rows, solver and settings) "
                             "and continue a stopped torch run from its last saved C")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-dir", help=argparse.SUPPRESS)
    parser.add_argument("--solver", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for spec in args.solvers:
        try:
            parse_solver(spec)
        except ValueError as error:
            parser.error(str(error))

    if args.worker:
        args.rows = args.rows[0]
        print(RESULT_MARK + json.dumps(worker(args)), flush=True)
        return 0

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        args.train, args.test = synthesize(args.synthetic, out_dir / "synthetic")
    elif not (args.train and args.test):
        parser.error("give --train and --test stores, or --synthetic NxD")

    from gan_features.provenance import cpu_model
    from gan_features.store import FeatureStore

    with FeatureStore(args.train) as store:
        n_train, dimension = len(store), store.dimension
    load_start, commit, started = os.getloadavg(), _commit(), dt.datetime.now(dt.timezone.utc)
    results: list[dict] = []
    liblinear_factor: tuple[float, int] | None = None  # (growth / matrix, rows it was measured at)
    sizes = sorted(args.rows, key=lambda r: n_train if r == "all" else int(r))
    for rows in sizes:
        n_rows = n_train if rows == "all" else min(int(rows), n_train)
        for mode in args.modes:
            mode_label = f"C={args.C:g}" if mode == "single" else f"grid of {len(args.grid)} Cs"
            for solver in args.solvers:
                print(f"[{dt.datetime.now():%H:%M:%S}] rows={n_rows} {mode_label} {solver} ...", flush=True)
                if f"{solver}:{mode}" in args.skip:
                    # e.g. liblinear's grid is independent fits: ~len(grid) x its single-C time, an hour at 10k rows
                    results.append({"solver": solver, "mode": mode, "status": f"not run (--skip {solver}:{mode}): "
                                    f"{len(args.grid)} independent fits, ~{len(args.grid)}x the single-C time",
                                    "rows_label": n_rows, "mode_label": mode_label})
                    continue
                if solver == "liblinear":
                    factor, measured_at = liblinear_factor or (LIBLINEAR_MEMORY_PRIOR, None)
                    needed = factor * n_rows * dimension * 4
                    available = _memory_available()
                    if needed > 0.9 * available:
                        source = f"measured at {measured_at} rows" if measured_at else "prior, not measured"
                        results.append({"solver": solver, "mode": mode, "status":
                                        f"skipped: needs ~{_gib(needed):.1f} GiB ({factor:.1f}x the float32 matrix, "
                                        f"{source}), {_gib(available):.1f} GiB available",
                                        "rows_label": n_rows, "mode_label": mode_label})
                        continue
                saved = out_dir / "runs" / f"{_run_key(args, solver, mode, str(n_rows))}.json"
                fits = saved.with_suffix(".fits") if solver.startswith("torch") else None
                if args.resume and saved.is_file():
                    result = json.loads(saved.read_text())
                    result["reused_from"] = result.get("measured_at", "earlier")
                else:
                    if fits is not None and not args.resume:
                        shutil.rmtree(fits, ignore_errors=True)
                    result = run_worker(args, solver, mode, str(n_rows), fits)
                    if result["status"] == "ok":
                        result["measured_at"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}"
                        saved.parent.mkdir(exist_ok=True)
                        partial = saved.with_name(saved.name + ".partial")
                        partial.write_text(json.dumps(result))
                        os.replace(partial, saved)
                        if fits is not None:
                            shutil.rmtree(fits, ignore_errors=True)
                result.update(rows_label=n_rows, mode_label=mode_label)
                results.append(result)
                if solver == "liblinear" and result["status"] == "ok":
                    growth = (result["fit_peak_rss"] - result["rss_before_fit"]) / result["matrix_bytes"]
                    # Growth past the loaded matrix, +1 for the matrix itself.
                    liblinear_factor = (max(growth + 1, liblinear_factor[0] if liblinear_factor else 0), n_rows)
                print(f"    {result['status']}" + (f", fit {result['fit_seconds']:.1f} s"
                                                    if result["status"] == "ok" else ""), flush=True)

    table, per_c = summarise(results, args.peak_bandwidth)
    table.to_csv(out_dir / "svm_speed.csv", index=False)
    per_c.to_csv(out_dir / "svm_speed_grid.csv", index=False)
    import torch

    header = [
        "# L2-SVM speed: liblinear vs torch TRON",
        "",
        f"- command: `{' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}`",
        f"- train: `{args.train}` ({n_train} x {dimension}), test: `{args.test}`",
        f"- commit {commit}, {started:%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"threads {args.threads or torch.get_num_threads()}, device {args.device}, CPU {cpu_model()} x {os.cpu_count()}",
        f"- load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_start)} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after "
        "(timings are only meaningful on a quiet machine)",
        f"- single C = {args.C:g} (geometric centre of the grid; chosen without test data), "
        f"grid = {', '.join(f'{c:g}' for c in args.grid)} (torch: one warm-started path; liblinear: independent fits)",
        "- memory: fit_peak_RSS = RSS high-water mark during the fit (reset after loading the training rows); "
        "fit_growth_x_matrix = (peak - RSS before the fit) / float32 matrix; total_x_matrix = (peak - RSS at "
        "interpreter start) / matrix, i.e. including the loaded matrix itself",
        f"- torch passes: one pass = X @ V then X.T @ R (two reads of X; for solver_used=gram, of the n x n Gram "
        f"factor L instead); pass_GB/s = bytes read by the products / time inside passes, vs "
        f"{args.peak_bandwidth:g} GB/s peak read bandwidth; gram_s = time to form X X^T and factor it; "
        "check_passes = exact+Hessian passes over X that checked (and polished) the Gram solution",
        "- x_faster_than_liblinear = liblinear's fit_s / this fit_s, same rows and mode, this run",
        "",
    ]
    body = ["## Runs", "", table.to_markdown(index=False), "", "## Per C (test accuracy is reported, never used to "
            "choose C)", "", per_c.to_markdown(index=False) if len(per_c) else "(no successful runs)", ""]
    (out_dir / "svm_speed.md").write_text("\n".join(header + body))
    print("\n".join(body))
    print(f"\nwrote {out_dir / 'svm_speed.md'}, {out_dir / 'svm_speed.csv'}, {out_dir / 'svm_speed_grid.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
