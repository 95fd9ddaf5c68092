"""Evaluation protocols on small synthetic stores: C never sees test labels, seeds, the SVHN procedure, errors."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from gan_features.errors import GanFeaturesError
from gan_features.protocols import PAPER_CS, PROTOCOLS, Cifar10, Cifar10_400, Svhn1000, get_protocol, no_better_for
from gan_features import store as store_module
from gan_features.store import FeatureStore, load_store, read_rows, write_features
from gan_features.svm import LinearL2SVM

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CLASSES, DIM = 4, 16
GRID = (1e-4, 1e-2, 1.0)  # spans under- to over-fitting on the blobs below, so C selection is live
# Paper protocols at toy size; every registered protocol must appear here (see the first test).
SMALL = {
    "cifar10": dict(validation_fraction=0.2),
    "cifar10-400": dict(n_per_class=20, validation_size=100, selection_draws=2, test_draws=3),
    "svhn-1000": dict(n_per_class=10, validation_size=100, selection_draws=3, test_draws=4),
    "holdout": dict(validation_fraction=0.2),  # cifar10 under a generic name
    "few-labels": dict(n_per_class=20, validation_size=100, selection_draws=2, test_draws=3),  # cifar10-400's
}
# liblinear is exact and fast on toy data; a newer svm.py may add other backends, the tests need none of them.
SVM = {"backend": "liblinear"} if "backend" in LinearL2SVM().get_params() else {}
ATTRS = dict(checkpoint_sha256="ab" * 32, architecture="radford-svhn32",
             feature_spec={"grid": 4, "batchnorm": "running"}, dataset="toy")


def blobs(per_class: int, seed: int, classes: int = CLASSES, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian blobs around fixed centres: accuracy well below 100%, so C matters."""
    centres = np.random.default_rng(1234).normal(0.0, 1.0, (classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    rng = np.random.default_rng(seed)
    features = centres[labels] + rng.normal(0.0, 1.5, (len(labels), dim))
    order = rng.permutation(len(labels))  # stores are not sorted by class
    return features[order].astype(np.float32), labels[order]


def store(directory, name: str, features: np.ndarray, labels: np.ndarray, **attrs) -> str:
    return str(write_features(directory / f"{name}.h5", features, labels, {**ATTRS, **attrs}))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    """train (600 rows) and test (200 rows), and the test store again with its labels scrambled."""
    directory = tmp_path_factory.mktemp("stores")
    train = store(directory, "train", *blobs(150, seed=1), split="train")
    test_features, test_labels = blobs(50, seed=2)
    test = store(directory, "test", test_features, test_labels, split="test")
    scrambled_labels = np.random.default_rng(3).permutation(test_labels)
    scrambled = store(directory, "scrambled", test_features, scrambled_labels, split="test")
    return {"train": train, "test": test, "scrambled": scrambled, "dir": directory}


def small(name: str, **overrides):
    return get_protocol(name, Cs=GRID, **{**SMALL[name], **overrides})


def run(name: str, train: str, test: str, **overrides):
    return small(name, **overrides).run(train, test, svm_params=SVM, progress=False)


def train_labels(stores) -> np.ndarray:
    with FeatureStore(stores["train"]) as train:
        return train.labels


# ------------------------------------------------------------------------------ C never sees test labels
def test_small_settings_cover_every_registered_protocol():
    assert set(SMALL) == set(PROTOCOLS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_test_labels_play_no_part_in_choosing_C(stores, name):
    clean = run(name, stores["train"], stores["test"])
    scrambled = run(name, stores["train"], stores["scrambled"])
    assert clean.validation["mean"].nunique() > 1, "toy data too easy: every C scores alike, the test proves nothing"
    assert scrambled.chosen_C == clean.chosen_C
    pd.testing.assert_frame_equal(scrambled.validation, clean.validation)
    assert scrambled.final_validation == clean.final_validation
    # Only the test score moves, and it moves a lot: scrambled labels leave chance-level agreement.
    assert abs(scrambled.test.mean - clean.test.mean) > 20


# ------------------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_plan_and_different_seed_different_draws(stores, name):
    labels = train_labels(stores)
    first, again, other = (small(name, seed=seed).plan(labels) for seed in (5, 5, 6))
    for a, b in ((first, again),):
        assert np.array_equal(a.validation, b.validation)
        assert all(np.array_equal(x, y) for (x, _), (y, _) in zip(a.selection, b.selection, strict=True))
        assert all(np.array_equal(x, y) for x, y in zip(a.final, b.final, strict=True))
    assert not np.array_equal(first.validation, other.validation)
    assert not np.array_equal(first.final[0], other.final[0])


def test_same_seed_same_numbers(stores):
    a, b = (run("svhn-1000", stores["train"], stores["test"], seed=7) for _ in range(2))
    pd.testing.assert_frame_equal(a.validation, b.validation)
    assert (a.chosen_C, a.test, a.final_validation) == (b.chosen_C, b.test, b.final_validation)
    c = run("svhn-1000", stores["train"], stores["test"], seed=8)
    assert not a.validation["mean"].equals(c.validation["mean"])


# ------------------------------------------------------------------------------------ the SVHN procedure
def test_svhn_defaults_are_the_original_analysis():
    protocol = get_protocol("svhn-1000")
    assert isinstance(protocol, Svhn1000)
    assert protocol.Cs == PAPER_CS == (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
    assert (protocol.n_per_class, protocol.validation_size, protocol.selection_draws, protocol.test_draws,
            protocol.seed) == (100, 10_000, 10, 100, 0)
    assert (protocol.metric, protocol.spread) == ("error", "ci95")


def test_svhn_plan_follows_the_original(stores):
    labels = train_labels(stores)
    protocol = small("svhn-1000", seed=11)
    plan = protocol.plan(labels)
    # Validation = the first validation_size rows of the seeded shuffle; the rest is the labelled pool.
    shuffled = np.random.default_rng(11).permutation(len(labels))
    assert np.array_equal(plan.validation, shuffled[:100])
    pool = set(shuffled[100:].tolist())
    # For each C in grid order, selection_draws fresh draws fitted with that C alone; then the test draws.
    assert [Cs for _, Cs in plan.selection] == [(C,) for C in GRID for _ in range(3)]
    draws = [rows for rows, _ in plan.selection] + list(plan.final)
    assert len(plan.final) == 4
    for rows in draws:
        assert len(set(rows.tolist())) == len(rows) == 10 * CLASSES
        assert set(rows.tolist()) <= pool  # never a validation row
        assert np.array_equal(labels[rows], np.repeat(np.arange(CLASSES), 10))  # exactly 10 per class
    assert len({tuple(sorted(rows.tolist())) for rows in draws}) == len(draws)  # every draw is fresh


@pytest.mark.parametrize("name", ["cifar10", "cifar10-400", "svhn-1000"])
def test_progress_bar_advances_once_per_fit_and_ends_full(stores, monkeypatch, name):
    """One C of a paper-scale path takes many minutes: the bar moves after every fit, not per path."""
    import gan_features.protocols as protocols

    bars = []

    class Recording(protocols.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})
            self.steps, self.expected = [], kwargs["total"]
            bars.append(self)

        def update(self, n=1):
            self.steps.append(n)

    monkeypatch.setattr(protocols, "tqdm", Recording)
    small(name).run(stores["train"], stores["test"], svm_params=SVM, progress=True)
    (bar,) = bars
    assert bar.steps == [1] * bar.expected
    # paths stopped by patience take their unmade fits off the total
    get_protocol(name, **{**SMALL[name], "Cs": (1e-5, 1e-4, 1e-3, 1e-2, 0.1), "patience": 1, "seed": 3}).run(
        stores["train"], stores["test"], svm_params=SVM, progress=True)
    assert len(bars[1].steps) == bars[1].total < bars[1].expected


@pytest.mark.parametrize("name", ["cifar10", "cifar10-400"])
def test_checkpointed_run_resumes_without_refitting_the_selection_paths(stores, tmp_path, monkeypatch, name):
    import gan_features.svm as svm

    protocol = small(name)
    with FeatureStore(stores["train"]) as train:
        plan = protocol.plan(train.labels)
    first = protocol.run(stores["train"], stores["test"], progress=False, checkpoint_dir=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {f"selection-{i}" for i in range(len(plan.selection))}
    for i, (_, Cs) in enumerate(plan.selection):
        assert {p.name for p in (tmp_path / f"selection-{i}").iterdir()} == {f"C={C!r}.pt" for C in Cs}
    solved = []
    original = svm.problem._Problem.solve
    monkeypatch.setattr(svm.problem._Problem, "solve", lambda self, C, *a: solved.append(C) or original(self, C, *a))
    again = protocol.run(stores["train"], stores["test"], progress=False, checkpoint_dir=tmp_path)
    assert len(solved) == len(plan.final)  # the final fits only
    assert again.chosen_C == first.chosen_C and again.test == first.test
    # The resumed fits are counted, with the solve time the first run recorded for them.
    saved = sorted(tmp_path.glob("selection-*/C=*.pt"))
    recorded = [torch.load(p, weights_only=True)["solver_stats_"]["solve_seconds"] for p in saved]
    assert (first.resumed_fits, first.resumed_fit_seconds) == (0, 0.0)
    assert again.resumed_fits == len(saved) == sum(len(Cs) for _, Cs in plan.selection)
    assert svm.count_saved_fits(tmp_path) == len(saved)  # what bench reports of a stopped row
    assert again.resumed_fit_seconds == pytest.approx(sum(recorded)) and min(recorded) > 0
    for p in saved:  # as written before solve times were recorded: the total is then unknown
        payload = torch.load(p, weights_only=True)
        del payload["solver_stats_"]["solve_seconds"]
        torch.save(payload, p)
    unknown = protocol.run(stores["train"], stores["test"], progress=False, checkpoint_dir=tmp_path)
    assert (unknown.resumed_fits, unknown.resumed_fit_seconds) == (len(saved), None)
    assert unknown.to_row()["resumed_fit_seconds"] is None
    protocol.run(stores["train"], stores["test"], svm_params={"backend": "liblinear"}, progress=False,
                 checkpoint_dir=tmp_path / "liblinear")
    assert not (tmp_path / "liblinear").exists()  # liblinear fits cannot start from saved weights


def test_svhn_run_matches_a_plain_rendering_of_the_original_loop(stores):
    protocol = small("svhn-1000", seed=2)
    result = protocol.run(stores["train"], stores["test"], svm_params=SVM, progress=False)
    X, y, _ = load_store(stores["train"])
    X_test, y_test, _ = load_store(stores["test"])
    plan = protocol.plan(y)
    X_val, y_val = X[plan.validation], y[plan.validation]

    def error(model, features, labels):
        return 100 * (1 - np.mean(model.predict(features) == labels))

    mean_val_errors = []
    for C in GRID:
        rows_for_C = [rows for rows, Cs in plan.selection if Cs == (C,)]
        mean_val_errors.append(np.mean([error(LinearL2SVM(C=C, **SVM).fit(X[rows], y[rows]), X_val, y_val)
                                        for rows in rows_for_C]))
    best = GRID[int(np.argmin(mean_val_errors))]
    models = [LinearL2SVM(C=best, **SVM).fit(X[rows], y[rows]) for rows in plan.final]
    test_errors = [error(model, X_test, y_test) for model in models]
    assert result.chosen_C == best
    np.testing.assert_allclose(result.validation["mean"], mean_val_errors)
    np.testing.assert_allclose([result.test.mean, result.test.ci95], [np.mean(test_errors), 1.96 * np.std(test_errors)])
    np.testing.assert_allclose(result.final_validation.mean, np.mean([error(m, X_val, y_val) for m in models]))


# --------------------------------------------------------------------------------------- CIFAR-10 plans
def test_cifar10_holds_out_a_tenth_then_refits_on_everything(stores):
    labels = train_labels(stores)
    assert Cifar10().validation_fraction == 0.1 and Cifar10().Cs == PAPER_CS
    plan = get_protocol("cifar10", seed=4).plan(labels)
    (fit_rows, Cs), = plan.selection
    assert Cs == PAPER_CS and len(plan.validation) == 60 and len(fit_rows) == 540
    assert not set(fit_rows.tolist()) & set(plan.validation.tolist())
    assert sorted(plan.final[0].tolist()) == list(range(len(labels)))  # the final fit uses every row


def test_cifar10_run_matches_a_plain_rendering(stores):
    protocol = small("cifar10", seed=3)
    result = protocol.run(stores["train"], stores["test"], svm_params=SVM, progress=False)
    X, y, _ = load_store(stores["train"])
    X_test, y_test, _ = load_store(stores["test"])
    plan = protocol.plan(y)
    (fit_rows, _), = plan.selection
    scores = [100 * LinearL2SVM(C=C, **SVM).fit(X[fit_rows], y[fit_rows]).score(X[plan.validation], y[plan.validation])
              for C in GRID]
    best = GRID[int(np.argmax(scores))]
    final = LinearL2SVM(C=best, **SVM).fit(X[plan.final[0]], y[plan.final[0]])
    assert result.chosen_C == best and result.final_validation is None
    np.testing.assert_allclose(result.validation["mean"], scores)
    np.testing.assert_allclose(result.test.mean, 100 * final.score(X_test, y_test))
    assert result.test.n == 1


@pytest.mark.parametrize("scores, patience, stops", [
    ([1, 2, 3], 2, False), ([3, 2, 1], 2, True), ([3, 2], 2, False), ([1, 3, 3, 3], 2, True),
    ([1, 3, 2, 4], 2, False), ([3, 1, 1], 0, False), ([3, 1], 1, True)])
def test_no_better_for_counts_the_last_scores_against_the_best_before_them(scores, patience, stops):
    assert no_better_for(scores, patience) is stops


@pytest.mark.parametrize("patience, stops_early", [(1, True), (2, True), (7, False)])
def test_cifar10_patience_stops_the_ascending_path_as_a_plain_rendering(stores, patience, stops_early):
    """With ``patience`` the C path, fitted in ascending C whatever the grid's order, ends once that many
    Cs in a row score no better on validation than the best before them; C is chosen among the Cs
    fitted (ties to the first in grid order, as always) and refitted on every row."""
    grid = (10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5)  # descending on purpose; the curve has two peaks
    protocol = get_protocol("cifar10", Cs=grid, seed=3, validation_fraction=0.2, patience=patience)
    result = protocol.run(stores["train"], stores["test"], svm_params=SVM, progress=False)
    X, y, _ = load_store(stores["train"])
    X_test, y_test, _ = load_store(stores["test"])
    plan = protocol.plan(y)
    (fit_rows, _), = plan.selection
    scores = {}
    for C in sorted(grid):
        model = LinearL2SVM(C=C, **SVM).fit(X[fit_rows], y[fit_rows])
        scores[C] = 100 * model.score(X[plan.validation], y[plan.validation])
        if no_better_for(list(scores.values()), patience):
            break
    fitted = [C for C in grid if C in scores]
    best = fitted[int(np.argmax([scores[C] for C in fitted]))]
    assert (len(fitted) < len(grid)) is stops_early
    assert result.validation["C"].tolist() == fitted and result.chosen_C == best
    np.testing.assert_allclose(result.validation["mean"], [scores[C] for C in fitted])
    final = LinearL2SVM(C=best, **SVM).fit(X[plan.final[0]], y[plan.final[0]])
    np.testing.assert_allclose(result.test.mean, 100 * final.score(X_test, y_test))
    assert result.params["patience"] == patience  # recorded with the result


@pytest.mark.parametrize("name", ["cifar10-400", "svhn-1000"])
@pytest.mark.parametrize("patience", [1, 7])
def test_draw_protocols_patience_stops_every_draw_at_the_same_C(stores, name, patience):
    """With ``patience`` the draws' paths go up the grid in step and all stop once that many Cs in a
    row score no better (validation score averaged over their draws) than the best before them: the
    same validation scores, choice and test score as fitting each C of each draw on its own and
    stopping there by hand; the draws themselves are those of the plan without patience."""
    grid = (10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5)  # descending on purpose
    protocol = get_protocol(name, Cs=grid, seed=3, patience=patience, **SMALL[name])
    result = protocol.run(stores["train"], stores["test"], svm_params=SVM, progress=False)
    X, y, _ = load_store(stores["train"])
    X_test, y_test, _ = load_store(stores["test"])
    plan = protocol.plan(y)
    unstopped = dataclasses.replace(protocol, patience=0).plan(y)
    for ours, theirs in zip([plan.validation, *(r for r, _ in plan.selection), *plan.final],
                            [unstopped.validation, *(r for r, _ in unstopped.selection), *unstopped.final],
                            strict=True):
        np.testing.assert_array_equal(ours, theirs)
    correct = {}
    for C in sorted(grid):
        correct[C] = np.mean([np.count_nonzero(LinearL2SVM(C=C, **SVM).fit(X[rows], y[rows]).predict(
            X[plan.validation]) == y[plan.validation]) for rows, Cs in plan.selection if C in Cs])
        if no_better_for(list(correct.values()), patience):
            break
    fitted = [C for C in grid if C in correct]
    best = fitted[int(np.argmax([correct[C] for C in fitted]))]
    assert (len(fitted) < len(grid)) is (patience == 1)
    assert result.validation["C"].tolist() == fitted and result.chosen_C == best
    tests = [LinearL2SVM(C=best, **SVM).fit(X[rows], y[rows]).score(X_test, y_test) for rows in plan.final]
    expected = 100 * np.mean(tests) if name == "cifar10-400" else 100 * (1 - np.mean(tests))
    np.testing.assert_allclose(result.test.mean, expected)
    assert result.params["patience"] == patience


def test_cifar10_400_draws_are_disjoint_from_validation_and_shared_across_C(stores):
    defaults = Cifar10_400()
    assert (defaults.n_per_class, defaults.validation_size, defaults.test_draws) == (400, 10_000, 10)
    labels = train_labels(stores)
    plan = small("cifar10-400").plan(labels)
    validation = set(plan.validation.tolist())
    assert len(validation) == 100
    assert all(Cs == GRID for _, Cs in plan.selection) and len(plan.selection) == 2
    draws = [rows for rows, _ in plan.selection] + list(plan.final)
    for rows in draws:
        assert not set(rows.tolist()) & validation
        assert np.array_equal(np.bincount(labels[rows]), [20] * CLASSES)
    assert len({tuple(sorted(rows.tolist())) for rows in draws}) == len(draws)  # test draws are fresh


# ---------------------------------------------------------------------------------- loading and results
def test_read_rows_returns_requested_rows_in_order(tmp_path, monkeypatch):
    features = np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 8), dtype=np.float32)
    labels = np.arange(50) % 3
    path = store(tmp_path, "rows", features, labels)
    monkeypatch.setattr(store_module, "READ_BLOCK_BYTES", 3 * 8 * 4)  # 3 rows per block: many blocks
    rows = np.array([41, 7, 0, 49, 8, 23, 5])
    with FeatureStore(path) as opened:
        got, got_labels = read_rows(opened, rows)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got[:, 0], rows) and np.array_equal(got_labels, labels[rows])


@pytest.mark.parametrize("span_ratio", [1, 64, 10_000])  # the row-list reads, both, the span reads
def test_read_rows_dense_sparse_and_repeated_rows(tmp_path, monkeypatch, span_ratio):
    features = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    path = store(tmp_path, "rows", features, np.arange(500) % 5)
    monkeypatch.setattr(store_module, "READ_BLOCK_BYTES", 40 * 8 * 4)  # 40 rows per block
    monkeypatch.setattr(store_module, "SPAN_READ_MAX_RATIO", span_ratio)
    rng = np.random.default_rng(1)
    rows = np.concatenate([rng.permutation(np.arange(100, 180)), [3, 499, 250, 3, 120, 120], [0, 300, 450]])
    with FeatureStore(path) as opened:
        got, _ = read_rows(opened, rows)
        np.testing.assert_array_equal(got, features[rows])
        for bad in ([5, 500], [-1, 4]):
            with pytest.raises(IndexError, match="rows must lie in"):
                read_rows(opened, np.array(bad))
        np.testing.assert_array_equal(opened.load(slice(7, 433))[0], features[7:433])


def test_run_accepts_open_stores_and_records_provenance(stores):
    with FeatureStore(stores["train"]) as train, FeatureStore(stores["test"]) as test:
        result = small("cifar10-400").run(train, test, svm_params=SVM, progress=False)
        assert len(train.features[:2]) == 2  # still open: the caller's handles are the caller's to close
    row = result.to_row()
    for key in ("protocol", "seed", "C", "test_mean", "test_std", "wall_time_s", "train_store", "test_store",
                "checkpoint_sha256", "architecture", "feature_spec", "train_store_split", "git_commit",
                "package_version", "torch_version", "svm", "Cs"):
        assert key in row, key
    assert row["checkpoint_sha256"] == "ab" * 32 and row["C"] == result.chosen_C
    assert not any(isinstance(value, (dict, list, tuple, np.ndarray)) for value in row.values())
    assert result.validation["chosen"].sum() == 1
    assert f"chosen C = {result.chosen_C:g}" in result.describe()
    by_C = json.loads(row["validation_by_C"])
    assert list(by_C) == [f"{C:g}" for C in GRID]
    assert by_C[f"{result.chosen_C:g}"] == round(row["validation_mean"], 4) == max(by_C.values())


# ------------------------------------------------------------------------------------------------ errors
def error_message(call) -> str:
    with pytest.raises(GanFeaturesError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("problem, expected", [
    ("dimension", "17-d"),
    ("checkpoint", "different discriminators"),
    ("labels", "label sets differ"),
    ("train_split", "holds the 'test' split"),
    ("same_store", "both the training and the test store"),
])
def test_mismatched_stores_are_refused(stores, tmp_path, name, problem, expected):
    train, test = stores["train"], stores["test"]
    features, labels = blobs(10, seed=9)
    if problem == "dimension":
        test = store(tmp_path, "wide", *blobs(10, seed=9, dim=DIM + 1), split="test")
    elif problem == "checkpoint":
        test = store(tmp_path, "other", features, labels, split="test", checkpoint_sha256="cd" * 32)
    elif problem == "labels":
        test = store(tmp_path, "fewer", features[labels < 3], labels[labels < 3], split="test")
    elif problem == "train_split":
        train = store(tmp_path, "wrong", *blobs(150, seed=1), split="test")
    else:
        test = train
    assert expected in error_message(lambda: run(name, train, test))


@pytest.mark.parametrize("name, overrides, expected", [
    ("svhn-1000", dict(n_per_class=200), "has only"),
    ("cifar10-400", dict(n_per_class=126), "has only"),
    ("svhn-1000", dict(validation_size=600), "leaves no labelled pool"),
])
def test_too_few_rows_for_the_draws(stores, name, overrides, expected):
    assert expected in error_message(lambda: run(name, stores["train"], stores["test"], **overrides))


@pytest.mark.parametrize("call, expected", [
    (lambda: get_protocol("cifar100"), "unknown protocol"),
    (lambda: get_protocol("cifar10", n_per_class=3), "no parameter n_per_class"),
    (lambda: get_protocol("svhn-1000", Cs=[]), "distinct positive"),
    (lambda: get_protocol("svhn-1000", Cs=[1e-3, -1.0]), "distinct positive"),
    (lambda: get_protocol("svhn-1000", Cs=[1e-3, 1e-3]), "distinct positive"),
    (lambda: get_protocol("svhn-1000", test_draws=0), "at least 1"),
    (lambda: get_protocol("svhn-1000", seed=1.5), "integer"),
    (lambda: get_protocol("cifar10", validation_fraction=1.0), "validation_fraction"),
    (lambda: get_protocol("cifar10", patience=-1), "patience must be at least 0"),
])
def test_bad_parameters_are_refused(call, expected):
    assert expected in error_message(call)


def test_C_cannot_be_passed_to_the_svm(stores):
    with pytest.raises(GanFeaturesError, match="chooses C"):
        small("svhn-1000").run(stores["train"], stores["test"], svm_params={"C": 1.0}, progress=False)


def test_protocols_are_frozen_values_and_none_keeps_defaults():
    protocol = get_protocol("svhn-1000", seed=None, Cs=[1e-3, 1e-2])
    assert protocol == Svhn1000(Cs=(1e-3, 1e-2)) and hash(protocol) == hash(Svhn1000(Cs=(1e-3, 1e-2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol.seed = 1
