"""The dataset contract every reader returns: images scaled to [-1, 1] and integer labels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the scaling DCGAN's tanh generator produces."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a (N, C, H, W) uint8 batch to size x size (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    t = torch.from_numpy(np.ascontiguousarray(images)).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round_().clamp_(0, 255).to(torch.uint8).numpy()


class ImageDataset(Dataset):
    """Base of all readers: ``dataset[i]`` is ``(image float32 (C, H, W) in [-1, 1], label int)``.

    Attributes every reader sets: ``name``, ``split``, ``classes`` (names, index = label),
    ``labels`` (int64 array, one per image), ``image_size`` and ``source`` (where it was read from).
    """

    name: str
    split: str
    classes: list[str]
    labels: np.ndarray
    image_size: int
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self) -> dict:
        """Provenance for stores and tables."""
        return {"dataset": self.name, "split": self.split, "count": len(self), "image_size": self.image_size,
                "num_classes": len(self.classes), "source": self.source}


class ArrayImageDataset(ImageDataset):
    """A dataset held in memory as one uint8 array (N, C, H, W), resized once to ``image_size``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], *, name: str,
                 split: str, source: str, image_size: int):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(resize_uint8(images, image_size))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.name, self.split, self.source, self.image_size = name, split, source, image_size

    def __getitem__(self, index: int):
        return to_unit_range(self.images[index]), int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch in one indexing operation (a DataLoader calls this instead of one
        ``__getitem__`` per image; pair it with :func:`batch_collate`): the same values, no per-image
        Python path, which at 32 px would otherwise pace a GPU."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return to_unit_range(self.images[index]), torch.from_numpy(self.labels[index.numpy()])


class Rows(Dataset):
    """Some rows of a dataset, in the given order, with its description (name, split, image size,
    classes) and labels; ``images`` (read when asked for) where the parent holds them. See :func:`rows_of`."""

    def __init__(self, parent, indices):
        self.parent, self.indices = parent, np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(parent.labels)[self.indices]
        for name in ("name", "split", "image_size", "classes", "source"):
            if hasattr(parent, name):
                setattr(self, name, getattr(parent, name))

    @property
    def images(self) -> torch.Tensor:
        """The rows' uint8 images, copied from the parent's (AttributeError where it holds none)."""
        return self.parent.images[torch.from_numpy(self.indices)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.parent[int(self.indices[index])]


class _BatchedRows(Rows):
    def __getitems__(self, indices: list[int]):
        return self.parent.__getitems__(self.indices[np.asarray(indices, dtype=np.int64)].tolist())


def rows_of(parent, indices) -> Rows:
    """:class:`Rows` of ``parent``, assembling whole batches when the parent does (``__getitems__``)."""
    return (_BatchedRows if callable(getattr(parent, "__getitems__", None)) else Rows)(parent, indices)


def batch_collate(dataset):
    """The DataLoader ``collate_fn`` for ``dataset``: batches a dataset already assembles itself
    (``__getitems__``) pass through as they are; None (torch's default) for the others."""
    return _already_collated if callable(getattr(dataset, "__getitems__", None)) else None


def _already_collated(batch):
    return batch
