"""Image trees, one subfolder per class, in torchvision's ImageFolder conventions, and ImageNet.

Images are decoded lazily, one per item, and no file handle outlives it, so the datasets pickle
cleanly into DataLoader workers. Each image is preprocessed like the DCGAN paper's 32x32 ImageNet:
converted to RGB, resized so its short side is ``image_size`` (bilinear, antialiased), centre-cropped
to a square; no augmentation. ``materialize()`` decodes a whole (small) set once into memory.
"""
from __future__ import annotations

import struct
import warnings
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


# Photos, even from large sensors, stay well below this; a file declaring more is refused from its
# header, before any pixel is decoded (a "decompression bomb": a few KB of PNG can declare 400
# megapixels, gigabytes once decoded). PIL's own check (Image.MAX_IMAGE_PIXELS, a warning above
# ~89 megapixels and an error above twice that) is global state a user may have changed or disabled.
MAX_IMAGE_PIXELS = 100_000_000


def load_image(path: str, size: int) -> np.ndarray:
    """The image at ``path`` as uint8 (3, size, size): RGB, short side resized to ``size``, centre crop.

    A file that is not a readable image (truncated, damaged, another format under an image extension)
    or that declares more than :data:`MAX_IMAGE_PIXELS` raises :class:`GanFeaturesError` naming it.
    """
    try:
        with warnings.catch_warnings():
            # sizes are checked below, against our own limit; PIL's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise GanFeaturesError(
                        f"image {path} declares {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), "
                        f"more than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels a photo needs: refusing to decode "
                        f"it (a damaged file or a decompression bomb); remove it from the dataset")
                rgb = img.convert("RGB")  # convert() reads the pixels, so the file can close here
    except GanFeaturesError:
        raise
    except Image.DecompressionBombError as e:  # PIL refuses twice its MAX_IMAGE_PIXELS inside open(), first
        raise GanFeaturesError(f"image {path} declares too many pixels to decode safely ({one_line(e)}); "
                               f"remove it from the dataset") from None
    except OSError as e:
        if e.errno is not None:  # the file itself could not be read (permissions, removed since the scan)
            raise GanFeaturesError(f"cannot read image {path}: {e.strerror or one_line(e)}") from None
        raise GanFeaturesError(f"cannot decode image {path} ({type(e).__name__}: {one_line(e)}): the file is "
                               f"damaged or not an image; remove or replace it") from None
    except (ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, ZeroDivisionError) as e:
        # besides OSError (not an image: UnidentifiedImageError; "image file is truncated"), PIL raises
        # ValueError (e.g. PNG text chunks over its limit) and, from malformed headers of some formats,
        # SyntaxError, struct.error, EOFError, IndexError...
        raise GanFeaturesError(f"cannot decode image {path} ({type(e).__name__}: {one_line(e)}): the file is "
                               f"damaged or not an image; remove or replace it") from None
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
        # the official validation archive unpacks flat, its labels in the devkit: torchvision sorts it
        root = folder.parent
        raise GanFeaturesError(
            f"imagenet: {folder} is flat (the official archive's layout, labels in the devkit): sort it into "
            f"<wnid> subfolders once: move {folder} away, put ILSVRC2012_img_val.tar and "
            f"ILSVRC2012_devkit_t12.tar.gz in {root}, and run python -c \"import torchvision; "
            f"torchvision.datasets.ImageNet('{root}', split='{split}')\"")
    return scan(folder, name="imagenet", split=split, image_size=image_size)
