"""One Gram matrix per training store: formed once, cached beside the store, each fit on its own rows."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from gan_features import protocols
from gan_features.protocols import get_protocol, shared_gram
from gan_features.store import FeatureStore, write_features
from gan_features.svm import LinearL2SVM, StoreGram, fit_c_path
from gan_features.svm.store_gram import cache_directory

from test_svm import assert_same_solution

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CLASSES, DIM = 4, 1400  # wide: every fit below has at most DIM / 2 rows, so "auto" picks the Gram solver
ATTRS = dict(checkpoint_sha256="cd" * 32, architecture="radford-imagenet32", feature_spec={"grid": 4},
             dataset="toy")
SMALL = {"cifar10": dict(validation_fraction=0.2),
         "cifar10-400": dict(n_per_class=60, validation_size=120, selection_draws=2, test_draws=2)}
GRID = (1e-4, 1e-3, 1e-2)


def blobs(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, overlapping classes (as max-pooled activations are): C matters."""
    centres = np.random.default_rng(7).gamma(1.0, 1.0, (CLASSES, DIM))
    labels = np.repeat(np.arange(CLASSES), per_class)
    rng = np.random.default_rng(seed)
    features = np.abs(centres[labels] + rng.normal(0.0, 2.0, (len(labels), DIM)))
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


def make_store(directory, name: str, per_class: int, seed: int, split: str, overwrite: bool = False) -> str:
    return str(write_features(directory / f"{name}.h5", *blobs(per_class, seed), {**ATTRS, "split": split},
                              overwrite=overwrite))


@pytest.fixture
def stores(tmp_path) -> dict[str, str]:
    """train (600 rows) and test (200 rows), in a fresh folder: no cached Gram matrix yet."""
    return {"train": make_store(tmp_path, "train", 150, seed=1, split="train"),
            "test": make_store(tmp_path, "test", 50, seed=2, split="test")}


def small(name: str):
    return get_protocol(name, Cs=GRID, **SMALL[name])


# ---------------------------------------------------------------------------------- the matrix itself
def test_submatrix_is_the_gram_matrix_of_those_rows_in_that_order(stores):
    with FeatureStore(stores["train"]) as train:
        X = train.features[:].astype(np.float64)
        rows = np.array([5, 599, 17, 3, 250, 400])
        gram = StoreGram.compute(train, np.arange(0, 600, 1))
        assert torch.equal(gram.K, gram.K.T)
        wanted = np.array([599, 3, 250, 17])
        np.testing.assert_allclose(gram.submatrix(wanted).numpy(), X[wanted] @ X[wanted].T, rtol=1e-5)
        partial = StoreGram.compute(train, rows)
        assert partial.rows.tolist() == sorted(rows.tolist())
        with pytest.raises(ValueError, match="outside this Gram matrix's row set"):
            partial.submatrix(np.array([5, 6]))


def test_cache_finds_the_smallest_covering_matrix_and_forgets_a_rewritten_store(stores, tmp_path):
    with FeatureStore(stores["train"]) as train:
        assert StoreGram.cached(train, np.arange(10)) is None
        whole, half = StoreGram.compute(train, np.arange(600)), StoreGram.compute(train, np.arange(300))
        whole_file, half_file = whole.save(train), half.save(train)
        assert whole_file.parent == cache_directory(train) == tmp_path / "train.h5.gram"
        found = StoreGram.cached(train, np.array([299, 0, 7]))
        assert found.cached_at == half_file and torch.equal(found.K, half.K) and found.seconds == 0
        assert StoreGram.cached(train, np.array([0, 450])).cached_at == whole_file
        (cache_directory(train) / "broken.h5").write_bytes(b"not hdf5")  # e.g. from a crashed writer
        assert StoreGram.cached(train, np.array([0, 450])).cached_at == whole_file
        assert not list(cache_directory(train).glob("*.partial"))
    make_store(tmp_path, "train", 150, seed=5, split="train", overwrite=True)  # the store is extracted again: new rows
    with FeatureStore(stores["train"]) as train:
        assert StoreGram.cached(train, np.arange(10)) is None
        StoreGram.compute(train, np.arange(10)).save(train)
        assert not whole_file.exists() and not half_file.exists()  # can never match again


def test_unwritable_cache_folder_is_logged_not_fatal(stores, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with FeatureStore(stores["train"]) as train:
        gram = StoreGram.compute(train, np.arange(20))
        assert gram.save(train) is None and gram.cached_at is None
        assert "not cached" in caplog.text
        assert not list(cache_directory(train).iterdir())  # no partial file left behind


# ------------------------------------------------------------------------------- fits on a given Gram
def test_fit_on_a_given_gram_equals_the_fit_that_forms_its_own(stores):
    with FeatureStore(stores["train"]) as train:
        rows = np.arange(100, 400)
        X, y = train.features[100:400], train.labels[100:400]
        gram = StoreGram.compute(train, np.arange(600)).submatrix(rows)
    given = fit_c_path(X, y, GRID, gram=gram)
    formed = fit_c_path(X, y, GRID)
    for a, b, C in zip(given, formed, GRID):
        assert a.solver_stats_["solver"] == b.solver_stats_["solver"] == "gram"
        assert_same_solution(a, b, X, y, C, a.tol)
    one = LinearL2SVM(C=1e-3).fit(X, y, gram=gram)
    assert_same_solution(one, formed[1], X, y, 1e-3, one.tol)


def test_a_fit_on_rows_that_begin_with_the_last_fits_rows_extends_its_factor(stores):
    """cifar10's refit (the fit rows, then the validation rows) extends the C path's Cholesky factor:
    the factor one formed anew would be, and the same model; rows that do not begin with the kept
    rows get a factor of their own."""
    with FeatureStore(stores["train"]) as train:
        X, y = train.features[:], train.labels[:]
        gram = StoreGram.compute(train, np.arange(600))
    order = np.random.default_rng(0).permutation(600)
    path = fit_c_path(X[order[:480]], y[order[:480]], GRID, gram=gram.rows_of(order[:480]))
    assert [model.solver_stats_["gram_reused_rows"] for model in path] == [0, 0, 0]
    kept = gram.factors.L
    refit = LinearL2SVM(C=1e-3).fit(X[order], y[order], gram=gram.rows_of(order))
    assert refit.solver_stats_["gram_reused_rows"] == 480
    assert torch.equal(gram.factors.L[:480, :480], kept)
    anew = torch.linalg.cholesky(gram.submatrix(order).double() + 1.0)  # + intercept_scaling^2
    np.testing.assert_allclose(gram.factors.L, anew, rtol=0, atol=1e-10 * float(anew.abs().max()))
    plain = LinearL2SVM(C=1e-3).fit(X[order], y[order], gram=gram.submatrix(order))
    assert plain.solver_stats_["gram_reused_rows"] == 0
    assert_same_solution(refit, plain, X[order], y[order], 1e-3, refit.tol)
    other = LinearL2SVM(C=1e-3).fit(X[order[100:]], y[order[100:]], gram=gram.rows_of(order[100:]))
    assert other.solver_stats_["gram_reused_rows"] == 0


def test_a_gram_of_other_rows_is_refused(stores):
    with FeatureStore(stores["train"]) as train:
        X, y = train.features[:200], train.labels[:200]
        gram = StoreGram.compute(train, np.arange(600))
    shuffled = np.random.default_rng(0).permutation(200)
    with pytest.raises(ValueError, match="gram is not X X\\^T of these rows"):
        LinearL2SVM(C=1e-3).fit(X, y, gram=gram.submatrix(shuffled))
    with pytest.raises(ValueError, match="must be 200 x 200"):
        LinearL2SVM(C=1e-3).fit(X, y, gram=gram.submatrix(np.arange(199)))
    with pytest.raises(ValueError, match="use solver='auto' or 'gram'"):
        LinearL2SVM(C=1e-3, solver="primal").fit(X, y, gram=gram.submatrix(np.arange(200)))
    with pytest.raises(ValueError, match="gram needs backend='torch'"):
        LinearL2SVM(C=1e-3, backend="liblinear").fit(X, y, gram=gram.submatrix(np.arange(200)))


# ---------------------------------------------------------------------------------------- in protocols
@pytest.mark.parametrize("name", ["cifar10", "cifar10-400"])
def test_protocol_on_a_shared_gram_gives_the_same_result_and_caches_it(stores, name):
    separate = small(name).run(stores["train"], stores["test"], svm_params={"solver": "primal"}, progress=False)
    assert separate.provenance["shared_gram"] is None
    first = small(name).run(stores["train"], stores["test"], progress=False)
    shared = first.provenance["shared_gram"]
    assert shared["form_seconds"] > 0 and shared["cache_file"] is not None
    again = small(name).run(stores["train"], stores["test"], progress=False)
    assert again.provenance["shared_gram"] == {**shared, "form_seconds": 0.0}  # read from the cache
    for result in (first, again):
        assert result.chosen_C == separate.chosen_C
        np.testing.assert_allclose(result.validation["mean"], separate.validation["mean"], atol=0.5)
        assert abs(result.test.mean - separate.test.mean) <= 0.5
    assert again.test == first.test and again.validation.equals(first.validation)


def test_the_cifar10_protocol_shares_one_gram_and_cifar10_400_reuses_it(stores):
    small("cifar10").run(stores["train"], stores["test"], progress=False)
    few = small("cifar10-400").run(stores["train"], stores["test"], progress=False)
    assert few.provenance["shared_gram"]["rows"] == 600  # the cifar10 run's matrix of all rows
    with FeatureStore(stores["train"]) as train:
        assert len(list(cache_directory(train).glob("*.h5"))) == 1
    nothing_kept = small("cifar10").run(stores["train"], stores["test"], progress=False, gram_cache=False)
    assert nothing_kept.provenance["shared_gram"]["cache_file"] is None


@pytest.mark.parametrize("name", ["cifar10", "cifar10-400"])
def test_each_selection_fit_reads_only_its_own_rows_of_the_gram(stores, monkeypatch, name):
    """Every fit takes the submatrix of exactly its training rows: a selection fit never sees the
    validation rows it is scored on, and the matrix only ever holds training-store rows."""
    protocol = small(name)
    with FeatureStore(stores["train"]) as train:
        plan = protocol.plan(train.labels)
    formed, taken = [], []
    compute, submatrix = StoreGram.compute.__func__, StoreGram.submatrix

    def spy_compute(cls, store, rows, progress=False):
        formed.append(store.path)
        return compute(cls, store, rows, progress)

    def spy_submatrix(self, rows):
        taken.append(np.asarray(rows).copy())
        return submatrix(self, rows)

    monkeypatch.setattr(StoreGram, "compute", classmethod(spy_compute))
    monkeypatch.setattr(StoreGram, "submatrix", spy_submatrix)
    protocol.run(stores["train"], stores["test"], progress=False, gram_cache=False)
    assert [str(path) for path in formed] == [stores["train"]]
    expected = [rows for rows, _ in plan.selection] + list(plan.final)
    assert len(taken) == len(expected)
    for got, wanted in zip(taken, expected):
        assert np.array_equal(got, wanted)
    validation = set(plan.validation.tolist())
    for rows, _ in plan.selection:
        assert not validation & set(rows.tolist())


def test_draws_never_touch_validation_rows_of_the_gram(stores):
    """cifar10-400 on a cached matrix of ALL training rows (as a cifar10 run leaves) whose
    validation rows are poisoned (NaN): the same result, since no fit reads them (a fit that did
    would be refused: its Gram matrix is checked to be finite)."""
    protocol = small("cifar10-400")
    with FeatureStore(stores["train"]) as train:
        validation = protocol.plan(train.labels).validation
        gram = StoreGram.compute(train, np.arange(600))
        gram.save(train)
    clean = protocol.run(stores["train"], stores["test"], progress=False)
    at = torch.from_numpy(validation)
    gram.K[at, :] = float("nan")
    gram.K[:, at] = float("nan")
    with FeatureStore(stores["train"]) as train:
        assert str(gram.save(train)) == clean.provenance["shared_gram"]["cache_file"]  # replaces the clean one
    dirty = protocol.run(stores["train"], stores["test"], progress=False)
    assert dirty.provenance["shared_gram"]["rows"] == 600
    assert dirty.test == clean.test and dirty.validation.equals(clean.validation)


def test_no_shared_gram_where_the_fits_do_not_use_one(stores):
    with FeatureStore(stores["train"]) as train:
        plan = small("cifar10").plan(train.labels)
        assert shared_gram(plan, train, {"solver": "primal"}, cache=False) is None
        assert shared_gram(plan, train, {"backend": "liblinear"}, cache=False) is None
        wide = protocols.Plan(validation=plan.validation, selection=((np.arange(701), (1e-3,)),), final=())
        assert shared_gram(wide, train, {}, cache=False) is None  # 701 rows > 1400 / 2: the primal
        many = protocols.Plan(validation=plan.validation, selection=((np.arange(0, 100), (1e-3,)),),
                              final=(np.arange(300, 400),))  # |union|^2 = 40,000 > 2 x 100^2: one each
        assert shared_gram(many, train, {}, cache=False) is None
        assert shared_gram(plan, train, {}, cache=False).rows.tolist() == list(range(600))
    with h5py.File(stores["train"], "r") as file:
        assert "gram" not in file  # the store itself is never written


def test_protocol_speed_benchmark_times_settings_side_by_side(stores, tmp_path):
    """benchmarks/protocol_speed.py in-process: one row per setting, same answers, its tables written."""
    spec = importlib.util.spec_from_file_location(
        "protocol_speed", Path(__file__).resolve().parents[1] / "benchmarks" / "protocol_speed.py")
    protocol_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol_speed)
    assert protocol_speed.main(["--pair", "toy", stores["train"], stores["test"], "--protocol", "cifar10",
                                "--set", "cifar10:validation_fraction=0.2", "--svm", "preconditioner_rank=0",
                                "--svm", "", "--out-dir", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "protocol_speed.csv")
    assert table["svm"].fillna("").tolist() == ["preconditioner_rank=0", ""]
    assert table["C"].nunique() == 1 and table["test_mean"].nunique() == 1
    assert all(json.loads(gram)["rows"] == 600 for gram in table["shared_gram"])
    assert "load average" in (tmp_path / "out" / "protocol_speed.md").read_text()


def test_bfloat16_gemms_only_for_bfloat16_values_and_then_nothing_changes():
    """Features extracted in bfloat16 are bfloat16 numbers: their Gram matrix runs as bfloat16 GEMMs with
    float32 accumulation (where the CPU has them), which rounds nothing, so K and the fit are the float32
    ones up to summation order; other values keep float32 GEMMs. The math mode is restored after."""
    from gan_features.svm import primal_objective
    from gan_features.svm.gram import bfloat16_gemms, exact_in_bfloat16, gram_lower
    from gan_features.svm.tensors import _fast_bfloat16

    rng = np.random.default_rng(0)
    values = torch.from_numpy(np.abs(rng.normal(size=(300, 2048))).astype(np.float32))
    assert not exact_in_bfloat16(values)
    X = values.to(torch.bfloat16).to(torch.float32)  # as the feature pass stores bf16 activations
    assert exact_in_bfloat16(X) == _fast_bfloat16(torch.device("cpu"))
    exact = X.double() @ X.double().T
    K = gram_lower(X, torch.zeros(300, 300, dtype=torch.float64))
    K = torch.tril(K) + torch.tril(K, -1).T
    # float32 sums of 2,048 products: ~sqrt(2048) x 2^-24 of the largest entry is their order, whatever the
    # kernel's summation order (measured 2.1e-6 on an AMD EPYC with avx512_bf16, under 1e-6 with AMX)
    assert float((K - exact).abs().max() / exact.diagonal().max()) < 1e-5
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    before = getattr(matmul, "fp32_precision", None)
    with bfloat16_gemms(True):
        pass
    assert getattr(matmul, "fp32_precision", None) == before
    y = np.arange(300) % 3
    objectives = [primal_objective(LinearL2SVM(C=0.01, solver="gram", tol=1e-6).fit(X.numpy(), y, gram=gram),
                                   X.numpy(), y, 0.01).sum() for gram in (exact, K)]
    assert abs(objectives[1] - objectives[0]) <= 1e-6 * objectives[0]


def test_gram_sums_its_feature_chunks_in_float64():
    """One float32 GEMM over 32,768 features errs by ~4.6e-7 of K's largest entry (measured), which the
    factor's map back to w magnified past the exact stopping test (see gram_lower); GEMMs over
    GRAM_CHUNK_FEATURES features summed in float64 stay under 2e-7, into a float64 or a float32 K."""
    from gan_features.svm.gram import GRAM_CHUNK_FEATURES, gram_lower

    rng = np.random.default_rng(0)
    X = torch.from_numpy(np.abs(rng.normal(size=(64, 8 * GRAM_CHUNK_FEATURES))).astype(np.float32))
    exact = X.double() @ X.double().T
    for dtype in (torch.float64, torch.float32):
        K = gram_lower(X, torch.zeros(64, 64, dtype=dtype)).double()
        K = torch.tril(K) + torch.tril(K, -1).T
        assert float((K - exact).abs().max() / exact.diagonal().max()) < 2e-7, dtype
