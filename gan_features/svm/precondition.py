"""A low-rank preconditioner for the Newton-CG solver (:mod:`.newton`): the Hessian made exact on
the design's top eigenvectors.

Why: the features are all positive, so their mean dominates ``X~^T X~`` (on 10,000 CIFAR-10 rows
of the 28,672-d discriminator features the top eigenvalue is 1.7e8, the second 1.9e7, the 500th
1.1e4) and the generalised Hessian ``H = I + 2C X~_I^T X~_I`` is as ill-conditioned: plain TRON
needs 142 Newton steps and 1,393 Hessian passes at C = 1e-3 there. Preconditioned by

    P = (I - V V^T) + V (I + 2C G) V^T,   G = (X~_I V)^T (X~_I V)   (r x r, per classifier),

``V`` the top ``r`` eigenvectors of ``X~^T X~`` (orthonormal columns), ``P`` equals ``H`` on
``span(V)`` and the identity on its complement: the same fit needs 21 Newton steps and 190 Hessian
passes (r = 256), to a lower objective.

When it hurts: ``P`` ignores the coupling ``V^T H (I - V V^T)``. That is small when the active
rows are a spread-out share of all rows (CIFAR-10's one-vs-rest problems: 30-40 % active), but
when a few active rows carry large components both in and outside ``span(V)`` (well separated
classes near the optimum), ``P^-1 H`` is worse conditioned than ``H`` itself: on 2,048 x 8,192
synthetic rows of 5 separated classes the fit needs ~150-900 Newton steps instead of 6. The solver
then drops it (:mod:`.newton`'s fallback); on the features this toolkit fits (discriminator
activations, k-means features, pixels) it makes a whole cifar10 protocol run 1.9-7.3x faster
(results/protocol_speed.md).

``V`` comes from randomised subspace iteration with the design's own Hessian-precision passes
(Halko, Martinsson & Tropp 2011: two power passes, one Rayleigh-Ritz pass that also keeps
``X~ V``), once per problem, so a C path shares it. ``G`` follows the active set: it is updated
from the rows whose hinge switched since the last step (after the first steps only a few), and
recomputed at each solve's start. Applying ``P^-1`` costs one product with ``V`` and one with
``V^T`` per CG iteration.

The rank (``preconditioner_rank="auto"``, :func:`auto_rank`) follows what one Hessian pass costs
against what ``V`` costs (three setup passes with r columns, two products with ``V`` per CG
iteration). On the primal of wide rows a pass reads all of ``X`` (45,000 x 28,673 at full scale),
and a larger ``V`` that saves passes pays: rank 768 against 256 made whole full-scale ``cifar10``
runs 32% (our discriminator) and 12% (the random one) faster, with the same C and test score. On
narrower rows it does not: on the authors' 12,288-d blocks 1-4 rank 768 was 36% slower; nor on
the Gram factor (n x n, n <= p / 2; 768, capped at n / 16, was 7.5% slower at CI scale). Hence
768 on the primal from ``WIDE_FEATURES`` features, 256 elsewhere (results/svm_speed.md).

Memory: ``V`` (p x r, float64, see :meth:`LowRankPreconditioner.__init__`) and ``X~ V`` (n x r,
float32); 176 MB + 138 MB at p = 28,673, n = 45,000, r = 768. The rank is capped at min(n, p) / 16.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch

from .design import PassStats, _Design


RANK_DIVISOR = 16  # rank <= min(n, p) / 16: V, X~V and the setup's work arrays stay a small part of the data's memory
# preconditioner_rank="auto" (module docstring): the wide primal's rank, everywhere else's, and where "wide" starts
AUTO_RANKS = {"wide primal": 768, "other": 256}
WIDE_FEATURES = 16384


def auto_rank(rank: int | str, problem: str, n_features: int) -> int:
    """The preconditioner rank for the setting ``rank`` (an int, or "auto") on a ``problem`` ("primal":
    the rows themselves, ``n_features`` wide; "gram": their Gram factor)."""
    if rank != "auto":
        return int(rank)
    wide_primal = problem == "primal" and n_features >= WIDE_FEATURES
    return AUTO_RANKS["wide primal" if wide_primal else "other"]


class LowRankPreconditioner:
    """``P`` above for every classifier of one problem; :meth:`set_active` before use at a new C or
    active set."""

    def __init__(self, design: _Design, rank: int, seed: int = 0, power_passes: int = 2):
        started = time.perf_counter()
        before = copy.copy(design.stats)
        device = design.labels.device
        p, n = design.n_weights, design.rows.n_rows
        rank = max(1, min(rank, p // RANK_DIVISOR, n // RANK_DIVISOR))
        generator = torch.Generator(device="cpu").manual_seed(seed)
        # V in float64: P^-1 r = r - V V^T r + V (I + 2C G)^-1 V^T r must leave no rounding of
        # r's own V-component behind, since P magnifies that subspace by up to 2C times the top
        # eigenvalue (1e6 and more); float32 rounding there is enough to stall the solver on separable data.
        Q = torch.randn(p, rank, generator=generator, dtype=torch.float64).to(device)
        for _ in range(power_passes):
            Q = torch.linalg.qr(design.gram_product(Q))[0]
        XQ = torch.empty(n, rank, dtype=torch.float32, device=device)
        B = Q.T @ design.gram_product(Q, keep=XQ)  # X~ Q is kept from the same pass, for G
        eigenvalues, E = torch.linalg.eigh(0.5 * (B + B.T))
        self.V = Q @ E  # p x r, orthonormal columns
        self.XV = XQ @ E.to(torch.float32)  # n x r, X~ V
        self.eigenvalues = eigenvalues
        self.rank = rank
        self._active: torch.Tensor | None = None
        self._G: torch.Tensor | None = None  # k x r x r, float64
        self.seconds = time.perf_counter() - started
        # The setup's own passes, kept apart from the solver's so that a C's pass counts do not depend on
        # whether its fit happened to build the preconditioner.
        self.setup_stats = PassStats(**{key: getattr(design.stats, key) - getattr(before, key)
                                        for key in asdict(before)})

    def set_active(self, active: torch.Tensor, C: float, fresh: bool = False) -> None:
        """Update ``G`` to the active sets ``active`` (n x k bool) and ``P`` to ``C``; ``fresh``
        recomputes ``G`` instead of updating it from the rows whose hinge switched (at each solve's
        start, so that a C's fit does not depend on the rounding of earlier Cs' updates: a resumed
        C path gives the same models)."""
        k = active.shape[1]
        if fresh or self._G is None or self._G.shape[0] != k:
            self._G = self._active_grams(active)
        else:
            switched = active != self._active
            for c in switched.any(0).nonzero().squeeze(1).tolist():
                rows = switched[:, c].nonzero().squeeze(1)
                Z = self.XV[rows].to(torch.float64)
                sign = torch.where(active[rows, c], 1.0, -1.0).to(torch.float64)
                self._G[c] += (Z * sign[:, None]).T @ Z
        self._active = active.clone()
        self.G2 = 2 * C * self._G
        eye = torch.eye(self.rank, dtype=torch.float64, device=self.XV.device)
        self.F = torch.cholesky_inverse(torch.linalg.cholesky(eye + self.G2)) - eye  # (I + 2C G)^-1 - I

    def _active_grams(self, active: torch.Tensor) -> torch.Tensor:
        """``G_c = (X~V)^T diag(active_c) (X~V)`` for every classifier (k x r x r, float64), each from
        the rows on the smaller side of its active set (the inactive ones taken from the product over
        all rows): at 9,000 x 256 x 10 classes with 40% of rows active, ~30 ms against 70 for the
        masked product over every row; a solve from zero starts with every row active."""
        everything = None
        grams = []
        for c in range(active.shape[1]):
            rows = active[:, c]
            if 2 * int(rows.sum()) <= len(rows):
                Z = self.XV[rows]
                grams.append((Z.T @ Z).to(torch.float64))
            else:
                if everything is None:
                    everything = (self.XV.T @ self.XV).to(torch.float64)
                Z = self.XV[~rows]
                grams.append(everything - (Z.T @ Z).to(torch.float64))
        return torch.stack(grams)

    # The CG carries its residual's projection on V, so each iteration needs one product with V and
    # one with V^T (see _Newton._cg).
    def project(self, R: torch.Tensor) -> torch.Tensor:
        """``V^T R`` (r x m)."""
        return self.V.T @ R

    def solve(self, R: torch.Tensor, VtR: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``P^-1 R`` for the classifiers ``columns``, given ``V^T R``."""
        FVtR = torch.bmm(self.F[columns], VtR.T.unsqueeze(2)).squeeze(2).T
        return R + self.V @ FVtR
