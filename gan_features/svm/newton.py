"""Preconditioned Newton-CG with a line search, batched over the one-vs-rest classifiers: the
default torch solver (``preconditioner_rank > 0``).

The method of liblinear >= 2.40's primal solver (Galli & Lin 2021): each Newton step solves
``H s = -g`` by preconditioned CG, truncated by the same quadratic-model test as TRON's
(:mod:`.tron`), then backtracks along ``s`` (Armijo, ``eta = 0.01``, halving, at most 20 tries,
liblinear's constants). The preconditioner (:mod:`.precondition`) follows the active set at every
step; a trust region would have to carry its radius across those changes of norm, which on
separable data (few active rows at the optimum, many at the start) stalls TRON in thousands of
tiny steps, so the preconditioned solver uses a line search. Same stopping test as TRON,
``||g|| <= eps ||g(w=0)||``, so both return models that pass it.

The preconditioner ignores the coupling between its subspace and the rest, which is small on
discriminator features (30-40% of rows active) but can make CG much worse than none where few rows
are active (well-separated classes, 2,048 x 8,192, rank 32: 865 Newton steps against TRON's 6).
After :data:`FALLBACK_NEWTON_STEPS` steps of one solve without converging (real features need at
most ~15 per C at 10,000 x 28,672, 25 at C = 1e-2 on 45,000 rows) the solver drops the
preconditioner (``P = I``, as liblinear's Newton without its diagonal one) and starts that solve
again from its starting point, as every later solve of the path: the time lost is bounded (those
steps), the stopping test unchanged. It restarts rather than going on from the preconditioned steps' point
because that point is a poor start: in the case above, 43 more steps against 6 from the start.

Passes per Newton step: the CG's Hessian passes, one forward exact pass for ``X~ s`` (every
trial of the line search then costs n x k work, no pass: the margins are linear in the step)
and one backward exact pass for the gradient at the new point.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .design import _Design
from .precondition import LowRankPreconditioner
from .rows import _RowSource
from .tron import (
    _CONVERGED,
    _RUNNING,
    _STALLED,
    SolverSettings,
    _cg_iterations,
    _model_decrease,
    _Solution,
    _Tron,
)

logger = logging.getLogger(__name__)

_ARMIJO_ETA = 0.01  # sufficient decrease: f(w + a s) - f(w) <= eta a g.s
_MAX_LINE_SEARCH = 20  # step halvings before the classifier is declared stalled
FALLBACK_NEWTON_STEPS = 60  # Newton steps of one solve before the preconditioner is dropped (module docstring)


class _Newton(_Tron):
    """Newton-CG with line search and a low-rank preconditioner of rank ``preconditioner_rank``
    (built at the first solve that takes a step, kept for the C path: it depends on the rows only)."""

    def __init__(self, design: _Design, positives, tol: float, max_iter: int, preconditioner_rank: int):
        super().__init__(design, positives, tol, max_iter)
        self.preconditioner_rank = preconditioner_rank
        self.preconditioner: LowRankPreconditioner | None = None
        self.fell_back = False  # the preconditioner failed: P = I for the rest of the path (module docstring)

    def solve(self, C: float, W0: torch.Tensor | None = None, max_iter: int | None = None) -> _Solution:
        design, device = self.design, self.design.labels.device
        W, f, G, Z, active, tolerance, status = self._start(C, W0)
        n_iter = torch.zeros(len(self.positives), dtype=torch.int64, device=device)
        outer = cg_total = 0
        max_iter = self.max_iter if max_iter is None else max_iter
        while outer < max_iter:
            if outer == FALLBACK_NEWTON_STEPS and not self.fell_back:
                logger.info("preconditioned Newton: %d steps at C=%g without converging; starting again without "
                            "the preconditioner, for the rest of the path", outer, C)
                self.fell_back = True
                again = self.solve(C, W0, max_iter - outer)
                return _Solution(again.W, again.n_iter + n_iter.cpu().numpy(), again.status,
                                 outer + again.newton_iterations, cg_total + again.cg_iterations)
            idx = (status == _RUNNING).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            if self.preconditioner is None and not self.fell_back:
                self.preconditioner = LowRankPreconditioner(design, self.preconditioner_rank)
            preconditioner = _NO_PRECONDITIONER if self.fell_back else self.preconditioner
            preconditioner.set_active(active, C, fresh=outer == 0)
            outer += 1
            Gi, Wi, fi = G[:, idx], W[:, idx], f[idx]
            S, cg = self._cg(preconditioner, Gi, active, idx, C)
            cg_total += cg
            XS = design.product(S)
            step = self._line_search(Wi, S, Z[:, idx], XS, fi, Gi, self.positives[idx], C)
            moved = step > 0
            W[:, idx] = Wi + step * S
            Z[:, idx] = Z[:, idx] + step * XS
            f_new, G_new, active_new = design.gradient(W[:, idx], Z[:, idx], self.positives[idx], C)
            actred = fi - f_new
            f[idx], G[:, idx], active[:, idx] = f_new, G_new, active_new
            n_iter[idx[moved]] += 1
            done = moved & (G_new.norm(dim=0) <= tolerance[idx])
            status[idx[done]] = _CONVERGED
            # liblinear's: no step found, or a decrease below what float64 can measure.
            stalled = ~done & (~moved | (actred.abs() <= self.stall_rtol * f_new.abs()))
            status[idx[stalled]] = _STALLED
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("Newton iter %d: %d classifiers running, %d CG passes, f %s", outer, idx.numel(), cg,
                             f.tolist())
        return self._finish(W, status, n_iter, outer, cg_total)

    def _cg(self, P: "LowRankPreconditioner | _NoPreconditioner", G: torch.Tensor, active: torch.Tensor,
            columns: torch.Tensor, C: float) -> tuple[torch.Tensor, int]:
        """Preconditioned CG on ``H s = -g`` per column, stopped by TRON's quadratic-model test
        (liblinear's newton.cpp); the residual's projection on the preconditioner's subspace is
        carried along, so ``P^-1`` costs one product with ``V`` and one with ``V^T``."""
        S = torch.zeros_like(G)
        R = -G
        VtR = P.project(R)
        Zr = P.solve(R, VtR, columns)
        D = Zr.clone()
        zTr = (Zr * R).sum(0)
        running = zTr > 0
        Q = torch.zeros_like(zTr)  # the quadratic model's value at S, per column
        iterations = 0
        for iterations, j in _cg_iterations(running):
            cols, d = columns[j], D[:, j]
            Hd = d + 2 * C * self.design.hessian_product(d, active, cols)
            dHd = (d * Hd).sum(0)
            curved = dHd > 1e-16  # H >= I, so only a vanishing d fails this
            alpha = torch.where(curved, zTr[j] / torch.where(curved, dHd, 1.0), 0.0)
            S[:, j] += alpha * d
            Rj = R[:, j] - alpha * Hd
            R[:, j] = Rj
            VtRj = VtR[:, j] - alpha * P.project(Hd)
            VtR[:, j] = VtRj
            Zj = P.solve(Rj, VtRj, cols)
            znew = (Zj * Rj).sum(0)
            D[:, j] = Zj + (znew / torch.clamp(zTr[j], min=1e-300)) * d
            zTr[j] = znew
            Q[j], improving = _model_decrease(S[:, j], Rj, G[:, j], Q[j], iterations)
            running[j] = curved & improving & (znew > 0)
        return S, iterations

    def _line_search(self, W: torch.Tensor, S: torch.Tensor, Z: torch.Tensor, XS: torch.Tensor, f: torch.Tensor,
                     G: torch.Tensor, positives: torch.Tensor, C: float) -> torch.Tensor:
        """liblinear's backtracking from step 1, per column; 0 where no step gave sufficient decrease."""
        y = self.design.signs(slice(None), positives)
        wTw, wTs, sTs, gTs = (W * W).sum(0), (W * S).sum(0), (S * S).sum(0), (G * S).sum(0)
        step = torch.ones_like(f)
        searching = torch.ones_like(f, dtype=torch.bool)
        for _ in range(_MAX_LINE_SEARCH):
            loss = ((1 - y * (Z + step * XS)).clamp_min(0) ** 2).sum(0)
            f_new = 0.5 * (wTw + 2 * step * wTs + step * step * sTs) + C * loss
            searching &= ~(f_new - f <= _ARMIJO_ETA * step * gTs)
            if not searching.any():
                return step
            step = torch.where(searching, 0.5 * step, step)
        return torch.where(searching, 0.0, step)


class _NoPreconditioner:
    """``P = I``: liblinear's Newton-CG without a preconditioner, once the low-rank one has failed."""

    def set_active(self, active: torch.Tensor, C: float, fresh: bool = False) -> None:
        pass

    def project(self, R: torch.Tensor) -> torch.Tensor:
        return R[:0]  # an empty subspace

    def solve(self, R: torch.Tensor, VtR: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return R.clone()


_NO_PRECONDITIONER = _NoPreconditioner()


def make_tron(rows: _RowSource, class_index: np.ndarray, n_classes: int, settings: SolverSettings, *,
              preconditioner_rank: int, intercept_column: bool = True) -> _Tron:
    """The torch solver over ``rows`` whose labels are ``class_index`` (each row's class, 0 .. n_classes - 1):
    one classifier per class, or a single one whose positive class is 1 for two classes, as in
    scikit-learn. ``intercept_column=False`` when the rows already carry the intercept (the Gram
    factor). ``preconditioner_rank`` > 0 gives the preconditioned Newton solver (:mod:`.newton`,
    the default), 0 plain TRON; both have the same interface."""
    labels = torch.as_tensor(class_index, dtype=torch.int64).to(rows.device)
    design = _Design(rows, labels, settings.intercept_scaling if intercept_column else None)
    positives = [1] if n_classes == 2 else range(n_classes)
    if preconditioner_rank > 0:
        return _Newton(design, positives, settings.tol, settings.max_iter, preconditioner_rank)
    return _Tron(design, positives, settings.tol, settings.max_iter)
