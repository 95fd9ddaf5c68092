import h5py
import numpy as np
import pytest

from gan_features.errors import GanFeaturesError
from gan_features.store import REQUIRED_ATTRS, FeatureStore, FeatureWriter, load_store, write_features

ATTRS = {"checkpoint_sha256": "f" * 64, "architecture": "radford-svhn32", "feature_spec": {"grid": 4, "layers": None},
         "dataset": "digits", "split": "test"}


def test_round_trip_with_attributes(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    y = np.arange(50) % 3
    path = write_features(tmp_path / "f.h5", x, y, ATTRS)
    features, labels, attrs = load_store(path)
    np.testing.assert_array_equal(features, x)
    np.testing.assert_array_equal(labels, y)
    assert set(REQUIRED_ATTRS) <= set(attrs)
    assert attrs["feature_spec"] == {"grid": 4, "layers": None}
    assert attrs["count"] == 50 and attrs["dimension"] == 12
    with h5py.File(path) as f:
        assert f["features"].dtype == np.float32
        assert f["features"].compression is None
        assert f["features"].chunks[1] == 12  # whole rows per chunk


def test_rows_in_any_order(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    with FeatureStore(write_features(tmp_path / "f.h5", x, np.arange(20), ATTRS)) as store:
        features, labels = store.load(np.array([7, 2, 19]))
        np.testing.assert_array_equal(features, x[[7, 2, 19]])
        np.testing.assert_array_equal(labels, [7, 2, 19])
        chunks = list(store.iter_chunks(6))
        assert [start for start, _ in chunks] == [0, 6, 12, 18]
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)


def test_existing_file_is_not_overwritten(tmp_path):
    path = tmp_path / "f.h5"
    path.write_text("precious")
    with pytest.raises(GanFeaturesError, match="--overwrite"):
        write_features(path, np.zeros((2, 3), np.float32), np.zeros(2), ATTRS)
    assert path.read_text() == "precious"
    write_features(path, np.zeros((2, 3), np.float32), np.zeros(2), ATTRS, overwrite=True)
    assert load_store(path)[0].shape == (2, 3)


def test_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "f.h5"
    with pytest.raises(RuntimeError):
        with FeatureWriter(path, 10, 3, ATTRS) as writer:
            writer.append(np.zeros((4, 3), np.float32), np.zeros(4))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_short_write_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="10 rows"):
        with FeatureWriter(tmp_path / "f.h5", 10, 3, ATTRS) as writer:
            writer.append(np.zeros((4, 3), np.float32), np.zeros(4))
    assert list(tmp_path.iterdir()) == []


def test_reading_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(GanFeaturesError, match="does not exist"):
        FeatureStore(tmp_path / "missing.h5")
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(GanFeaturesError, match="not a readable HDF5"):
        FeatureStore(bogus)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(GanFeaturesError, match="not a gan-features store"):
        FeatureStore(tmp_path / "other.h5")
