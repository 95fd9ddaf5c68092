"""HDF5 feature stores: one file per (checkpoint, dataset, split).

One file (over 500 lines) on purpose: the format, its writer and its validating reader must agree
on every dataset, dtype and attribute, and kept side by side they cannot drift apart.

Layout: ``features`` (N, D) float32 (the reader also accepts float16 and float64), row-chunked
and uncompressed (compression measured 10-40x slower to write here, and the SVM re-reads the
matrix many times); ``labels`` (N,) int64; the provenance as file attributes (see
:data:`REQUIRED_ATTRS`).

Writes (:class:`FeatureWriter`) are atomic: rows go to ``<name>.partial`` beside the target, which
is renamed over the target only after the last row and the attributes are written, so an
interrupted extraction never leaves a half-written store under the real name.

Reads (:class:`FeatureStore`, :func:`read_rows`) validate the layout when a store is opened and
refuse NaN or infinite features where rows are read, each refusal one line. The last section
checks that a (training, test) pair of stores can give a meaningful number.

h5py handles do not survive ``fork``: open a store inside each worker process, not before.
"""
from __future__ import annotations

import json
import os
import types
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from .errors import GanFeaturesError, one_line, shortened
from .output import check_output, disk_error, output_lock, partial_path, reserve
from .provenance import now

REQUIRED_ATTRS = ("checkpoint_sha256", "architecture", "feature_spec", "dataset", "split", "count",
                  "dimension", "package_version", "created")
CHUNK_BYTES = 4 << 20  # ~4 MiB row chunks: big enough for streaming, small enough for row slices
READ_BLOCK_BYTES = 64 << 20  # rows read per block by read_rows
# read_rows reads the whole span between selected rows when it is at most this many times their count:
# h5py's row-list selections cost ~1 ms a row here (2,000 rows of 28,672 floats in 2.1 s), a span's
# contiguous read ~11 us a row (HDF5 reads every chunk that holds a selected row either way).
SPAN_READ_MAX_RATIO = 64


def _package_version() -> str:
    from . import __version__
    return __version__


def store_bytes(count: int, dimension: int, dtype: str = "float32") -> int:
    """The size of a store of ``count`` rows: features and int64 labels (metadata aside)."""
    return int(count) * (int(dimension) * np.dtype(dtype).itemsize + 8)


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
        # Checked before any work: the caller extracts only after the writer exists.
        self.path = check_output(path, overwrite, store_bytes(count, dimension, dtype))
        self.partial = partial_path(self.path)
        self.count, self.dimension = int(count), int(dimension)
        self.attrs = dict(attrs)
        self.dtype = np.dtype(dtype)
        self.written = 0
        self._file: h5py.File | None = None
        self._lock = ExitStack()

    def __enter__(self) -> "FeatureWriter":
        self._lock.enter_context(output_lock(self.path))
        try:
            self._file = h5py.File(self.partial, "w")
            rows_per_chunk = max(1, min(self.count, CHUNK_BYTES // (self.dimension * self.dtype.itemsize)))
            chunks = (rows_per_chunk, self.dimension) if self.count else None  # a chunk cannot exceed the data
            self._features = self._file.create_dataset("features", shape=(self.count, self.dimension),
                                                       dtype=self.dtype, chunks=chunks)
            self._labels = self._file.create_dataset("labels", shape=(self.count,), dtype=np.int64)
            self._file.flush()
            # the data's bytes (HDF5's few KB of metadata beyond them: a file never larger than it needs)
            reserve(self.partial, store_bytes(self.count, self.dimension, self.dtype))
        except OSError as error:
            self._discard()
            raise disk_error(error, self.path) from None
        except BaseException:
            self._discard()
            raise
        return self

    def append(self, rows: np.ndarray, labels: np.ndarray) -> None:
        n = len(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dimension:
            raise ValueError(f"expected rows of dimension {self.dimension}, got shape {rows.shape}")
        if self.written + n > self.count:
            raise ValueError(f"store sized for {self.count} rows, got {self.written + n}")
        try:
            self._features[self.written:self.written + n] = rows
            self._labels[self.written:self.written + n] = labels
        except (OSError, RuntimeError) as error:  # a full disk: one line; __exit__ removes the .partial
            raise disk_error(error, self.path) from None
        self.written += n

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            if self.written != self.count:
                raise ValueError(f"store sized for {self.count} rows but {self.written} were written")
            attrs = {"count": self.count, "dimension": self.dimension, "package_version": _package_version(),
                     "created": now(), **self.attrs}
            for key, value in attrs.items():
                self._file.attrs[key] = _attr_value(value)
            self._features = self._labels = None
            self._file.close()  # flushes: a full disk shows here too
            os.replace(self.partial, self.path)
        except (OSError, RuntimeError) as error:
            self._discard()
            raise disk_error(error, self.path) from None
        except BaseException:
            self._discard()
            raise
        self._lock.close()

    def _discard(self) -> None:
        """Close (ignoring the errors of a file that failed to write: h5py then raises again on
        close, and a dataset handle left to the garbage collector can crash the interpreter at
        exit), remove the .partial, release the lock."""
        self._features = self._labels = None
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            self._file = None
        self.partial.unlink(missing_ok=True)
        self._lock.close()


def write_features(path: str | os.PathLike, features: np.ndarray, labels: np.ndarray, attrs: dict,
                   overwrite: bool = False) -> Path:
    """Write a whole in-memory feature matrix as a store."""
    with FeatureWriter(path, len(features), features.shape[1], attrs, overwrite=overwrite) as writer:
        writer.append(np.asarray(features, dtype=np.float32), labels)
    return writer.path


REEXTRACT = "re-extract it with `gan-features extract`"
FINITE_CHECK_BYTES = 16 << 20  # features checked for NaN/inf this many bytes at a time (a small bool mask)
_FEATURE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _decode_attr(value):
    """An HDF5 attribute as a plain JSON-like Python value; never raises.

    Bytes become text, JSON text (what :func:`_attr_value` writes for structured values) is parsed,
    numpy scalars become Python scalars, arrays become (nested) lists; anything else becomes text.
    """
    try:
        return _decoded(value)
    except Exception:  # noqa: BLE001 - an attribute must never make a store unreadable
        try:
            return repr(value)
        except Exception:  # noqa: BLE001
            return "<undecodable attribute>"


def _decoded(value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):  # before the Python types: np.float64 is a float subclass
        value = value.item()
        if isinstance(value, np.generic):  # item() of some exotic scalars
            return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        value = _valid_text(value)
        if value == "null" or value[:1] in ("[", "{"):
            try:
                return json.loads(value)
            except (ValueError, RecursionError):
                pass
        return value
    if isinstance(value, (list, tuple)):
        return [_decoded(item) for item in value]
    if isinstance(value, complex):
        return str(value)
    return str(value)  # object references and other HDF5 objects


def _valid_text(text: str) -> str:
    """``text`` as a plain str that encodes as UTF-8: h5py returns undecodable bytes as lone
    surrogates, which would break writing the attribute anywhere later (result tables, JSON)."""
    try:
        text.encode("utf-8")
        return str(text)  # np.str_ -> str
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _short_text(value: object, limit: int = 60) -> str:
    return shortened(value, limit)


def _short_repr(value: object, limit: int = 60) -> str:
    return shortened(repr(value), limit)


def _bad_store(path: Path, problem: str, fix: str = REEXTRACT) -> GanFeaturesError:
    """The one-line refusal of a malformed store: which file, what is wrong, how to fix it."""
    return GanFeaturesError(one_line(f"feature store {path}: {problem}: {fix}"))


@contextmanager
def _about(path: Path, field: str) -> Iterator[None]:
    """Turn whatever h5py raises on damaged or unsupported metadata of ``field`` into a one-line refusal."""
    try:
        yield
    except GanFeaturesError:
        raise
    except Exception as error:  # noqa: BLE001
        raise _bad_store(path, f"{field} cannot be read ({type(error).__name__}: {error})") from None


def _dataset(file: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """``file[name]`` if it is a dataset stored in this file, else a one-line refusal."""
    with _about(path, f"'{name}'"):
        link = file.get(name, getlink=True)
    if link is None:
        raise GanFeaturesError(f"{path} has no 'features'/'labels' datasets: not a gan-features store")
    if isinstance(link, h5py.ExternalLink):
        raise _bad_store(path, f"'{name}' is a link to another file ({_short_repr(link.filename)}), "
                               f"not a dataset in this one")
    with _about(path, f"'{name}'"):  # dangling soft links, damaged object headers
        node = file[name]
    if not isinstance(node, h5py.Dataset):
        kind = "group" if isinstance(node, h5py.Group) else type(node).__name__
        raise _bad_store(path, f"'{name}' is an HDF5 {kind}, not a dataset")
    return node


def _check_storage(dataset: h5py.Dataset, path: Path, name: str) -> None:
    """Refuse a dataset whose data cannot all be in the file (truncated, never written, or crafted
    to declare far more than it holds), from metadata only."""
    dcpl = dataset.id.get_create_plist()
    if dcpl.get_external_count() > 0 or dataset.is_virtual:
        raise _bad_store(path, f"'{name}' keeps its data outside the file (external or virtual dataset)")
    shape, itemsize = dataset.shape, dataset.dtype.itemsize
    declared = int(np.prod(shape, dtype=object)) * itemsize
    if declared == 0:
        return
    described = f"'{name}' declares shape {shape} {dataset.dtype} ({_bytes(declared)})"
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    for code in filters:
        if not h5py.h5z.filter_avail(code):
            raise _bad_store(path, f"'{name}' is encoded with HDF5 filter {code}, which this h5py cannot decode")
    if dataset.chunks is not None:
        expected = int(np.prod([-(-s // c) for s, c in zip(shape, dataset.chunks)], dtype=object))
        present = dataset.id.get_num_chunks()
        if present < expected:
            raise _bad_store(path, f"{described} but only {present} of its {expected} chunks are in the file "
                                   f"(truncated or never completely written)")
    if not filters:  # uncompressed: every byte must be allocated, and within the file
        stored = dataset.id.get_storage_size()
        if stored < declared or stored > path.stat().st_size:
            raise _bad_store(path, f"{described} but the file holds {_bytes(stored)} of it "
                                   f"(truncated, damaged or crafted)")


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # unreachable


def _validated(file: h5py.File, path: Path) -> tuple[h5py.Dataset, np.ndarray, dict]:
    """(features dataset, labels in memory, decoded attributes) of an open store, after checking
    everything that can be checked without reading the feature matrix."""
    features = _dataset(file, "features", path)
    labels_dataset = _dataset(file, "labels", path)
    with _about(path, "'features'"):
        shape, dtype = features.shape, features.dtype
    if shape is None or len(shape) != 2:
        raise _bad_store(path, f"'features' has shape {shape}; a store holds a 2-D (rows, dimension) matrix")
    rows, width = shape
    if width < 1:
        raise _bad_store(path, f"'features' has shape {shape}: rows of zero features")
    if dtype.names is not None or dtype.subdtype is not None or dtype.newbyteorder("=") not in _FEATURE_DTYPES:
        raise _bad_store(path, f"'features' has dtype {_short_text(dtype)}; features are float16, float32 or float64")
    if not dtype.isnative:
        raise _bad_store(path, f"'features' has non-native byte order ({dtype.str})")
    with _about(path, "'features'"):
        _check_storage(features, path, "features")

    with _about(path, "'labels'"):
        label_shape, label_dtype = labels_dataset.shape, labels_dataset.dtype
    if label_shape is None or len(label_shape) != 1:
        raise _bad_store(path, f"'labels' has shape {label_shape}; a store holds one integer label per row")
    if label_dtype.names is not None or label_dtype.subdtype is not None or label_dtype.kind not in "iu":
        raise _bad_store(path, f"'labels' has dtype {_short_text(label_dtype)}; labels are integer class indices")
    if label_shape[0] != rows:
        raise _bad_store(path, f"'labels' has {label_shape[0]} entries but 'features' has {rows} rows")
    with _about(path, "'labels'"):
        _check_storage(labels_dataset, path, "labels")
        labels = np.asarray(labels_dataset[()])
    if labels.size:
        negative = np.flatnonzero(labels < 0)
        if negative.size:
            raise _bad_store(path, f"'labels' row {negative[0]} is {labels[negative[0]]}; "
                                   f"labels are class indices >= 0")
        if labels.dtype.kind == "u" and labels.max() > np.iinfo(np.int64).max:
            raise _bad_store(path, f"'labels' holds {labels.max()}, too large for a class index")
    labels = labels.astype(np.int64, copy=False)

    attrs = {}
    with _about(path, "the attribute list"):
        keys = list(file.attrs.keys())
    for key in keys:
        with _about(path, f"attribute {key!r}"):
            raw = file.attrs[key]
        attrs[key] = _decode_attr(raw)
    for key, actual, what in (("count", rows, "rows"), ("dimension", width, "columns")):
        if key in attrs:
            value = attrs[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != actual:
                raise _bad_store(path, f"attribute {key}={_short_repr(value)} contradicts the data "
                                       f"('features' has {actual} {what})")
    return features, labels, attrs


def check_finite_rows(path: Path, block: np.ndarray, rows) -> None:
    """Refuse NaN or infinite values in ``block``, features just read; ``rows[i]`` is the store row
    of block row i (an array or a range). One float64 sum first (no mask: NaN and inf propagate,
    and finite float16/32 values cannot overflow it); only a block that fails it is searched, in
    slices, so the mask stays small."""
    if block.size == 0 or np.isfinite(block.sum(dtype=np.float64)):
        return
    step = max(1, FINITE_CHECK_BYTES // (block.shape[1] * block.itemsize))
    for start in range(0, len(block), step):
        finite = np.isfinite(block[start:start + step])
        if not finite.all():
            bad = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise _bad_store(path, f"row {int(rows[bad])} has NaN or infinite features",
                             REEXTRACT + " from a checkpoint with finite weights")


def _read_features(store: "FeatureStore", selection) -> np.ndarray:
    """``store.features[selection]``, with a damaged file refused in one line. A slice is read with
    ``read_direct`` in blocks of :data:`READ_BLOCK_BYTES`: h5py's slicing of one large selection
    measured 15x slower here (10,000 x 28,672 float32: 3.0 s against 0.2 s)."""
    try:
        if not isinstance(selection, slice):
            return store.features[selection]
        start, stop, step = selection.indices(len(store))
        if step != 1:
            return store.features[selection]
        out = np.empty((max(stop - start, 0), store.dimension), dtype=store.features.dtype)
        block = rows_per_block(store)
        for lo in range(start, stop, block):
            hi = min(lo + block, stop)
            store.features.read_direct(out, np.s_[lo:hi], np.s_[lo - start:hi - start])
        return out
    except (OSError, RuntimeError) as error:
        raise _bad_store(store.path, f"'features' cannot be read ({type(error).__name__}: {error})") from None


class FeatureStore:
    """A store opened for reading. ``features`` stays on disk (an h5py dataset) until sliced.

    Opening validates the layout from metadata (and the labels, which are read anyway): a 2-D
    float16/32/64 ``features`` matrix whose data is all in the file, one non-negative integer label
    per row, ``count``/``dimension`` attributes that agree with the data. NaN or infinite features
    are refused where rows are read (:meth:`load`, :meth:`iter_chunks`, :func:`read_rows`), as
    checking them here would read the whole matrix. Every refusal is a one-line GanFeaturesError.
    """

    column_range: tuple[int, int] | None = None  # (start, stop) of a column view's columns in its store

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise GanFeaturesError(f"feature store {self.path} does not exist: make it with `gan-features extract`")
        try:
            self._file = h5py.File(self.path, "r")
        except Exception as error:  # noqa: BLE001 - OSError mostly; anything h5py raises on a bad file
            raise GanFeaturesError(one_line(f"{self.path} is not a readable HDF5 feature store ({error})")) from None
        try:
            self.features, self.labels, self.attrs = _validated(self._file, self.path)
        except GanFeaturesError:
            self._file.close()
            raise
        except Exception as error:  # noqa: BLE001 - h5py errors on damaged metadata: one line, never a traceback
            self._file.close()
            raise _bad_store(self.path, f"the file's HDF5 metadata cannot be read ({type(error).__name__}: {error})",
                             REEXTRACT) from None
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dimension(self) -> int:
        return self.features.shape[1]

    def load(self, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features (float32, in memory) and labels, for all rows or the given ones.

        NaN or infinite features are refused (GanFeaturesError naming the first such row).
        """
        if rows is None:
            features = _read_features(self, slice(None))
            check_finite_rows(self.path, features, range(len(self)))
            return features, self.labels
        if isinstance(rows, slice):
            features = _read_features(self, rows)
            check_finite_rows(self.path, features, range(*rows.indices(len(self))))
            return features, self.labels[rows]
        rows = np.asarray(rows)
        order = np.argsort(rows)  # h5py fancy indexing needs increasing indices
        features = np.empty((len(rows), self.dimension), dtype=self.features.dtype)
        block = _read_features(self, rows[order])
        check_finite_rows(self.path, block, rows[order])
        features[order] = block
        return features, self.labels[rows]

    def iter_chunks(self, rows_per_chunk: int | None = None):
        """Yield (start, features chunk) over all rows, reading one chunk into memory at a time.

        A chunk with NaN or infinite features is refused (GanFeaturesError) before it is yielded.
        """
        if rows_per_chunk is None:
            rows_per_chunk = (self.features.chunks or (4096,))[0]
        for start in range(0, len(self), rows_per_chunk):
            block = _read_features(self, slice(start, start + rows_per_chunk))
            check_finite_rows(self.path, block, range(start, start + len(block)))
            yield start, block

    def columns(self, columns: slice, **attrs: Any) -> "FeatureStore":
        """A view of some consecutive columns (one conv block's features, or blocks 1..k), read as a
        store of its own by everything that reads stores (protocols, k-NN, Gram matrices), with no
        copy on disk. ``attrs`` replace the view's attributes (its ``dimension`` is set here): a view
        must say what it holds (its feature spec), or pairs and caches would take it for the whole
        store. It shares this store's open file: close the store, not the view."""
        start, stop, step = columns.indices(self.dimension)
        if step != 1 or not 0 <= start < stop:
            raise ValueError(f"columns must be a non-empty range with step 1 within 0..{self.dimension}, got {columns}")
        return self._view(_ColumnRange(self.features, slice(start, stop)),
                          {**self.attrs, **attrs, "dimension": stop - start}, (start, stop))

    def in_memory(self) -> "FeatureStore":
        """This store with its features read into memory once (checked finite), read by everything
        that reads stores as this store itself: same path, attributes and labels, so the same cache
        keys and results. For many passes over one store's columns (the per-block table measures up
        to 11 column views of each store): a column view of a file reads whole chunks, every column
        of its rows, on every pass; one of this reads only its columns. Holds the whole matrix (5.7 GB
        for 50,000 x 28,672 float32); it needs no closing (a view's ``close`` leaves the file alone)."""
        # load() refuses NaN or inf in one line
        return self._view(_InMemory(self.load()[0], self.path), dict(self.attrs), self.column_range)

    def _view(self, features, attrs: dict, column_range: tuple[int, int] | None) -> "FeatureStore":
        """A store of this one's path and labels over other ``features``, owning no file."""
        view = object.__new__(type(self))
        view.path, view._file, view.labels = self.path, None, self.labels
        view.features, view.attrs, view.column_range = features, attrs, column_range
        return view

    def close(self) -> None:
        if self._file is not None:  # a column view's file is its store's
            self._file.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ColumnRange:
    """Consecutive columns of a features dataset, read through the dataset's own calls (a column
    view's ``features``): HDF5 reads the whole chunks and copies out the columns."""

    def __init__(self, dataset: h5py.Dataset, columns: slice):
        self.dataset, self.columns = dataset, columns
        self.shape = (dataset.shape[0], columns.stop - columns.start)
        self.dtype, self.chunks, self.file = dataset.dtype, dataset.chunks, dataset.file

    def __getitem__(self, rows):
        return self.dataset[rows, self.columns]

    def read_direct(self, out: np.ndarray, source_sel=None, dest_sel=None) -> None:
        self.dataset.read_direct(out, (np.s_[:] if source_sel is None else source_sel, self.columns), dest_sel)


class _InMemory:
    """A features matrix held in memory, read through the calls that readers make of an h5py dataset."""

    def __init__(self, array: np.ndarray, path: Path):
        self.array, self.shape, self.dtype, self.chunks = array, array.shape, array.dtype, None
        self.file = types.SimpleNamespace(filename=str(path))  # what error messages name, as h5py's

    def __getitem__(self, selection):
        return self.array[selection]

    def read_direct(self, out: np.ndarray, source_sel=None, dest_sel=None) -> None:
        out[np.s_[:] if dest_sel is None else dest_sel] = self.array[np.s_[:] if source_sel is None else source_sel]


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

    NaN or infinite features are refused (GanFeaturesError naming the first such row), block by block.
    """
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    if len(rows) and (sorted_rows[0] < 0 or sorted_rows[-1] >= len(store)):
        raise IndexError(f"rows must lie in [0, {len(store)}) of {store.path}, got {sorted_rows[0]}..{sorted_rows[-1]}")
    features = np.empty((len(rows), store.dimension), dtype=np.float32)
    step = rows_per_block(store)
    start = 0
    while start < len(rows):
        # The selected rows in the next block of the store (or the next step of them, if more).
        stop = min(int(np.searchsorted(sorted_rows, sorted_rows[start] + step)), start + step)
        positions, block_rows = order[start:stop], sorted_rows[start:stop]
        first, last = int(block_rows[0]), int(block_rows[-1])
        if last + 1 - first <= SPAN_READ_MAX_RATIO * len(block_rows):  # dense: the whole span, then pick
            block = _read_features(store, slice(first, last + 1))[block_rows - first]
        elif len(block_rows) > 1 and not (block_rows[1:] > block_rows[:-1]).all():  # repeated rows: h5py refuses
            unique, inverse = np.unique(block_rows, return_inverse=True)
            block = _read_features(store, unique)[inverse]
        else:
            block = _read_features(store, block_rows)
        start = stop
        if block.dtype != np.float32:  # float64 beyond float32's range would become inf: check after the cast
            with np.errstate(over="ignore", invalid="ignore"):
                block = block.astype(np.float32)
        check_finite_rows(store.path, block, block_rows)
        features[positions] = block
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
