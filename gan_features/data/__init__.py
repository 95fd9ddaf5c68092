"""Dataset readers by name. Each returns an :class:`ImageDataset` of images in [-1, 1].

Readers are imported on first use, so a missing optional format costs nothing until asked for.
"""
from __future__ import annotations

import importlib
import os

from ..errors import GanFeaturesError
from .base import ArrayImageDataset, ImageDataset, batch_collate, resize_uint8, to_unit_range

DATA_ROOT_ENV = "GAN_FEATURES_DATA"

# name -> "module:function"; each function takes (split, root, image_size, download)
READERS = {
    "digits": "gan_features.data.digits:load_digits_dataset",
    "cifar10": "gan_features.data.cifar:load_cifar10",
    "svhn": "gan_features.data.svhn:load_svhn",
    "imagenet": "gan_features.data.folders:load_imagenet",
    "folder": "gan_features.data.folders:load_folder",
    "prepared": "gan_features.data.prepared:load_prepared",  # a file made by `gan-features prepare`
}


def resolve_root(root: str | os.PathLike | None) -> str | None:
    """The data root: the argument, else $GAN_FEATURES_DATA, else None."""
    if root is not None:
        return os.fspath(root)
    return os.environ.get(DATA_ROOT_ENV) or None


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 image_size: int = 32, download: bool = False) -> ImageDataset:
    if name not in READERS:
        raise GanFeaturesError(f"unknown dataset {name!r}: choose one of {', '.join(READERS)}")
    module_name, function_name = READERS[name].split(":")
    reader = getattr(importlib.import_module(module_name), function_name)
    return reader(split=split, root=resolve_root(root), image_size=image_size, download=download)


__all__ = ["ArrayImageDataset", "DATA_ROOT_ENV", "ImageDataset", "READERS", "batch_collate", "load_dataset",
           "resize_uint8", "resolve_root", "to_unit_range"]
