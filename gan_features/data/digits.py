"""scikit-learn's handwritten digits: 1,797 real 8x8 scans, shipped inside scikit-learn.

The embedded default dataset: it needs no download, so the demo and the tests run anywhere.
There is no official split, so ``split`` takes a seeded stratified one (default 70/30).
"""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ..errors import GanFeaturesError
from .base import ArrayImageDataset

SPLIT_SEED = 0
TEST_FRACTION = 0.3


def load_digits_dataset(split: str = "train", root: str | None = None, image_size: int = 32,
                        download: bool = False) -> ArrayImageDataset:
    bunch = load_digits()
    # 0..16 gray levels -> uint8, replicated to 3 channels so every architecture takes it
    gray = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(gray[:, None], 3, axis=1)
    labels = bunch.target.astype(np.int64)
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                           stratify=labels)
    chosen = {"train": train_idx, "test": test_idx, "all": indices}.get(split)
    if chosen is None:
        raise GanFeaturesError(f"digits has splits train, test and all, not {split!r}")
    chosen = np.sort(chosen)
    return ArrayImageDataset(images[chosen], labels[chosen], [str(d) for d in range(10)], name="digits",
                             split=split, image_size=image_size,
                             source=f"sklearn.datasets.load_digits (stratified {1 - TEST_FRACTION:.0%}/"
                                    f"{TEST_FRACTION:.0%} split, seed {SPLIT_SEED})")
