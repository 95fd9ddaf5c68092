"""The preconditioned Newton solver (preconditioner_rank > 0) against plain TRON and liblinear."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.svm import LinearSVC

from gan_features.svm import LinearL2SVM, fit_c_path, primal_objective
from gan_features.svm.design import _Design
from gan_features.svm.newton import FALLBACK_NEWTON_STEPS
from gan_features.svm import precondition
from gan_features.svm.precondition import LowRankPreconditioner
from gan_features.svm.rows import _TensorRows

from test_svm import _class_structured_features, assert_same_solution

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def positive_features():
    """Nonnegative features whose mean dominates their Gram matrix (as max-pooled activations):
    the case the preconditioner is for. 300 train x 600 features (fewer rows than features, so
    that both the primal and the Gram solver apply), 5 classes, 2,000 test rows."""
    X, y = make_classification(n_samples=2300, n_features=600, n_informative=40, n_redundant=0, n_classes=5,
                               n_clusters_per_class=1, class_sep=1.0, random_state=7)
    X = (np.maximum(X, 0) + 0.5).astype(np.float32)
    return X[:300], y[:300], X[300:], y[300:]


@pytest.mark.parametrize("solver", ["primal", "gram"])
@pytest.mark.parametrize("C", [1e-3, 1e-1])
def test_preconditioned_newton_agrees_with_tron_and_liblinear(positive_features, solver, C):
    X, y, X_test, y_test = positive_features
    tron = LinearL2SVM(C=C, solver=solver, preconditioner_rank=0).fit(X, y)
    newton = LinearL2SVM(C=C, solver=solver, preconditioner_rank=16).fit(X, y)
    assert newton.solver_stats_["preconditioner_rank"] == 16 and newton.solver_stats_["solver"] == solver
    assert set(newton.solver_stats_["status"]) == {"converged"}
    assert_same_solution(newton, tron, X, y, C, tron.tol)
    reference = LinearSVC(C=C, loss="squared_hinge", dual=False, tol=1e-8, max_iter=10_000).fit(X, y)
    ours, theirs = primal_objective(newton, X, y, C), primal_objective(reference, X, y, C)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)
    assert abs(newton.score(X_test, y_test) - reference.score(X_test, y_test)) <= 0.002


def test_separated_classes_still_converge_to_the_same_solution():
    """A moderately separated case: the preconditioner helps or is harmless, same answer."""
    X, y = make_classification(n_samples=500, n_features=300, n_informative=20, n_redundant=0, n_classes=4,
                               n_clusters_per_class=1, class_sep=4.0, random_state=3)
    X = X.astype(np.float32)
    tron = LinearL2SVM(C=1e-2, preconditioner_rank=0).fit(X, y)
    newton = LinearL2SVM(C=1e-2, preconditioner_rank=16, max_iter=5000).fit(X, y)
    assert set(newton.solver_stats_["status"]) == {"converged"}
    assert not newton.solver_stats_["preconditioner_fallback"]
    assert_same_solution(newton, tron, X, y, 1e-2, tron.tol)


def test_the_preconditioner_is_dropped_where_it_fails():
    """The known weak case (few active rows, see gan_features.svm.newton): without the fallback 865
    Newton steps at 2,048 x 8,192 where TRON took 6; with it, FALLBACK_NEWTON_STEPS wasted steps and
    a fresh unpreconditioned solve, for this C and every later one of the path."""
    X, y = _class_structured_features(512, 2048, 5, seed=4, separation=3.0)
    Cs = [1e-2, 1e-1]
    # bfloat16 Hessians on every CPU ("auto" takes float32 where bfloat16 is emulated): with float32
    # ones the preconditioner does not fail on this case, and nothing would test the fallback.
    params = dict(solver="primal", hessian_dtype="bfloat16")
    tron = fit_c_path(X, y, Cs, preconditioner_rank=0, **params)
    newton = fit_c_path(X, y, Cs, preconditioner_rank=32, **params)
    for a, b, C in zip(newton, tron, Cs):
        assert a.solver_stats_["preconditioner_fallback"] and set(a.solver_stats_["status"]) == {"converged"}
        assert_same_solution(a, b, X, y, C, b.tol)
    first, later = (model.solver_stats_["newton_iterations"] for model in newton)
    assert first <= FALLBACK_NEWTON_STEPS + 2 * tron[0].solver_stats_["newton_iterations"]
    assert later <= 2 * tron[1].solver_stats_["newton_iterations"] + 2  # no preconditioned attempt again


def test_preconditioned_path_resumes_with_the_same_models(positive_features, tmp_path):
    """The preconditioner is built by whichever C first needs a step; a resumed path must not differ."""
    X, y, _, _ = positive_features
    Cs, params = [1e-3, 1e-2, 1e-1], dict(preconditioner_rank=16, solver="primal", hessian_dtype="float32")
    whole = fit_c_path(X, y, Cs, **params)
    fit_c_path(X, y, Cs, checkpoint_dir=tmp_path, **params)
    (tmp_path / f"C={Cs[-1]!r}.pt").unlink()
    resumed = fit_c_path(X, y, Cs, checkpoint_dir=tmp_path, **params)
    assert "preconditioner_passes" in whole[0].solver_stats_ and "preconditioner_passes" in resumed[-1].solver_stats_
    for a, b in zip(whole, resumed):
        np.testing.assert_array_equal(a.coef_, b.coef_)
        assert a.solver_stats_["hessian_passes"] == b.solver_stats_["hessian_passes"]


def test_preconditioner_is_the_hessian_on_its_subspace(positive_features):
    """G follows the active set exactly (updated = recomputed), and P^-1 inverts P."""
    X, y, _, _ = positive_features
    rows = _TensorRows(torch.from_numpy(X), torch.device("cpu"), "float32")
    design = _Design(rows, torch.as_tensor(y), 1.0)
    pre = LowRankPreconditioner(design, 16)
    V = pre.V
    np.testing.assert_allclose((V.T @ V).numpy(), np.eye(16), atol=1e-10)
    rng = np.random.default_rng(0)
    # Classes with few, half and most rows active, and all of them: G comes from either side of the set.
    first = torch.from_numpy(rng.random((len(X), 5)) < np.array([0.1, 0.4, 0.5, 0.8, 1.01]))
    second = first.clone()
    second[:50] = ~second[:50]
    pre.set_active(first, 1e-2, fresh=True)
    pre.set_active(second, 1e-2)
    updated = pre._G.clone()
    pre.set_active(second, 1e-2, fresh=True)
    scale = float(pre._G.abs().max())  # G is formed from float32 X~V: compare at float32 precision
    np.testing.assert_allclose(updated.numpy(), pre._G.numpy(), rtol=0, atol=1e-6 * scale)
    augmented = torch.cat([torch.from_numpy(X).double(), torch.ones(len(X), 1, dtype=torch.float64)], 1)
    for c in range(5):
        A = augmented[second[:, c]] @ V
        np.testing.assert_allclose(pre._G[c].numpy(), (A.T @ A).numpy(), rtol=0, atol=1e-5 * scale)
    P = torch.eye(V.shape[0], dtype=torch.float64) + V @ pre.G2[3] @ V.T
    r = torch.from_numpy(rng.standard_normal((V.shape[0], 1)))
    z = pre.solve(r, pre.project(r), torch.tensor([3]))
    np.testing.assert_allclose((P @ z).numpy(), r.numpy(), atol=1e-8)


def test_auto_rank_is_larger_on_the_primal_of_wide_rows(positive_features, monkeypatch):
    """"auto" picks the rank by problem and width (gan_features.svm.precondition.auto_rank; here the
    ranks are scaled down under the n / 16 cap of 300 rows), and an explicit rank applies to both."""
    X, y, _, _ = positive_features
    monkeypatch.setitem(precondition.AUTO_RANKS, "wide primal", 12)
    monkeypatch.setitem(precondition.AUTO_RANKS, "other", 4)
    for wide_from, solver, rank in ((600, "primal", 12), (601, "primal", 4), (600, "gram", 4)):
        monkeypatch.setattr(precondition, "WIDE_FEATURES", wide_from)
        model = LinearL2SVM(C=1e-2, solver=solver).fit(X, y)
        assert model.get_params()["preconditioner_rank"] == "auto"
        assert (model.solver_stats_["solver"], model.solver_stats_["preconditioner_rank"]) == (solver, rank)
        explicit = LinearL2SVM(C=1e-2, solver=solver, preconditioner_rank=8).fit(X, y)
        assert explicit.solver_stats_["preconditioner_rank"] == 8
        assert_same_solution(model, explicit, X, y, 1e-2, model.tol)


def test_bad_preconditioner_rank_is_refused(positive_features):
    X, y, _, _ = positive_features
    for bad in (-1, 2.5, True, "fast"):
        with pytest.raises(ValueError, match="preconditioner_rank"):
            LinearL2SVM(preconditioner_rank=bad).fit(X, y)
