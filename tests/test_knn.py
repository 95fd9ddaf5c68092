"""The k-NN probe (gan_features.knn): DINO's weighted vote against a brute-force numpy reference, its
conventions (zero rows, ties), its refusals, and the store-streaming path against the in-memory one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_features import knn
from gan_features.errors import GanFeaturesError
from gan_features.knn import KnnResult, knn_predict, knn_probe
from gan_features.store import FeatureStore, write_features

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # small kernels on 2 shared cores
ATTRS = {"checkpoint_sha256": "ab" * 32, "architecture": "test", "feature_spec": {"grid": 4}, "dataset": "blobs"}


def reference(train, labels, test, k, temperature=0.07):
    """DINO's rule written out in float64 numpy, one test row at a time."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)

    classes, codes = np.unique(labels, return_inverse=True)
    predictions = []
    for similarity in unit(test) @ unit(train).T:
        nearest = np.argsort(-similarity, kind="stable")[:k]
        votes = np.bincount(codes[nearest], weights=np.exp(similarity[nearest] / temperature), minlength=len(classes))
        predictions.append(classes[np.argmax(votes)])  # np.argmax: the first (lowest) class on ties
    return np.array(predictions)


def blobs(n, seed, dim=16, labels=(2, 5, 7, 11)):
    """Overlapping clusters (so k matters) with labels that are not 0..C-1 (so the label mapping matters)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(len(labels), dim))
    y = rng.integers(0, len(labels), n)
    return (centres[y] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32), np.asarray(labels)[y]


@pytest.fixture(scope="module")
def data():
    (train, train_labels), (test, test_labels) = blobs(240, seed=0), blobs(60, seed=1)
    return train, train_labels, test, test_labels


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_predictions_equal_the_brute_force_reference(data, temperature):
    train, labels, test, _ = data
    ks = (1, 3, 20, 64, 240)
    predicted = knn_predict(train, labels, test, ks=ks, temperature=temperature, batch_size=7)  # uneven blocks
    assert list(predicted) == list(ks)
    for k in ks:
        assert np.array_equal(predicted[k], reference(train, labels, test, k, temperature)), k
    # tensors in, the same answers out; ks in any order and repeated are one search
    again = knn_predict(torch.from_numpy(train), torch.from_numpy(labels).numpy(), torch.from_numpy(test),
                        ks=[20, 1, 20], temperature=temperature, batch_size=1000)
    assert list(again) == [1, 20] and all(np.array_equal(again[k], predicted[k]) for k in again)


def test_k1_is_the_nearest_neighbour_and_the_input_is_left_alone(data):
    train, labels, test, _ = data
    before = train.copy()
    predicted = knn_predict(train * 3.0, labels, test, ks=1)[1]  # cosine: the scale of rows does not matter
    cosine = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ (train / np.linalg.norm(train, axis=1)[:, None]).T
    assert np.array_equal(predicted, labels[cosine.argmax(axis=1)])
    knn_predict(train, labels, test, ks=1)
    assert np.array_equal(train, before)  # normalised into the held matrix, not in place


def test_the_vote_is_weighted_and_ties_go_to_the_lowest_class():
    train = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]], dtype=np.float32)
    labels = np.array([4, 1, 1])
    query = np.array([[1.0, 0.05]], dtype=np.float32)
    # k=3: one very similar row of class 4 outweighs two less similar rows of class 1 at T=0.07 ...
    assert knn_predict(train, labels, query, ks=3)[3].tolist() == [4]
    # ... but not when the temperature flattens the weights into a majority vote
    assert knn_predict(train, labels, query, ks=3, temperature=100.0)[3].tolist() == [1]
    # two identical rows of different classes: equal weights, the lower class wins, in either order
    twins = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    for twin_labels in ([3, 1], [1, 3]):
        assert knn_predict(twins, np.array(twin_labels), np.array([[0.2, 1.0]], np.float32), ks=2)[2].tolist() == [1]


def test_zero_rows_have_similarity_zero(data):
    train, labels, test, _ = data
    train, test = train[:40].copy(), test[:10].copy()
    train[[3, 17]] = 0.0
    test[4] = 0.0
    # with every training row voting, neighbour order is irrelevant: the weights alone decide
    predicted = knn_predict(train, labels[:40], test, ks=40)[40]
    assert np.array_equal(predicted, reference(train, labels[:40], test, 40))
    # a zero test row sees every training row at similarity 0: with all of them voting, a plain majority
    classes, codes = np.unique(labels[:40], return_inverse=True)
    assert predicted[4] == classes[np.bincount(codes).argmax()]
    neighbours = knn._Neighbours(labels[:40], train.shape[1], [(0, train)], torch.float32, torch.device("cpu"), "t")
    similarity = neighbours.similarities(torch.from_numpy(test))
    assert torch.isfinite(similarity).all() and (similarity[4] == 0).all() and (similarity[:, [3, 17]] == 0).all()


def bfloat16_numbers(x):
    return torch.from_numpy(x).bfloat16().float().numpy()


def test_bfloat16_features_are_held_raw_and_give_the_same_neighbours(data):
    """Features extracted in bf16 (every value a bfloat16 number): the training rows are held raw with
    their norms and multiplied as bfloat16 GEMMs where the CPU has them; the cosines equal
    those of normalised float32 rows, zero rows included, and so do the predictions. A block of
    other values anywhere (training or test) falls back to normalised float32 products."""
    from gan_features.svm.tensors import _fast_bfloat16

    train, labels, test, _ = data
    train, test = bfloat16_numbers(train) * 32, bfloat16_numbers(test) * 32  # large raw norms, still exact
    train[[3, 17]], test[4] = 0.0, 0.0
    cpu = torch.device("cpu")
    raw = knn._Neighbours(labels, train.shape[1], [(0, train[:100]), (100, train[100:])], torch.float32, cpu, "t")
    assert (raw.norms is not None) == _fast_bfloat16(cpu)

    def cosines(queries):  # float64, zero rows at 0
        def unit(x):
            norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
            return x / np.where(norms > 0, norms, 1.0)
        return torch.from_numpy(unit(queries) @ unit(train).T).float()

    inexact = test + np.float32(1e-3)  # not bfloat16 numbers: a float32 GEMM against the raw rows
    for queries in (test, inexact):
        similarity = raw.similarities(torch.from_numpy(queries))
        assert torch.allclose(similarity, cosines(queries), atol=2e-6), (similarity - cosines(queries)).abs().max()
        assert (similarity[:, [3, 17]] == 0).all()
    assert (raw.similarities(torch.from_numpy(test))[4] == 0).all()
    # one block of other values after exact ones: the held rows are normalised, the answers the reference's
    mixed = knn._Neighbours(labels, train.shape[1], [(0, train[:100]), (100, train[100:] + np.float32(1e-3))],
                            torch.float32, cpu, "t")
    assert mixed.norms is None
    assert torch.allclose(torch.linalg.vector_norm(mixed.features[:100], dim=1)[[0, 1, 2, 50]], torch.ones(4))
    ranked = np.arange(len(test)) != 4  # the zero test row ties with every training row: no order to compare
    for features in (train, train + np.float32(1e-3)):
        predicted = knn_predict(features, labels, test, ks=(1, 20))
        for k in (1, 20):
            assert np.array_equal(predicted[k][ranked], reference(features, labels, test, k)[ranked]), k


def test_bf16_holds_half_the_memory_and_mostly_agrees(data, monkeypatch):
    train, labels, test, _ = data
    fp32 = knn_predict(train, labels, test, ks=(1, 20))
    bf16 = knn_predict(train, labels, test, ks=(1, 20), precision="bf16")
    monkeypatch.setattr(knn, "READ_BLOCK_BYTES", 7 * 4 * train.shape[1])  # upcast 7 training rows at a time
    chunked = knn_predict(train, labels, test, ks=(1, 20), precision="bf16")
    for k in (1, 20):
        assert np.array_equal(chunked[k], bf16[k])
        assert np.mean(bf16[k] == fp32[k]) >= 0.9
    held = knn._Neighbours(labels, train.shape[1], [(0, train)], torch.bfloat16, torch.device("cpu"), "t")
    assert held.features.dtype == torch.bfloat16 and held.features.shape == train.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpus_predictions(data):
    train, labels, test, _ = data
    cpu, cuda = (knn_predict(train, labels, test, ks=(1, 20), device=device) for device in ("cpu", "cuda"))
    assert all(np.array_equal(cpu[k], cuda[k]) for k in (1, 20))


def error_of(call) -> str:
    with pytest.raises(GanFeaturesError) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_bad_settings_are_refused(data):
    train, labels, test, _ = data
    for kwargs, expected in (({"ks": (20, 241)}, "k=241 is more than the 240 training rows"),
                             ({"ks": (0, 20)}, "at least 1"), ({"ks": ()}, "at least 1"),
                             ({"ks": (2.5,)}, "whole numbers"), ({"ks": (True,)}, "whole numbers"),
                             ({"temperature": 0.0}, "positive"), ({"temperature": -0.07}, "positive"),
                             ({"temperature": float("nan")}, "positive"), ({"temperature": "warm"}, "a number"),
                             ({"precision": "fp16"}, "unknown precision"), ({"batch_size": 0}, "batch_size"),
                             ({"device": "tpu"}, "unknown device")):
        assert expected in error_of(lambda: knn_predict(train, labels, test, **kwargs)), kwargs
    broken = train.copy()
    broken[5, 3] = np.nan
    assert "non-finite" in error_of(lambda: knn_predict(broken, labels, test))
    assert "16-d" in error_of(lambda: knn_predict(train, labels, test[:, :8]))
    assert "labels" in error_of(lambda: knn_predict(train, labels[:-1], test))


# ------------------------------------------------------------------------------------------- stores
@pytest.fixture
def stores(tmp_path, data):
    train, train_labels, test, test_labels = data
    paths = {split: tmp_path / f"{split}.h5" for split in ("train", "test")}
    write_features(paths["train"], train, train_labels, {**ATTRS, "split": "train"})
    write_features(paths["test"], test, test_labels, {**ATTRS, "split": "test"})
    return paths


def test_store_streaming_equals_the_in_memory_path(stores, data, monkeypatch):
    train, train_labels, test, test_labels = data
    in_memory = knn_predict(train, train_labels, test, ks=(1, 20, 200))
    expected = {k: 100.0 * np.mean(predicted == test_labels) for k, predicted in in_memory.items()}
    monkeypatch.setattr(knn, "READ_BLOCK_BYTES", 50 * 4 * train.shape[1])  # the training store in 5 blocks
    result = knn_probe(stores["train"], stores["test"], ks=(200, 1, 20), batch_size=13, progress=False)
    assert isinstance(result, KnnResult) and result.accuracy == expected  # exactly: the same predictions
    assert (result.n_train, result.n_test, result.temperature, result.precision) == (240, 60, 0.07, "fp32")
    assert result.wall_time_s > 0 and 25 < result.accuracy[20] <= 100  # 4 overlapping classes: chance is 25
    for key in ("train_store", "test_store", "checkpoint_sha256", "feature_spec", "train_store_split",
                "test_store_rows", "git_commit", "package_version", "torch_version", "cpu", "created"):
        assert key in result.provenance, key
    rows = result.to_rows()
    assert [row["k"] for row in rows] == [1, 20, 200] and rows[1]["accuracy"] == expected[20]
    assert not any(isinstance(value, (dict, list, tuple)) for row in rows for value in row.values())
    assert "k=20: test accuracy" in result.describe()
    with FeatureStore(stores["train"]) as opened_train, FeatureStore(stores["test"]) as opened_test:
        again = knn_probe(opened_train, opened_test, ks=(1, 20, 200), progress=False, precision="bf16")
        assert len(opened_train.features[:2]) == 2  # the caller's handles stay open
    assert again.precision == "bf16" and abs(again.accuracy[20] - expected[20]) <= 5


def test_store_pairs_the_svm_refuses_are_refused(stores, tmp_path, data):
    train, train_labels, test, test_labels = data
    probe = lambda a, b, **kw: (lambda: knn_probe(a, b, progress=False, **kw))  # noqa: E731

    def other(name, features=test, labels=test_labels, **attrs):
        return write_features(tmp_path / f"{name}.h5", features, labels, {**ATTRS, "split": "test", **attrs})

    assert "both the training and the test store" in error_of(probe(stores["train"], stores["train"]))
    assert ("holds the 'test' split but the k-NN probe's training store must hold 'train'"
            in error_of(probe(stores["test"], other("test2"))))
    assert "17-d" in error_of(probe(stores["train"], other("wide", np.zeros((5, 17), np.float32), test_labels[:5])))
    assert "different discriminators" in error_of(probe(stores["train"], other("d2", checkpoint_sha256="cd" * 32)))
    fewer = test_labels != 11
    assert "label sets differ" in error_of(probe(stores["train"], other("fewer", test[fewer], test_labels[fewer])))
    assert "k=241 is more than the 240 training rows" in error_of(probe(stores["train"], stores["test"], ks=(241,)))
    assert "positive" in error_of(probe(stores["train"], stores["test"], temperature=0))
    assert "does not exist" in error_of(probe(tmp_path / "missing.h5", stores["test"]))
    # another split pair, as the SVM protocols take one
    assert knn_probe(stores["test"], other("t2", test * 2), ks=1, progress=False, train_split="test").n_train == 60
