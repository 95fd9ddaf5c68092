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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..output import check_output, output_lock
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
    with output_lock(out):
        blocks = representation.blocks(dataset, progress)
        attrs = {**representation.store_attrs(), **dataset.describe(), **class_names(dataset),
                 "precision": representation.precision, "device": str(representation.device),
                 "torch_version": torch.__version__, "python": platform.python_version(),
                 "git_commit": git_commit() or "none", **({"command": command_line()} if command_line() else {})}
        with FeatureWriter(out, len(dataset), representation.dimension, attrs, overwrite=overwrite) as writer:
            for features, labels in blocks:
                writer.append(features, labels)
        return writer.path


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
