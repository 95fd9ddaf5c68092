"""C paths: one fitted :class:`LinearL2SVM` per C of a grid, warm-started, optionally checkpointed.

With ``backend="torch"`` the data are validated and wrapped once (one bfloat16 copy, one Gram
factor, one preconditioner for the whole path) and each C starts from the previous solution, in ascending C order:
the solution moves least between neighbouring small Cs, and small C converges fastest. A C path
on 45,000 x 28,672 features can take hours (plain TRON's 7-C grid on 50,000 rows: ~1.7 h,
results/svm_speed.md), so each fitted C can be saved (:class:`_PathCheckpoint`) and a stopped
path resumed where it stopped. The estimator is only used through its public
methods: :meth:`~LinearL2SVM.solver_settings`, :meth:`~LinearL2SVM.validate_fit_data`,
:meth:`~LinearL2SVM.set_classes`, :meth:`~LinearL2SVM.set_solution`.
"""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import clone

from ..output import writing
from .estimator import LinearL2SVM
from .problem import _primal_problem, _Problem
from .rows import DEFAULT_STORE_BLOCK_BYTES, _streamed_rows


class _PathCheckpoint:
    """Each fitted C of a path saved in a directory (the model and the solver's weights, float64), so a
    path stopped part-way resumes at the next C with the same warm start: a C path on 45,000 x
    28,672 features can take hours. Files are only reused for the same rows, labels and settings
    (a fingerprint in every file); the caller keeps the directory specific to one data set."""

    ATTRIBUTES = ("coef_", "intercept_", "n_iter_", "solver_stats_")
    FILE_GLOB = "C=*.pt"  # matches the names _path gives

    def __init__(self, directory: str | os.PathLike, template: LinearL2SVM, problem: _Problem):
        self.directory = Path(directory)
        labels = problem.solver.design.labels.cpu().numpy().astype(np.int64)
        settings = {k: v for k, v in template.get_params().items() if k not in ("C", "device", "warm_start")}
        self.fingerprint = {"rows": problem.rows.n_rows, "features": template.n_features_in_,
                            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
                            "classes": [str(c) for c in template.classes_], "problem": type(problem).__name__,
                            "settings": repr(sorted(settings.items()))}

    def _path(self, C: float) -> Path:
        return self.directory / f"C={C!r}.pt"

    def load(self, C: float, model: LinearL2SVM, problem: _Problem) -> bool:
        """Set ``model``'s fitted attributes and the path's warm start from a saved C; False if none."""
        try:
            saved = torch.load(self._path(C), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):  # absent, or cut short by a crash
            return False
        if saved.get("fingerprint") != self.fingerprint:
            return False
        for name in self.ATTRIBUTES:
            value = saved[name]
            setattr(model, name, value.numpy() if isinstance(value, torch.Tensor) else value)
        # Marked, so callers can tell fits done now from fits an earlier run did (and timed).
        model.solver_stats_ = {**model.solver_stats_, "resumed_from": str(self._path(C))}
        problem.W = saved["W"].to(problem.rows.device)
        return True

    def save(self, C: float, model: LinearL2SVM, problem: _Problem) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {name: torch.from_numpy(getattr(model, name)) if isinstance(getattr(model, name), np.ndarray)
                   else getattr(model, name) for name in self.ATTRIBUTES}
        payload.update(fingerprint=self.fingerprint, W=problem.W.cpu())
        with writing(self._path(C)) as partial:  # a crash mid-write never leaves a file that looks complete
            torch.save(payload, partial)


def _fit_path(template: LinearL2SVM, problem: _Problem, Cs: Sequence[float],
              on_fit: Callable[[LinearL2SVM], None] | None = None,
              checkpoint_dir: str | os.PathLike | None = None,
              stop: Callable[[LinearL2SVM], bool] | None = None) -> list[LinearL2SVM]:
    """Fit every C with warm starts in ascending order; models come back in the order of ``Cs``.

    ``on_fit(model)`` runs after each C (a progress bar: one C at paper scale takes many minutes);
    with ``checkpoint_dir`` each C is saved there and Cs already saved are loaded, not refitted.
    ``stop(model)`` runs after ``on_fit``; when it returns True the larger Cs are not fitted and
    are left out of the list (the largest Cs cost the most: most of a path's time)."""
    return _until_stopped(_path_models(template, problem, Cs, on_fit, checkpoint_dir), Cs, stop)


def _path_models(template: LinearL2SVM, problem: _Problem, Cs: Sequence[float],
                 on_fit: Callable[[LinearL2SVM], None] | None = None,
                 checkpoint_dir: str | os.PathLike | None = None) -> Iterator[LinearL2SVM]:
    """The fitted model of each distinct C in ascending order, each warm-started from the last,
    fitted only when asked for (see :func:`_fit_path`)."""
    checkpoint = None if checkpoint_dir is None else _PathCheckpoint(checkpoint_dir, template, problem)
    for C in sorted(set(float(C) for C in Cs)):
        model = clone(template).set_params(C=C)
        model.solver_settings()  # checks this C
        for name in ("classes_", "n_features_in_", "feature_names_in_"):
            if hasattr(template, name):
                setattr(model, name, getattr(template, name))
        if checkpoint is None or not checkpoint.load(C, model, problem):
            model.set_solution(*problem.solve(C))
            if checkpoint is not None:
                checkpoint.save(C, model, problem)
        if on_fit is not None:
            on_fit(model)
        yield model


def _until_stopped(models: Iterator[LinearL2SVM], Cs: Sequence[float],
                   stop: Callable[[LinearL2SVM], bool] | None) -> list[LinearL2SVM]:
    """The models of an ascending path up to the first that ``stop`` accepts, in the order of ``Cs``
    (Cs not fitted left out; a C given twice gets two independent model objects)."""
    fitted: dict[float, LinearL2SVM] = {}
    for model in models:
        fitted[model.C] = model
        if stop is not None and stop(model):
            break
    return [copy.deepcopy(fitted[float(C)]) if seen else fitted[float(C)] for C, seen in _first_seen(Cs)
            if float(C) in fitted]


def _first_seen(Cs: Sequence[float]) -> Iterator[tuple[float, bool]]:
    """(C, whether C appeared earlier in Cs): repeated Cs get independent model objects."""
    seen: set[float] = set()
    for C in Cs:
        yield C, float(C) in seen
        seen.add(float(C))


def fit_c_path(X, y, Cs: Sequence[float], *, on_fit: Callable[[LinearL2SVM], None] | None = None,
               checkpoint_dir: str | os.PathLike | None = None, gram=None,
               stop: Callable[[LinearL2SVM], bool] | None = None, **params) -> list[LinearL2SVM]:
    """One fitted :class:`LinearL2SVM` per C, in the order given; ``on_fit(model)`` after each fit.

    ``stop(model)``, after each fit in ascending C order: True ends the path there, and the Cs
    not fitted are left out of the list (for example once validation accuracy has stopped
    improving: the protocols' ``patience``).

    ``checkpoint_dir`` (``"torch"`` only): save each fitted C there, and load the Cs a stopped run
    saved instead of refitting them (only if rows, labels and settings match; keep one directory
    per data set). ``gram``: ``X X^T`` when already at hand, as in :meth:`LinearL2SVM.fit`.

    With ``backend="torch"`` the data are validated and wrapped once (one bfloat16 copy and one
    preconditioner for the whole path) and each C starts from the previous solution, in ascending C order (the
    solution moves least between neighbouring small Cs, and small C converges fastest).
    ``liblinear`` fits each C from scratch.
    """
    Cs = list(Cs)
    template = LinearL2SVM(**params)
    if stop is None and template.backend == "liblinear":  # independent fits, in the order given
        _check_path_arguments(Cs, template, checkpoint_dir, gram)
        return list(_liblinear_models(template, X, y, Cs, on_fit))
    return _until_stopped(iter_c_path(X, y, Cs, on_fit=on_fit, checkpoint_dir=checkpoint_dir, gram=gram, **params),
                          Cs, stop)


def iter_c_path(X, y, Cs: Sequence[float], *, on_fit: Callable[[LinearL2SVM], None] | None = None,
                checkpoint_dir: str | os.PathLike | None = None, gram=None, **params) -> Iterator[LinearL2SVM]:
    """:func:`fit_c_path` one C at a time: the fitted model of each distinct C in ascending order,
    each fitted only when the iterator is advanced (warm-started from the last with ``"torch"``).
    The arguments are checked, and the data wrapped, when it is called.

    Several paths advanced in step let a caller stop all of them at the same C, as a protocol whose
    C is chosen by a score averaged over several draws does (``patience``); an abandoned iterator
    fits nothing more and frees its data.
    """
    Cs = list(Cs)
    template = LinearL2SVM(**params)
    _check_path_arguments(Cs, template, checkpoint_dir, gram)
    settings = template.solver_settings()
    if template.backend == "liblinear":
        return _liblinear_models(template, X, y, sorted(set(map(float, Cs))), on_fit)
    X, index = template.validate_fit_data(X, y)
    problem = template.in_memory_problem(X, index, settings, gram)
    return _path_models(template, problem, Cs, on_fit, checkpoint_dir)


def _liblinear_models(template: LinearL2SVM, X, y, Cs: Sequence[float],
                      on_fit: Callable[[LinearL2SVM], None] | None) -> Iterator[LinearL2SVM]:
    """An independent LinearSVC fit for each C of ``Cs``, in that order."""
    for C in Cs:
        model = clone(template).set_params(C=C).fit(X, y)
        if on_fit is not None:
            on_fit(model)
        yield model


def _check_path_arguments(Cs: list, template: LinearL2SVM, checkpoint_dir, gram) -> None:
    if not Cs:
        raise ValueError("Cs is empty: give at least one C")
    if template.backend == "liblinear":
        if checkpoint_dir is not None:
            raise ValueError("checkpoint_dir needs backend='torch'")
        if gram is not None:
            raise ValueError("gram needs backend='torch' (LinearSVC has no Gram solver)")


def count_saved_fits(checkpoint_dir: str | os.PathLike) -> int:
    """How many fitted Cs a stopped run left in ``checkpoint_dir`` (a ``checkpoint_dir`` of
    ``fit_c_path``), its subfolders included: a protocol gives each of its C paths one folder."""
    directory = Path(checkpoint_dir)
    return sum(1 for _ in directory.rglob(_PathCheckpoint.FILE_GLOB)) if directory.is_dir() else 0


def fit_c_path_store(store, Cs: Sequence[float], rows: np.ndarray | slice | None = None, *,
                     block_bytes: int = DEFAULT_STORE_BLOCK_BYTES, prefetch: bool = True,
                     on_fit: Callable[[LinearL2SVM], None] | None = None, **params) -> list[LinearL2SVM]:
    """:func:`fit_c_path` out of core: every pass of every C streams ``rows`` of the store from disk."""
    Cs = list(Cs)
    if not Cs:
        raise ValueError("Cs is empty: give at least one C")
    template = LinearL2SVM(**params)
    settings = template.solver_settings()
    if template.backend != "torch":
        raise ValueError("fit_c_path_store needs backend='torch' (liblinear cannot stream from disk)")
    with _streamed_rows(store, rows, settings.device, settings.hessian_dtype, block_bytes, prefetch) as (
            source, labels):
        index = template.set_classes(labels)
        template.n_features_in_ = source.n_features
        return _fit_path(template, _primal_problem(source, index, len(template.classes_), settings), Cs, on_fit)
