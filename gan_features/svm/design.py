"""Products of the augmented matrix ``X~ = [X, s 1]`` with class-column matrices.

Intercept, as liblinear treats it: ``x~_i = [x_i, s]`` is ``x_i`` with one constant feature of
value ``s = intercept_scaling`` appended, whose weight ``b~`` is regularised like the others
(``intercept_ = s * b~``). The constant column is never stored: its products are added to those
of ``X`` (no column at all without an intercept, or when the rows already carry it: the Gram
factor).

All classes share each pass over the data: one matrix product ``X @ V`` (``V`` holding one column
per class, zero-padded to a multiple of :data:`COLUMN_MULTIPLE` because skinny GEMMs with 10
columns run ~7x slower here than with 16) followed by one ``X.T @ R``, block by block of the row
source, accumulated in float64.

Precision: function values and gradients (exact passes) are computed in the data's own precision
(float32 or float64) and reduced in float64, so the solution and its stopping test are exact.
Only the Hessian-vector products (Hessian passes), which merely choose the Newton direction, may
use a bfloat16 copy of ``X`` (``hessian_dtype``): an inexact Hessian costs iterations, never
accuracy (measured: 20-50% more Hessian passes, each ~2x cheaper per row on an AVX512-BF16 CPU;
objectives within 1e-7 of liblinear's either way).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .rows import _RowSource
from .tensors import _synchronize

COLUMN_MULTIPLE = 16  # pad class columns: MKL/oneDNN skinny GEMMs measured ~7x slower at 10 than 16


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

    def _sweep(self, V: torch.Tensor | None, hessian: bool,
               residual: Callable[[slice, torch.Tensor | None], torch.Tensor],
               backward: bool = True, columns: int | None = None) -> torch.Tensor | None:
        """``X~^T residual(X~ V)``, block by block; ``residual`` maps (rows, Z) -> R of Z's shape.

        ``backward=False``: only ``X~ V`` (``residual`` keeps it; returns None). ``V=None``: only
        ``X~^T residual(rows, None)``, for ``columns`` columns (the margins are already known)."""
        rows, d = self.rows, self.rows.n_features
        dtype = rows.hessian_dtype if hessian else rows.data_dtype
        k = V.shape[1] if V is not None else columns
        padded = -(-k // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
        Vp = bias = None
        if V is not None:
            Vp = torch.zeros(d, padded, dtype=dtype, device=rows.device)
            Vp[:, :k] = V[:d]
            if self.scaling is not None:
                bias = torch.zeros(1, padded, dtype=dtype, device=rows.device)
                bias[0, :k] = self.scaling * V[d]
        out = torch.zeros(self.n_weights, k, dtype=torch.float64, device=rows.device) if backward else None
        R = None
        start = time.perf_counter()
        for block_rows, Xb, Xb_t in rows.blocks(hessian):
            Z = None
            if Vp is not None:
                Z = Xb @ Vp if bias is None else torch.addmm(bias, Xb, Vp)
                self.stats.bytes_streamed += Xb.numel() * Xb.element_size()
            Rk = residual(block_rows, None if Z is None else Z[:, :k])
            if not backward:
                continue
            if R is None or R.shape[0] != Xb.shape[0]:
                R = torch.zeros(Xb.shape[0], padded, dtype=dtype, device=rows.device)  # pad columns stay zero
            R[:, :k] = Rk
            out[:d] += (Xb_t @ R)[:, :k].to(torch.float64)
            if self.scaling is not None:
                out[d] += self.scaling * R[:, :k].sum(0, dtype=torch.float64)
            self.stats.bytes_streamed += Xb.numel() * Xb.element_size()
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

    def product(self, V: torch.Tensor) -> torch.Tensor:
        """``X~ V`` (n x k, float64) in the data's precision: one forward-only exact pass."""
        out = torch.empty(self.rows.n_rows, V.shape[1], dtype=torch.float64, device=V.device)

        def keep(rows: slice, Z: torch.Tensor) -> None:
            out[rows] = Z

        self._sweep(V, hessian=False, residual=keep, backward=False)
        return out

    def gradient(self, W: torch.Tensor, margins: torch.Tensor, positives: torch.Tensor, C: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective, gradient and active set at ``W`` whose margins ``X~ W`` are known: one
        backward-only exact pass (see :meth:`evaluate`)."""
        k = W.shape[1]
        loss = torch.zeros(k, dtype=torch.float64, device=W.device)
        active = torch.empty(self.rows.n_rows, k, dtype=torch.bool, device=W.device)

        def residual(rows: slice, _: None) -> torch.Tensor:
            y, z = self.signs(rows, positives), margins[rows]
            margin = 1 - y * z
            active[rows] = hinge = margin > 0
            loss.add_((margin.clamp_min(0) ** 2).sum(0))
            return torch.where(hinge, z - y, 0)

        XtR = self._sweep(None, hessian=False, residual=residual, columns=k)
        return 0.5 * (W * W).sum(0) + C * loss, W + 2 * C * XtR, active

    def hessian_product(self, V: torch.Tensor, active: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``X~_I^T (X~_I V)`` per class column (I: each class's active rows), one Hessian pass."""
        def residual(rows: slice, Z: torch.Tensor) -> torch.Tensor:
            return Z * active[rows][:, columns].to(Z.dtype)

        return self._sweep(V, hessian=True, residual=residual)

    def gram_product(self, V: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``X~^T (X~ V)`` in the Hessian precision (one Hessian pass); ``keep`` (n x columns), if
        given, receives ``X~ V``."""
        def residual(rows: slice, Z: torch.Tensor) -> torch.Tensor:
            if keep is not None:
                keep[rows] = Z
            return Z

        return self._sweep(V, hessian=True, residual=residual)
