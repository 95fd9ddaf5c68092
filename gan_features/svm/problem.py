"""Problems: the torch solver (:func:`.newton.make_tron`: preconditioned Newton, or TRON) over one
row source, fitted at one C after another (each warm-started from the last), either on the rows
themselves (the primal) or on their Gram factor.

The Gram problem (:mod:`.gram`) runs the solver on ``L``: exact passes read ``L`` in the data's
precision, Hessian passes a bfloat16 copy (``hessian_dtype``) kept in both layouts, so that
``L @ V`` and ``L^T @ R`` both stream at ~20 GB/s here (float32: ~10); each product reads only
``L``'s lower triangle (:class:`.rows._LowerTriangularRows`). The bfloat16 copy is worth
its extra passes: at 10,000 rows, C=1e-3, TRON needs 1,186 bfloat16 Hessian passes (49 s) against
722 float32 ones (66 s); the rounding of ``L`` costs Newton steps, never accuracy. The weights
mapped back from ``L`` are then checked by the primal stopping test on ``X`` itself (one exact
pass; plain TRON steps on ``X`` polish them if the rounding of ``L`` left them short), so the
primal and Gram solvers return models that pass the same test. A singular Gram matrix makes
``solver="auto"`` fall back to the primal.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict

import numpy as np
import torch

from .design import PassStats
from .gram import GRAM_MAX_ROW_FRACTION, GramRows, _GramFactor
from .rows import _LowerTriangularRows, _RowSource, _TensorRows
from .tensors import _float_on
from .newton import make_tron
from .precondition import auto_rank
from .tron import SolverSettings, _Solution, _Tron

logger = logging.getLogger(__name__)


class _Problem:
    """The solver over one row source; each :meth:`solve` warm-starts from the previous solution (a C path)."""

    def __init__(self, solver: _Tron, rows: _RowSource):
        self.solver, self.rows = solver, rows
        self.W: torch.Tensor | None = None

    def solve(self, C: float, start: torch.Tensor | None = None) -> tuple[_Solution, PassStats, _RowSource, dict]:
        """The arguments of :meth:`LinearL2SVM.set_solution` for this C (passes: this C's only).

        ``start``: primal weights ((n_features [+ 1]) x k) to start from instead of the previous solution."""
        started = time.perf_counter()
        before = copy.copy(self.solver.design.stats)
        had_preconditioner = self.solver.preconditioner is not None
        solution = self.solver.solve(C, self.W if start is None else self._coordinates(start))
        self.W = solution.W
        stats = _stats_since(before, self.solver.design.stats)
        extra = {"solver": "primal", "solve_seconds": time.perf_counter() - started,
                 "preconditioner_rank": getattr(self.solver.preconditioner, "rank", 0),
                 "preconditioner_fallback": getattr(self.solver, "fell_back", False)}
        setup = getattr(self.solver.preconditioner, "setup_stats", None)
        if not had_preconditioner and setup is not None:  # built during this C's solve: its cost apart
            stats = _stats_since(setup, stats)
            extra.update(preconditioner_seconds=self.solver.preconditioner.seconds,
                         preconditioner_passes=setup.hessian_passes)
        return solution, stats, self.rows, extra

    def _coordinates(self, W: torch.Tensor) -> torch.Tensor:
        return W.to(torch.float64)


class _GramProblem(_Problem):
    """The solver on the Gram factor ``L``, mapped back to ``w~`` and checked (polished if needed) by the
    primal stopping test on ``X`` itself; see the module docstring."""

    def __init__(self, factor: _GramFactor, index: np.ndarray, n_classes: int, settings: SolverSettings):
        device, data_dtype = factor.X.device, factor.X.dtype
        dtype_name = str(data_dtype).removeprefix("torch.")
        rows = _LowerTriangularRows(factor.L.to(data_dtype), device, settings.hessian_dtype)
        super().__init__(make_tron(rows, index, n_classes, settings, intercept_column=False,
                                   preconditioner_rank=auto_rank(settings.preconditioner_rank, "gram", rows.n_features)), rows)
        self.factor = factor
        # The check reads X itself (float32, no bfloat16 copy): usually one exact pass; when the
        # float32 rounding of L left the solution short, a few float32 steps (at 10,000 rows,
        # C=1e-3: 7 exact + 34 Hessian passes, ~10 s), cheaper than holding half of X again.
        self.primal_rows = _TensorRows(factor.X, device, dtype_name)
        # Plain TRON for the check: it usually takes no step, and a preconditioner costs three passes.
        self.primal = make_tron(self.primal_rows, index, n_classes, settings, preconditioner_rank=0)

    def _coordinates(self, W: torch.Tensor) -> torch.Tensor:
        return self.factor.coordinates(W)

    def solve(self, C: float, start: torch.Tensor | None = None) -> tuple[_Solution, PassStats, _RowSource, dict]:
        started = time.perf_counter()
        reduced, stats, rows, reduced_extra = super().solve(C, start)
        before = copy.copy(self.primal.design.stats)
        checked = self.primal.solve(C, self.factor.weights(reduced.W))
        polish = _stats_since(before, self.primal.design.stats)
        solution = _Solution(checked.W, reduced.n_iter + checked.n_iter, checked.status,
                             reduced.newton_iterations + checked.newton_iterations,
                             reduced.cg_iterations + checked.cg_iterations)
        total = PassStats(**{key: getattr(stats, key) + getattr(polish, key) for key in asdict(stats)})
        extra = {**reduced_extra, "solver": "gram", "gram_seconds": self.factor.seconds,
                 "gram_reused_rows": self.factor.reused_rows,
                 "check_exact_passes": polish.exact_passes, "check_hessian_passes": polish.hessian_passes,
                 "check_newton_iterations": checked.newton_iterations,
                 "gram_status": reduced.status, "solve_seconds": time.perf_counter() - started}
        return solution, total, rows, extra


def _stats_since(before: PassStats, after: PassStats) -> PassStats:
    return PassStats(**{key: getattr(after, key) - getattr(before, key) for key in asdict(after)})


def _in_memory_problem(X: torch.Tensor, index: np.ndarray, n_classes: int, settings: SolverSettings,
                       gram: "torch.Tensor | GramRows | None" = None) -> _Problem:
    """The primal or Gram problem for an in-memory matrix, as ``settings.solver`` asks; ``index``:
    each row's class (0 .. n_classes - 1). ``gram``: ``X X^T`` already at hand, a tensor or a
    :class:`.gram.GramRows` (checked by :func:`.gram.check_gram`): the Gram solver then factors it
    instead of forming it, at any n."""
    device = torch.device(settings.device)
    X = _float_on(X, device)
    n, d = X.shape
    if gram is not None or settings.solver == "gram" or (settings.solver == "auto" and n <= GRAM_MAX_ROW_FRACTION * d):
        factor = _GramFactor.compute(X, settings.intercept_scaling) if gram is None else \
            _GramFactor.from_gram(X, settings.intercept_scaling, gram)
        if factor is not None:
            return _GramProblem(factor, index, n_classes, settings)
        if settings.solver == "gram":
            raise ValueError("solver='gram' cannot factor the Gram matrix of these rows (duplicate or linearly "
                             "dependent rows make it singular); use solver='primal'")
        logger.info("Gram matrix of %d rows is singular; fitting the primal instead", n)
    return _primal_problem(_TensorRows(X, device, settings.hessian_dtype), index, n_classes, settings)


def _primal_problem(rows: _RowSource, index: np.ndarray, n_classes: int, settings: SolverSettings) -> _Problem:
    """The solver on ``rows`` themselves (in memory, or streamed from a store); ``index``: each row's class."""
    return _Problem(make_tron(rows, index, n_classes, settings,
                              preconditioner_rank=auto_rank(settings.preconditioner_rank, "primal", rows.n_features)), rows)

