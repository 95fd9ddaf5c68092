"""HDF5 feature stores: one file per (checkpoint, dataset, split).

Layout: ``features`` (N, D) float32, row-chunked and uncompressed (compression measured 10-40x
slower to write here, and the SVM re-reads the matrix many times); ``labels`` (N,) int64; the
provenance as file attributes (see :data:`REQUIRED_ATTRS`).

Writes are atomic: rows go to ``<name>.partial`` beside the target, which is renamed over the
target only after the last row and the attributes are written, so an interrupted extraction
never leaves a half-written store under the real name.

h5py handles do not survive ``fork``: open a store inside each worker process, not before.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from .errors import GanFeaturesError

REQUIRED_ATTRS = ("checkpoint_sha256", "architecture", "feature_spec", "dataset", "split", "count",
                  "dimension", "package_version", "created")
CHUNK_BYTES = 4 << 20  # ~4 MiB row chunks: big enough for streaming, small enough for row slices
READ_BLOCK_BYTES = 64 << 20  # rows read per block by read_rows


def _package_version() -> str:
    from . import __version__
    return __version__


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse, before any work is done, to replace an existing file unless asked to."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise GanFeaturesError(f"{path} already exists: pass --overwrite to replace it, or choose another --out")
    if not path.parent.exists():
        raise GanFeaturesError(f"directory {path.parent} does not exist: create it first")
    return path


def _attr_value(value):
    """HDF5 attributes take scalars and strings; store anything structured as JSON text."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "null"
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__) would become numpy unicode arrays
    return value


class FeatureWriter:
    """Streams feature rows into a new store; use as a context manager.

    >>> with FeatureWriter("f.h5", count=len(ds), dimension=7168, attrs=provenance) as w:
    ...     for rows, labels in batches:
    ...         w.append(rows, labels)
    """

    def __init__(self, path: str | os.PathLike, count: int, dimension: int, attrs: dict,
                 overwrite: bool = False, dtype: str = "float32"):
        self.path = check_writable(path, overwrite)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.count, self.dimension = int(count), int(dimension)
        self.attrs = dict(attrs)
        self.dtype = np.dtype(dtype)
        self.written = 0
        self._file: h5py.File | None = None

    def __enter__(self) -> "FeatureWriter":
        self._file = h5py.File(self.partial, "w")
        rows_per_chunk = max(1, min(self.count, CHUNK_BYTES // (self.dimension * self.dtype.itemsize)))
        self._features = self._file.create_dataset("features", shape=(self.count, self.dimension),
                                                   dtype=self.dtype, chunks=(rows_per_chunk, self.dimension))
        self._labels = self._file.create_dataset("labels", shape=(self.count,), dtype=np.int64)
        return self

    def append(self, rows: np.ndarray, labels: np.ndarray) -> None:
        n = len(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dimension:
            raise ValueError(f"expected rows of dimension {self.dimension}, got shape {rows.shape}")
        if self.written + n > self.count:
            raise ValueError(f"store sized for {self.count} rows, got {self.written + n}")
        self._features[self.written:self.written + n] = rows
        self._labels[self.written:self.written + n] = labels
        self.written += n

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None
        try:
            if exc_type is None:
                if self.written != self.count:
                    raise ValueError(f"store sized for {self.count} rows but {self.written} were written")
                attrs = {"count": self.count, "dimension": self.dimension, "package_version": _package_version(),
                         "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         **self.attrs}
                for key, value in attrs.items():
                    self._file.attrs[key] = _attr_value(value)
        finally:
            self._file.close()
            if exc_type is None and self.written == self.count:
                os.replace(self.partial, self.path)
            else:
                self.partial.unlink(missing_ok=True)


def write_features(path: str | os.PathLike, features: np.ndarray, labels: np.ndarray, attrs: dict,
                   overwrite: bool = False) -> Path:
    """Write a whole in-memory feature matrix as a store."""
    with FeatureWriter(path, len(features), features.shape[1], attrs, overwrite=overwrite) as writer:
        writer.append(np.asarray(features, dtype=np.float32), labels)
    return writer.path


def _decode_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{" or value == "null":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeatureStore:
    """A store opened for reading. ``features`` stays on disk (an h5py dataset) until sliced."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise GanFeaturesError(f"feature store {self.path} does not exist: make it with `gan-features extract`")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise GanFeaturesError(f"{self.path} is not a readable HDF5 feature store ({error})") from None
        if "features" not in self._file or "labels" not in self._file:
            self._file.close()
            raise GanFeaturesError(f"{self.path} has no 'features'/'labels' datasets: not a gan-features store")
        self.features = self._file["features"]
        self.labels = self._file["labels"][:]
        self.attrs = {key: _decode_attr(value) for key, value in self._file.attrs.items()}

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dimension(self) -> int:
        return self.features.shape[1]

    def load(self, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features (float32, in memory) and labels, for all rows or the given ones."""
        if rows is None:
            return self.features[:], self.labels
        if isinstance(rows, slice):
            return self.features[rows], self.labels[rows]
        rows = np.asarray(rows)
        order = np.argsort(rows)  # h5py fancy indexing needs increasing indices
        features = np.empty((len(rows), self.dimension), dtype=self.features.dtype)
        features[order] = self.features[rows[order]]
        return features, self.labels[rows]

    def iter_chunks(self, rows_per_chunk: int | None = None):
        """Yield (start, features chunk) over all rows, reading one chunk into memory at a time."""
        if rows_per_chunk is None:
            rows_per_chunk = (self.features.chunks or (4096,))[0]
        for start in range(0, len(self), rows_per_chunk):
            yield start, self.features[start:start + rows_per_chunk]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_store(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Convenience for notebooks: (features, labels, attrs) fully in memory."""
    with FeatureStore(path) as store:
        features, labels = store.load()
        return features, labels, store.attrs


def rows_per_block(store: FeatureStore) -> int:
    """Rows of ``store`` in :data:`READ_BLOCK_BYTES`: reads (and predictions) in bounded memory at any width."""
    return max(1, READ_BLOCK_BYTES // (store.dimension * store.features.dtype.itemsize))


def read_rows(store: FeatureStore, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels of ``rows``, in that order, read into ONE in-memory array.

    ``FeatureStore.load`` materialises the rows once sorted and once more reordered; for selections
    of most of a store (45,000 of 50,000 CIFAR rows) that second copy is gigabytes. Here sorted
    blocks are read (h5py wants increasing indices) and each is put in place.
    """
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    features = np.empty((len(rows), store.dimension), dtype=np.float32)
    step = rows_per_block(store)
    for start in range(0, len(rows), step):
        positions = order[start:start + step]
        features[positions] = store.features[rows[positions]]
    return features, store.labels[rows]


# ------------------------------------------------------------------- a (training, test) pair of stores
# Shared by the SVM protocols (gan_features.protocols) and the k-NN probe (gan_features.knn).
StoreLike = FeatureStore | str | os.PathLike


@contextmanager
def opened_store(store: StoreLike) -> Iterator[FeatureStore]:
    if isinstance(store, FeatureStore):
        yield store  # the caller's handle: the caller closes it
    else:
        with FeatureStore(store) as opened:
            yield opened


def check_store_pair(train: FeatureStore, test: FeatureStore, train_split: str, test_split: str,
                     whose: str) -> None:
    """Refuse store pairs that cannot give a meaningful number, each with a one-line reason.

    ``whose``: who expects ``train_split``/``test_split``, for the message (e.g. "the cifar10 protocol's").
    """
    if train.path.resolve() == test.path.resolve():
        raise GanFeaturesError(f"{train.path} is given as both the training and the test store")
    for store in (train, test):
        if len(store) == 0:
            raise GanFeaturesError(f"feature store {store.path} has no rows")
    if train.dimension != test.dimension:
        raise GanFeaturesError(f"{train.path} has {train.dimension}-d features but {test.path} has "
                               f"{test.dimension}-d: extract both with the same discriminator and feature spec")
    for key, why in (("checkpoint_sha256", "features from different discriminators"),
                     ("architecture", "features from different architectures"),
                     ("feature_spec", "features extracted differently"),
                     ("dataset", "features of different datasets")):
        a, b = train.attrs.get(key), test.attrs.get(key)
        if a is not None and b is not None and a != b:
            raise GanFeaturesError(f"{train.path} and {test.path} differ in {key} ({_short(a)} vs {_short(b)}): "
                                   f"{why}; extract both from the same checkpoint")
    for store, role, expected in ((train, "training", train_split), (test, "test", test_split)):
        split = store.attrs.get("split")
        if split is not None and split != expected:
            raise GanFeaturesError(f"{store.path} holds the {split!r} split but {whose} "
                                   f"{role} store must hold {expected!r}")
    train_classes, test_classes = np.unique(train.labels), np.unique(test.labels)
    if not np.array_equal(train_classes, test_classes):
        raise GanFeaturesError(f"label sets differ: training store {train.path} has {train_classes.tolist()}, "
                               f"test store {test.path} has {test_classes.tolist()}")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 16 else text[:12] + "..."


def store_pair_provenance(train: FeatureStore, test: FeatureStore) -> dict[str, Any]:
    """Which stores a result was measured on, and what they hold (result table columns)."""
    attrs = train.attrs
    return {"train_store": str(train.path.resolve()), "test_store": str(test.path.resolve()),
            "checkpoint_sha256": attrs.get("checkpoint_sha256", test.attrs.get("checkpoint_sha256")),
            "architecture": attrs.get("architecture"), "feature_spec": attrs.get("feature_spec"),
            "dimension": train.dimension,
            "train_store_dataset": attrs.get("dataset"), "train_store_split": attrs.get("split"),
            "train_store_rows": len(train),
            "test_store_dataset": test.attrs.get("dataset"), "test_store_split": test.attrs.get("split"),
            "test_store_rows": len(test)}
