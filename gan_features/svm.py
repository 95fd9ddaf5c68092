"""L2-regularised squared-hinge linear SVMs, one-vs-rest, as in Radford et al. (2015).

Objective
---------
For each one-vs-rest classifier k (labels ``y_ik = +1`` for class k, ``-1`` otherwise)::

    min_w  0.5 ||w||^2 + C sum_i max(0, 1 - y_ik w.x~_i)^2

which is exactly liblinear's ``L2R_L2LOSS_SVC`` (scikit-learn ``LinearSVC(loss="squared_hinge")``).
Binary problems have one classifier whose positive class is ``classes_[1]``, as in scikit-learn.

Intercept, as liblinear treats it: ``x~_i = [x_i, intercept_scaling]`` is ``x_i`` with one
constant feature appended, whose weight ``b~`` is regularised like the others, and
``intercept_ = intercept_scaling * b~``. Both backends therefore minimise the same function and
their objectives are directly comparable (:func:`primal_objective`).

Backends
--------
``"torch"`` (default) solves the primal with TRON, liblinear's own primal solver for this loss:
a trust-region Newton method whose steps come from conjugate gradients on the generalised
Hessian ``H v = v + 2C X~_I^T (X~_I v)``, ``I`` the rows with a positive hinge. All classes are
solved at once: every product with the data is one matrix product ``X @ V`` (``V`` holding one
column per class, zero-padded to a multiple of 16 because skinny GEMMs with 10 columns ran ~7x
slower here) followed by one ``X.T @ R``. Classes converge independently; converged classes and
classes whose CG has finished drop out of the products. Function values and gradients are
always computed in the data's own precision (float32 or float64) and reduced in float64, so the
solution and its stopping test are exact; only the Hessian-vector products, which merely choose
the Newton direction, may use a bfloat16 copy of ``X`` (``hessian_dtype``): an inexact Hessian
costs iterations, never accuracy (measured: 20-50% more Hessian passes, each ~2x cheaper per
row on an AVX512-BF16 CPU; objectives within 1e-7 of liblinear's either way). The margins
``z = X~ w`` are carried in float64 and updated by ``X~ s`` for each step ``s``, so TRON's
actual-vs-predicted reduction test sees only the rounding of the small product ``X~ s``; with
float32 data and ``z`` recomputed from ``X~ w``, rounding noise of ~1e-7 |f| stalled the test
well before liblinear's tolerance. Threads: torch's setting is used as it is (on a shared
machine, ``torch.set_num_threads(1)`` avoids OpenMP oversubscription, measured 5x slower).

Fewer rows than features (``solver="gram"``, chosen by ``"auto"`` when ``n <= d / 2``): the
optimal ``w~`` lies in the span of the rows, so with ``L`` the Cholesky factor of the Gram matrix,
``L L^T = X~ X~^T`` (n x n, float64), the change of variables ``w~ = X~^T L^-T v`` is an isometry
(``||w~|| = ||v||``, ``X~ w~ = L v``, ``||g_w|| = ||g_v||``): TRON on the n x n matrix ``L`` takes
the same steps as on ``X~``, and each pass reads n^2 values instead of n (d + 1). Cost: the
Gram matrix, n^2 d / 2 multiply-adds (its lower triangle, in row blocks), and an O(n^3 / 3)
Cholesky; at 10,000 x 28,672 here ~19 s + ~5 s, against ~0.1 s saved on each of hundreds of
passes. Exact passes read ``L`` in the data's precision; Hessian passes (``hessian_dtype``) a
bfloat16 copy kept in both layouts, so that ``L @ V`` and ``L^T @ R`` both stream at ~20 GB/s
here (float32: ~10): at 10,000 rows, C=1e-3, 1,186 bfloat16 Hessian passes took 49 s where 722
float32 ones took 66 s (the rounding of ``L`` costs Newton steps, never accuracy). The fitted ``v`` is mapped back
exactly (a float64 triangular solve and one float64 pass over ``X``) and the result is checked by
the primal stopping test on ``X`` itself (one exact pass; primal TRON steps polish it if the
rounding of ``L`` left it short), so both solvers return models that pass the same test. A Gram
matrix that is singular (duplicate or dependent rows) makes ``"auto"`` fall back to the primal.
Memory at n rows: ``L`` in float64, in the data's dtype and twice in bfloat16, 16 n^2 bytes
(1.6 GB at 10,000; the float32 10,000 x 28,672 matrix is 1.15 GB), and no copy of ``X``.

``"liblinear"`` is scikit-learn's ``LinearSVC`` (``dual="auto"``: the primal TRON when there are
more samples than features), kept as the reference. It converts ``X`` to float64 and then to
liblinear's sparse rows (16 bytes per value), ~6x the float32 matrix.

Memory (``"torch"``)
--------------------
``X`` is used in place: numpy float32/float64 arrays are wrapped with ``torch.from_numpy``
(no copy), tensors are used as given. The only large allocation is the optional bfloat16 copy
for Hessian products (half the float32 matrix), so the peak is ~1.5x the float32 matrix, plus
work arrays: per row and class a float64 margin and a bool (9 bytes), and about a dozen float64
(n_features + 1) x n_classes vectors (~35 MB for 28,672 features). :meth:`LinearL2SVM.fit_store`
never holds more than two row blocks of an HDF5 feature store in memory (one being read while
the other is multiplied): every pass streams the store from disk.

On a CUDA ``device`` the matrix (and its bfloat16 copy) is copied to the device once; the host
array is not copied.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "liblinear")
HESSIAN_DTYPES = ("auto", "float32", "float64", "bfloat16")
SOLVERS = ("auto", "primal", "gram")
GRAM_MAX_ROW_FRACTION = 0.5  # "auto" uses the Gram solver up to n = d / 2 rows (see the module docstring)
GRAM_BLOCK_ROWS = 2048  # rows per block of the Gram matrix's lower triangle
GRAM_SCRATCH_BYTES = 16 << 20  # float64 row blocks when mapping the solution back to w
GRAM_MIN_PIVOT = 1e-10  # smallest L_ii^2 / max K_ii accepted: below, mapping v back loses too many digits
COLUMN_MULTIPLE = 16  # pad class columns: MKL/oneDNN skinny GEMMs measured ~7x slower at 10 than 16
DEFAULT_STORE_BLOCK_BYTES = 64 << 20  # rows read from a store per block (two blocks live at once)

# TRON's constants, as in liblinear's tron.cpp.
_ETA0, _ETA1, _ETA2 = 1e-4, 0.25, 0.75  # step acceptance / trust-region update thresholds
_SIGMA1, _SIGMA2, _SIGMA3 = 0.25, 0.5, 4.0  # trust-region shrink / expand factors
_CG_TOL = 0.5  # CG stops when i (Q_i - Q_{i-1}) >= 0.5 Q_i (liblinear >= 2.30's eps_cg for this test)
_MAX_CG_ITER = 1000  # safeguard only: TRON converges with truncated CG steps

# Per-class solver status.
_RUNNING, _CONVERGED, _STALLED, _MAX_ITER = 0, 1, 2, 3
_STATUS_NAMES = {_RUNNING: "running", _CONVERGED: "converged", _STALLED: "stalled", _MAX_ITER: "max_iter"}


# --------------------------------------------------------------------------------------------
# Devices, dtypes, tensors
# --------------------------------------------------------------------------------------------

def _fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively (not emulated) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:  # a private torch API: if it is gone, assume no native bfloat16
            capability = torch._C._cpu._get_cpu_capability()
        except AttributeError:
            return False
        return bool(capability.get("avx512_bf16") or capability.get("amx_bf16"))
    return False


def _resolve_hessian_dtype(name: str, data_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if name not in HESSIAN_DTYPES:
        raise ValueError(f"hessian_dtype must be one of {HESSIAN_DTYPES}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if _fast_bfloat16(device) else data_dtype
    return getattr(torch, name)


def _as_tensor(X) -> torch.Tensor:
    """``X`` as a tensor sharing its memory (numpy arrays are wrapped, never copied)."""
    if isinstance(X, torch.Tensor):
        return X.detach()
    array = np.asarray(X)
    if any(stride < 0 for stride in array.strides):  # torch cannot wrap negative strides
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Read-only arrays (memmaps, h5py reads) are fine: the solver never writes to X.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _float_on(X: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``X`` as float32/float64 on ``device``: the same tensor when it already is (no copy)."""
    if X.dtype not in (torch.float32, torch.float64):
        X = X.to(torch.float32)  # only reached for tensors of other dtypes: documented copy
    return X.to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# Row sources: where the rows of X come from, block by block
# --------------------------------------------------------------------------------------------

class _RowSource:
    """Yields ``(row slice, block of X on the device)`` for one pass over the rows."""

    n_rows: int
    n_features: int
    device: torch.device
    data_dtype: torch.dtype
    hessian_dtype: torch.dtype
    disk_bytes_per_pass: int = 0

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """(rows, block, block^T): the block for ``block @ V``, its transpose (maybe stored in
        another layout) for ``block^T @ R``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release threads or files the source holds (nothing, in memory)."""


class _TensorRows(_RowSource):
    """An in-memory matrix, used as one block (one GEMM per product is fastest).

    The Hessian copy (when its dtype differs from the data's) is stored transposed, ``X^T``
    contiguous: for bfloat16 on this CPU, ``X^T @ R`` then runs at ~20 GB/s instead of ~6 and
    ``X @ V`` (on the transposed view) at ~8 instead of ~12, ~1.4x per pass at 10,000 x 28,672
    with 16 columns. ``both_layouts`` keeps the row-major copy as well, for ~20 GB/s both ways
    (twice the copy's memory: used for the small n x n Gram factor only).
    """

    def __init__(self, X: torch.Tensor, device: torch.device, hessian_dtype: str, both_layouts: bool = False):
        self.X = _float_on(X, device)
        self.n_rows, self.n_features = self.X.shape
        self.device, self.data_dtype = device, self.X.dtype
        self.hessian_dtype = _resolve_hessian_dtype(hessian_dtype, self.data_dtype, device)
        if self.hessian_dtype == self.data_dtype:
            self.X_hessian, self.X_hessian_t = self.X, self.X.T
        else:  # the one extra copy the memory budget allows (half the float32 matrix in bfloat16)
            self.X_hessian_t = self.X.T.to(self.hessian_dtype, memory_format=torch.contiguous_format)
            self.X_hessian = self.X_hessian_t.T.contiguous() if both_layouts else self.X_hessian_t.T

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        if hessian:
            yield slice(0, self.n_rows), self.X_hessian, self.X_hessian_t
        else:
            yield slice(0, self.n_rows), self.X, self.X.T


class _StoreRows(_RowSource):
    """Rows of an HDF5 feature store, streamed from disk in blocks for every pass.

    ``rows`` selects a contiguous range (a slice) or sorted unique indices; for indices, each
    block reads the covering range of the file and keeps the selected rows. Two read buffers
    alternate so that a background thread reads block b+1 while block b is multiplied
    (torch releases the GIL inside its kernels, so the two really overlap).
    """

    def __init__(self, dataset, rows: np.ndarray | slice, device: torch.device, hessian_dtype: str,
                 block_bytes: int = DEFAULT_STORE_BLOCK_BYTES, prefetch: bool = True):
        self.dataset = dataset
        n_file, self.n_features = dataset.shape
        file_dtype = np.dtype(dataset.dtype)
        if file_dtype not in (np.float32, np.float64):
            raise ValueError(f"feature store holds {file_dtype} features; expected float32 or float64")
        self.data_dtype = torch.float32 if file_dtype == np.float32 else torch.float64
        self.device = device
        self.hessian_dtype = _resolve_hessian_dtype(hessian_dtype, self.data_dtype, device)
        row_bytes = self.n_features * file_dtype.itemsize
        chunk_rows = (dataset.chunks or (1,))[0]
        # Whole HDF5 chunks per block, at least one: reading part of a chunk makes HDF5 read the
        # whole chunk into a temporary buffer of its own (and read it again for the next block).
        block_rows = max(1, block_bytes // (row_bytes * chunk_rows)) * chunk_rows
        self.plan = self._plan(rows, n_file, block_rows)
        self.n_rows = sum(len(sel) if sel is not None else hi - lo for lo, hi, sel, _ in self.plan)
        self.disk_bytes_per_pass = sum(hi - lo for lo, hi, _, _ in self.plan) * row_bytes
        buffer_rows = max((hi - lo for lo, hi, _, _ in self.plan), default=0)
        prefetch = prefetch and len(self.plan) > 1
        self.buffers = [np.empty((buffer_rows, self.n_features), dtype=file_dtype) for _ in range(2 if prefetch else 1)]
        # One reader thread for the source's lifetime (not one per pass).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svm-store-read") if prefetch else None

    @staticmethod
    def _plan(rows: np.ndarray | slice, n_file: int, block_rows: int
              ) -> list[tuple[int, int, np.ndarray | None, slice]]:
        """Blocks as (file start, file stop, selected file rows or None for all, output slice);
        ``rows`` is a slice with step 1 or sorted unique indices (see :func:`_store_rows`)."""
        plan: list[tuple[int, int, np.ndarray | None, slice]] = []
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(n_file)
            for lo in range(start, stop, block_rows):
                hi = min(lo + block_rows, stop)
                plan.append((lo, hi, None, slice(lo - start, hi - start)))
            return plan
        out = 0
        for lo in range(0, n_file, block_rows):
            hi = min(lo + block_rows, n_file)
            a, b = np.searchsorted(rows, [lo, hi])
            if b > a:
                selected = rows[a:b]
                plan.append((int(selected[0]), int(selected[-1]) + 1, selected, slice(out, out + b - a)))
                out += b - a
        return plan

    def _read(self, index: int, buffer: np.ndarray) -> np.ndarray:
        lo, hi, selected, _ = self.plan[index]
        view = buffer[:hi - lo]
        self.dataset.read_direct(view, source_sel=np.s_[lo:hi])
        if selected is None or len(selected) == hi - lo:
            return view
        return view[selected - lo]  # a copy, at most one block

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        def emit(index: int, array: np.ndarray) -> tuple[slice, torch.Tensor, torch.Tensor]:
            block = torch.from_numpy(array).to(self.device)
            if hessian and block.dtype != self.hessian_dtype:
                block = block.to(self.hessian_dtype)
            return self.plan[index][3], block, block.T

        if self._pool is None:
            for index in range(len(self.plan)):
                yield emit(index, self._read(index, self.buffers[0]))
            return
        pending = self._pool.submit(self._read, 0, self.buffers[0])
        try:
            for index in range(len(self.plan)):
                array = pending.result()
                if index + 1 < len(self.plan):
                    # The other buffer is free: its block was consumed before we were resumed.
                    pending = self._pool.submit(self._read, index + 1, self.buffers[(index + 1) % 2])
                yield emit(index, array)
        finally:
            pending.result()  # never leave a read in flight into a buffer the next pass reuses

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# --------------------------------------------------------------------------------------------
# Products with X~ = [X, s 1]
# --------------------------------------------------------------------------------------------

@dataclass
class PassStats:
    """What the solver asked of the data: one "pass" is one fused sweep ``X @ V`` then ``X.T @ R``."""

    exact_passes: int = 0  # function value + gradient, in the data's dtype
    hessian_passes: int = 0  # Hessian-vector products, in the Hessian dtype
    bytes_streamed: int = 0  # bytes of X read by matrix products (each GEMM reads its block once)
    disk_bytes: int = 0  # bytes read from a feature store (0 in memory)
    seconds: float = 0.0  # wall time spent inside passes

    @property
    def gigabytes_per_second(self) -> float:
        return self.bytes_streamed / self.seconds / 1e9 if self.seconds > 0 else float("nan")


class _Design:
    """Products of the augmented matrix ``X~ = [X, s 1]`` (no column when there is no intercept)
    with class-column matrices, accumulated in float64 over row blocks."""

    def __init__(self, rows: _RowSource, labels: torch.Tensor, intercept_scaling: float | None):
        self.rows = rows
        self.labels = labels  # (n,) int64 class index per row, on the device
        self.scaling = intercept_scaling
        self.n_weights = rows.n_features + (intercept_scaling is not None)
        self.stats = PassStats()

    def _sweep(self, V: torch.Tensor, hessian: bool,
               residual: Callable[[slice, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``X~^T residual(X~ V)``, block by block; ``residual`` maps (rows, Z) -> R of Z's shape."""
        rows, d = self.rows, self.rows.n_features
        dtype = rows.hessian_dtype if hessian else rows.data_dtype
        k = V.shape[1]
        padded = -(-k // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
        Vp = torch.zeros(d, padded, dtype=dtype, device=rows.device)
        Vp[:, :k] = V[:d]
        bias = None
        if self.scaling is not None:
            bias = torch.zeros(1, padded, dtype=dtype, device=rows.device)
            bias[0, :k] = self.scaling * V[d]
        out = torch.zeros(self.n_weights, k, dtype=torch.float64, device=rows.device)
        R = None
        start = time.perf_counter()
        for block_rows, Xb, Xb_t in rows.blocks(hessian):
            Z = Xb @ Vp if bias is None else torch.addmm(bias, Xb, Vp)
            if R is None or R.shape[0] != Z.shape[0]:
                R = torch.zeros_like(Z)  # pad columns stay zero
            R[:, :k] = residual(block_rows, Z[:, :k])
            out[:d] += (Xb_t @ R)[:, :k].to(torch.float64)
            if bias is not None:
                out[d] += self.scaling * R[:, :k].sum(0, dtype=torch.float64)
            self.stats.bytes_streamed += 2 * Xb.numel() * Xb.element_size()
        _synchronize(rows.device)
        self.stats.seconds += time.perf_counter() - start
        self.stats.disk_bytes += rows.disk_bytes_per_pass
        if hessian:
            self.stats.hessian_passes += 1
        else:
            self.stats.exact_passes += 1
        return out

    def signs(self, rows: slice, positives: torch.Tensor) -> torch.Tensor:
        """y in {-1, +1}, (rows, classes): +1 where the row's label is the column's positive class."""
        return (self.labels[rows, None] == positives[None, :]).to(torch.float64) * 2 - 1

    def evaluate(self, W: torch.Tensor, positives: torch.Tensor, C: float, step: torch.Tensor | None = None,
                 margins: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective (k,), gradient (n_weights, k), margins z = X~ W (n, k) and active set at W.

        f = 0.5 ||w||^2 + C sum max(0, 1 - y z)^2,  g = w + 2C X~^T (active * (z - y)), one exact
        pass. Given the margins at W - step, the margins at W are taken as ``margins + X~ step``
        (float64): the change of f between the two points then carries the rounding error of
        the small product ``X~ step`` only, not that of ``X~ W`` (with float32 data, the latter
        is ~1e-7 |f| and swamps TRON's actual-vs-predicted reduction test near the optimum).
        """
        k = W.shape[1]
        loss = torch.zeros(k, dtype=torch.float64, device=W.device)
        new_margins = torch.empty(self.rows.n_rows, k, dtype=torch.float64, device=W.device)
        active = torch.empty(self.rows.n_rows, k, dtype=torch.bool, device=W.device)

        def residual(rows: slice, Z: torch.Tensor) -> torch.Tensor:
            y = self.signs(rows, positives)
            z = Z.to(torch.float64) if margins is None else margins[rows] + Z.to(torch.float64)
            new_margins[rows] = z
            margin = 1 - y * z
            hinge = margin > 0
            active[rows] = hinge
            loss.add_((margin.clamp_min(0) ** 2).sum(0))
            return torch.where(hinge, z - y, 0).to(Z.dtype)

        XtR = self._sweep(W if margins is None else step, hessian=False, residual=residual)
        f = 0.5 * (W * W).sum(0) + C * loss
        return f, W + 2 * C * XtR, new_margins, active

    def hessian_product(self, V: torch.Tensor, active: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``X~_I^T (X~_I V)`` per class column (I: each class's active rows), one Hessian pass."""
        def residual(rows: slice, Z: torch.Tensor) -> torch.Tensor:
            return Z * active[rows][:, columns].to(Z.dtype)

        return self._sweep(V, hessian=True, residual=residual)


class _GramFactor:
    """``L`` with ``L L^T = X~ X~^T`` (lower triangular, float64) and the map from TRON's ``v`` back
    to ``w~ = X~^T L^-T v``; see the module docstring. :meth:`compute` returns None if the Gram
    matrix is numerically singular."""

    def __init__(self, X: torch.Tensor, scaling: float | None, L: torch.Tensor, seconds: float):
        self.X, self.scaling, self.L, self.seconds = X, scaling, L, seconds

    @classmethod
    def compute(cls, X: torch.Tensor, scaling: float | None) -> "_GramFactor | None":
        start = time.perf_counter()
        n = X.shape[0]
        K = torch.empty(n, n, dtype=torch.float64, device=X.device)
        # The lower triangle only (all the Cholesky reads), one row block at a time: ~half the
        # flops of X @ X.T (measured 21 s vs 30 s at 10,000 x 28,672), GEMMs in X's precision.
        for lo in range(0, n, GRAM_BLOCK_ROWS):
            hi = min(lo + GRAM_BLOCK_ROWS, n)
            K[lo:hi, :hi] = X[lo:hi] @ X[:hi].T
        if scaling is not None:
            K += scaling * scaling  # the constant feature's products (upper triangle is never read)
        largest = K.diagonal().max()
        _, info = torch.linalg.cholesky_ex(K, out=(K, torch.empty((), dtype=torch.int32, device=X.device)))
        smallest = K.diagonal().min() ** 2 if int(info) == 0 else 0.0
        _synchronize(X.device)
        if int(info) != 0 or not smallest > GRAM_MIN_PIVOT * largest:
            return None
        return cls(X, scaling, torch.tril(K, out=K), time.perf_counter() - start)

    def weights(self, V: torch.Tensor) -> torch.Tensor:
        """``X~^T L^-T V`` in float64 ((n_features [+ 1]) x k), X read in row blocks."""
        B = torch.linalg.solve_triangular(self.L.T, V.to(torch.float64), upper=True)
        n, d = self.X.shape
        W = torch.zeros(d + (self.scaling is not None), V.shape[1], dtype=torch.float64, device=V.device)
        block = max(1, GRAM_SCRATCH_BYTES // (8 * d))  # float64 copies of a few rows at a time
        for lo in range(0, n, block):
            W[:d] += self.X[lo:lo + block].T.to(torch.float64) @ B[lo:lo + block]
        if self.scaling is not None:
            W[d] = self.scaling * B.sum(0)
        return W

    def coordinates(self, W: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`weights` on the row span: ``V = L^-1 X~ W`` (``w~ = X~^T L^-T v`` is
        then ``W``'s projection onto the span of the rows, where the optimum lies)."""
        n, d = self.X.shape
        W = W.to(torch.float64)
        Z = torch.empty(n, W.shape[1], dtype=torch.float64, device=W.device)
        block = max(1, GRAM_SCRATCH_BYTES // (8 * d))
        for lo in range(0, n, block):
            Z[lo:lo + block] = self.X[lo:lo + block].to(torch.float64) @ W[:d]
        if self.scaling is not None:
            Z += self.scaling * W[d]
        return torch.linalg.solve_triangular(self.L, Z, upper=False)


# --------------------------------------------------------------------------------------------
# TRON, batched over classes
# --------------------------------------------------------------------------------------------

@dataclass
class _Solution:
    W: torch.Tensor  # (n_weights, n_classifiers) float64
    n_iter: np.ndarray  # accepted Newton steps per classifier
    status: list[str]
    newton_iterations: int
    cg_iterations: int


class _Tron:
    """Trust-region Newton-CG (liblinear's TRON) for all one-vs-rest classifiers at once.

    Per classifier, the iteration is liblinear's: same trust-region rules and constants, CG
    truncated by liblinear >= 2.30's quadratic-model test, and the stopping test ``||g|| <= eps ||g(w=0)||`` with liblinear's
    primal tolerance ``eps = tol * max(min(#pos, #neg), 1) / n``. Batching only synchronises
    the classifiers: each outer iteration takes one trust-region step for every classifier
    still running, and one CG iteration does one Hessian pass for every CG still running.
    """

    def __init__(self, design: _Design, positives: Sequence[int], tol: float, max_iter: int):
        self.design = design
        device = design.labels.device
        self.positives = torch.as_tensor(list(positives), dtype=torch.int64, device=device)
        n = design.rows.n_rows
        counts = torch.bincount(design.labels, minlength=int(self.positives.max()) + 1).to(torch.float64)
        n_pos = counts[self.positives]
        self.eps = tol * torch.clamp(torch.minimum(n_pos, n - n_pos), min=1) / n
        self.max_iter = max_iter
        self._xty: torch.Tensor | None = None  # X~^T Y: the gradient at w = 0 is -2C X~^T Y
        # liblinear's: once |actred| and |prered| are both below 1e-12 |f|, no progress is measurable.
        self.stall_rtol = 1e-12

    def solve(self, C: float, W0: torch.Tensor | None = None) -> _Solution:
        design, device = self.design, self.design.labels.device
        K, n_weights = len(self.positives), design.n_weights
        W = torch.zeros(n_weights, K, dtype=torch.float64, device=device) if W0 is None else W0.clone()
        f, G, Z, active = design.evaluate(W, self.positives, C)
        if not (torch.isfinite(f).all() and torch.isfinite(G).all()):
            raise ValueError("the features contain NaN or infinity (or values so large that their products overflow)")
        if self._xty is None:
            G0 = G if W0 is None else design.evaluate(torch.zeros_like(W), self.positives, C)[1]
            self._xty = -G0 / (2 * C)
        gnorm0 = 2 * C * self._xty.norm(dim=0)
        tolerance = self.eps * gnorm0

        status = torch.full((K,), _RUNNING, dtype=torch.int64, device=device)
        status[G.norm(dim=0) <= tolerance] = _CONVERGED
        delta = G.norm(dim=0)
        first_step = torch.ones(K, dtype=torch.bool, device=device)
        n_iter = torch.zeros(K, dtype=torch.int64, device=device)
        outer = cg_total = 0
        while outer < self.max_iter:
            idx = (status == _RUNNING).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            outer += 1
            Gi, Wi, fi = G[:, idx], W[:, idx], f[idx]
            S, R, cg = self._truncated_cg(delta[idx], Gi, active, idx, C)
            cg_total += cg
            W_new = Wi + S
            f_new, G_new, Z_new, active_new = design.evaluate(W_new, self.positives[idx], C, step=S,
                                                              margins=Z[:, idx])

            gs = (Gi * S).sum(0)
            prered = -0.5 * (gs - (S * R).sum(0))
            actred = fi - f_new
            snorm = S.norm(dim=0)
            d = delta[idx]
            d = torch.where(first_step[idx], torch.minimum(d, snorm), d)  # liblinear: until a step is taken
            curvature = f_new - fi - gs
            alpha = torch.where(curvature <= 0, torch.full_like(gs, _SIGMA3),
                                torch.clamp(-0.5 * gs / torch.where(curvature > 0, curvature, 1.0), min=_SIGMA1))
            delta[idx] = torch.where(
                actred < _ETA0 * prered, torch.minimum(torch.clamp(alpha, min=_SIGMA1) * snorm, _SIGMA2 * d),
                torch.where(actred < _ETA1 * prered, torch.maximum(_SIGMA1 * d, torch.minimum(alpha * snorm, _SIGMA2 * d)),
                            torch.where(actred < _ETA2 * prered,
                                        torch.maximum(_SIGMA1 * d, torch.minimum(alpha * snorm, _SIGMA3 * d)),
                                        torch.maximum(d, torch.minimum(alpha * snorm, _SIGMA3 * d)))))

            accept = actred > _ETA0 * prered
            taken = idx[accept]
            if taken.numel():
                W[:, taken] = W_new[:, accept]
                f[taken], G[:, taken] = f_new[accept], G_new[:, accept]
                Z[:, taken], active[:, taken] = Z_new[:, accept], active_new[:, accept]
                n_iter[taken] += 1
                first_step[taken] = False
                done = G[:, taken].norm(dim=0) <= tolerance[taken]
                status[taken[done]] = _CONVERGED
            # liblinear's safeguards: no progress is possible at this precision.
            floor = self.stall_rtol * f[idx].abs()
            stalled = ((actred.abs() <= 0) & (prered <= 0)) | ((actred.abs() <= floor) & (prered.abs() <= floor))
            stalled &= status[idx] == _RUNNING
            status[idx[stalled]] = _STALLED
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("TRON iter %d: %d classifiers running, %d CG passes, f %s", outer, idx.numel(), cg,
                             f.tolist())
        status[status == _RUNNING] = _MAX_ITER
        names = [_STATUS_NAMES[int(s)] for s in status.tolist()]
        return _Solution(W, n_iter.cpu().numpy(), names, outer, cg_total)

    def _truncated_cg(self, delta: torch.Tensor, G: torch.Tensor, active: torch.Tensor, columns: torch.Tensor,
                      C: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        """liblinear's trcg, per column: CG on H s = -g inside ||s|| <= delta (the quadratic-model stop
        of liblinear >= 2.30, without its preconditioner); returns s, the
        residual r = -g - H s, and the number of Hessian passes."""
        S = torch.zeros_like(G)
        R = -G
        D = R.clone()
        rTr = (R * R).sum(0)
        running = rTr.sqrt() > 0
        Q = torch.zeros_like(rTr)  # the quadratic model's value at S, per column
        iterations = 0
        while iterations < _MAX_CG_ITER:
            j = running.nonzero().squeeze(1)
            if j.numel() == 0:
                break
            iterations += 1
            d = D[:, j]
            Hd = d + 2 * C * self.design.hessian_product(d, active, columns[j])
            dHd = (d * Hd).sum(0)
            curved = dHd > 1e-16  # H >= I, so only a vanishing d fails this
            alpha = rTr[j] / torch.where(curved, dHd, 1.0)
            s_old, radius = S[:, j], delta[j]
            outside = (s_old + alpha * d).norm(dim=0) > radius
            # Step to the boundary: the positive root of ||s + tau d|| = delta.
            std, sts, dtd = (s_old * d).sum(0), (s_old * s_old).sum(0), (d * d).sum(0)
            dsq = radius * radius
            rad = torch.sqrt(torch.clamp(std * std + dtd * (dsq - sts), min=0))
            tau = torch.where(std >= 0, (dsq - sts) / torch.clamp(std + rad, min=1e-300),
                              (rad - std) / torch.clamp(dtd, min=1e-300))
            step = torch.where(curved, torch.where(outside, tau, alpha), 0.0)
            S[:, j] = s_old + step * d
            Rj = R[:, j] - step * Hd
            R[:, j] = Rj
            rnew = (Rj * Rj).sum(0)
            D[:, j] = Rj + (rnew / torch.clamp(rTr[j], min=1e-300)) * d
            rTr[j] = rnew
            # Nash & Sofer's test (liblinear >= 2.30): stop once the model's decrease per iteration,
            # times the iteration count, falls below half the decrease so far. Measured on 3,000 x
            # 28,672 CIFAR features: 583 passes instead of 761 for ||r|| <= 0.1 ||g||, same optimum.
            Sj = S[:, j]
            newQ = -0.5 * ((Sj * Rj).sum(0) - (Sj * G[:, j]).sum(0))
            improving = (newQ <= 0) & (newQ - Q[j] <= 0) & (iterations * (newQ - Q[j]) < _CG_TOL * newQ)
            Q[j] = newQ
            running[j] = curved & ~outside & improving & (rnew > 0)
        return S, R, iterations


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

class LinearL2SVM(ClassifierMixin, BaseEstimator):
    """Linear L2-SVM (squared hinge, L2 penalty), one-vs-rest; see the module docstring.

    Parameters
    ----------
    C : float
        Inverse regularisation strength (> 0), per liblinear's objective above.
    backend : {"torch", "liblinear"}
        ``"torch"``: batched TRON in torch (fast, in place, out-of-core via :meth:`fit_store`).
        ``"liblinear"``: scikit-learn's ``LinearSVC``, the reference.
    fit_intercept, intercept_scaling : bool, float
        liblinear's intercept: a constant feature of value ``intercept_scaling`` whose weight is
        regularised; ``intercept_ = intercept_scaling * weight``.
    tol : float
        Stopping tolerance with liblinear's meaning (for the primal: ``||g|| <= tol *
        max(min(#pos, #neg), 1) / n * ||g(w=0)||`` per classifier).
    max_iter : int
        Maximum trust-region iterations (accepted or not) for ``"torch"``; passed to
        ``LinearSVC`` for ``"liblinear"``.
    hessian_dtype : {"auto", "float32", "float64", "bfloat16"}
        Precision of the Hessian-vector products (``"torch"``). ``"auto"``: bfloat16 where the
        device multiplies it natively (AVX512-BF16/AMX CPUs, CUDA), else the data's dtype. A
        bfloat16 copy costs half the float32 matrix; it only steers the Newton direction, the
        objective and gradient stay exact.
    solver : {"auto", "primal", "gram"}
        How ``"torch"`` fits in memory: TRON on ``X`` (``"primal"``) or on the Cholesky factor
        of the Gram matrix (``"gram"``, same steps, n x n instead of n x d per pass; see the
        module docstring). ``"auto"``: ``"gram"`` when n_samples <= n_features / 2 and the Gram
        matrix is not singular, else ``"primal"``. :meth:`fit_store` is always primal.
    device : str or torch.device
        Where ``"torch"`` computes ("cpu", "cuda", "cuda:1", ...).
    random_state : int, RandomState or None
        Used by ``"liblinear"`` only (its dual coordinate descent shuffles); TRON is deterministic.
    warm_start : bool
        Start TRON from the previous fit's ``coef_`` and ``intercept_`` (same classes and number
        of features) instead of zero, as scikit-learn's ``warm_start``: refitting at the chosen C
        on all rows after choosing it on most of them needs fewer passes. Same stopping test, so
        the same solution up to ``tol``. ``"torch"`` only (``LinearSVC`` cannot be given a start).

    Attributes
    ----------
    classes_, coef_ (n_classifiers, n_features), intercept_ (n_classifiers,), n_features_in_,
    n_iter_ (max over classifiers of accepted Newton steps, or LinearSVC's), and for ``"torch"``
    ``solver_stats_`` (passes over the data, bytes streamed, time in passes, per-class status;
    ``solve_seconds``: TRON's wall time for this C, without one-off setup such as the bfloat16
    copy or the Gram factor, ``gram_seconds``; ``resumed_from``: the checkpoint file it was loaded
    from, when a checkpointed C path did not refit it).
    """

    def __init__(self, C: float = 1.0, *, backend: str = "torch", fit_intercept: bool = True,
                 intercept_scaling: float = 1.0, tol: float = 1e-4, max_iter: int = 1000,
                 hessian_dtype: str = "auto", solver: str = "auto", device: str | torch.device = "cpu",
                 random_state=None, warm_start: bool = False):
        self.C = C
        self.backend = backend
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.tol = tol
        self.max_iter = max_iter
        self.hessian_dtype = hessian_dtype
        self.solver = solver
        self.device = device
        self.random_state = random_state
        self.warm_start = warm_start

    # ---- validation -----------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.C, Real) or not self.C > 0 or not math.isfinite(self.C):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        if not isinstance(self.tol, Real) or not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol!r}")
        if not isinstance(self.max_iter, Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if self.fit_intercept and (not isinstance(self.intercept_scaling, Real) or not self.intercept_scaling > 0):
            raise ValueError(f"intercept_scaling must be positive, got {self.intercept_scaling!r}")
        if self.hessian_dtype not in HESSIAN_DTYPES:
            raise ValueError(f"hessian_dtype must be one of {HESSIAN_DTYPES}, got {self.hessian_dtype!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.warm_start and self.backend != "torch":
            raise ValueError("warm_start needs backend='torch' (LinearSVC cannot start from given weights)")

    def _set_classes(self, y: np.ndarray) -> np.ndarray:
        """Set ``classes_``; return each label's class index. Needs at least two classes."""
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r})")
        return index

    def _validate_fit_data(self, X, y) -> tuple[object, np.ndarray]:
        """Validate (X, y) for fitting without copying float32/float64 X; returns (X, class index)."""
        if isinstance(X, torch.Tensor):
            if X.ndim != 2:
                raise ValueError(f"Expected a 2D feature matrix (n_samples, n_features), got shape {tuple(X.shape)}")
            if X.shape[0] < 1 or X.shape[1] < 1:
                raise ValueError(f"Found array with shape {tuple(X.shape)}: need at least 1 sample and 1 feature")
            if not X.is_floating_point():
                X = X.to(torch.float32)
            if not torch.isfinite(X.sum(dtype=torch.float64)):  # O(1) memory, like sklearn's fast path
                raise ValueError("Input X contains NaN or infinity.")
            y = column_or_1d(y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y), warn=True)
            if len(y) != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} samples but y has {len(y)}")
            self.n_features_in_ = int(X.shape[1])
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            dtype = (np.float64, np.float32) if self.backend == "torch" else np.float64
            X, y = validate_data(self, X, y, dtype=dtype, accept_sparse=False)
        return X, self._set_classes(y)

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, X, y) -> "LinearL2SVM":
        """Fit on an in-memory matrix (numpy array, array-like or torch tensor) and labels."""
        self._check_params()
        previous = self._previous_fit()
        X, index = self._validate_fit_data(X, y)
        if self.backend == "liblinear":
            return self._fit_liblinear(X, y=self.classes_[index])
        start = self._start_weights(previous)
        self._set_solution(*_in_memory_problem(self, _as_tensor(X), index).solve(float(self.C), start))
        return self

    def fit_store(self, store, rows: np.ndarray | slice | None = None, *,
                  block_bytes: int = DEFAULT_STORE_BLOCK_BYTES, prefetch: bool = True) -> "LinearL2SVM":
        """Fit out of core from an HDF5 feature store, streaming its rows from disk on every pass.

        ``store`` is a :class:`gan_features.store.FeatureStore` or a path to one; ``rows`` the rows
        to train on, default all: a slice, integer indices (any order, no duplicates) or a boolean
        mask.
        Memory: two blocks of ``block_bytes`` (rounded down to whole HDF5 chunks, at least one)
        plus per-row work arrays of n_rows x n_classes (float64 margins and a bool active set). Same solution as :meth:`fit` on the loaded rows.
        """
        self._check_params()
        if self.backend != "torch":
            raise ValueError("fit_store streams from disk only with backend='torch'; "
                             "for liblinear, load the rows (FeatureStore.load) and call fit")
        previous = self._previous_fit()
        with _opened(store) as opened:
            source, labels = _store_rows(opened, rows, self, block_bytes, prefetch)
            try:
                index = self._set_classes(labels)
                self.n_features_in_ = source.n_features
                start = self._start_weights(previous, source.device)
                self._set_solution(*_Problem(self._make_solver(source, index), source).solve(float(self.C), start))
            finally:
                source.close()
        return self

    def _previous_fit(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(classes_, coef_, intercept_) of the previous fit when ``warm_start`` asks for them."""
        if not (self.warm_start and hasattr(self, "coef_")):
            return None
        return self.classes_, self.coef_, self.intercept_

    def _start_weights(self, previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                       device: torch.device | str | None = None) -> torch.Tensor | None:
        """TRON's starting weights ((n_features [+ 1]) x k) from the previous fit, checked against these data."""
        if previous is None:
            return None
        classes, coef, intercept = previous
        if not np.array_equal(classes, self.classes_) or coef.shape[1] != self.n_features_in_:
            raise ValueError(f"warm_start: the previous fit had classes {classes.tolist()} and {coef.shape[1]} "
                             f"features, these data have {self.classes_.tolist()} and {self.n_features_in_}; "
                             f"set warm_start=False to fit from zero")
        rows = [coef.T] + ([intercept[None, :] / self.intercept_scaling] if self.fit_intercept else [])
        return torch.from_numpy(np.vstack(rows).astype(np.float64)).to(device or self.device)

    def _fit_liblinear(self, X: np.ndarray, y: np.ndarray) -> "LinearL2SVM":
        model = LinearSVC(C=self.C, loss="squared_hinge", penalty="l2", dual="auto", tol=self.tol,
                          max_iter=self.max_iter, fit_intercept=self.fit_intercept,
                          intercept_scaling=self.intercept_scaling, random_state=self.random_state).fit(X, y)
        self.coef_ = model.coef_
        self.intercept_ = np.broadcast_to(np.asarray(model.intercept_, dtype=np.float64), (len(model.coef_),)).copy()
        self.n_iter_ = int(model.n_iter_)
        return self

    def _n_classifiers(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _make_solver(self, rows: _RowSource, index: np.ndarray, intercept_column: bool = True) -> _Tron:
        """TRON over ``rows``; ``intercept_column=False`` when the rows already carry the intercept
        (the Gram factor)."""
        labels = torch.as_tensor(index, dtype=torch.int64).to(rows.device)
        scaling = float(self.intercept_scaling) if self.fit_intercept and intercept_column else None
        design = _Design(rows, labels, scaling)
        positives = [1] if len(self.classes_) == 2 else range(len(self.classes_))
        return _Tron(design, positives, float(self.tol), int(self.max_iter))

    def _set_solution(self, solution: _Solution, stats: PassStats, rows: _RowSource,
                      extra_stats: dict | None = None) -> None:
        """Set coef_/intercept_ from TRON's weights ``solution.W`` ((n_features [+ 1]) x k);
        ``extra_stats`` (solver, Gram time, polish passes) are merged into ``solver_stats_``."""
        W = solution.W.cpu().numpy()
        d = self.n_features_in_
        self.coef_ = np.ascontiguousarray(W[:d].T)
        self.intercept_ = W[d] * self.intercept_scaling if self.fit_intercept else np.zeros(W.shape[1])
        self.n_iter_ = int(solution.n_iter.max())
        self.solver_stats_ = {**asdict(stats), "gigabytes_per_second": stats.gigabytes_per_second,
                              "newton_iterations": solution.newton_iterations,
                              "cg_iterations": solution.cg_iterations, "status": solution.status,
                              "hessian_dtype": str(rows.hessian_dtype).removeprefix("torch."),
                              "data_dtype": str(rows.data_dtype).removeprefix("torch."),
                              "solver": "primal", **(extra_stats or {})}
        if "max_iter" in solution.status:
            warnings.warn(f"TRON did not converge in max_iter={self.max_iter} iterations for "
                          f"{solution.status.count('max_iter')} classifier(s); increase max_iter",
                          ConvergenceWarning, stacklevel=3)

    # ---- prediction -----------------------------------------------------------------------

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``: (n_samples,) for binary, (n_samples, n_classes) else.

        float32 inputs are scored in float32 (no float64 copy of a large matrix)."""
        check_is_fitted(self)
        if isinstance(X, torch.Tensor):
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has shape {tuple(X.shape)}, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input")
            dtype = X.dtype if X.dtype in (torch.float32, torch.float64) else torch.float32
            coef = torch.as_tensor(self.coef_, dtype=dtype, device=X.device)
            intercept = torch.as_tensor(self.intercept_, dtype=dtype, device=X.device)
            scores = torch.addmm(intercept, X.to(dtype), coef.T).cpu().numpy()
        else:
            X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32), accept_sparse=False)
            scores = X @ self.coef_.T.astype(X.dtype, copy=False) + self.intercept_.astype(X.dtype, copy=False)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


def _opened(store):
    """A context manager yielding an open FeatureStore (opened here if given a path)."""
    from contextlib import nullcontext

    from .store import FeatureStore

    if isinstance(store, (str, os.PathLike)):
        return FeatureStore(store)
    return nullcontext(store)


def _store_rows(store, rows, params: LinearL2SVM, block_bytes: int, prefetch: bool
                ) -> tuple[_StoreRows, np.ndarray]:
    """The row source and labels for ``rows`` of an open store."""
    n = len(store)
    if rows is None:
        rows = slice(0, n)
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        rows = slice(start, stop) if step == 1 else np.arange(start, stop, step)
    if isinstance(rows, slice):
        labels = store.labels[rows]
    else:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise ValueError(f"a boolean row mask needs one entry per store row ({n}), got shape {rows.shape}")
            rows = np.flatnonzero(rows)
        elif rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError("rows must be a slice, 1-D integer indices or a boolean mask")
        rows = np.sort(rows.astype(np.int64))  # blocks are read in file order
        if len(rows) and (rows[0] < 0 or rows[-1] >= n):
            raise ValueError(f"row indices must lie in [0, {n}), got {rows[0]}..{rows[-1]}")
        if np.any(np.diff(rows) == 0):
            raise ValueError("row indices contain duplicates")
        labels = store.labels[rows]  # in file order, like the blocks
    if len(labels) < 1:
        raise ValueError("no rows selected from the feature store")
    source = _StoreRows(store.features, rows, torch.device(params.device), params.hessian_dtype,
                        block_bytes=block_bytes, prefetch=prefetch)
    return source, np.asarray(labels)


# --------------------------------------------------------------------------------------------
# C paths, objective, evaluation
# --------------------------------------------------------------------------------------------

class _Problem:
    """TRON over one row source; each :meth:`solve` warm-starts from the previous solution (a C path)."""

    def __init__(self, solver: _Tron, rows: _RowSource):
        self.solver, self.rows = solver, rows
        self.W: torch.Tensor | None = None

    def solve(self, C: float, start: torch.Tensor | None = None) -> tuple[_Solution, PassStats, _RowSource, dict]:
        """The arguments of :meth:`LinearL2SVM._set_solution` for this C (passes: this C's only).

        ``start``: primal weights ((n_features [+ 1]) x k) to start from instead of the previous solution."""
        started = time.perf_counter()
        before = copy.copy(self.solver.design.stats)
        solution = self.solver.solve(C, self.W if start is None else self._coordinates(start))
        self.W = solution.W
        return solution, _stats_since(before, self.solver.design.stats), self.rows, {
            "solver": "primal", "solve_seconds": time.perf_counter() - started}

    def _coordinates(self, W: torch.Tensor) -> torch.Tensor:
        return W.to(torch.float64)


class _GramProblem(_Problem):
    """TRON on the Gram factor ``L``, mapped back to ``w~`` and checked (polished if needed) by the
    primal stopping test on ``X`` itself; see the module docstring."""

    def __init__(self, template: "LinearL2SVM", factor: _GramFactor, index: np.ndarray):
        device, data_dtype = factor.X.device, factor.X.dtype
        dtype_name = str(data_dtype).removeprefix("torch.")
        rows = _TensorRows(factor.L.to(data_dtype), device, template.hessian_dtype, both_layouts=True)
        super().__init__(template._make_solver(rows, index, intercept_column=False), rows)
        self.factor = factor
        # The check reads X itself (float32, no bfloat16 copy): usually one exact pass; when the
        # float32 rounding of L left the solution short, a few float32 steps (at 10,000 rows,
        # C=1e-3: 7 exact + 34 Hessian passes, ~10 s), cheaper than holding half of X again.
        self.primal_rows = _TensorRows(factor.X, device, dtype_name)
        self.primal = template._make_solver(self.primal_rows, index)

    def _coordinates(self, W: torch.Tensor) -> torch.Tensor:
        return self.factor.coordinates(W)

    def solve(self, C: float, start: torch.Tensor | None = None) -> tuple[_Solution, PassStats, _RowSource, dict]:
        started = time.perf_counter()
        reduced, stats, rows, _ = super().solve(C, start)
        before = copy.copy(self.primal.design.stats)
        checked = self.primal.solve(C, self.factor.weights(reduced.W))
        polish = _stats_since(before, self.primal.design.stats)
        solution = _Solution(checked.W, reduced.n_iter + checked.n_iter, checked.status,
                             reduced.newton_iterations + checked.newton_iterations,
                             reduced.cg_iterations + checked.cg_iterations)
        total = PassStats(**{key: getattr(stats, key) + getattr(polish, key) for key in asdict(stats)})
        extra = {"solver": "gram", "gram_seconds": self.factor.seconds,
                 "check_exact_passes": polish.exact_passes, "check_hessian_passes": polish.hessian_passes,
                 "check_newton_iterations": checked.newton_iterations,
                 "gram_status": reduced.status, "solve_seconds": time.perf_counter() - started}
        return solution, total, rows, extra


def _stats_since(before: PassStats, after: PassStats) -> PassStats:
    return PassStats(**{key: getattr(after, key) - getattr(before, key) for key in asdict(after)})


def _in_memory_problem(template: "LinearL2SVM", X: torch.Tensor, index: np.ndarray) -> _Problem:
    """The primal or Gram problem for an in-memory matrix, as ``template.solver`` asks."""
    device = torch.device(template.device)
    X = _float_on(X, device)
    n, d = X.shape
    if template.solver == "gram" or (template.solver == "auto" and n <= GRAM_MAX_ROW_FRACTION * d):
        scaling = float(template.intercept_scaling) if template.fit_intercept else None
        factor = _GramFactor.compute(X, scaling)
        if factor is not None:
            return _GramProblem(template, factor, index)
        if template.solver == "gram":
            raise ValueError("solver='gram' cannot factor the Gram matrix of these rows (duplicate or linearly "
                             "dependent rows make it singular); use solver='primal'")
        logger.info("Gram matrix of %d rows is singular; fitting the primal instead", n)
    rows = _TensorRows(X, device, template.hessian_dtype)
    return _Problem(template._make_solver(rows, index), rows)


class _PathCheckpoint:
    """Each fitted C of a path saved in a directory (the model and TRON's weights, float64), so a
    path stopped part-way resumes at the next C with the same warm start: a C path on 45,000 x
    28,672 features takes hours here. Files are only reused for the same rows, labels and settings
    (a fingerprint in every file); the caller keeps the directory specific to one data set."""

    ATTRIBUTES = ("coef_", "intercept_", "n_iter_", "solver_stats_")
    FILE_GLOB = "C=*.pt"  # matches the names _path gives

    def __init__(self, directory: str | os.PathLike, template: "LinearL2SVM", problem: _Problem):
        self.directory = Path(directory)
        labels = problem.solver.design.labels.cpu().numpy().astype(np.int64)
        settings = {k: v for k, v in template.get_params().items() if k not in ("C", "device", "warm_start")}
        self.fingerprint = {"rows": problem.rows.n_rows, "features": template.n_features_in_,
                            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
                            "classes": [str(c) for c in template.classes_], "problem": type(problem).__name__,
                            "settings": repr(sorted(settings.items()))}

    def _path(self, C: float) -> Path:
        return self.directory / f"C={C!r}.pt"

    def load(self, C: float, model: "LinearL2SVM", problem: _Problem) -> bool:
        """Set ``model``'s fitted attributes and the path's warm start from a saved C; False if none."""
        try:
            saved = torch.load(self._path(C), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):  # absent, or cut short by a crash
            return False
        if saved.get("fingerprint") != self.fingerprint:
            return False
        for name in self.ATTRIBUTES:
            value = saved[name]
            setattr(model, name, value.numpy() if isinstance(value, torch.Tensor) else value)
        # Marked, so callers can tell fits done now from fits an earlier run did (and timed).
        model.solver_stats_ = {**model.solver_stats_, "resumed_from": str(self._path(C))}
        problem.W = saved["W"].to(problem.rows.device)
        return True

    def save(self, C: float, model: "LinearL2SVM", problem: _Problem) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {name: torch.from_numpy(getattr(model, name)) if isinstance(getattr(model, name), np.ndarray)
                   else getattr(model, name) for name in self.ATTRIBUTES}
        payload.update(fingerprint=self.fingerprint, W=problem.W.cpu())
        target = self._path(C)
        partial = target.with_name(target.name + ".partial")
        torch.save(payload, partial)
        os.replace(partial, target)  # a crash mid-write never leaves a file that looks complete


def _fit_path(template: "LinearL2SVM", problem: _Problem, Cs: Sequence[float],
              on_fit: Callable[["LinearL2SVM"], None] | None = None,
              checkpoint_dir: str | os.PathLike | None = None) -> list["LinearL2SVM"]:
    """Fit every C with warm starts in ascending order; models come back in the order of ``Cs``.

    ``on_fit(model)`` runs after each C (a progress bar: one C at paper scale takes many minutes);
    with ``checkpoint_dir`` each C is saved there and Cs already saved are loaded, not refitted."""
    checkpoint = None if checkpoint_dir is None else _PathCheckpoint(checkpoint_dir, template, problem)
    fitted: dict[float, LinearL2SVM] = {}
    for C in sorted(set(float(C) for C in Cs)):
        model = clone(template).set_params(C=C)
        model._check_params()
        for name in ("classes_", "n_features_in_", "feature_names_in_"):
            if hasattr(template, name):
                setattr(model, name, getattr(template, name))
        if checkpoint is None or not checkpoint.load(C, model, problem):
            model._set_solution(*problem.solve(C))
            if checkpoint is not None:
                checkpoint.save(C, model, problem)
        fitted[C] = model
        if on_fit is not None:
            on_fit(model)
    # A C given twice gets two independent model objects.
    return [copy.deepcopy(fitted[float(C)]) if seen else fitted[float(C)] for C, seen in _first_seen(Cs)]


def _first_seen(Cs: Sequence[float]) -> Iterator[tuple[float, bool]]:
    """(C, whether C appeared earlier in Cs): repeated Cs get independent model objects."""
    seen: set[float] = set()
    for C in Cs:
        yield C, float(C) in seen
        seen.add(float(C))


def fit_c_path(X, y, Cs: Sequence[float], *, on_fit: Callable[[LinearL2SVM], None] | None = None,
               checkpoint_dir: str | os.PathLike | None = None, **params) -> list[LinearL2SVM]:
    """One fitted :class:`LinearL2SVM` per C, in the order given; ``on_fit(model)`` after each fit.

    ``checkpoint_dir`` (``"torch"`` only): save each fitted C there, and load the Cs a stopped run
    saved instead of refitting them (only if rows, labels and settings match; keep one directory
    per data set).

    With ``backend="torch"`` the data are validated and wrapped once (one bfloat16 copy for the
    whole path) and each C starts from the previous solution, in ascending C order (the
    solution moves least between neighbouring small Cs, and small C converges fastest).
    ``liblinear`` fits each C from scratch.
    """
    Cs = list(Cs)
    if not Cs:
        raise ValueError("Cs is empty: give at least one C")
    template = LinearL2SVM(**params)
    template._check_params()
    if template.backend == "liblinear":
        if checkpoint_dir is not None:
            raise ValueError("checkpoint_dir needs backend='torch'")
        models = []
        for C in Cs:
            models.append(clone(template).set_params(C=C).fit(X, y))
            if on_fit is not None:
                on_fit(models[-1])
        return models
    X, index = template._validate_fit_data(X, y)
    return _fit_path(template, _in_memory_problem(template, _as_tensor(X), index), Cs, on_fit, checkpoint_dir)


def count_saved_fits(checkpoint_dir: str | os.PathLike) -> int:
    """How many fitted Cs a stopped run left in ``checkpoint_dir`` (a ``checkpoint_dir`` of
    ``fit_c_path``), its subfolders included: a protocol gives each of its C paths one folder."""
    directory = Path(checkpoint_dir)
    return sum(1 for _ in directory.rglob(_PathCheckpoint.FILE_GLOB)) if directory.is_dir() else 0


def fit_c_path_store(store, Cs: Sequence[float], rows: np.ndarray | slice | None = None, *,
                     block_bytes: int = DEFAULT_STORE_BLOCK_BYTES, prefetch: bool = True,
                     on_fit: Callable[[LinearL2SVM], None] | None = None, **params) -> list[LinearL2SVM]:
    """:func:`fit_c_path` out of core: every pass of every C streams ``rows`` of the store from disk."""
    Cs = list(Cs)
    if not Cs:
        raise ValueError("Cs is empty: give at least one C")
    template = LinearL2SVM(**params)
    template._check_params()
    if template.backend != "torch":
        raise ValueError("fit_c_path_store needs backend='torch' (liblinear cannot stream from disk)")
    with _opened(store) as opened:
        source, labels = _store_rows(opened, rows, template, block_bytes, prefetch)
        try:
            index = template._set_classes(labels)
            template.n_features_in_ = source.n_features
            return _fit_path(template, _Problem(template._make_solver(source, index), source), Cs, on_fit)
        finally:
            source.close()


def primal_objective(model_or_weights, X, y, C: float, *, intercept_scaling: float | None = None,
                     classes: np.ndarray | None = None) -> np.ndarray:
    """liblinear's primal objective of each one-vs-rest classifier, shape (n_classifiers,).

    ``model_or_weights``: a fitted :class:`LinearL2SVM` or ``LinearSVC``, or ``(coef, intercept)``
    (then ``classes`` default to ``np.unique(y)`` and ``intercept_scaling`` to 1). The intercept's
    regularised weight is ``intercept / intercept_scaling``, as liblinear fits it. Computed in
    float64, in row blocks (no float64 copy of X).
    """
    if hasattr(model_or_weights, "coef_"):
        model = model_or_weights
        coef, intercept, classes = model.coef_, model.intercept_, model.classes_
        if intercept_scaling is None:
            intercept_scaling = getattr(model, "intercept_scaling", 1.0)
    else:
        coef, intercept = model_or_weights
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.zeros(len(coef)) if intercept is None else np.broadcast_to(
        np.asarray(intercept, dtype=np.float64), (len(coef),))
    scaling = 1.0 if intercept_scaling is None else float(intercept_scaling)
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    positives = classes[1:2] if len(coef) == 1 else classes
    if len(positives) != len(coef):
        raise ValueError(f"{len(coef)} classifiers but {len(classes)} classes")
    X = X.cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    loss = np.zeros(len(coef))
    block = max(1, (64 << 20) // max(1, X.shape[1] * 8))
    for start in range(0, len(X), block):
        z = X[start:start + block].astype(np.float64) @ coef.T + intercept
        signs = np.where(y[start:start + block, None] == positives[None, :], 1.0, -1.0)
        loss += (np.maximum(0.0, 1.0 - signs * z) ** 2).sum(axis=0)
    return 0.5 * ((coef ** 2).sum(axis=1) + (intercept / scaling) ** 2) + C * loss


def evaluate(model, X, y) -> dict:
    """Accuracy and confusion matrix (rows: true class, columns: predicted)."""
    predicted = model.predict(X)
    return {"accuracy": float(accuracy_score(y, predicted)),
            "confusion_matrix": confusion_matrix(y, predicted, labels=model.classes_)}
