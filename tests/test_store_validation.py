"""Malformed feature stores and checkpoints: every one is refused with a one-line GanFeaturesError
naming the file and the offending field, never another exception (issue 16, "nothing silently wrong").

Stores are crafted with raw h5py, checkpoints with torch.save/pickle; the last tests fuzz both readers.
"""
import dataclasses
import io
import os
import pickle
import shlex
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gan_features.checkpoints import load_checkpoint, save_checkpoint
from gan_features.errors import GanFeaturesError
from gan_features.models import ConvSpec, create_models, get_architecture
from gan_features.store import FeatureStore, FeatureWriter, load_store, read_rows, write_features

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ATTRS = {"checkpoint_sha256": "f" * 64, "architecture": "radford-svhn32", "feature_spec": {"grid": 4, "layers": None},
         "dataset": "digits", "split": "train"}


def refusal(call, *args, **kwargs) -> str:
    """The message of the GanFeaturesError ``call`` raises, checked to be one line."""
    with pytest.raises(GanFeaturesError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


def store_file(path: Path, features=None, labels=None, attrs=None) -> Path:
    """A store written with raw h5py: ``features``/``labels`` are arrays, or callables f(file, name)."""
    with h5py.File(path, "w") as f:
        for name, value in (("features", features), ("labels", labels)):
            if callable(value):
                value(f, name)
            elif value is not None:
                f[name] = value
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def good_features(rows=20, width=6, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def good_labels(rows=20) -> np.ndarray:
    return np.arange(rows, dtype=np.int64) % 3


# ----------------------------------------------------------------------------------------- valid stores

def test_stores_the_toolkit_writes_still_open_and_read_identically(tmp_path):
    x, y = good_features(50, 12), good_labels(50)
    path = write_features(tmp_path / "f.h5", x, y, ATTRS)
    features, labels, attrs = load_store(path)
    np.testing.assert_array_equal(features, x)
    np.testing.assert_array_equal(labels, y)
    assert labels.dtype == np.int64 and attrs["count"] == 50 and attrs["dimension"] == 12
    with FeatureStore(path) as store:
        rows = np.array([49, 3, 17, 0, 3])
        got, got_labels = read_rows(store, rows)
        np.testing.assert_array_equal(got, x[rows])
        np.testing.assert_array_equal(got_labels, y[rows])
        np.testing.assert_array_equal(np.concatenate([c for _, c in store.iter_chunks(7)]), x)
        np.testing.assert_array_equal(store.load(slice(5, 40, 3))[0], x[5:40:3])
        np.testing.assert_array_equal(store.load(np.array([9, 1]))[0], x[[9, 1]])


def test_float16_store_opens_and_reads_as_float32(tmp_path):
    x = good_features(30, 5).astype(np.float16)
    with FeatureWriter(tmp_path / "h.h5", 30, 5, ATTRS, dtype="float16") as writer:
        writer.append(x, good_labels(30))
    with FeatureStore(tmp_path / "h.h5") as store:
        got, _ = read_rows(store, np.arange(30))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x.astype(np.float32))


def test_empty_store_opens(tmp_path):
    path = write_features(tmp_path / "e.h5", np.zeros((0, 4), np.float32), np.zeros(0, np.int64), {})
    with FeatureStore(path) as store:
        assert len(store) == 0 and store.dimension == 4
        assert read_rows(store, np.arange(0))[0].shape == (0, 4)


def test_one_class_is_fine_for_the_store(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(), np.zeros(20, np.int64))
    with FeatureStore(path) as store:
        assert set(store.labels.tolist()) == {0}


def test_narrow_integer_labels_are_read_as_int64(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(), good_labels().astype(np.uint8))
    with FeatureStore(path) as store:
        assert store.labels.dtype == np.int64


# -------------------------------------------------------------------------------- NaN / inf, when read

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_where_rows_are_read(tmp_path, bad):
    x = good_features(400, 8)
    x[123, 5] = bad
    x[300, 0] = bad
    path = store_file(tmp_path / "s.h5", x, good_labels(400))
    with FeatureStore(path) as store:  # opening never reads the matrix
        for call, args in ((read_rows, (store, np.arange(400))), (read_rows, (store, np.array([399, 123, 7]))),
                           (store.load, ()), (store.load, (slice(100, 200),)), (store.load, (np.array([300, 123]),)),
                           (lambda: list(store.iter_chunks(50)), ())):
            message = refusal(call, *args)
            assert str(path) in message and "row 123 has NaN or infinite features" in message
            assert "gan-features extract" in message
        np.testing.assert_array_equal(read_rows(store, np.arange(100))[0], x[:100])  # clean rows still read
        assert "row 300" in refusal(read_rows, store, np.arange(200, 400))


def test_non_finite_rows_are_refused_by_the_streamed_fit_and_the_test_scores(tmp_path):
    from gan_features.protocols import get_protocol
    from gan_features.svm import LinearL2SVM

    x = good_features(400, 8)
    x[321, 2] = np.nan
    path = store_file(tmp_path / "s.h5", x, good_labels(400), {"split": "test"})
    with pytest.raises(GanFeaturesError, match="row 321 has NaN or infinite features"):
        LinearL2SVM(C=1e-2).fit_store(path)
    train = store_file(tmp_path / "train.h5", good_features(400, 8, seed=1), good_labels(400), {"split": "train"})
    message = refusal(get_protocol("cifar10", Cs=(1e-2,)).run, train, path, progress=False)
    assert "row 321 has NaN or infinite features" in message  # the test store, streamed only to score it


def test_float64_beyond_float32_range_is_refused_not_made_infinite(tmp_path):
    x = good_features(10, 3).astype(np.float64)
    x[4, 1] = 1e300
    path = store_file(tmp_path / "s.h5", x, good_labels(10))
    with FeatureStore(path) as store:
        assert "row 4 has NaN or infinite" in refusal(read_rows, store, np.arange(10))


# ------------------------------------------------------------------------------------ labels

def test_float_labels_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(), good_labels().astype(np.float64))
    message = refusal(FeatureStore, path)
    assert str(path) in message and "'labels'" in message and "float64" in message and "gan-features extract" in message


def test_two_dimensional_labels_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(), good_labels().reshape(10, 2))
    assert "'labels' has shape (10, 2)" in refusal(FeatureStore, path)


def test_string_labels_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(), np.array([b"cat"] * 20))
    assert "'labels' has dtype" in refusal(FeatureStore, path)


def test_fewer_labels_than_rows_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(400, 4), good_labels(100))
    assert "'labels' has 100 entries but 'features' has 400 rows" in refusal(FeatureStore, path)


def test_more_labels_than_rows_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features(20, 4), good_labels(25))
    assert "'labels' has 25 entries but 'features' has 20 rows" in refusal(FeatureStore, path)


def test_negative_labels_are_refused(tmp_path):
    labels = good_labels()
    labels[7] = -1
    path = store_file(tmp_path / "s.h5", good_features(), labels)
    assert "'labels' row 7 is -1" in refusal(FeatureStore, path)


def test_missing_labels_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", good_features())
    assert "not a gan-features store" in refusal(FeatureStore, path)


# ------------------------------------------------------------------------------------ features

def test_one_dimensional_features_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", np.zeros(20, np.float32), good_labels())
    assert "'features' has shape (20,)" in refusal(FeatureStore, path)


def test_scalar_features_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", np.float32(1.0), good_labels())
    assert "'features' has shape ()" in refusal(FeatureStore, path)


def test_string_features_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", np.full((20, 3), b"abc"), good_labels())
    assert "'features' has dtype" in refusal(FeatureStore, path)


@pytest.mark.parametrize("dtype", [np.complex64, np.int32, np.bool_])
def test_non_real_float_features_are_refused(tmp_path, dtype):
    path = store_file(tmp_path / "s.h5", np.ones((20, 3), dtype), good_labels())
    message = refusal(FeatureStore, path)
    assert "'features' has dtype" in message and np.dtype(dtype).name in message


def test_compound_features_are_refused(tmp_path):
    compound = np.zeros((20, 3), dtype=[("a", "f4"), ("b", "f4")])
    assert "'features' has dtype" in refusal(FeatureStore, store_file(tmp_path / "s.h5", compound, good_labels()))


def test_features_as_a_group_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", lambda f, name: f.create_group(name).create_dataset("x", data=[1.0]),
                      good_labels())
    assert "'features' is an HDF5 group, not a dataset" in refusal(FeatureStore, path)


def test_zero_width_features_are_refused(tmp_path):
    path = store_file(tmp_path / "s.h5", np.zeros((20, 0), np.float32), good_labels())
    assert "'features' has shape (20, 0)" in refusal(FeatureStore, path)


def test_features_in_another_file_are_refused(tmp_path):
    store_file(tmp_path / "other.h5", good_features(), good_labels())
    path = store_file(tmp_path / "s.h5", lambda f, name: f.__setitem__(name, h5py.ExternalLink("other.h5", name)),
                      good_labels())
    assert "'features' is a link to another file" in refusal(FeatureStore, path)


def test_tiny_file_declaring_a_huge_dataset_is_refused(tmp_path):
    path = store_file(tmp_path / "huge.h5", lambda f, name: f.create_dataset(name, shape=(10**6, 40000), dtype="f4"),
                      lambda f, name: f.create_dataset(name, shape=(10**6,), dtype="i8"))
    assert path.stat().st_size < 1 << 20
    message = refusal(FeatureStore, path)
    assert str(path) in message and "'features' declares shape (1000000, 40000)" in message
    assert "149.0 GiB" in message and "the file holds 0 bytes" in message


def test_compressed_dataset_with_unwritten_chunks_is_refused(tmp_path):
    def partly_written(f, name):
        dataset = f.create_dataset(name, shape=(1000, 8), dtype="f4", chunks=(100, 8), compression="gzip")
        dataset[:100] = 1.0  # one chunk of ten: the rest would silently read as zeros
    path = store_file(tmp_path / "s.h5", partly_written, good_labels(1000))
    assert "only 1 of its 10 chunks" in refusal(FeatureStore, path)


def test_compressed_complete_store_opens(tmp_path):
    x = good_features(300, 8)
    path = store_file(tmp_path / "s.h5", lambda f, name: f.create_dataset(name, data=x, chunks=(64, 8),
                                                                            compression="gzip"), good_labels(300))
    with FeatureStore(path) as store:
        np.testing.assert_array_equal(read_rows(store, np.arange(300))[0], x)


def test_a_damaged_compressed_chunk_is_refused_where_it_is_read(tmp_path):
    x = good_features(300, 8)
    path = store_file(tmp_path / "s.h5", lambda f, name: f.create_dataset(name, data=x, chunks=(100, 8),
                                                                            compression="gzip"), good_labels(300))
    with h5py.File(path) as f:
        chunk = f["features"].id.get_chunk_info(1)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\x00" * chunk.size
    path.write_bytes(bytes(data))
    with FeatureStore(path) as store:
        np.testing.assert_array_equal(store.load(slice(0, 100))[0], x[:100])
        for call, args in ((read_rows, (store, np.arange(300))), (store.load, ()),
                           (lambda: list(store.iter_chunks()), ())):
            assert "'features' cannot be read" in refusal(call, *args)


def test_truncated_store_is_refused(tmp_path):
    path = write_features(tmp_path / "f.h5", good_features(2000, 64), good_labels(2000), ATTRS)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 2048, 100):
        short = tmp_path / f"cut{cut}.h5"
        short.write_bytes(data[:cut])
        message = refusal(lambda: read_rows(FeatureStore(short), np.arange(2000)))
        assert str(short) in message


# ------------------------------------------------------------------------------------ attributes

def test_array_valued_attributes_become_lists(tmp_path):
    attrs = {"layers": np.arange(3), "names": np.array([b"a", b"bc"]), "grid": np.float32(4.0), "text": b"x",
             "json": '{"a": [1, 2]}', "broken_json": "[1, 2", "count": np.int64(20), "matrix": np.eye(2),
             "not_utf8": b"\xff\xfeok", "complex": np.array([1 + 2j]), "empty": h5py.Empty("f4"),
             "deep": "[" * 100_000}
    with FeatureStore(store_file(tmp_path / "s.h5", good_features(), good_labels(), attrs)) as store:
        assert store.attrs["layers"] == [0, 1, 2] and store.attrs["names"] == ["a", "bc"]
        assert store.attrs["grid"] == 4.0 and store.attrs["text"] == "x" and store.attrs["json"] == {"a": [1, 2]}
        assert store.attrs["broken_json"] == "[1, 2" and store.attrs["count"] == 20
        assert store.attrs["matrix"] == [[1.0, 0.0], [0.0, 1.0]]
        assert store.attrs["not_utf8"] == "\ufffd\ufffdok" and store.attrs["complex"] == ["(1+2j)"]
        assert store.attrs["empty"] is None and store.attrs["deep"] == "[" * 100_000
        assert type(store.attrs["grid"]) is float and type(store.attrs["count"]) is int


@pytest.mark.parametrize("key, value, shown", [
    ("count", 19, "count=19"), ("count", 40, "count=40"), ("dimension", 7, "dimension=7"),
    ("count", np.arange(20), "count=[0"), ("dimension", "6", "dimension='6'"), ("count", np.bool_(True), "count=True"),
    ("count", np.float64("nan"), "count=nan")])
def test_count_and_dimension_contradicting_the_data_are_refused(tmp_path, key, value, shown):
    path = store_file(tmp_path / "s.h5", good_features(20, 6), good_labels(20), {key: value})
    message = refusal(FeatureStore, path)
    assert f"attribute {shown}" in message and "contradicts the data" in message


# ------------------------------------------------------------------------------------ checkpoints

def tiny_architecture():
    """A consistent, tiny 32x32 pair (checkpoints of a few KB, fast to fuzz)."""
    return dataclasses.replace(
        get_architecture("radford-svhn32"), name="tiny32", latent_dim=8, generator_base_channels=8,
        discriminator=tuple(ConvSpec(c, 5, 2, 2, batchnorm=i > 0) for i, c in enumerate([4, 8, 8])),
        generator=tuple(ConvSpec(c, 5, 2, 2, batchnorm=c != 3) for c in [8, 4, 3]))


def tiny_checkpoint(path: Path, **kwargs) -> Path:
    arch = tiny_architecture()
    d, g = create_models(arch, seed=0)
    return save_checkpoint(path, arch, d, g, {"seed": 0}, **kwargs)


def test_a_custom_architecture_round_trips(tmp_path):
    checkpoint = load_checkpoint(tiny_checkpoint(tmp_path / "c.pt"))
    assert checkpoint.architecture == tiny_architecture() and checkpoint.provenance == {"seed": 0}


def test_empty_checkpoint_is_one_line(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    message = refusal(load_checkpoint, tmp_path / "empty.pt")
    assert str(tmp_path / "empty.pt") in message and "empty" in message


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_checkpoint_is_one_line(tmp_path, legacy):
    arch = get_architecture("radford-svhn32")
    d, g = create_models(arch, seed=0)
    full = tmp_path / "full.pt"
    if legacy:
        torch.save(d.state_dict(), full, _use_new_zipfile_serialization=False)
    else:
        save_checkpoint(full, arch, d, g)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:len(data) // 2])
    message = refusal(load_checkpoint, cut, architecture="radford-svhn32")
    assert str(cut) in message and "not a loadable checkpoint" in message


class SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + shlex.quote(str(self.marker)),))


class Exec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload, name", [(SystemCall, "os.system"), (Exec, "builtins.exec")])
@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_code_is_refused_naming_the_global_and_never_runs(tmp_path, payload, name, legacy):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "gan-features/1", "x": payload(marker)}, path, pickle_module=pickle,
               _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    message = refusal(load_checkpoint, path)
    assert name in message, message  # whole, however long torch's own message is
    assert str(path) in message and "nothing in it was run" in message
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_is_not_a_torch_file_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(SystemCall(marker)))
    refusal(load_checkpoint, path)
    assert not marker.exists()


@pytest.mark.parametrize("payload, shown", [([1, 2, 3], "it holds a list"), ("weights", "it holds a str"),
                                            (torch.zeros(3), "it holds a Tensor"),
                                            ({"weights": [1]}, "it holds a dict with keys ['weights']")])
def test_non_checkpoint_payloads_are_refused(tmp_path, payload, shown):
    torch.save(payload, tmp_path / "c.pt")
    message = refusal(load_checkpoint, tmp_path / "c.pt")
    assert "neither a gan-features checkpoint nor a state_dict" in message and shown in message


def _resaved(tmp_path, change) -> Path:
    """A valid tiny checkpoint, loaded raw, changed by ``change(payload)``, saved again."""
    path = tiny_checkpoint(tmp_path / "c.pt")
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "changed.pt")
    return tmp_path / "changed.pt"


def _set(key, value):
    return lambda payload: payload.__setitem__(key, value)


def _weight(net, key, value):
    return lambda payload: payload[net].__setitem__(key, value)


@pytest.mark.parametrize("change, shown", [
    (lambda p: p.pop("architecture"), "'architecture' record is None"),
    (_set("architecture", [1]), "'architecture' record is [1]"),
    (lambda p: p["architecture"].pop("latent_dim"), "'architecture' record is malformed"),
    (lambda p: p["architecture"].__setitem__("extra", 1), "'architecture' record is malformed"),
    (lambda p: p["architecture"].__setitem__("discriminator", 5), "'architecture' record is malformed"),
    (lambda p: p["architecture"].__setitem__("image_size", "32"), "architecture field image_size='32'"),
    (lambda p: p["architecture"]["discriminator"][0].__setitem__("out_channels", 10**9),
     "architecture field discriminator[0].out_channels=1000000000"),
    (lambda p: p["architecture"].__setitem__("head_kernel", 3), "architecture 'tiny32' cannot be built"),
    (lambda p: p["architecture"]["discriminator"][1].__setitem__("out_channels", 4096),
     "architecture 'tiny32' has"),
    (_set("discriminator", [1, 2]), "'discriminator' record is a list"),
    (_set("provenance", "me"), "'provenance' record is a str"),
    (_set("has_running_stats", torch.ones(3)), "'has_running_stats' record is"),
    (_set("training", {"step": 1}), "'training' record has no 'opt_d'"),
    (_set("format", "gan-features/2"), "checkpoint format 'gan-features/2'"),
    (_weight("discriminator", "main.0.weight", torch.zeros(4, 3, 3, 3)), "main.0.weight has shape (4, 3, 3, 3)"),
    (_weight("discriminator", "main.0.weight", torch.zeros(4, 3, 5, 5, dtype=torch.complex64)), "main.0.weight is a"),
    (_weight("discriminator", "main.0.weight", torch.full((4, 3, 5, 5), float("nan"))), "NaN or infinite"),
    (_weight("discriminator", "main.0.weight", torch.zeros(4, 3, 5, 5, dtype=torch.int64)), "main.0.weight is a"),
    (_weight("discriminator", "main.0.weight", [0.0]), "weight 'main.0.weight' is a list"),
    (_weight("generator", "extra", torch.zeros(1)), "unexpected 'extra'"),
    (lambda p: p["generator"].pop("main.0.weight"), "missing 'main.0.weight'"),
    (_weight("generator", 7, torch.zeros(1)), "key 7 that is not a name"),
])
def test_malformed_checkpoint_content_is_one_line(tmp_path, change, shown):
    path = _resaved(tmp_path, change)
    message = refusal(load_checkpoint, path)
    assert str(path) in message and shown in message, message


def test_a_stride_zero_tensor_cannot_declare_a_huge_weight(tmp_path):
    d, _ = create_models("radford-svhn32", seed=0)
    state = d.state_dict()
    state["main.0.weight"] = torch.zeros(1, dtype=torch.float16).expand(10**6, 10**6)  # 1 element stored
    path = tmp_path / "raw.pt"
    torch.save(state, path)
    assert path.stat().st_size < 10 << 20
    assert "has shape (1000000, 1000000)" in refusal(load_checkpoint, path, architecture="radford-svhn32")


# ------------------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = ["float16", "float32", "float64", "int8", "int64", "complex64", "bool", "bytes"]


def _array(rng: np.random.Generator, shape: tuple, dtype: str, specials: bool) -> np.ndarray:
    if dtype == "bytes":
        return np.full(shape, b"ab")
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith("int"):
        return rng.integers(-2, 5, shape).astype(dtype)
    values = rng.standard_normal(shape)
    if specials and values.size:
        values.flat[rng.integers(values.size)] = rng.choice([np.nan, np.inf, -np.inf])
    return values.astype(dtype)


def _node(plausible_dtypes: list[str]):
    """One HDF5 object: mostly a dataset of the store's own shape and a plausible dtype (so that the
    fuzzer reaches the deeper checks and valid stores), else any shape of rank 0-3, any dtype."""
    return st.fixed_dictionaries({
        "kind": st.sampled_from(["data"] * 5 + ["absent", "declared", "chunked", "group"]),
        "shape": st.one_of(st.just(None), st.just(None), st.lists(st.integers(0, 4), max_size=3).map(tuple)),
        "dtype": st.one_of(st.sampled_from(plausible_dtypes), st.sampled_from(DTYPES)),
        "specials": st.integers(0, 3).map(lambda k: k == 0),  # a NaN or inf in one store of four
    })


def _bytes_without_nul(max_size):  # HDF5 variable-length strings cannot hold NUL
    return st.lists(st.integers(1, 255), min_size=1, max_size=max_size).map(bytes)


attribute_values = st.one_of(
    st.integers(-5, 30), st.floats(allow_nan=True), _bytes_without_nul(8),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    st.sampled_from(['{"a": 1}', "[1, 2", "null", "[[[[", "", "[" * 100_000]),
    st.lists(st.integers(-3, 3), min_size=1, max_size=4).map(np.array),
    st.lists(st.floats(-1, 1), min_size=1, max_size=6).map(lambda v: np.array(v).reshape(-1, 1)),
    st.lists(_bytes_without_nul(3), min_size=1, max_size=3).map(np.array),
    st.lists(st.complex_numbers(max_magnitude=10), min_size=1, max_size=3).map(np.array),
)
stores = st.fixed_dictionaries({
    "rows": st.integers(0, 6),
    "width": st.integers(0, 4),
    "nodes": st.fixed_dictionaries({"features": _node(["float32", "float16", "float64"]),
                                    "labels": _node(["int64", "int8"]), "other": _node(DTYPES)}),
    # "rows"/"width": the store's true count/dimension
    "attrs": st.dictionaries(st.sampled_from(["count", "dimension", "dataset", "feature_spec"]),
                             st.one_of(st.sampled_from(["rows", "width"]), attribute_values), max_size=3),
    "seed": st.integers(0, 2**16),
})


def _write_fuzzed_store(path: Path, spec: dict) -> None:
    rng = np.random.default_rng(spec["seed"])
    rows, width = spec["rows"], spec["width"]
    own_shape = {"features": (rows, width), "labels": (rows,), "other": (rows,)}
    with h5py.File(path, "w") as f:
        for name, node in spec["nodes"].items():
            shape = own_shape[name] if node["shape"] is None else node["shape"]
            dtype = node["dtype"]
            h5_dtype = "S2" if dtype == "bytes" else dtype
            if node["kind"] == "absent":
                continue
            if node["kind"] == "group":
                f.create_group(name)
            elif node["kind"] == "declared":  # never written: no storage
                f.create_dataset(name, shape=shape, dtype=h5_dtype)
            elif node["kind"] == "chunked" and len(shape) > 0 and all(shape):
                f.create_dataset(name, data=_array(rng, shape, dtype, node["specials"]), chunks=True,
                                 compression="gzip")
            else:
                f.create_dataset(name, data=_array(rng, shape, dtype, node["specials"]))
        for key, value in spec["attrs"].items():
            f.attrs[key] = {"rows": rows, "width": width}.get(value, value) if isinstance(value, str) else value


@FUZZ
@given(spec=stores)
def test_fuzzed_stores_open_and_read_or_refuse_in_one_line(spec):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.h5"
        _write_fuzzed_store(path, spec)
        try:
            with FeatureStore(path) as store:
                features, labels = read_rows(store, np.arange(len(store)))
                assert features.shape == (len(store), store.dimension) and np.isfinite(features).all()
                assert labels.dtype == np.int64 and (labels >= 0).all()
        except GanFeaturesError as error:
            assert "\n" not in str(error) and str(path) in str(error)


_VALID: dict[str, bytes] = {}


def _valid_checkpoint_bytes(kind: str) -> bytes:
    if kind not in _VALID:
        with tempfile.TemporaryDirectory() as directory:
            if kind == "legacy":
                d, _ = create_models(tiny_architecture(), seed=0)
                buffer = io.BytesIO()
                torch.save(d.state_dict(), buffer, _use_new_zipfile_serialization=False)
                _VALID[kind] = buffer.getvalue()
            else:
                _VALID[kind] = tiny_checkpoint(Path(directory) / "c.pt").read_bytes()
    return _VALID[kind]


def _check_checkpoint_bytes(data: bytes, architecture=None) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.pt"
        path.write_bytes(data)
        try:
            load_checkpoint(path, architecture=architecture)
        except GanFeaturesError as error:
            assert "\n" not in str(error) and str(path) in str(error)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=st.one_of(st.binary(max_size=4096),
                      st.binary(max_size=512).map(lambda b: _valid_checkpoint_bytes("legacy")[:64] + b),
                      st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b)))
def test_fuzzed_bytes_never_escape_the_checkpoint_reader(data):
    _check_checkpoint_bytes(data)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(kind=st.sampled_from(["zip", "legacy"]), fraction=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3))
def test_truncated_or_damaged_checkpoints_never_escape_the_checkpoint_reader(kind, fraction, flips):
    data = bytearray(_valid_checkpoint_bytes(kind))
    for where, xor in flips:
        data[min(len(data) - 1, int(where * len(data)))] ^= xor
    data = bytes(data[:int(fraction * len(data))]) if fraction < 1 else bytes(data)
    _check_checkpoint_bytes(data, architecture=tiny_architecture() if kind == "legacy" else None)
