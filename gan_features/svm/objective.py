"""The objective and accuracy of fitted models, whichever backend fitted them.

liblinear's primal objective per one-vs-rest classifier, ``0.5 ||w~||^2 + C sum_i max(0, 1 - y_ik
w~.x~_i)^2``, in which the intercept is the weight of a constant feature ``intercept_scaling``
(``b~ = intercept_ / intercept_scaling``) and is regularised like the others: both backends
minimise this same function, so their objectives are directly comparable.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix


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
