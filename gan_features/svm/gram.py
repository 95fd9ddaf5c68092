"""The Gram factor: TRON on an n x n matrix when there are fewer rows than features.

The optimal ``w~`` lies in the span of the rows of ``X~`` (see :mod:`.design`), so with ``L`` the
Cholesky factor of the Gram matrix, ``L L^T = X~ X~^T`` (n x n, float64), the change of variables
``w~ = X~^T L^-T v`` is an isometry (``||w~|| = ||v||``, ``X~ w~ = L v``, ``||g_w|| = ||g_v||``):
TRON on ``L`` takes the same steps as on ``X~``, and each pass reads n^2 values instead of
n (d + 1). ``solver="auto"`` uses it up to n = d / 2 rows (:data:`GRAM_MAX_ROW_FRACTION`).

Cost: the Gram matrix, n^2 d / 2 multiply-adds (its lower triangle, in row blocks), and an
O(n^3 / 3) Cholesky; at 10,000 x 28,672 here ~19 s + ~5 s, against ~0.1 s saved on each of
hundreds of passes. The fitted ``v`` is mapped back exactly (a float64 triangular solve and one
float64 pass over ``X``: :meth:`_GramFactor.weights`). A Gram matrix that is numerically singular
(duplicate or dependent rows) gives no factor: mapping ``v`` back would lose too many digits.

Memory at n rows: ``L`` in float64, in the data's dtype and twice in bfloat16 (see
:mod:`.problem`), 16 n^2 bytes (1.6 GB at 10,000; the float32 10,000 x 28,672 matrix is
1.15 GB), and no copy of ``X``.
"""
from __future__ import annotations

import time

import torch

from .tensors import _synchronize

GRAM_MAX_ROW_FRACTION = 0.5  # "auto" uses the Gram solver up to n = d / 2 rows (see the module docstring)
GRAM_BLOCK_ROWS = 2048  # rows per block of the Gram matrix's lower triangle
GRAM_SCRATCH_BYTES = 16 << 20  # float64 row blocks when mapping the solution back to w
GRAM_MIN_PIVOT = 1e-10  # smallest L_ii^2 / max K_ii accepted: below, mapping v back loses too many digits


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
