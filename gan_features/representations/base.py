"""The representation contract, and the one way features reach a store.

A representation turns images into fixed-length feature vectors. Some first learn from the
training images, never from labels (a discriminator's batch-norm statistics, k-means centroids);
then every split is transformed by the same fitted state. :func:`extract_to_store` writes any
representation's features of one dataset split into an HDF5 store with its provenance, and
:func:`extract_arrays` holds them in memory (checkpoint selection scores a few thousand rows).
"""
from __future__ import annotations

import abc
import json
import os
import platform
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..data.base import rows_of
from ..distributed import Ranks, current_ranks
from ..errors import GanFeaturesError, one_line
from ..output import check_output, output_lock, partial_path
from ..provenance import command_line, git_commit
from ..store import FeatureWriter

CLASS_NAMES_MAX_BYTES = 60_000  # HDF5 1.x keeps an attribute in the object header: < 64 KiB


class Representation(abc.ABC):
    """Images -> feature vectors. Subclasses say what they are and how they compute."""

    kind: str = ""  # what the tables call it: "discriminator", "raw pixels", "k-means baseline"
    precision: str = "fp32"  # the arithmetic the features are computed in

    def fit(self, train, progress: bool = True) -> "Representation":
        """Learn what the features need from the training images (no labels); returns self."""
        return self

    @property
    @abc.abstractmethod
    def dimension(self) -> int:
        """Features per image."""

    @property
    def feature_units(self) -> int | None:
        """Units as the paper counts them (the most maps of one layer, the centroids); None if none."""
        return None

    @abc.abstractmethod
    def blocks(self, dataset, progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (float32 features (n, dimension), labels (n,)) block by block, in dataset order.
        Refuses (GanFeaturesError) a dataset it cannot transform, before the first block."""

    @abc.abstractmethod
    def store_attrs(self) -> dict[str, Any]:
        """What a store of these features records about the representation: its identity
        (``checkpoint_sha256``, ``architecture``, ``feature_spec``) and how it was computed."""

    @property
    def device(self) -> str:
        return "cpu"


def extract_to_store(representation: Representation, dataset, out: str | os.PathLike, overwrite: bool = False,
                     progress: bool = True) -> Path:
    """Write ``representation``'s features of ``dataset`` into a new HDF5 store at ``out``; returns its path.

    The store records the representation (:meth:`Representation.store_attrs`), the dataset
    (``dataset.describe()``, its class names) and the software that computed them. Refused before any
    work when ``out`` exists (unless ``overwrite``) or cannot be written; locked against a second writer;
    never left half-written under its name (:class:`~gan_features.store.FeatureWriter`).
    """
    check_output(out, overwrite)
    ranks = current_ranks(representation.device)
    if ranks.enabled:
        return _extract_by_ranks(representation, dataset, Path(out), overwrite, progress, ranks)
    with output_lock(out):
        blocks = representation.blocks(dataset, progress)
        with FeatureWriter(out, len(dataset), representation.dimension, _store_attrs(representation, dataset),
                           overwrite=overwrite) as writer, appending_in_background(writer) as append:
            for features, labels in blocks:
                append(features, labels)
        return writer.path


class appending_in_background:
    """``writer.append`` in a thread of its own, so a block is written while the next is computed
    (measured: the HDF5 writes cost a tenth of a bf16 feature pass here). At most two blocks wait;
    the writer's first error is raised in the caller, at its next append or on leaving the block."""

    def __init__(self, writer: FeatureWriter, depth: int = 2):
        self.writer, self.error = writer, None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._drain, name="feature-writer", daemon=True)

    def _drain(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:  # after a failure, only drain, so the caller never blocks
                try:
                    self.writer.append(*item)
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                    self.error = error

    def __enter__(self):
        self.thread.start()
        return self

    def __call__(self, rows: np.ndarray, labels: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((rows, labels))

    def __exit__(self, exc_type, exc, tb) -> None:
        self.queue.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


def _store_attrs(representation: Representation, dataset) -> dict[str, Any]:
    return {**representation.store_attrs(), **dataset.describe(), **class_names(dataset),
            "precision": representation.precision, "device": str(representation.device),
            "torch_version": torch.__version__, "python": platform.python_version(),
            "git_commit": git_commit() or "none", **({"command": command_line()} if command_line() else {})}


def _extract_by_ranks(representation: Representation, dataset, out: Path, overwrite: bool, progress: bool,
                      ranks: Ranks) -> Path:
    """:func:`extract_to_store` under torchrun: each rank computes a contiguous share of the rows, cut at
    multiples of the batch size (so each batch is one a single process would run: the same features, bit
    for bit, where the arithmetic is deterministic), into its own shard; rank 0 writes the one store
    from the shards, in order, then removes them."""
    step = max(1, int(getattr(representation, "batch_size", 1)))
    batches = -(-len(dataset) // step)
    lo, hi = (min(len(dataset), batches * r // ranks.world * step) for r in (ranks.rank, ranks.rank + 1))
    shard = partial_path(out).with_name(f"{out.name}.rank{ranks.rank}.partial")
    try:
        blocks = representation.blocks(rows_of(dataset, np.arange(lo, hi)), progress and ranks.main)
        with h5py.File(shard, "w") as file:
            features = file.create_dataset("features", (hi - lo, representation.dimension), dtype=np.float32)
            labels = file.create_dataset("labels", (hi - lo,), dtype=np.int64)
            start = 0
            for block, block_labels in blocks:
                features[start:start + len(block)], labels[start:start + len(block)] = block, block_labels
                start += len(block)
        failed = None
    except Exception as error:  # every rank must reach the collective below, or the others wait forever
        failed = f"rank {ranks.rank}: {one_line(error)}"
    failures = [failure for failure in ranks.gather(failed) if failure]
    try:
        if not failures and ranks.main:
            with output_lock(out), FeatureWriter(out, len(dataset), representation.dimension,
                                                 _store_attrs(representation, dataset), overwrite=overwrite) as writer:
                for rank in range(ranks.world):
                    with h5py.File(shard.with_name(f"{out.name}.rank{rank}.partial"), "r") as file:
                        for start in range(0, len(file["labels"]), 4096):
                            writer.append(file["features"][start:start + 4096], file["labels"][start:start + 4096])
    finally:
        ranks.barrier()  # rank 0 has read every shard
        shard.unlink(missing_ok=True)
    if failures:
        raise GanFeaturesError(f"extraction failed on {len(failures)} rank(s): {'; '.join(failures)}")
    return out


def extract_arrays(representation: Representation, dataset, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``representation``'s features of ``dataset`` in memory: (float32 (n, dimension), labels (n,))."""
    X = np.empty((len(dataset), representation.dimension), dtype=np.float32)
    y = np.empty(len(dataset), dtype=np.int64)
    start = 0
    for features, labels in representation.blocks(dataset, progress):
        X[start:start + len(features)], y[start:start + len(features)] = features, labels
        start += len(features)
    return X, y


def class_names(dataset) -> dict:
    """``{"class_names": [name of label 0, name of label 1, ...]}`` when the dataset names its classes.

    Left out (rather than failing after the whole extraction, when the attributes are written) when
    the names would not fit in one HDF5 attribute under HDF5 1.x (thousands of long class names).
    """
    classes = getattr(dataset, "classes", None)
    if not classes:
        return {}
    names = [str(name) for name in classes]
    if len(json.dumps(names).encode()) > CLASS_NAMES_MAX_BYTES:
        return {}
    return {"class_names": names}


def describe_dataset(dataset) -> dict[str, Any]:
    """A dataset's own description, or its size when it has none (a plain torch Dataset)."""
    describe = getattr(dataset, "describe", None)
    return describe() if callable(describe) else {"count": len(dataset)}
