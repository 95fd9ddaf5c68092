"""The Gram matrix of a feature store's rows, formed once and shared by every fit on those rows.

All fits of a protocol train on rows of one training store: ``cifar10``'s C path on 90% of them and
its refit on all, ``cifar10-400``'s draws of 4,000. The Gram matrix of each fit's rows is a
principal submatrix of ``K = X X^T`` over the union of their rows, so ``K`` is formed once (as the
Gram solver forms its own, :func:`.gram.gram_lower`: float32 GEMMs summed in float64, n^2 d / 2
multiply-adds, ~16 s at 10,000 x 28,672 on 2 cores here), rounded to float32 (1 part in 2^24 of each
entry, below the sums' own error), and each fit takes its own rows of it
(:meth:`StoreGram.submatrix`), then adds the intercept's constant and factors them in float64; with
:meth:`StoreGram.rows_of`, a fit whose rows begin with the previous fit's rows extends that fit's
factor instead (``cifar10``'s refit after its C path).

``K`` is cached beside the store, in the folder ``<store>.gram/``: one HDF5 file per row set, with
the store's identity (its attributes, size and modification time: a store is only ever written
whole) and the rows. A later run on the same store, of this protocol or another, reads the
smallest cached ``K`` whose rows include the ones it needs instead of forming it again; files of
an older version of the store are removed when a new one is saved.

Memory: ``K`` (4 n^2 bytes: 400 MB at 10,000 rows) and, while it is formed, the rows themselves in
float32 (read once from the store) and one row block of K in float32 and in float64 (12 KiB per row
of K); the rows are freed before any fit loads its own.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..errors import GanFeaturesError
from ..output import writing
from ..store import FeatureStore, read_rows
from .gram import GRAM_BLOCK_ROWS, GramRows, PrefixFactors, gram_lower

logger = logging.getLogger(__name__)

IDENTITY_ATTRS = ("checkpoint_sha256", "architecture", "feature_spec", "dataset", "split", "count", "dimension",
                  "created")  # the store attributes that tell one store's contents from another's


def store_identity(store: FeatureStore) -> str:
    """What identifies ``store``'s contents without reading them: its provenance attributes, size
    and modification time (stores are written whole, never edited), as canonical JSON."""
    stat = store.path.stat()
    attrs = {key: store.attrs.get(key) for key in IDENTITY_ATTRS}
    return json.dumps({"attrs": attrs, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": len(store),
                       "dimension": store.dimension}, sort_keys=True, default=str)


def cache_directory(store: FeatureStore) -> Path:
    """Where the Gram matrices of ``store``'s rows are cached: a folder beside the store, one per
    column view (a save removes the matrices of other identities, so views must not share one)."""
    columns = "" if store.column_range is None else "-columns{}-{}".format(*store.column_range)
    return store.path.with_name(store.path.name + ".gram" + columns)


class StoreGram:
    """``K = X X^T`` (float32, n x n, symmetric) of some rows of one feature store.

    ``rows``: the store rows it covers, increasing; ``seconds``: the time it took to form (0 when
    read from the cache); ``cached_at``: its cache file, if any.
    """

    def __init__(self, rows: np.ndarray, K: torch.Tensor, seconds: float = 0.0, cached_at: Path | None = None):
        self.rows, self.K, self.seconds, self.cached_at = rows, K, seconds, cached_at
        self.factors = PrefixFactors()  # the last fit's factor, for a fit on rows that begin with its rows

    def provenance(self) -> dict:
        """What a result records of the Gram matrix its fits shared."""
        return {"rows": len(self.rows), "form_seconds": round(self.seconds, 3),
                "cache_file": None if self.cached_at is None else str(self.cached_at)}

    def submatrix(self, rows: np.ndarray) -> torch.Tensor:
        """The Gram matrix of ``rows`` (store indices, in the order given): ``K[rows][:, rows]``."""
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.searchsorted(self.rows, rows)
        if not (positions < len(self.rows)).all() or not np.array_equal(self.rows[np.minimum(positions, len(self.rows) - 1)], rows):
            raise ValueError("rows outside this Gram matrix's row set: form it over every row the fits use")
        index = torch.from_numpy(positions)
        return self.K[index[:, None], index]

    def rows_of(self, rows: np.ndarray) -> GramRows:
        """The Gram matrix of ``rows`` for one fit (:meth:`submatrix`), with this matrix's factors: a
        fit on rows that begin with the previous fit's rows extends that fit's Cholesky factor."""
        rows = np.asarray(rows, dtype=np.int64)
        return GramRows(self.submatrix(rows), rows, self.factors)

    # ---- forming, saving, finding -----------------------------------------------------------
    @classmethod
    def compute(cls, store: FeatureStore, rows: np.ndarray, progress: bool = False) -> "StoreGram":
        """Form ``K`` of ``rows`` (made unique and increasing): the rows read once (float32), the
        lower triangle in row blocks, then mirrored."""
        started = time.perf_counter()
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        X = torch.from_numpy(read_rows(store, rows)[0])
        n = len(rows)
        K = torch.empty(n, n, dtype=torch.float32)
        with tqdm(total=sum((min(lo + GRAM_BLOCK_ROWS, n) - lo) * min(lo + GRAM_BLOCK_ROWS, n)
                            for lo in range(0, n, GRAM_BLOCK_ROWS)),
                  desc=f"Gram matrix of {n} rows", unit="entry", unit_scale=True, disable=not progress,
                  leave=False) as bar:
            gram_lower(X, K, on_block=bar.update)
        del X
        for lo in range(0, n, GRAM_BLOCK_ROWS):  # the upper triangle from the lower (no n x n temporary)
            hi = min(lo + GRAM_BLOCK_ROWS, n)
            K[:lo, lo:hi] = K[lo:hi, :lo].T
        return cls(rows, K, time.perf_counter() - started)

    @classmethod
    def cached(cls, store: FeatureStore, rows: np.ndarray) -> "StoreGram | None":
        """The smallest cached ``K`` of ``store`` whose rows include ``rows``, or None."""
        identity, rows = store_identity(store), np.unique(np.asarray(rows, dtype=np.int64))
        best: tuple[int, Path] | None = None
        for path in sorted(cache_directory(store).glob("*.h5")):
            try:
                with h5py.File(path, "r") as file:
                    if file.attrs.get("store_identity") != identity:
                        continue
                    saved_rows = file["rows"][:]
            except (OSError, KeyError):  # unreadable or half-written by a crashed writer: ignore it
                continue
            if np.isin(rows, saved_rows).all() and (best is None or len(saved_rows) < best[0]):
                best = (len(saved_rows), path)
        if best is None:
            return None
        with h5py.File(best[1], "r") as file:
            K = torch.from_numpy(file["gram"][:])
            return cls(file["rows"][:], K, cached_at=best[1])

    def save(self, store: FeatureStore) -> Path | None:
        """Cache ``K`` beside ``store`` (through the toolkit's writer: locked, never half a file under
        the final name) and remove cached matrices of older versions of the store. A store in a
        read-only folder is not cached (logged); returns the file, or None."""
        identity = store_identity(store)
        directory = cache_directory(store)
        digest = hashlib.sha256(self.rows.tobytes()).hexdigest()[:16]
        target = directory / f"rows-{len(self.rows)}-{digest}.h5"
        try:
            directory.mkdir(exist_ok=True)
            with writing(target) as partial, h5py.File(partial, "w") as file:
                file.attrs["store_identity"] = identity
                file.create_dataset("rows", data=self.rows)
                file.create_dataset("gram", data=self.K.numpy())
        except (OSError, GanFeaturesError) as error:
            logger.warning("Gram matrix not cached beside %s (%s)", store.path, error)
            return None
        self.cached_at = target
        for path in directory.glob("*.h5"):
            if path != target and _identity_of(path) not in (identity, None):
                path.unlink(missing_ok=True)  # the store was rewritten: these can never match again
        return target


def _identity_of(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as file:
            return file.attrs.get("store_identity")
    except OSError:
        return None
