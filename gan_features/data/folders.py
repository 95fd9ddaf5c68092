"""Image trees, one subfolder per class, in torchvision's ImageFolder conventions, and ImageNet.

Images are decoded lazily, one per item, and no file handle outlives it, so the datasets pickle
cleanly into DataLoader workers. Each image is preprocessed like the DCGAN paper's 32x32 ImageNet:
converted to RGB, resized so its short side is ``image_size`` (bilinear, antialiased), centre-cropped
to a square; no augmentation. ``materialize()`` decodes a whole (small) set once into memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from tqdm import tqdm

from ..errors import GanFeaturesError
from .base import ArrayImageDataset, ImageDataset, to_unit_range
from .download import ROOT_HINT, one_line, require_root

COMMON_SPLITS = ("train", "val", "test")
IMAGENET_SPLITS = ("train", "val")


def load_image(path: str, size: int) -> np.ndarray:
    """The image at ``path`` as uint8 (3, size, size): RGB, short side resized to ``size``, centre crop."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # convert() reads the pixels, so the file can close here
    except OSError as e:
        raise GanFeaturesError(f"cannot decode image {path}: {one_line(e)}") from None
    # torchvision's own resize/crop, so the geometry (rounding of the long side and of the crop
    # offset) is exactly ImageFolder + Resize(size) + CenterCrop(size); PIL's bilinear antialiases
    square = TF.center_crop(TF.resize(rgb, size, interpolation=TF.InterpolationMode.BILINEAR), size)
    return np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))  # one writable copy


class ImageFolderDataset(ImageDataset):
    """Images listed as (path, label) pairs, decoded on access; see the module docstring."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], *, name: str, split: str,
                 source: str, image_size: int):
        self.samples = samples
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.classes = list(classes)
        self.name, self.split, self.source, self.image_size = name, split, source, image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return to_unit_range(torch.from_numpy(load_image(path, self.image_size))), label

    def materialize(self, progress: bool = True) -> ArrayImageDataset:
        """Decode every image once into one in-memory uint8 array (for small sets, e.g. Imagenette)."""
        images = np.empty((len(self.samples), 3, self.image_size, self.image_size), dtype=np.uint8)
        for i, (path, _) in enumerate(tqdm(self.samples, desc=f"decoding {self.name} {self.split}",
                                           unit="img", disable=not progress)):
            images[i] = load_image(path, self.image_size)
        return ArrayImageDataset(images, self.labels, self.classes, name=self.name, split=self.split,
                                 source=self.source, image_size=self.image_size)


def scan(folder: Path, *, name: str, split: str, image_size: int) -> ImageFolderDataset:
    """The class-per-subfolder tree at ``folder``: classes = sorted subfolder names, ImageFolder's rules."""
    if not folder.is_dir():
        raise GanFeaturesError(f"{name}: no folder {folder} (expected {folder}/<class>/<images>); "
                               f"{ROOT_HINT} to the right folder")
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # no class subfolder, or a class without images
        raise GanFeaturesError(f"{name}: expected {folder}/<class>/<image> with images of type "
                               f"{' '.join(IMG_EXTENSIONS)} ({one_line(e)})") from None
    return ImageFolderDataset(samples, classes, name=name, split=split, source=str(folder),
                              image_size=image_size)


def refuse_download(name: str) -> NoReturn:
    raise GanFeaturesError(f"{name} cannot be downloaded automatically: place the images under the data root "
                           f"yourself (ImageNet: get ILSVRC2012 from https://image-net.org after registering, "
                           f"as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG), then run without --download")


def load_folder(split: str = "train", root: str | None = None, image_size: int = 32,
                download: bool = False) -> ImageFolderDataset:
    """Any image tree: ``root/<split>/<class>/...`` when ``root/<split>`` exists, else ``root/<class>/...``."""
    if download:
        refuse_download("a folder dataset")
    base = require_root(root, "folder")
    if (base / split).is_dir():
        return scan(base / split, name="folder", split=split, image_size=image_size)
    present = [s for s in COMMON_SPLITS if (base / s).is_dir()]
    if present:  # a split layout without the asked split: its split folders are not classes
        raise GanFeaturesError(f"folder: {base} has split folders {', '.join(present)} but no {split!r}")
    return scan(base, name="folder", split=split, image_size=image_size)


def load_imagenet(split: str = "train", root: str | None = None, image_size: int = 32,
                  download: bool = False) -> ImageFolderDataset:
    """ImageNet (or a subset such as Imagenette) laid out as ``root/{train,val}/<wnid>/*.JPEG``."""
    if split not in IMAGENET_SPLITS:
        raise GanFeaturesError(f"imagenet has splits {', '.join(IMAGENET_SPLITS)}, not {split!r}")
    if download:
        refuse_download("ImageNet")
    folder = require_root(root, "imagenet") / split
    entries = list(folder.iterdir()) if folder.is_dir() else []
    if entries and not any(entry.is_dir() for entry in entries):
        # the official validation archive unpacks flat, with labels in a separate file
        raise GanFeaturesError(f"imagenet: {folder} is flat; sort the validation images into <wnid> "
                               f"subfolders first (e.g. with the widely used valprep.sh script)")
    return scan(folder, name="imagenet", split=split, image_size=image_size)
