"""The scikit-learn estimator :class:`LinearL2SVM`: parameters, validation, fitted attributes.

It only checks its inputs and parameters, hands the solving to a problem (:mod:`.problem`, or
``LinearSVC``) and turns the solution into ``coef_`` and ``intercept_``; the C-path functions
(:mod:`.path`) use the same public steps (:meth:`~LinearL2SVM.solver_settings`,
:meth:`~LinearL2SVM.validate_fit_data`, :meth:`~LinearL2SVM.set_classes`,
:meth:`~LinearL2SVM.set_solution`).

Backends: ``"torch"`` (default) solves the primal with preconditioned Newton-CG (:mod:`.newton`;
``preconditioner_rank=0``: liblinear's TRON, :mod:`.tron`), in place, in memory or streaming an
HDF5 feature store (:meth:`~LinearL2SVM.fit_store`). Threads: torch's setting is
used as it is (on a shared machine, ``torch.set_num_threads(1)`` avoids OpenMP oversubscription,
measured 5x slower). ``"liblinear"`` is scikit-learn's ``LinearSVC`` (``dual="auto"``: the primal
TRON when there are more samples than features), kept as the reference: both minimise the same
function (:func:`~.objective.primal_objective`). It converts ``X`` to float64 and then to
liblinear's sparse rows (16 bytes per value), ~6x the float32 matrix.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .design import PassStats
from .gram import check_gram
from .problem import _in_memory_problem, _primal_problem
from .rows import DEFAULT_STORE_BLOCK_BYTES, _RowSource, _streamed_rows
from .tensors import HESSIAN_DTYPES, _as_tensor, _float_on
from .tron import SolverSettings, _Solution

BACKENDS = ("torch", "liblinear")
SOLVERS = ("auto", "primal", "gram")
# The preconditioner is the default because whole cifar10 protocol runs at CI scale are 1.9-7.3x faster than
# with plain TRON and choose the same C but for one near tie (results/protocol_speed.md); its weak case falls
# back (see .newton). "auto": rank 768 on the primal of wide rows, else 256 (.precondition.auto_rank).
DEFAULT_PRECONDITIONER_RANK = "auto"


class LinearL2SVM(ClassifierMixin, BaseEstimator):
    """Linear L2-SVM (squared hinge, L2 penalty), one-vs-rest; see :mod:`gan_features.svm`.

    Parameters
    ----------
    C : float
        Inverse regularisation strength (> 0), per liblinear's objective (:mod:`gan_features.svm`).
    backend : {"torch", "liblinear"}
        ``"torch"``: a batched Newton solver in torch (fast, in place, out-of-core via
        :meth:`fit_store`; see ``preconditioner_rank``).
        ``"liblinear"``: scikit-learn's ``LinearSVC``, the reference.
    fit_intercept, intercept_scaling : bool, float
        liblinear's intercept: a constant feature of value ``intercept_scaling`` whose weight is
        regularised; ``intercept_ = intercept_scaling * weight``.
    tol : float
        Stopping tolerance with liblinear's meaning (for the primal: ``||g|| <= tol *
        max(min(#pos, #neg), 1) / n * ||g(w=0)||`` per classifier).
    max_iter : int
        Maximum outer iterations for ``"torch"`` (Newton steps, or TRON's trust-region steps,
        accepted or not); passed to ``LinearSVC`` for ``"liblinear"``.
    hessian_dtype : {"auto", "float32", "float64", "bfloat16"}
        Precision of the Hessian-vector products (``"torch"``). ``"auto"``: bfloat16 where the
        device multiplies it natively (AVX512-BF16/AMX CPUs, CUDA), else the data's dtype. A
        bfloat16 copy costs half the float32 matrix; it only steers the Newton direction, the
        objective and gradient stay exact.
    solver : {"auto", "primal", "gram"}
        How ``"torch"`` fits in memory: the solver on ``X`` (``"primal"``) or on the Cholesky
        factor of the Gram matrix (``"gram"``, same steps, n x n instead of n x d per pass; see
        :mod:`gan_features.svm.gram`). ``"auto"``: ``"gram"`` when n_samples <= n_features / 2 and
        the Gram matrix is not singular, else ``"primal"``. :meth:`fit_store` is always primal.
    preconditioner_rank : int or "auto"
        > 0 (``"torch"``): Newton-CG with a line search (liblinear >= 2.40's method,
        :mod:`gan_features.svm.newton`) preconditioned by the Hessian made exact on the data's top
        eigenvectors, computed once per C path (:mod:`gan_features.svm.precondition`; rank capped
        at min(n, d) / 16). ``"auto"`` (default): rank 768 on the primal of rows of 16,384 features
        or more, where each pass reads all of a wide ``X``, else 256 (measured in
        results/svm_speed.md; :func:`gan_features.svm.precondition.auto_rank`). 0: liblinear's
        plain TRON. Same stopping test either way.
        On 10,000 x 28,672 CIFAR-10 discriminator features rank 256 needs 7x fewer Hessian passes
        at C = 1e-3 and fits the 7-C grid 2.9x faster (results/svm_speed.md); where it fails
        (well-separated classes) the solver drops it after 60 Newton steps and starts the solve
        again (``solver_stats_`` ``preconditioner_fallback``).
    device : str or torch.device
        Where ``"torch"`` computes ("cpu", "cuda", "cuda:1", ...).
    random_state : int, RandomState or None
        Used by ``"liblinear"`` only (its dual coordinate descent shuffles); the torch solvers are
        deterministic (the preconditioner's random start has a fixed seed).
    warm_start : bool
        Start the torch solver from the previous fit's ``coef_`` and ``intercept_`` (same classes and number
        of features) instead of zero, as scikit-learn's ``warm_start``: refitting at the chosen C
        on all rows after choosing it on most of them needs fewer passes. Same stopping test, so
        the same solution up to ``tol``. ``"torch"`` only (``LinearSVC`` cannot be given a start).

    Attributes
    ----------
    classes_, coef_ (n_classifiers, n_features), intercept_ (n_classifiers,), n_features_in_,
    n_iter_ (max over classifiers of accepted Newton steps, or LinearSVC's), and for ``"torch"``
    ``solver_stats_`` (passes over the data, bytes streamed, time in passes, per-class status;
    ``solve_seconds``: the solver's wall time for this C, without one-off setup such as the
    bfloat16 copy or the Gram factor, ``gram_seconds``, but with the preconditioner when this C's
    solve built it, ``preconditioner_seconds``; ``resumed_from``: the checkpoint file it was
    loaded from, when a checkpointed C path did not refit it).
    """

    def __init__(self, C: float = 1.0, *, backend: str = "torch", fit_intercept: bool = True,
                 intercept_scaling: float = 1.0, tol: float = 1e-4, max_iter: int = 1000,
                 hessian_dtype: str = "auto", solver: str = "auto",
                 preconditioner_rank: int | str = DEFAULT_PRECONDITIONER_RANK, device: str | torch.device = "cpu",
                 random_state=None, warm_start: bool = False):
        self.C = C
        self.backend = backend
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.tol = tol
        self.max_iter = max_iter
        self.hessian_dtype = hessian_dtype
        self.solver = solver
        self.preconditioner_rank = preconditioner_rank
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
        if self.preconditioner_rank != "auto" and (
                isinstance(self.preconditioner_rank, bool) or not isinstance(self.preconditioner_rank, Integral)
                or self.preconditioner_rank < 0):
            raise ValueError(f"preconditioner_rank must be 'auto' or a non-negative integer, "
                             f"got {self.preconditioner_rank!r}")
        if self.warm_start and self.backend != "torch":
            raise ValueError("warm_start needs backend='torch' (LinearSVC cannot start from given weights)")

    def solver_settings(self) -> SolverSettings:
        """Check the parameters (ValueError if one is invalid) and return what the torch solvers
        read of them."""
        self._check_params()
        rank = self.preconditioner_rank if self.preconditioner_rank == "auto" else int(self.preconditioner_rank)
        return SolverSettings(tol=float(self.tol), max_iter=int(self.max_iter), hessian_dtype=self.hessian_dtype,
                              solver=self.solver, device=self.device, preconditioner_rank=rank,
                              intercept_scaling=float(self.intercept_scaling) if self.fit_intercept else None)

    def set_classes(self, y: np.ndarray) -> np.ndarray:
        """Set ``classes_``; return each label's class index. Needs at least two classes."""
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r})")
        return index

    def validate_fit_data(self, X, y) -> tuple[object, np.ndarray]:
        """Validate (X, y) for fitting without copying float32/float64 X; returns (X, class index).

        Sets ``classes_`` and ``n_features_in_`` (and ``feature_names_in_``, as scikit-learn does)."""
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
        return X, self.set_classes(y)

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, X, y, gram=None, coef_init=None, intercept_init=None) -> "LinearL2SVM":
        """Fit on an in-memory matrix (numpy array, array-like or torch tensor) and labels.

        ``gram``: ``X X^T`` (n x n) when it is already at hand, e.g. a principal submatrix of a
        store's (:class:`~gan_features.svm.StoreGram`): the Gram solver factors it instead of
        forming it (``"torch"``, solver ``"auto"`` or ``"gram"``; checked against a few columns
        recomputed from ``X``). ``StoreGram.rows_of(rows)`` also hands on its factor: a fit on rows
        that begin with the previous fit's rows extends that fit's factor.

        ``coef_init`` (n_classifiers, n_features), ``intercept_init`` (n_classifiers,; default 0):
        weights to start the torch solver from, as scikit-learn's ``SGDClassifier.fit`` takes them
        (over ``warm_start``), e.g. the same problem's solution on other rows of the same
        distribution. Same stopping test, so the same solution up to ``tol``."""
        settings = self.solver_settings()
        previous = self._previous_fit()
        X, index = self.validate_fit_data(X, y)
        if self.backend == "liblinear":
            if gram is not None or coef_init is not None:
                raise ValueError(f"{'gram' if gram is not None else 'coef_init'} needs backend='torch' "
                                 "(LinearSVC has no Gram solver and takes no starting weights)")
            return self._fit_liblinear(X, y=self.classes_[index])
        if coef_init is not None:
            previous = self._given_start(coef_init, intercept_init)
        start = self._start_weights(previous)
        problem = self.in_memory_problem(X, index, settings, gram)
        self.set_solution(*problem.solve(float(self.C), start))
        return self

    def in_memory_problem(self, X, index: np.ndarray, settings: SolverSettings, gram=None):
        """The torch problem for validated in-memory data (``validate_fit_data``'s output), on
        ``gram`` when given (checked to be ``X X^T`` of these rows)."""
        X = _float_on(_as_tensor(X), torch.device(settings.device))  # once, where the solver runs
        if gram is not None:
            if settings.solver == "primal":
                raise ValueError("gram is for the Gram solver: use solver='auto' or 'gram', or give no gram")
            gram = check_gram(gram, X)
        return _in_memory_problem(X, index, len(self.classes_), settings, gram)

    def fit_store(self, store, rows: np.ndarray | slice | None = None, *,
                  block_bytes: int = DEFAULT_STORE_BLOCK_BYTES, prefetch: bool = True) -> "LinearL2SVM":
        """Fit out of core from an HDF5 feature store, streaming its rows from disk on every pass.

        ``store`` is a :class:`gan_features.store.FeatureStore` or a path to one; ``rows`` the rows
        to train on, default all: a slice, integer indices (any order, no duplicates) or a boolean
        mask.
        Memory: two blocks of ``block_bytes`` (rounded down to whole HDF5 chunks, at least one)
        plus per-row work arrays of n_rows x n_classes (float64 margins and a bool active set).
        Same solution as :meth:`fit` on the loaded rows.
        """
        settings = self.solver_settings()
        if self.backend != "torch":
            raise ValueError("fit_store streams from disk only with backend='torch'; "
                             "for liblinear, load the rows (FeatureStore.load) and call fit")
        previous = self._previous_fit()
        with _streamed_rows(store, rows, settings.device, settings.hessian_dtype, block_bytes, prefetch) as (
                source, labels):
            index = self.set_classes(labels)
            self.n_features_in_ = source.n_features
            start = self._start_weights(previous, source.device)
            problem = _primal_problem(source, index, len(self.classes_), settings)
            self.set_solution(*problem.solve(float(self.C), start))
        return self

    def _previous_fit(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(classes_, coef_, intercept_) of the previous fit when ``warm_start`` asks for them."""
        if not (self.warm_start and hasattr(self, "coef_")):
            return None
        return self.classes_, self.coef_, self.intercept_

    def _given_start(self, coef_init, intercept_init) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``fit``'s starting weights checked against these data, as :meth:`_previous_fit` returns them."""
        shape = (self._n_classifiers(), self.n_features_in_)
        coef = np.asarray(coef_init, dtype=np.float64)
        intercept = np.zeros(shape[0]) if intercept_init is None else np.asarray(intercept_init, dtype=np.float64)
        if coef.shape != shape or intercept.shape != shape[:1]:
            raise ValueError(f"coef_init {coef.shape} and intercept_init {intercept.shape} must have shapes {shape} and "
                             f"{shape[:1]}: one row per classifier ({len(self.classes_)} classes), one column per feature")
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise ValueError("coef_init and intercept_init must be finite")
        return self.classes_, coef, intercept

    def _start_weights(self, previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                       device: torch.device | str | None = None) -> torch.Tensor | None:
        """The solver's starting weights ((n_features [+ 1]) x k) from the previous fit, checked against these data."""
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

    def set_solution(self, solution: _Solution, stats: PassStats, rows: _RowSource,
                     extra_stats: dict | None = None) -> None:
        """Set coef_/intercept_ from the solver's weights ``solution.W`` ((n_features [+ 1]) x k): the
        arguments are what a problem's ``solve`` returns (``n_features_in_`` must be set).
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
