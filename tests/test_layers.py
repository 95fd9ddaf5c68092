"""Block sets of a discriminator store and their column views (gan_features.layers, FeatureStore.columns)."""
from __future__ import annotations

import numpy as np
import pytest

from gan_features.errors import GanFeaturesError
from gan_features.knn import knn_probe
from gan_features.layers import block_sets, block_view, store_blocks
from gan_features.protocols import get_protocol
from gan_features.store import FeatureStore, read_rows, write_features
from gan_features.svm import StoreGram
from gan_features.svm.store_gram import cache_directory

# radford-svhn32: blocks of 64, 128 and 256 maps, pooled to 4x4: 1,024 + 2,048 + 4,096 = 7,168 columns.
WIDTHS = (1024, 2048, 4096)
SPEC = {"grid": 4, "pooling": "max", "layers": None, "batchnorm": "recompute", "batchnorm_batch_size": 128}
ATTRS = {"checkpoint_sha256": "cd" * 32, "architecture": "radford-svhn32", "feature_spec": SPEC, "dataset": "toy"}
PROTOCOL = {"n_per_class": 10, "validation_size": 60, "selection_draws": 1, "test_draws": 2, "Cs": (1e-3, 1e-1)}


def features(rows: int, seed: int, dimension: int = sum(WIDTHS)) -> tuple[np.ndarray, np.ndarray]:
    """Three classes; the class shows in every block's columns, more in the later blocks'."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 3
    x = rng.standard_normal((rows, dimension)).astype(np.float32)
    x[:, :64] += labels[:, None] * 0.3
    x[:, -64:] += labels[:, None] * 0.6
    return x, labels


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("layers")
    train, test = features(150, 1), features(60, 2)
    paths = {split: write_features(directory / f"{split}.h5", x, y, {**ATTRS, "split": split})
             for split, (x, y) in (("train", train), ("test", test))}
    return paths, train, test


def test_block_sets_are_each_block_alone_then_blocks_one_to_k(pair):
    paths, _, _ = pair
    with FeatureStore(paths["train"]) as store:
        assert [(index, columns.stop - columns.start, units) for index, columns, units in store_blocks(store)] == [
            (0, 1024, 64), (1, 2048, 128), (2, 4096, 256)]
        sets = block_sets(store)
    assert [s.name for s in sets] == ["block 1", "block 2", "block 3", "blocks 1-2", "blocks 1-3"]
    assert [(s.columns.start, s.columns.stop) for s in sets] == [(0, 1024), (1024, 3072), (3072, 7168), (0, 3072),
                                                                (0, 7168)]
    assert [(s.alone, s.cumulative) for s in sets] == [(True, True), (True, False), (True, False), (False, True),
                                                       (False, True)]
    assert [s.units for s in sets] == [64, 128, 256, 128, 256]


def test_a_store_of_some_blocks_numbers_them_as_the_discriminator_does(tmp_path):
    x, y = features(30, 0, dimension=1024 + 4096)
    path = write_features(tmp_path / "f.h5", x, y, {**ATTRS, "feature_spec": {**SPEC, "layers": [0, 2]}})
    with FeatureStore(path) as store:
        assert [s.name for s in block_sets(store)] == ["block 1", "block 3", "blocks 1-3"]
        assert block_view(store, block_sets(store)[1]).attrs["feature_spec"]["layers"] == [2]


@pytest.mark.parametrize("attrs, message", [
    ({"architecture": "no-such-arch"}, "registered architecture"),
    ({"feature_spec": {**SPEC, "layers": [0, 7]}}, "has blocks 0..2"),
    ({"feature_spec": {**SPEC, "grid": 2}}, "re-extract it"),
])
def test_stores_whose_record_does_not_add_up_are_refused_in_one_line(tmp_path, attrs, message):
    x, y = features(10, 0)
    path = write_features(tmp_path / "f.h5", x, y, {**ATTRS, **attrs})
    with FeatureStore(path) as store, pytest.raises(GanFeaturesError, match=message) as error:
        block_sets(store)
    assert "\n" not in str(error.value)


def test_a_view_reads_its_columns_everywhere_a_store_is_read(pair):
    paths, (x, _), _ = pair
    with FeatureStore(paths["train"]) as store:
        view = block_view(store, block_sets(store)[1])
        assert view.dimension == 2048 and len(view) == 150 and view.attrs["dimension"] == 2048
        assert view.attrs["feature_spec"]["layers"] == [1] and view.column_range == (1024, 3072)
        rows = np.array([149, 3, 77, 3])
        np.testing.assert_array_equal(read_rows(view, rows)[0], x[rows, 1024:3072])
        np.testing.assert_array_equal(view.load()[0], x[:, 1024:3072])
        np.testing.assert_array_equal(np.concatenate([c for _, c in view.iter_chunks(40)]), x[:, 1024:3072])
        view.close()  # the store's file stays open: the view does not own it
        assert store.features.shape == (150, 7168)
        with pytest.raises(ValueError, match="non-empty range"):
            store.columns(slice(5, 5))


def test_a_store_in_memory_and_its_views_read_as_the_file_does(pair):
    """``in_memory`` reads the file once; it and its column views give every reader the file's rows,
    attributes and identity (same path, so the same cache keys), and closing them leaves the file open."""
    paths, (x, y), _ = pair
    with FeatureStore(paths["train"]) as store:
        held = store.in_memory()
        assert held.path == store.path and held.attrs == store.attrs and held.column_range is None
        np.testing.assert_array_equal(held.labels, y)
        rows = np.array([149, 3, 77, 3])
        np.testing.assert_array_equal(read_rows(held, rows)[0], x[rows])
        np.testing.assert_array_equal(held.load(slice(10, 20))[0], x[10:20])
        for blocks in block_sets(store):
            from_memory, from_file = block_view(held, blocks), block_view(store, blocks)
            assert from_memory.attrs == from_file.attrs and from_memory.column_range == from_file.column_range
            np.testing.assert_array_equal(read_rows(from_memory, rows)[0], read_rows(from_file, rows)[0])
            np.testing.assert_array_equal(np.concatenate([c for _, c in from_memory.iter_chunks(40)]),
                                          x[:, blocks.columns])
            assert cache_directory(from_memory) == cache_directory(from_file)
        held.close()
        assert store.features.shape == (150, 7168)  # still open


def test_a_store_in_memory_refuses_non_finite_features_in_one_line(tmp_path):
    x, y = features(20, 0)
    x[7, 5] = np.nan
    path = write_features(tmp_path / "f.h5", x, y, {**ATTRS, "split": "train"})
    with FeatureStore(path) as store, pytest.raises(GanFeaturesError, match="row 7 has NaN or infinite") as error:
        store.in_memory()
    assert "\n" not in str(error.value)


def test_probes_of_a_view_equal_those_of_a_store_holding_only_its_columns(pair, tmp_path):
    """What a block set measures through the view is what a store of just those columns measures."""
    paths, train, test = pair
    columns = slice(1024, 3072)
    spec = {**SPEC, "layers": [1]}
    written = {split: write_features(tmp_path / f"{split}.h5", x[:, columns], y,
                                     {**ATTRS, "split": split, "feature_spec": spec})
               for split, (x, y) in (("train", train), ("test", test))}
    protocol = get_protocol("cifar10-400", **PROTOCOL)
    with FeatureStore(paths["train"]) as whole_train, FeatureStore(paths["test"]) as whole_test:
        blocks = block_sets(whole_train)[1]
        view_train, view_test = block_view(whole_train, blocks), block_view(whole_test, blocks)
        by_view = protocol.run(view_train, view_test, progress=False, gram_cache=False)
        knn_view = knn_probe(view_train, view_test, ks=(5,), progress=False)
        held = block_view(whole_train.in_memory(), blocks), block_view(whole_test.in_memory(), blocks)
        by_held = protocol.run(*held, progress=False, gram_cache=False)
        knn_held = knn_probe(*held, ks=(5,), progress=False)
    by_store = protocol.run(written["train"], written["test"], progress=False, gram_cache=False)
    knn_store = knn_probe(written["train"], written["test"], ks=(5,), progress=False)
    assert by_view.chosen_C == by_store.chosen_C
    assert by_view.test.mean == pytest.approx(by_store.test.mean, abs=1e-9)
    assert knn_view.accuracy == knn_store.accuracy
    assert (by_held.chosen_C, by_held.test.mean, knn_held.accuracy) == (by_view.chosen_C, by_view.test.mean,
                                                                        knn_view.accuracy)
    assert by_view.provenance["dimension"] == 2048


def test_views_cache_their_gram_matrices_apart_from_the_whole_store(pair):
    """A view's Gram matrix never replaces (or is taken for) the whole store's: saving one removes
    cached matrices of other identities from its folder."""
    paths, _, _ = pair
    rows = np.arange(40)
    with FeatureStore(paths["train"]) as store:
        whole = StoreGram.compute(store, rows)
        whole.save(store)
        view = block_view(store, block_sets(store)[0])
        part = StoreGram.compute(view, rows)
        part.save(view)
        assert cache_directory(view) != cache_directory(store)
        assert StoreGram.cached(store, rows).cached_at == whole.cached_at  # still there
        np.testing.assert_allclose(StoreGram.cached(view, rows).K.numpy(), part.K.numpy())
        assert not np.allclose(part.K.numpy(), whole.K.numpy())


def test_an_svm_streamed_from_a_view_is_the_one_fitted_on_its_columns(pair):
    """``fit_store`` streams a view's rows from disk block by block (its own HDF5 reads) to the same model."""
    from gan_features.svm import LinearL2SVM

    paths, (x, y), _ = pair
    with FeatureStore(paths["train"]) as store:
        view = block_view(store, block_sets(store)[0])
        streamed = LinearL2SVM(C=1e-2, tol=1e-6).fit_store(view, block_bytes=1 << 20)
    in_memory = LinearL2SVM(C=1e-2, tol=1e-6, solver="primal").fit(x[:, :1024], y)
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-4, atol=1e-6)
