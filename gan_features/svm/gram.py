"""The Gram factor: the solver on an n x n matrix when there are fewer rows than features.

The optimal ``w~`` lies in the span of the rows of ``X~`` (see :mod:`.design`), so with ``L`` the
Cholesky factor of the Gram matrix, ``L L^T = X~ X~^T`` (n x n, float64), the change of variables
``w~ = X~^T L^-T v`` is an isometry (``||w~|| = ||v||``, ``X~ w~ = L v``, ``||g_w|| = ||g_v||``):
the solver on ``L`` solves the same problem (TRON: with the same steps, in exact arithmetic) as on
``X~``, and each pass reads ~n^2 / 2 values (``L``'s lower triangle) instead of n (d + 1).
``solver="auto"`` uses it up to n = d / 2 rows (:data:`GRAM_MAX_ROW_FRACTION`).

Cost: the Gram matrix, n^2 d / 2 multiply-adds (its lower triangle, in row blocks), and an
O(n^3 / 3) Cholesky; at 10,000 x 28,672 here ~16 s + ~4 s, against ~0.1 s saved on each of
hundreds of passes. The fitted ``v`` is mapped back exactly (a float64 triangular solve and one
float64 pass over ``X``: :meth:`_GramFactor.weights`). A Gram matrix that is numerically singular
(duplicate or dependent rows) gives no factor: mapping ``v`` back would lose too many digits.

Memory at n rows: ``L`` in float64, in the data's dtype and twice in bfloat16 (see
:mod:`.problem`), 16 n^2 bytes (1.6 GB at 10,000; the float32 10,000 x 28,672 matrix is
1.15 GB), and no copy of ``X``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .tensors import _fast_bfloat16, _synchronize

GRAM_MAX_ROW_FRACTION = 0.5  # "auto" uses the Gram solver up to n = d / 2 rows (see the module docstring)
GRAM_BLOCK_ROWS = 1024  # rows per block of the Gram matrix's lower triangle (see gram_lower)
GRAM_CHUNK_FEATURES = 4096  # features per GEMM of a block, summed in float64 (see gram_lower)
GRAM_SCRATCH_BYTES = 16 << 20  # float64 row blocks when mapping the solution back to w
GRAM_MIN_PIVOT = 1e-10  # smallest L_ii^2 / max K_ii accepted: below, mapping v back loses too many digits
GRAM_CHECK_COLUMNS = 4  # columns of a given Gram matrix recomputed from X before it is trusted
GRAM_CHECK_TOLERANCE = 1e-3  # their largest difference allowed, relative to the largest diagonal entry


def gram_lower(X: torch.Tensor, out: torch.Tensor, on_block: Callable[[int], None] | None = None) -> torch.Tensor:
    """Write ``X X^T``'s lower triangle (and the upper part of its diagonal blocks) into ``out``
    (n x n, any float dtype), one row block of :data:`GRAM_BLOCK_ROWS` at a time, GEMMs in X's
    precision, or at bfloat16 speed where that loses nothing (:func:`exact_in_bfloat16`). The rest
    of ``out`` is not touched. ``on_block(entries)`` after each block (a progress bar).

    The diagonal blocks are computed whole, so smaller blocks waste fewer flops: at 10,000 x 28,672
    (float32, AMD EPYC, side by side) 1,024-row blocks took 16.0 s, 2,048-row ones 17.1-18.4 s and
    512-row ones 15.7-16.0 s; the whole ``X @ X.T`` ~29 s.

    Each block sums GEMMs over :data:`GRAM_CHUNK_FEATURES` features at a time in float64: one float32
    GEMM over all 28,672 features left K off by 3.8e-7 of its largest entry, and the factor's map back
    to ``w`` (``L^-T``) magnified that into weights that failed the exact stopping test on ``X`` at a
    path's first C (5 polishing Newton steps on ``X``: 8.6 of the fit's 15.2 s at 9,000 rows, real
    features); with chunks, 6.5e-8 and no polish, for ~10% more time. Work memory: one row block in
    X's dtype and one in float64 (12 n x 1,024 bytes for float32 X)."""
    n, d = X.shape
    rows = min(GRAM_BLOCK_ROWS, n)
    # Contiguous work blocks, reused: a float64 += float32 on strided views of K ran at ~1.5 GB/s here
    # (5 s per 10,000-row K), on contiguous ones at ~8; a fresh product buffer per GEMM cost 5%.
    product = torch.empty(rows * n, dtype=X.dtype, device=X.device)
    total = torch.empty(rows * n, dtype=torch.float64, device=X.device)
    with bfloat16_gemms(exact_in_bfloat16(X)):
        for lo in range(0, n, GRAM_BLOCK_ROWS):
            hi = min(lo + GRAM_BLOCK_ROWS, n)
            block = (hi - lo) * hi
            partial, block_sum = product[:block].view(hi - lo, hi), total[:block].view(hi - lo, hi)
            for start in range(0, d, GRAM_CHUNK_FEATURES):
                chunk = slice(start, start + GRAM_CHUNK_FEATURES)
                torch.mm(X[lo:hi, chunk], X[:hi, chunk].T, out=partial)
                if start == 0:
                    block_sum.copy_(partial)
                else:
                    block_sum.add_(partial)
            out[lo:hi, :hi] = block_sum
            if on_block is not None:
                on_block(block)
    return out


def exact_in_bfloat16(X: torch.Tensor) -> bool:
    """Whether ``X``'s float32 products can run as bfloat16 GEMMs with float32 accumulation without
    changing a product: every value of ``X`` is a bfloat16 number (features extracted in bfloat16
    are) and the CPU multiplies bfloat16 natively (AMX: half the time of float32 GEMMs). Values that
    are not would be rounded: on |N(0, 1)| data that biased K by 2e-4 of its largest entry, so such
    ``X`` keeps float32 GEMMs. One read of ``X``, in blocks."""
    if X.dtype != torch.float32 or X.device.type != "cpu" or not _fast_bfloat16(X.device):
        return False
    step = max(1, GRAM_SCRATCH_BYTES // (6 * max(1, X.shape[1])))
    return all(torch.equal(block, block.to(torch.bfloat16).to(torch.float32))
               for block in (X[lo:lo + step] for lo in range(0, X.shape[0], step)))


@contextmanager
def bfloat16_gemms(enabled: bool) -> Iterator[None]:
    """Within the block, float32 matrix products on the CPU take bfloat16 inputs and accumulate in
    float32 (oneDNN's fp32 math mode), returning float32; a no-op where torch lacks the setting."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None) if enabled else None
    previous = getattr(matmul, "fp32_precision", None)
    if previous is None:
        yield
        return
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


class PrefixFactors:
    """The last Cholesky factor formed from one shared Gram matrix, with the rows it covers (in order)
    and its diagonal shift. A fit whose rows begin with those rows, at the same shift, extends it
    instead of factoring anew, since the leading block of a Cholesky factor is the factor of the
    leading block: ``cifar10`` fits its C path on the fit rows, then refits on them followed by the
    validation rows (at 9,000 + 1,000 rows, ~1 s for the extension against ~4 s for a new factor).
    Holds that one factor (float64) until the next replaces it."""

    def __init__(self) -> None:
        self.rows: np.ndarray | None = None
        self.shift: float | None = None
        self.L: torch.Tensor | None = None

    def reusable(self, rows: np.ndarray, shift: float) -> int:
        """How many leading rows of ``rows`` the kept factor covers (0: none)."""
        if self.L is None or self.shift != shift or len(self.rows) > len(rows):
            return 0
        return len(self.rows) if np.array_equal(self.rows, rows[:len(self.rows)]) else 0

    def keep(self, rows: np.ndarray, shift: float, L: torch.Tensor) -> None:
        self.rows, self.shift, self.L = np.array(rows, copy=True), shift, L


@dataclass
class GramRows:
    """The Gram matrix of some rows of a larger shared one, for one fit (``matrix``, n x n, the rows
    in ``rows``' order), with the factors that fits on that shared matrix hand on (``factors``):
    what :meth:`.store_gram.StoreGram.rows_of` gives and ``LinearL2SVM.fit(gram=...)`` takes."""

    matrix: torch.Tensor
    rows: np.ndarray
    factors: PrefixFactors


def check_gram(gram, X: torch.Tensor):
    """``gram`` (a :class:`GramRows`, or a matrix: returned as a tensor) if it is ``X X^T``, else
    ValueError: n x n, finite, and a few columns spread over it equal to ``X X[j]^T`` recomputed (one
    thin GEMM). A Gram matrix of other rows, or of the same rows in another order, fails the
    comparison: a fit on it would be silently wrong."""
    if isinstance(gram, GramRows):
        check_gram(gram.matrix, X)
        return gram
    gram = torch.as_tensor(gram)
    n = X.shape[0]
    if gram.shape != (n, n):
        raise ValueError(f"gram has shape {tuple(gram.shape)}: the Gram matrix of {n} rows must be {n} x {n}")
    if not gram.is_floating_point() or not torch.isfinite(gram.sum(dtype=torch.float64)):
        raise ValueError("gram must be a finite floating-point matrix")
    columns = torch.from_numpy(np.unique(np.linspace(0, n - 1, GRAM_CHECK_COLUMNS).round().astype(np.int64)))
    expected = (X @ X[columns.to(X.device)].T).to(torch.float64)
    given = gram[:, columns].to(device=X.device, dtype=torch.float64)
    scale = gram.diagonal().abs().max().item()
    error = (given - expected).abs().max().item()
    if not error <= GRAM_CHECK_TOLERANCE * scale:
        raise ValueError(f"gram is not X X^T of these rows (columns {columns.tolist()} differ by {error:.3g}, "
                         f"largest diagonal entry {scale:.3g}): give the Gram matrix of exactly these rows, "
                         "in this order")
    return gram


class _GramFactor:
    """``L`` with ``L L^T = X~ X~^T`` (lower triangular, float64) and the map from the solver's ``v`` back
    to ``w~ = X~^T L^-T v``; see the module docstring. :meth:`compute` returns None if the Gram
    matrix is numerically singular."""

    def __init__(self, X: torch.Tensor, scaling: float | None, L: torch.Tensor, seconds: float,
                 reused_rows: int = 0):
        self.X, self.scaling, self.L, self.seconds = X, scaling, L, seconds
        self.reused_rows = reused_rows  # leading rows whose factor an earlier fit formed (PrefixFactors)

    @classmethod
    def compute(cls, X: torch.Tensor, scaling: float | None) -> "_GramFactor | None":
        start = time.perf_counter()
        K = torch.empty(X.shape[0], X.shape[0], dtype=torch.float64, device=X.device)
        gram_lower(X, K)
        return cls._factor(X, scaling, K, start)

    @classmethod
    def from_gram(cls, X: torch.Tensor, scaling: float | None, gram: "torch.Tensor | GramRows") -> "_GramFactor | None":
        """The factor of a Gram matrix already at hand (``X X^T``, e.g. a principal submatrix of a
        store's: :mod:`.store_gram`); ``gram`` is copied, never modified. With a :class:`GramRows`,
        the leading rows an earlier fit factored are extended (:class:`PrefixFactors`)."""
        start = time.perf_counter()
        matrix = gram.matrix if isinstance(gram, GramRows) else gram
        K = matrix.to(device=X.device, dtype=torch.float64, copy=True)
        if not isinstance(gram, GramRows):
            return cls._factor(X, scaling, K, start)
        shift = 0.0 if scaling is None else scaling * scaling
        reused = gram.factors.reusable(gram.rows, shift)
        factor = cls._factor(X, scaling, K, start, gram.factors.L[:reused, :reused] if reused else None)
        if factor is not None:
            gram.factors.keep(gram.rows, shift, factor.L)
        return factor

    @classmethod
    def _factor(cls, X: torch.Tensor, scaling: float | None, K: torch.Tensor, start: float,
                leading: torch.Tensor | None = None) -> "_GramFactor | None":
        """Factor ``K`` (float64, its lower triangle holding ``X X^T``) in place; ``leading``: the
        factor of its leading block, already formed."""
        if scaling is not None:
            K += scaling * scaling  # the constant feature's products (upper triangle is never read)
        largest = K.diagonal().max()
        info = torch.empty((), dtype=torch.int32, device=X.device)
        if leading is None:
            torch.linalg.cholesky_ex(K, out=(K, info))
        else:  # [[L11, 0], [L21, L22]] with L21 = K21 L11^-T and L22 L22^T = K22 - L21 L21^T
            m = leading.shape[0]
            K[:m, :m] = leading
            L21 = torch.linalg.solve_triangular(leading.T, K[m:, :m], upper=True, left=False)
            K[m:, :m] = L21
            L22, info = torch.linalg.cholesky_ex(torch.addmm(K[m:, m:], L21, L21.T, alpha=-1))
            K[m:, m:] = L22
        smallest = K.diagonal().min() ** 2 if int(info) == 0 else 0.0
        _synchronize(X.device)
        if int(info) != 0 or not smallest > GRAM_MIN_PIVOT * largest:
            return None
        return cls(X, scaling, torch.tril(K, out=K), time.perf_counter() - start,
                   0 if leading is None else leading.shape[0])

    def weights(self, V: torch.Tensor) -> torch.Tensor:
        """``X~^T L^-T V`` in float64 ((n_features [+ 1]) x k), X read in row blocks."""
        B = torch.linalg.solve_triangular(self.L.T, V.to(torch.float64), upper=True)
        n, d = self.X.shape
        # Accumulated as W^T = B^T X, so each block of X is a contiguous row-major float64 copy:
        # converting X's transpose block instead was 5x slower (1.3 s per C at 4,000 x 28,672).
        B_T = B.T.contiguous()
        W_T = torch.zeros(V.shape[1], d + (self.scaling is not None), dtype=torch.float64, device=V.device)
        block = max(1, GRAM_SCRATCH_BYTES // (8 * d))  # float64 copies of a few rows at a time
        for lo in range(0, n, block):
            W_T[:, :d] += B_T[:, lo:lo + block] @ self.X[lo:lo + block].to(torch.float64)
        if self.scaling is not None:
            W_T[:, d] = self.scaling * B.sum(0)
        return W_T.T.contiguous()

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
