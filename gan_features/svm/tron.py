"""TRON, liblinear's trust-region primal solver for the squared hinge (the one scikit-learn's
``LinearSVC`` runs), batched over the one-vs-rest classifiers.

A trust-region Newton method whose steps come from conjugate gradients on the generalised Hessian
``H v = v + 2C X~_I^T (X~_I v)``, ``I`` the rows with a positive hinge: per classifier the same
trust-region rules, constants and stopping test as liblinear, so both backends fit the same
models. All classes are solved at once, each product with the data serving every class still
running (:mod:`.design`); classes converge independently, and converged classes and classes
whose CG has finished drop out of the products.

It runs with ``preconditioner_rank=0``; the default solver, :mod:`.newton`, subclasses it and
shares its start, stopping test, batching and settings (:func:`.newton.make_tron` builds either).

The margins ``z = X~ w`` are carried in float64 and updated by ``X~ s`` for each step ``s``, so
TRON's actual-vs-predicted reduction test sees only the rounding of the small product ``X~ s``;
with float32 data and ``z`` recomputed from ``X~ w``, rounding noise of ~1e-7 |f| would stall the
test well before liblinear's tolerance.

Work arrays: per row and class a float64 margin and a bool (9 bytes), and about a dozen float64
(n_features + 1) x n_classes vectors (~35 MB for 28,672 features).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .design import _Design

logger = logging.getLogger(__name__)

# TRON's constants, as in liblinear's tron.cpp.
_ETA0, _ETA1, _ETA2 = 1e-4, 0.25, 0.75  # step acceptance / trust-region update thresholds
_SIGMA1, _SIGMA2, _SIGMA3 = 0.25, 0.5, 4.0  # trust-region shrink / expand factors
_CG_TOL = 0.5  # CG stops when i (Q_i - Q_{i-1}) >= 0.5 Q_i (liblinear >= 2.30's eps_cg for this test)
_MAX_CG_ITER = 1000  # safeguard only: TRON converges with truncated CG steps

# Per-class solver status.
_RUNNING, _CONVERGED, _STALLED, _MAX_ITER = 0, 1, 2, 3
_STATUS_NAMES = {_RUNNING: "running", _CONVERGED: "converged", _STALLED: "stalled", _MAX_ITER: "max_iter"}


@dataclass(frozen=True)
class SolverSettings:
    """What the torch solvers read of a :class:`LinearL2SVM`'s parameters, validated and converted:
    built by :meth:`LinearL2SVM.solver_settings`, so that the problems and C paths need none of the
    estimator's internals."""

    tol: float  # stopping tolerance, liblinear's meaning (see _Tron)
    max_iter: int  # outer iterations (Newton or trust-region steps), accepted or not
    hessian_dtype: str  # one of HESSIAN_DTYPES, resolved per row source
    solver: str  # one of SOLVERS: how in-memory rows are fitted ("auto", "primal", "gram")
    device: str | torch.device  # as given: torch.device(device) where the rows are put
    intercept_scaling: float | None  # the constant feature's value; None: no intercept
    # > 0: preconditioned Newton (:mod:`.newton`); 0: liblinear's plain TRON; "auto": by problem (.precondition.auto_rank)
    preconditioner_rank: int | str = 0


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
    truncated by liblinear >= 2.30's quadratic-model test, and the stopping test
    ``||g|| <= eps ||g(w=0)||`` with liblinear's primal tolerance ``eps = tol * max(min(#pos, #neg), 1) / n``.
    Batching only synchronises the classifiers: each outer iteration takes one trust-region step for every classifier
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
        self.preconditioner = None  # plain TRON has none (see _Newton)
        # liblinear's: once |actred| and |prered| are both below 1e-12 |f|, no progress is measurable.
        self.stall_rtol = 1e-12

    def _start(self, C: float, W0: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                          torch.Tensor]:
        """W, f, g, margins, active set, the stopping tolerance and each classifier's status at the
        start (one exact pass; one more the first time when starting from given weights)."""
        design, device = self.design, self.design.labels.device
        K = len(self.positives)
        W = torch.zeros(design.n_weights, K, dtype=torch.float64, device=device) if W0 is None else W0.clone()
        f, G, Z, active = design.evaluate(W, self.positives, C)
        if not (torch.isfinite(f).all() and torch.isfinite(G).all()):
            raise ValueError("the features contain NaN or infinity (or values so large that their products overflow)")
        if self._xty is None:
            G0 = G if W0 is None else design.evaluate(torch.zeros_like(W), self.positives, C)[1]
            self._xty = -G0 / (2 * C)
        tolerance = self.eps * 2 * C * self._xty.norm(dim=0)
        status = torch.full((K,), _RUNNING, dtype=torch.int64, device=device)
        status[G.norm(dim=0) <= tolerance] = _CONVERGED
        return W, f, G, Z, active, tolerance, status

    @staticmethod
    def _finish(W: torch.Tensor, status: torch.Tensor, n_iter: torch.Tensor, outer: int, cg_total: int) -> _Solution:
        """The solution; classifiers still running have hit max_iter."""
        status[status == _RUNNING] = _MAX_ITER
        return _Solution(W, n_iter.cpu().numpy(), [_STATUS_NAMES[int(s)] for s in status.tolist()], outer, cg_total)

    def solve(self, C: float, W0: torch.Tensor | None = None, max_iter: int | None = None) -> _Solution:
        """Minimise at ``C`` from ``W0`` (zero if None); ``max_iter``: instead of the settings'."""
        design, device = self.design, self.design.labels.device
        K = len(self.positives)
        W, f, G, Z, active, tolerance, status = self._start(C, W0)
        delta = G.norm(dim=0)
        first_step = torch.ones(K, dtype=torch.bool, device=device)
        n_iter = torch.zeros(K, dtype=torch.int64, device=device)
        outer = cg_total = 0
        while outer < (self.max_iter if max_iter is None else max_iter):
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
        return self._finish(W, status, n_iter, outer, cg_total)

    def _truncated_cg(self, delta: torch.Tensor, G: torch.Tensor, active: torch.Tensor, columns: torch.Tensor,
                      C: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        """liblinear's trcg, per column: CG on H s = -g inside ||s|| <= delta (the quadratic-model stop
        of liblinear >= 2.30, without its preconditioner); returns s, the residual r = -g - H s,
        and the number of Hessian passes."""
        S = torch.zeros_like(G)
        R = -G
        D = R.clone()
        rTr = (R * R).sum(0)
        running = rTr.sqrt() > 0
        Q = torch.zeros_like(rTr)  # the quadratic model's value at S, per column
        iterations = 0
        for iterations, j in _cg_iterations(running):
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
            Q[j], improving = _model_decrease(S[:, j], Rj, G[:, j], Q[j], iterations)
            running[j] = curved & ~outside & improving & (rnew > 0)
        return S, R, iterations


def _cg_iterations(running: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Each CG iteration's number (from 1, at most ``_MAX_CG_ITER``) and the columns still running;
    the caller clears columns of ``running`` in place as they stop."""
    for iteration in range(1, _MAX_CG_ITER + 1):
        columns = running.nonzero().squeeze(1)
        if columns.numel() == 0:
            return
        yield iteration, columns


def _model_decrease(S: torch.Tensor, R: torch.Tensor, G: torch.Tensor, Q: torch.Tensor, iterations: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The quadratic model's value at ``S`` (residual ``R``, gradient ``G``) and whether CG should go on:
    Nash & Sofer's test (liblinear >= 2.30) stops once the model's decrease per iteration, times the
    iteration count, falls below half the decrease so far (``Q``: the value one iteration ago).
    Chosen over ``||r|| <= 0.1 ||g||``: on 3,000 x 28,672 CIFAR features it needs 583 passes instead of 761."""
    newQ = -0.5 * ((S * R).sum(0) - (S * G).sum(0))
    return newQ, (newQ <= 0) & (newQ - Q <= 0) & (iterations * (newQ - Q) < _CG_TOL * newQ)
