"""The DCGAN paper's linear-SVM evaluation protocols: which rows train, which choose C, which test.

A protocol is a frozen, seeded dataclass, registered by name::

    protocol = get_protocol("svhn-1000", seed=0)        # or cifar10, cifar10-400
    result = protocol.run("svhn-train.h5", "svhn-test.h5")
    print(result.describe())

How a run keeps the test set out of every choice:

1. :meth:`Protocol.plan` makes every random choice up front (validation split, label draws) from
   ONE ``numpy`` Generator seeded with ``seed``, looking at the TRAINING labels only;
2. each C of the grid is scored on validation rows of the training store, and C is chosen
   (with ``patience`` > 0: among the Cs reached, in ascending order, before that many Cs in a row
   scored no better on validation than the best before them; the largest Cs cost the most);
3. only then is the test store read, once, by the models fitted with that C.

Scores are percentages (accuracy for the CIFAR-10 protocols, error for SVHN, as the paper reports
them). Spreads are numpy's default population std (ddof=0), as in the original analysis.

Memory: a feature matrix is held once. Rows are read straight into one array in the order needed
(:func:`~gan_features.store.read_rows`), fit and validation parts of it are views, and the test store is streamed.
The few-label protocols hold every selection draw's rows at once (their paths go up the grid in step):
5 x 4,000 x 28,672 float32, 2.3 GB, for ``cifar10-400`` at full scale.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import operator
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .errors import GanFeaturesError
from .protocol_results import ProtocolResult, Summary
from .provenance import provenance
from .store import FeatureStore, StoreLike, check_store_pair, read_rows, rows_per_block
from .store import opened_store as _opened
from .store import store_pair_provenance as _store_provenance
from .svm import GRAM_MAX_ROW_FRACTION, GramRows, LinearL2SVM, StoreGram, fit_c_path, iter_c_path

PAPER_CS: tuple[float, ...] = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)  # the original SVHN analysis' grid


# ------------------------------------------------------------------------------------------------ plans
@dataclass(frozen=True, eq=False)
class Plan:
    """Every random choice of one run, made before any model is fitted. Rows index the TRAINING store.

    validation: rows that score each C.
    selection:  (training rows, the Cs fitted on them) pairs; every such model is scored on validation.
    final:      training rows of each model fitted with the chosen C and scored on the test store.
    """

    validation: np.ndarray
    selection: tuple[tuple[np.ndarray, tuple[float, ...]], ...]
    final: tuple[np.ndarray, ...]

    @property
    def fits(self) -> int:
        return sum(len(Cs) for _, Cs in self.selection) + len(self.final)


def draw_per_class(rng: np.random.Generator, pool_by_class: Sequence[np.ndarray], n_per_class: int) -> np.ndarray:
    """``n_per_class`` rows of each class without replacement, class blocks in class order (as the original)."""
    return np.concatenate([rng.choice(rows, size=n_per_class, replace=False) for rows in pool_by_class])


# ------------------------------------------------------------------------------------------- protocols
PROTOCOLS: dict[str, type["Protocol"]] = {}


def register(cls: type["Protocol"]) -> type["Protocol"]:
    PROTOCOLS[cls.name] = cls
    return cls


def get_protocol(name: str, **overrides: Any) -> "Protocol":
    """The protocol ``name`` with some parameters changed; an override of None keeps the default."""
    try:
        cls = PROTOCOLS[name]
    except KeyError:
        raise GanFeaturesError(f"unknown protocol {name!r}: choose from {', '.join(sorted(PROTOCOLS))}") from None
    overrides = {key: value for key, value in overrides.items() if value is not None}
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise GanFeaturesError(f"protocol {name} has no parameter {', '.join(unknown)}: it takes {', '.join(names)}")
    return cls(**overrides)


@dataclass(frozen=True)
class Protocol(abc.ABC):
    """Base of all protocols: a seed, a grid of C, and the splits the stores must hold."""

    name: ClassVar[str]
    metric: ClassVar[str]  # "accuracy" (higher is better) or "error"
    spread: ClassVar[str]  # "std" or "ci95", as the paper reports this number

    seed: int = 0
    Cs: tuple[float, ...] = PAPER_CS
    train_split: str = "train"
    test_split: str = "test"

    def __post_init__(self) -> None:
        _set(self, "seed", _int("seed", self.seed, minimum=0))
        try:  # lists from a CLI or a JSON file become the tuple a frozen, hashable protocol needs
            Cs = tuple(float(C) for C in self.Cs)
        except (TypeError, ValueError):
            raise GanFeaturesError(f"Cs must be a list of numbers, got {self.Cs!r}") from None
        if not Cs or not all(math.isfinite(C) and C > 0 for C in Cs) or len(set(Cs)) != len(Cs):
            raise GanFeaturesError(f"Cs must be distinct positive numbers, got {list(Cs)}")
        _set(self, "Cs", Cs)

    @property
    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @abc.abstractmethod
    def plan(self, labels: np.ndarray) -> Plan:
        """All random choices of a run, from the training labels and the seed alone."""

    # -- running
    def run(self, train: StoreLike, test: StoreLike, svm_params: dict | None = None,
            progress: bool = True, checkpoint_dir: str | os.PathLike | None = None,
            gram_cache: bool = True) -> ProtocolResult:
        """Choose C on the training store, then score the chosen-C models on the test store.

        ``checkpoint_dir``: keep every fitted C of the selection paths there, and reuse those a
        stopped run of the same protocol on the same stores left (a full-scale ``cifar10`` path
        takes hours on a CPU). One directory per (protocol, stores, SVM settings).
        ``gram_cache``: read and keep the training rows' shared Gram matrix beside the training
        store (:func:`shared_gram`); False forms it afresh and keeps nothing.
        """
        started = time.perf_counter()
        svm_params = _check_svm_params(svm_params)
        with _opened(train) as train_store, _opened(test) as test_store:
            self.check_stores(train_store, test_store)
            plan = self.plan(train_store.labels)
            gram = shared_gram(plan, train_store, svm_params, cache=gram_cache, progress=progress)
            gram_provenance = None if gram is None else gram.provenance()
            with tqdm(total=plan.fits, desc=self.name, unit="fit", disable=not progress, leave=False) as bar:
                if checkpoint_dir is not None and LinearL2SVM(**svm_params).backend != "torch":
                    checkpoint_dir = None  # liblinear fits cannot be resumed from saved weights
                tally = _FitTally(bar)
                correct, chosen_C, models, final_validation = self._fit(
                    plan, train_store, svm_params, tally, None if checkpoint_dir is None else Path(checkpoint_dir),
                    gram)
            del gram  # n^2 floats: freed before the test store is read
            # The first and only read of the test set: C and every model are fixed by now.
            test_scores = [self._score(c, len(test_store)) for c in _store_correct(models, test_store)]
            stores = {**_store_provenance(train_store, test_store), "shared_gram": gram_provenance}
        n_val = len(plan.validation)
        scores = {C: [self._score(c, n_val) for c in counts] for C, counts in correct.items()}
        validation = pd.DataFrame([{"C": C, "mean": float(np.mean(s)), "std": float(np.std(s)),
                                    "ci95": 1.96 * float(np.std(s)), "fits": len(s), "chosen": C == chosen_C}
                                   for C, s in scores.items()])
        return ProtocolResult(
            protocol=self.name, metric=self.metric, spread=self.spread,
            params={**self.params, "svm": svm_description(svm_params)}, chosen_C=chosen_C,
            validation=validation, test=Summary.of(test_scores),
            final_validation=None if final_validation is None else
            Summary.of([self._score(c, n_val) for c in final_validation]),
            wall_time_s=time.perf_counter() - started, provenance={**stores, **provenance()},
            resumed_fits=tally.resumed, resumed_fit_seconds=tally.resumed_seconds)

    @abc.abstractmethod
    def _fit(self, plan: Plan, store: FeatureStore, svm_params: dict, on_fit: "_FitTally",
             checkpoint_dir: Path | None, gram: StoreGram | None
             ) -> tuple[dict[float, list[int]], float, list, list[int] | None]:
        """Selection fits scored on validation, the choice of C, the final fits (selection paths
        checkpointed per C in ``checkpoint_dir``, one subdirectory per path; ``on_fit`` after each
        fit; each fit on its own rows of ``gram`` when there is one).

        Returns correct validation predictions per C (one count per fit, the grid's order, the Cs
        fitted), the chosen C, the final models and their correct validation predictions (None
        when they trained on validation rows).
        """

    def _score(self, correct: int, total: int) -> float:
        return 100.0 * (correct if self.metric == "accuracy" else total - correct) / total

    def _choose(self, correct: dict[float, list[int]], n_val: int) -> float:
        return choose_C({C: float(np.mean([self._score(c, n_val) for c in counts])) for C, counts in correct.items()},
                        self.metric)

    # -- sanity checks
    def check_stores(self, train: FeatureStore, test: FeatureStore) -> None:
        """Refuse store pairs that cannot give a meaningful number, each with a one-line reason."""
        check_store_pair(train, test, self.train_split, self.test_split, f"the {self.name} protocol's")


def choose_C(scores: dict[float, float], metric: str = "accuracy") -> float:
    """The C of the best mean validation score (``scores``: by C, in grid order): the highest accuracy
    or the lowest error; ties go to the first C in grid order (np.argmax/argmin, as the original
    analysis). Every choice of C in the toolkit is made here, on validation rows, never on test."""
    means = list(scores.values())
    best = np.argmax(means) if metric == "accuracy" else np.argmin(means)
    return list(scores)[int(best)]


def no_better_for(scores: Sequence[float], patience: int) -> bool:
    """Whether the last ``patience`` scores (higher is better, in ascending C order) are all no better
    than the best before them: a C path may stop there without changing a choice among the Cs fitted
    (ties go to the first C). Always False for ``patience`` 0."""
    return 0 < patience < len(scores) and max(scores[-patience:]) <= max(scores[:-patience])


def choose_C_on_validation(X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                           Cs: Sequence[float], estimator: LinearL2SVM | None = None) -> tuple[float, dict[float, float]]:
    """Fit one warm-started C path with ``estimator``'s settings (a template; its own C is ignored) on
    the fit rows, score validation accuracy (%) at each C, and choose C (:func:`choose_C`).
    Returns the chosen C and the accuracy by C."""
    params = {key: value for key, value in (estimator or LinearL2SVM()).get_params().items() if key != "C"}
    accuracy = {C: 100.0 * _correct(model, X_val, y_val) / len(y_val)
                for C, model in zip(Cs, fit_c_path(X_fit, y_fit, list(Cs), **params))}
    return choose_C(accuracy, "accuracy"), accuracy


@register
@dataclass(frozen=True)
class Cifar10(Protocol):
    """Table 1, full: C chosen on a held-out part of the training set, refit on ALL training rows."""

    name: ClassVar[str] = "cifar10"
    metric: ClassVar[str] = "accuracy"
    spread: ClassVar[str] = "std"

    validation_fraction: float = 0.1
    # > 0: the C path (ascending) stops once this many Cs in a row score no better on validation than
    # the best before them. The largest Cs take most of a path's time (full scale, 28,672-d: the two
    # largest, ~60%) and are rarely chosen; 0 (the paper's protocol) fits every C.
    patience: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.validation_fraction < 1.0:
            raise GanFeaturesError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        _set(self, "patience", _int("patience", self.patience, minimum=0))

    def plan(self, labels: np.ndarray) -> Plan:
        n = len(labels)
        n_val = round(n * self.validation_fraction)
        if not 0 < n_val < n:
            raise GanFeaturesError(f"cannot hold out {self.validation_fraction:.0%} of {n} training rows "
                                   "for validation")
        # Fit rows first, validation rows last: one permuted matrix whose two parts are views (see _fit).
        order = np.random.default_rng(self.seed).permutation(n)
        return Plan(validation=order[n - n_val:], selection=((order[:n - n_val], self.Cs),), final=(order,))

    def _fit(self, plan: Plan, store: FeatureStore, svm_params: dict, on_fit: "_FitTally",
             checkpoint_dir: Path | None, gram: StoreGram | None) -> tuple[dict[float, list[int]], float, list, None]:
        (fit_rows, Cs), = plan.selection
        n_fit = len(fit_rows)
        assert np.array_equal(plan.final[0][:n_fit], fit_rows), "cifar10 plan: fit rows must lead the final order"
        # One copy of the training matrix (6.9 GB at paper scale): the C path fits a view of its first
        # 90% and scores the last 10%; the final model refits the whole, all without a second copy.
        X, y = read_rows(store, plan.final[0])
        X_val, y_val = X[n_fit:], y[n_fit:]
        scored: dict[float, int] = {}  # correct validation predictions by C, in ascending C order

        def stop(model: LinearL2SVM) -> bool:
            scored[model.C] = _correct(model, X_val, y_val)
            return no_better_for(list(scored.values()), self.patience)

        path = fit_c_path(X[:n_fit], y[:n_fit], list(Cs), on_fit=on_fit, stop=stop,
                          checkpoint_dir=_path_directory(checkpoint_dir, 0), gram=_rows_of(gram, fit_rows), **svm_params)
        on_fit.skip(len(Cs) - len(path))
        correct = {model.C: [scored[model.C]] for model in path}  # the grid's order, the Cs fitted
        chosen_C = self._choose(correct, len(y_val))
        model = next(model for model in path if model.C == chosen_C)
        if model.backend == "torch":  # from the 90% solution: measured 18% fewer passes (2,000 x 28,672)
            model.set_params(warm_start=True)
        model.fit(X, y, gram=_rows_of(gram, plan.final[0]))
        on_fit(model)
        return correct, chosen_C, [model], None


@dataclass(frozen=True)
class _LabelDraws(Protocol):
    """Few labels per class: a seeded validation split, draws of ``n_per_class`` per class from the rest."""

    fresh_draws_per_C: ClassVar[bool]  # new draws for every C (the original), or the same draws for all

    n_per_class: int = 100
    validation_size: int = 10_000
    selection_draws: int = 10
    test_draws: int = 100
    # > 0: Cs are fitted in ascending order, every draw's path in step, and none beyond the C at which
    # this many Cs in a row scored no better (mean over their draws) than the best before them.
    patience: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("n_per_class", "validation_size", "selection_draws", "test_draws"):
            _set(self, key, _int(key, getattr(self, key), minimum=1))
        _set(self, "patience", _int("patience", self.patience, minimum=0))

    def plan(self, labels: np.ndarray) -> Plan:
        labels = np.asarray(labels)
        n = len(labels)
        if self.validation_size >= n:
            raise GanFeaturesError(f"validation_size {self.validation_size} leaves no labelled pool in "
                                   f"{n} training rows: use a smaller validation_size")
        rng = np.random.default_rng(self.seed)
        shuffled = rng.permutation(n)  # the original: shuffle, first validation_size = validation, rest = pool
        validation, pool = shuffled[:self.validation_size], shuffled[self.validation_size:]
        pool_by_class = []
        for label in np.unique(labels):
            rows = pool[labels[pool] == label]
            if len(rows) < self.n_per_class:
                raise GanFeaturesError(
                    f"class {label} has only {len(rows)} rows in the labelled pool (training rows less "
                    f"{self.validation_size} for validation) but {self.name} draws {self.n_per_class} per class: "
                    f"lower n_per_class or validation_size")
            pool_by_class.append(rows)

        def draw() -> np.ndarray:
            return draw_per_class(rng, pool_by_class, self.n_per_class)

        if self.fresh_draws_per_C:
            selection = tuple((draw(), (C,)) for C in self.Cs for _ in range(self.selection_draws))
        else:
            selection = tuple((draw(), self.Cs) for _ in range(self.selection_draws))
        return Plan(validation=validation, selection=selection, final=tuple(draw() for _ in range(self.test_draws)))

    def _fit(self, plan: Plan, store: FeatureStore, svm_params: dict, on_fit: "_FitTally",
             checkpoint_dir: Path | None, gram: StoreGram | None
             ) -> tuple[dict[float, list[int]], float, list, list[int] | None]:
        """As :meth:`Protocol._fit`, one C at a time in ascending order across all selection paths
        (each draw's path warm-started and kept until its last C), so that ``patience`` can stop
        them all at once; a draw's rows are read when its first C comes up."""
        X_val, y_val = read_rows(store, plan.validation)
        counts: dict[float, list[int]] = {}  # correct validation predictions per C fitted, ascending
        weights: dict[float, list[LinearL2SVM]] = {}  # the selection fits by C: the final fits start at their mean
        paths: dict[int, Iterator[LinearL2SVM]] = {}
        for C in sorted(set(self.Cs)):
            counts[C] = []
            for index, (rows, Cs) in enumerate(plan.selection):
                if C not in Cs:
                    continue
                if index not in paths:
                    X, y = read_rows(store, rows)
                    paths[index] = iter_c_path(X, y, Cs, on_fit=on_fit, gram=_rows_of(gram, rows),
                                               checkpoint_dir=_path_directory(checkpoint_dir, index), **svm_params)
                    del X, y  # held by the path only
                model = next(paths[index])
                counts[C].append(_correct(model, X_val, y_val))
                weights.setdefault(C, []).append(model)
                if C == max(Cs):
                    del paths[index]  # its last C: the path's data are freed
            if no_better_for([float(np.mean(c)) for c in counts.values()], self.patience):
                on_fit.skip(sum(C_ > C for _, Cs in plan.selection for C_ in Cs))
                break
        paths.clear()
        correct = {C: counts[C] for C in self.Cs if C in counts}  # the grid's order: ties go to the first
        chosen_C = self._choose(correct, len(y_val))
        start = _mean_weights(weights[chosen_C]) if LinearL2SVM(**svm_params).backend == "torch" else {}
        del weights
        models, final_correct = [], []
        for rows in plan.final:
            X, y = read_rows(store, rows)
            models.append(LinearL2SVM(C=chosen_C, **svm_params).fit(X, y, gram=_rows_of(gram, rows), **start))
            final_correct.append(_correct(models[-1], X_val, y_val))
            on_fit(models[-1])
        return correct, chosen_C, models, final_correct


@register
@dataclass(frozen=True)
class Svhn1000(_LabelDraws):
    """The original SVHN analysis (Newmu/dcgan_code svhn/svhn_semisup_analysis.py), step for step.

    Seeded shuffle of the training rows, first 10,000 = validation, the rest = the labelled pool; a
    draw = 100 per class from the pool; for each C, 10 fresh draws scored by validation error; C =
    argmin of the mean; then 100 fresh draws with that C, test error reported as mean +- 1.96 std.
    (The original's RNGs were Python's and numpy's legacy ones seeded 42; here one Generator.)
    """

    name: ClassVar[str] = "svhn-1000"
    metric: ClassVar[str] = "error"
    spread: ClassVar[str] = "ci95"
    fresh_draws_per_C: ClassVar[bool] = True


@register
@dataclass(frozen=True)
class Cifar10_400(_LabelDraws):
    """Table 1, "400 per class": mean +- std of test accuracy over draws of 400 labels per class.

    C is chosen by mean accuracy on a seeded 10,000-row validation split over a few draws from the
    other rows (the same draws for every C: a paired comparison, and one C path per draw); the
    test numbers come from fresh draws.
    """

    name: ClassVar[str] = "cifar10-400"
    metric: ClassVar[str] = "accuracy"
    spread: ClassVar[str] = "std"
    fresh_draws_per_C: ClassVar[bool] = False

    n_per_class: int = 400
    selection_draws: int = 5
    test_draws: int = 10


@register
@dataclass(frozen=True)
class Holdout(Cifar10):
    """The ``cifar10`` protocol under a name for any dataset: C on a seeded held-out 10%, refit on all."""

    name: ClassVar[str] = "holdout"


@register
@dataclass(frozen=True)
class FewLabels(Cifar10_400):
    """The ``cifar10-400`` protocol under a name for any dataset: draws of ``n_per_class`` labels."""

    name: ClassVar[str] = "few-labels"


# ------------------------------------------------------------------------------------ shared Gram matrix
SHARED_GRAM_MAX_BYTES = 8 << 30  # largest shared float32 Gram matrix (~46,000 rows)


def shared_gram(plan: Plan, store: FeatureStore, svm_params: dict, cache: bool = True,
                progress: bool = False) -> StoreGram | None:
    """One Gram matrix over every training row the plan fits on, whose principal submatrices are
    each fit's (see :mod:`gan_features.svm.store_gram`); None where the fits do not use one.

    Used when the Gram solver fits every model of the plan (``"auto"``: each fit has at most
    n_features / 2 rows), and either a cached matrix covers the rows or forming one over their
    union costs no more than one per fit (|union|^2 <= sum of |rows|^2: true of ``cifar10`` at
    any n up to d / 2, where 90% of the rows and then all are fitted; not of ``cifar10-400`` at
    full scale, whose 15 draws of 4,000 rows span ~32,000). Only training rows are ever in it.
    """
    model = LinearL2SVM(**svm_params)
    settings = model.solver_settings()
    if model.backend != "torch" or settings.solver == "primal":
        return None
    fit_rows = [rows for rows, _ in plan.selection] + list(plan.final)
    if settings.solver == "auto" and max(map(len, fit_rows)) > GRAM_MAX_ROW_FRACTION * store.dimension:
        return None
    union = np.unique(np.concatenate(fit_rows))
    gram = StoreGram.cached(store, union) if cache else None
    if gram is None and len(union) ** 2 <= sum(len(rows) ** 2 for rows in fit_rows) \
            and 4 * len(union) ** 2 <= SHARED_GRAM_MAX_BYTES:
        gram = StoreGram.compute(store, union, progress=progress)
        if cache:
            gram.save(store)
    return gram


def _rows_of(gram: StoreGram | None, rows: np.ndarray) -> GramRows | None:
    return None if gram is None else gram.rows_of(rows)


# ---------------------------------------------------------------------------------------------- helpers
def _set(protocol: Protocol, key: str, value: Any) -> None:
    object.__setattr__(protocol, key, value)  # normalising a frozen dataclass's own field in __post_init__


def _int(key: str, value: Any, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise GanFeaturesError(f"{key} must be an integer, got {value!r}") from None
    if value < minimum:
        raise GanFeaturesError(f"{key} must be at least {minimum}, got {value}")
    return value


def _check_svm_params(svm_params: dict | None) -> dict:
    svm_params = dict(svm_params or {})
    if "C" in svm_params:
        raise GanFeaturesError("svm_params must not set C: the protocol chooses C on validation data")
    return svm_params


def svm_description(svm_params: dict) -> dict:
    """Every SVM parameter in force (defaults included), so a result says how it was fitted."""
    params = LinearL2SVM(**svm_params).get_params()
    params.pop("C", None)
    return params


class _FitTally:
    """Called after every fit: advances the progress bar (one C at paper scale takes many minutes)
    and adds up the fits a checkpoint supplied, with the solve time their run recorded."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.resumed = 0
        self.resumed_seconds: float | None = 0.0

    def skip(self, fits: int) -> None:
        """Fits the plan counted that a stopped C path will not make (``patience``)."""
        if fits:
            self.bar.total -= fits
            self.bar.refresh()

    def __call__(self, model: LinearL2SVM) -> None:
        self.bar.update()
        stats = getattr(model, "solver_stats_", {})
        if "resumed_from" in stats:
            self.resumed += 1
            seconds = stats.get("solve_seconds")  # absent from checkpoints written before it was recorded
            self.resumed_seconds = None if seconds is None or self.resumed_seconds is None \
                else self.resumed_seconds + seconds


def _mean_weights(models: Sequence[LinearL2SVM]) -> dict[str, np.ndarray]:
    """``coef_init`` and ``intercept_init`` for a fit on new draws of the same distribution at the same
    C: the mean of the draws' solutions there starts nearer the new solution than zero does (the
    ``cifar10-400`` test fits at CI scale, 4,000 rows each: 10-17% less time on three representations,
    primal and Gram)."""
    return {"coef_init": np.mean([model.coef_ for model in models], axis=0),
            "intercept_init": np.mean([model.intercept_ for model in models], axis=0)}


def _path_directory(checkpoint_dir: Path | None, index: int) -> Path | None:
    """Where selection path ``index`` keeps its fitted Cs."""
    return None if checkpoint_dir is None else checkpoint_dir / f"selection-{index}"


def _correct(model: LinearL2SVM, X: np.ndarray, y: np.ndarray) -> int:
    return int(np.count_nonzero(model.predict(X) == y))


def _store_correct(models: Sequence[LinearL2SVM], store: FeatureStore) -> list[int]:
    """Correct predictions of each model over a whole store, streamed block by block in one pass."""
    correct = np.zeros(len(models), dtype=np.int64)
    for start, X in store.iter_chunks(rows_per_block(store)):  # NaN or infinite rows are refused
        y = store.labels[start:start + len(X)]
        for i, model in enumerate(models):
            correct[i] += _correct(model, X, y)
    return correct.tolist()
