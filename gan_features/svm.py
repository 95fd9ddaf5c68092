"""L2-regularised squared-hinge linear SVMs, one-vs-rest (first version: liblinear backend only)."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.svm import LinearSVC


class LinearL2SVM(ClassifierMixin, BaseEstimator):
    """min_w 0.5 ||w||^2 + C sum_i max(0, 1 - y_i w.x_i)^2 per class, one-vs-rest."""

    def __init__(self, C: float = 1.0, backend: str = "liblinear", tol: float = 1e-4, max_iter: int = 1000,
                 random_state: int | None = 0):
        self.C, self.backend, self.tol, self.max_iter, self.random_state = C, backend, tol, max_iter, random_state

    def fit(self, X, y):
        self.model_ = LinearSVC(C=self.C, loss="squared_hinge", penalty="l2", dual=True, tol=self.tol,
                                max_iter=self.max_iter, random_state=self.random_state).fit(X, y)
        self.classes_ = self.model_.classes_
        self.coef_, self.intercept_ = self.model_.coef_, self.model_.intercept_
        return self

    def decision_function(self, X):
        return self.model_.decision_function(X)

    def predict(self, X):
        return self.model_.predict(X)


def evaluate(model, X, y) -> dict:
    """Accuracy and confusion matrix (rows: true class, columns: predicted)."""
    predicted = model.predict(X)
    return {"accuracy": float(accuracy_score(y, predicted)),
            "confusion_matrix": confusion_matrix(y, predicted, labels=model.classes_)}


def fit_c_path(X, y, Cs, **params) -> list[LinearL2SVM]:
    """One fitted model per C, in the order given (a faster backend warm-starts along the path)."""
    return [LinearL2SVM(C=C, **params).fit(X, y) for C in Cs]
