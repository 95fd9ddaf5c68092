"""Representations: what turns images into feature vectors, all under one contract.

:class:`Representation` (:mod:`.base`): ``fit(train)`` learns what it needs from training images
(never labels), ``blocks(dataset)`` yields features, ``store_attrs()`` describes it for provenance.
:func:`extract_to_store` is the one way any of them reaches an HDF5 store; :func:`extract_arrays`
keeps the features in memory. The three kinds Table 1 compares:

- :class:`DiscriminatorFeatures` (:mod:`.discriminator`): a DCGAN discriminator's conv blocks,
  max-pooled to 4x4 and concatenated, batch-norm statistics recomputed over the training images;
- :class:`PixelFeatures` (:mod:`.pixels`): raw pixels in [-1, 1], the floor;
- :class:`KMeansFeatures` (:mod:`.kmeans`): Coates et al.'s single-layer k-means baseline.
"""
from .base import Representation, extract_arrays, extract_to_store
from .discriminator import (
    BATCHNORM_MODES,
    POOLINGS,
    DiscriminatorFeatures,
    FeatureSpec,
    iter_features,
    prepare_discriminator,
)
from .kmeans import KMeansFeatures, standardize_stores
from .pixels import PixelFeatures

__all__ = ["BATCHNORM_MODES", "POOLINGS", "DiscriminatorFeatures", "FeatureSpec", "KMeansFeatures", "PixelFeatures",
           "Representation", "extract_arrays", "extract_to_store", "iter_features", "prepare_discriminator",
           "standardize_stores"]
