"""Raw pixels as a representation: the floor every learned one must beat (3072-d for 32x32 RGB)."""
from __future__ import annotations

import numpy as np
import torch

from ..data.base import to_unit_range
from ..errors import GanFeaturesError
from .base import Representation

BLOCK_ROWS = 4096  # images scaled per block: bounded memory for any dataset size


class PixelFeatures(Representation):
    """Every pixel value, channel-planar (C, H, W) and scaled to [-1, 1] as the discriminators see
    them. Needs a dataset holding its uint8 images in memory (``.images``, as the array readers do)."""

    kind = "raw pixels"
    SPEC = {"raw_pixels": True, "scale": "[-1, 1]", "order": "channel-planar (C, H, W)"}

    def __init__(self):
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise GanFeaturesError("the pixel dimension is known once a dataset is given: call blocks(dataset) first")
        return self._dimension

    def blocks(self, dataset, progress: bool = True):
        images = getattr(dataset, "images", None)
        if images is None:
            raise GanFeaturesError(f"raw pixel features need a dataset holding its images in memory (.images), got "
                                   f"{type(dataset).__name__}: call .materialize() on a folder dataset first")
        self._dimension = int(np.prod(images.shape[1:]))
        labels = np.asarray(dataset.labels)

        def scaled():
            for start in range(0, len(images), BLOCK_ROWS):
                block = images[start:start + BLOCK_ROWS]
                scaled_block = to_unit_range(torch.as_tensor(block).reshape(len(block), -1)).numpy()
                yield scaled_block, labels[start:start + len(block)]

        return scaled()

    def store_attrs(self) -> dict:
        return {"checkpoint_sha256": "none (raw pixels)", "architecture": "none", "feature_spec": self.SPEC}
