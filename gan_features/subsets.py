"""Class-stratified row selections that are the same on every machine (the CI subset, the selection probe).

Rows are ranked within each class by a BLAKE2b hash of their index: unlike a numpy Generator,
whose streams are not guaranteed across releases, the hash depends on nothing but these bytes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .errors import GanFeaturesError


def hash_keys(n: int, seed: int, salt: str | None = None) -> np.ndarray:
    """One uint64 key per row: the hash of ``"{salt}:{seed}:{row}"`` (``"{seed}:{row}"`` without a salt)."""
    prefix = f"{seed}" if salt is None else f"{salt}:{seed}"
    return np.fromiter((int.from_bytes(hashlib.blake2b(f"{prefix}:{row}".encode(), digest_size=8).digest(), "little")
                        for row in range(n)), dtype=np.uint64, count=n)


def class_quotas(counts: np.ndarray, size: int, total: int) -> np.ndarray:
    """Each class's share of ``size`` rows, in proportion to ``counts`` (largest remainders, ties to the
    lower class)."""
    quota, remainder = np.divmod(counts.astype(np.int64) * size, total)  # exact integer shares
    for i in np.lexsort((np.arange(len(counts)), -remainder))[:size - int(quota.sum())]:
        quota[i] += 1
    return quota


def stratified_rows(labels: np.ndarray, sizes: Sequence[int], seed: int, salt: str | None = None,
                    fix: str = "ask for fewer rows") -> list[np.ndarray]:
    """Disjoint, class-stratified row selections of the given sizes (each sorted).

    Each selection takes every class in proportion to its count; within a class rows are ranked by
    :func:`hash_keys` and the selections take consecutive runs of that ranking. ``fix`` ends the
    error message when the rows are not there (what the caller's user should change).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if sum(sizes) > n:
        raise GanFeaturesError(f"{' + '.join(str(s) for s in sizes)} rows cannot be drawn from {n} images: {fix}")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = [class_quotas(counts, size, n) for size in sizes]
    short = np.flatnonzero(np.sum(quotas, axis=0) > counts)  # rounding up can ask a small class for too many
    if len(short):
        raise GanFeaturesError(f"class {classes[short[0]]} has {counts[short[0]]} images, fewer than its share of "
                               f"{' + '.join(str(s) for s in sizes)} rows: {fix}")
    keys = hash_keys(n, seed, salt)
    chosen: list[list[np.ndarray]] = [[] for _ in sizes]
    for c, label in enumerate(classes):
        rows = np.flatnonzero(labels == label)
        ranked = rows[np.argsort(keys[rows], kind="stable")]
        start = 0
        for selection, quota in zip(chosen, quotas):
            selection.append(ranked[start:start + quota[c]])
            start += quota[c]
    return [np.sort(np.concatenate(selection)) for selection in chosen]


def rows_sha256(rows: np.ndarray) -> str:
    """A fingerprint of a row selection (little-endian int64 indices), recorded with the numbers made on it."""
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()
