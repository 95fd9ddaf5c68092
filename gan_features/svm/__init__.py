"""L2-regularised squared-hinge linear SVMs, one-vs-rest, as in Radford et al. (2015).

For each one-vs-rest classifier k (``y_ik = +1`` for class k, ``-1`` otherwise; binary problems
have one classifier, positive class ``classes_[1]``) and ``x~_i = [x_i, intercept_scaling]``::

    min_w  0.5 ||w||^2 + C sum_i max(0, 1 - y_ik w.x~_i)^2

exactly liblinear's ``L2R_L2LOSS_SVC`` (scikit-learn ``LinearSVC(loss="squared_hinge")``), which
the ``"liblinear"`` backend runs as the reference. The ``"torch"`` backend solves it by default
with Newton-CG and a line search, preconditioned by the Hessian made exact on the data's top
eigenvectors (``preconditioner_rank="auto"``: rank 768 on the primal of wide rows, else 256);
``preconditioner_rank=0`` gives liblinear's TRON.
Both use liblinear's stopping test, so every solver returns models that pass the same test.

Modules: :mod:`.estimator` (:class:`LinearL2SVM`), :mod:`.path` (C paths), :mod:`.objective`
(objective, accuracy); the solver: :mod:`.problem` (primal or Gram, one C after another),
:mod:`.newton` (the default solver), :mod:`.precondition` (its low-rank preconditioner),
:mod:`.tron` (TRON, and the batching both solvers share), :mod:`.gram` (the Gram factor),
:mod:`.store_gram` (one Gram matrix shared by many fits), :mod:`.design` (products with ``X~``),
:mod:`.rows` (in memory or from an HDF5 store), :mod:`.tensors` (devices, dtypes).
"""
from .design import COLUMN_MULTIPLE, PassStats
from .estimator import BACKENDS, SOLVERS, LinearL2SVM
from .gram import GRAM_BLOCK_ROWS, GRAM_MAX_ROW_FRACTION, GramRows
from .objective import evaluate, primal_objective
from .path import count_saved_fits, fit_c_path, fit_c_path_store, iter_c_path
from .rows import DEFAULT_STORE_BLOCK_BYTES
from .store_gram import StoreGram
from .tensors import HESSIAN_DTYPES

__all__ = ["BACKENDS", "COLUMN_MULTIPLE", "DEFAULT_STORE_BLOCK_BYTES", "GRAM_BLOCK_ROWS", "GRAM_MAX_ROW_FRACTION",
           "GramRows", "HESSIAN_DTYPES", "LinearL2SVM", "PassStats", "SOLVERS", "StoreGram", "count_saved_fits", "evaluate",
           "fit_c_path", "fit_c_path_store", "iter_c_path", "primal_objective"]
