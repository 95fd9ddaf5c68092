"""The images a bench run measures: every image (``full``) or a fixed subset (``ci``; ``toy``, smaller).

Each subset is chosen by hashing row indices with :data:`~.config.CI_SUBSET_SEED`, which gives the
same rows on every machine and under every numpy version (a numpy Generator's streams are not
guaranteed stable across releases).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data import ArrayImageDataset, load_dataset
from ..errors import GanFeaturesError
from ..subsets import rows_sha256, stratified_rows
from . import config as conf
from .config import CI_SUBSET_SEED


def stratified_subset(labels: np.ndarray, size: int, seed: int = CI_SUBSET_SEED, salt: str = "") -> np.ndarray:
    """``size`` row indices (sorted) with every class in proportion, the same on every machine.

    Each class gets its share of ``size`` (largest remainders, ties to the lower class); within a
    class the rows with the smallest BLAKE2b hash of ``"{salt}:{seed}:{row}"`` are taken
    (:func:`gan_features.subsets.stratified_rows`).
    """
    n = len(labels)
    if not 0 < size <= n:
        raise GanFeaturesError(f"a subset of {size} rows cannot be drawn from {n}")
    return stratified_rows(labels, [size], seed, salt=salt)[0]


SCALE_NAMES = {"ci": "CI", "toy": "toy"}  # as the tables and messages write them


def ci_subset(dataset: ArrayImageDataset, size: int, seed: int = CI_SUBSET_SEED, scale: str = "ci"
              ) -> tuple[ArrayImageDataset, dict[str, Any]]:
    """The fixed subset of a dataset split at a subset ``scale`` (``ci`` or ``toy``), and what identifies it.

    Both scales draw with the same seed and salt, so the toy subset of a split is part of its CI subset.
    """
    name = SCALE_NAMES[scale]
    if len(dataset) < size:
        raise GanFeaturesError(f"the {name} scale takes {size} {dataset.name} {dataset.split} images but "
                               f"{len(dataset)} are there: use scale 'full'")
    rows = stratified_subset(dataset.labels, size, seed, salt=f"{dataset.name}/{dataset.split}")
    digest = rows_sha256(rows)
    subset = ArrayImageDataset(
        dataset.images[torch.from_numpy(rows)].numpy(), dataset.labels[rows], dataset.classes, name=dataset.name,
        split=dataset.split, image_size=dataset.image_size,
        source=f"{dataset.source}; {name} subset: {size} rows stratified by class, seed {seed}, rows sha256 {digest}")
    return subset, {"subset_seed": seed, "subset_sha256": digest}


def load_splits(name: str, root: str, scale: str) -> tuple[ArrayImageDataset, ArrayImageDataset, dict[str, Any]]:
    """Train and test splits at ``scale``, and columns describing them for every row."""
    train, test = (load_dataset(name, split, root=root) for split in ("train", "test"))
    context: dict[str, Any] = {"scale": scale, "dataset": name, "subset_seed": None, "train_subset_sha256": None,
                               "test_subset_sha256": None}
    sizes = conf.subset_sizes(scale)
    if sizes is not None:
        train, info = ci_subset(train, sizes["train"], scale=scale)
        test, test_info = ci_subset(test, sizes["test"], scale=scale)
        context.update(subset_seed=info["subset_seed"], train_subset_sha256=info["subset_sha256"],
                       test_subset_sha256=test_info["subset_sha256"])
    context.update(train_rows=len(train), test_rows=len(test))
    return train, test, context
