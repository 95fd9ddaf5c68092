"""CIFAR-10 in its official on-disk formats (https://www.cs.toronto.edu/~kriz/cifar.html).

The python version, ``cifar-10-batches-py/``: Python-2 pickles ``data_batch_1`` .. ``data_batch_5``
(train, in that order), ``test_batch`` and ``batches.meta``, each batch a dict with bytes keys whose
``b"data"`` is uint8 (10000, 3072), every row an image stored channel-planar (R, G, B planes), each
plane row-major. The binary version, ``cifar-10-batches-bin/``: ``*.bin`` files of 3073-byte records
(label byte + the same 3072 pixels) and ``batches.meta.txt``, used when the python folder is absent.

A pickle is code, so batches go through an unpickler that resolves only the few numpy globals the
official files name; anything else is refused before it can run.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import GanFeaturesError
from .base import ArrayImageDataset
from .download import ROOT_HINT, download_and_extract, one_line, require_root

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32

try:  # numpy >= 2 keeps it in numpy._core; numpy 1.x only has numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

# (module, name) -> object: all the globals an official batch names. The originals (numpy 1.x era)
# say numpy.core; a batch re-pickled under numpy >= 2 says numpy._core. Resolving them here rather
# than importing numpy.core also avoids numpy 2's deprecation shim.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global raises :class:`GanFeaturesError`."""

    def __init__(self, file, path: Path):
        # encoding="bytes": the batches are Python-2 pickles whose str objects (keys, raw array data)
        # must stay bytes, not be decoded as text
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise GanFeaturesError(f"{self.path}: refusing to unpickle global {module}.{name} (a CIFAR-10 "
                                   f"batch holds only numpy arrays and plain data; the file is not an "
                                   f"official one)") from None


def load_pickle(path: Path) -> dict:
    """One official python-version file as a dict, through :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, path).load()
    except GanFeaturesError:
        raise
    except Exception as e:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, ValueError...)
        raise GanFeaturesError(f"{path} is not a readable CIFAR-10 pickle ({type(e).__name__}: {one_line(e)}): "
                               f"re-extract the official archive") from None
    if not isinstance(obj, dict):
        raise GanFeaturesError(f"{path} holds a {type(obj).__name__}, not a CIFAR-10 batch dict")
    return obj


def field(batch: dict, key: str, path: Path) -> Any:
    """``batch[key]`` whether keys are bytes (the official Python-2 pickles) or str (re-pickled)."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise GanFeaturesError(f"{path} has no {key!r} entry: it is not a CIFAR-10 batch")


def checked(data: np.ndarray, labels: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data reshaped to (N, 3, 32, 32), labels) after checking both against the format."""
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == PIXELS):
        raise GanFeaturesError(f"{path}: data must be uint8 (N, {PIXELS}), got "
                               f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if len(labels) != len(data) or (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
        raise GanFeaturesError(f"{path}: {len(labels)} labels in 0..9 expected for {len(data)} images")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = load_pickle(path)
    labels = np.asarray(field(batch, "labels", path), dtype=np.int64)
    return checked(field(batch, "data", path), labels, path)


def read_python_classes(path: Path) -> list[str]:
    names = field(load_pickle(path), "label_names", path)
    return [n.decode("ascii") if isinstance(n, bytes) else str(n) for n in names]


def read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (1 + PIXELS):
        raise GanFeaturesError(f"{path}: {raw.size} bytes is not a whole number of {1 + PIXELS}-byte records")
    records = raw.reshape(-1, 1 + PIXELS)
    return checked(records[:, 1:], records[:, 0].astype(np.int64), path)


def read_binary_classes(path: Path) -> list[str]:
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip()]  # the official file ends in blank lines


@dataclass(frozen=True)
class Layout:
    """One official version of CIFAR-10: its folder, meta file, batch files per split and readers."""
    folder: str
    meta: str
    splits: dict[str, list[str]]
    read_batch: Callable[[Path], tuple[np.ndarray, np.ndarray]]
    read_classes: Callable[[Path], list[str]]


PYTHON = Layout("cifar-10-batches-py", "batches.meta",
                {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                read_python_batch, read_python_classes)
BINARY = Layout("cifar-10-batches-bin", "batches.meta.txt",
                {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
                read_binary_batch, read_binary_classes)
SPLITS = tuple(PYTHON.splits)


def locate(root: Path) -> tuple[Path, Layout] | None:
    """The first official folder under ``root`` (or ``root`` itself), python version first."""
    for layout in (PYTHON, BINARY):
        for folder in (root / layout.folder, root):
            if (folder / layout.meta).is_file():
                return folder, layout
    return None


def load_cifar10(split: str = "train", root: str | None = None, image_size: int = 32,
                 download: bool = False) -> ArrayImageDataset:
    """CIFAR-10 ``split`` ("train": 50,000 in the official order, "test": 10,000) from ``root``."""
    if split not in SPLITS:
        raise GanFeaturesError(f"cifar10 has splits {', '.join(SPLITS)}, not {split!r}")
    base = require_root(root, "cifar10")
    found = locate(base)
    if found is None and download:
        base.mkdir(parents=True, exist_ok=True)
        download_and_extract(CIFAR10_URL, base, CIFAR10_MD5)
        found = locate(base)
    if found is None:
        raise GanFeaturesError(f"CIFAR-10 not found: no {PYTHON.folder}/ or {BINARY.folder}/ in {base}; "
                               f"{ROOT_HINT} to the folder that holds one, or add --download")
    folder, layout = found
    paths = [folder / name for name in layout.splits[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise GanFeaturesError(f"CIFAR-10 folder {folder} lacks {', '.join(missing)}: re-extract the official "
                               f"archive there, or delete the folder and add --download")
    classes = layout.read_classes(folder / layout.meta)
    if len(classes) != 10:
        raise GanFeaturesError(f"{folder / layout.meta} names {len(classes)} classes, CIFAR-10 has 10")
    batches = [layout.read_batch(p) for p in paths]
    # one batch needs no copy; the five train batches are joined once into a single ~150 MB array
    images = batches[0][0] if len(batches) == 1 else np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    del batches
    return ArrayImageDataset(images, labels, classes, name="cifar10", split=split, image_size=image_size,
                             source=f"{folder} ({layout.folder} format)")
