"""SVHN cropped digits in the official format (http://ufldl.stanford.edu/housenumbers/, "Format 2").

``train_32x32.mat`` (73,257), ``test_32x32.mat`` (26,032) and ``extra_32x32.mat`` (531,131) are
MATLAB v5 files holding ``X`` uint8 (32, 32, 3, N), image n being ``X[:, :, :, n]`` in (H, W, C)
order, and ``y`` (N, 1) with labels 1..10, where 10 stands for the digit 0.
"""
from __future__ import annotations

import numpy as np
import scipy.io

from ..errors import GanFeaturesError
from .base import ArrayImageDataset
from .download import ROOT_HINT, download_url, one_line, require_root

URL_BASE = "http://ufldl.stanford.edu/housenumbers/"
# split -> (file, md5 of the official file)
FILES = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}
CLASSES = [str(d) for d in range(10)]


def load_svhn(split: str = "train", root: str | None = None, image_size: int = 32,
              download: bool = False) -> ArrayImageDataset:
    """SVHN ``split`` ("train", "test" or "extra") from ``root``/<split>_32x32.mat, labels 0..9."""
    if split not in FILES:
        raise GanFeaturesError(f"svhn has splits {', '.join(FILES)}, not {split!r}")
    filename, md5 = FILES[split]
    path = require_root(root, "svhn") / filename
    if not path.is_file():
        if not download:
            raise GanFeaturesError(f"SVHN file {filename} not found in {path.parent}; {ROOT_HINT} to the "
                                   f"folder that holds it, or add --download")
        download_url(URL_BASE + filename, path, md5)
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (OSError, ValueError, NotImplementedError) as e:  # NotImplementedError: a v7.3 (HDF5) .mat
        raise GanFeaturesError(f"cannot read {path} ({type(e).__name__}: {one_line(e)}): "
                               f"it is not the official file; delete it and download it again") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise GanFeaturesError(f"{path} must hold X uint8 (32, 32, 3, N) and y (N, 1), got "
                               f"X {getattr(x, 'shape', None)} and y {getattr(y, 'shape', None)}")
    # the real files store y as uint8 or float64, depending on their origin: accept any exact integer
    raw_labels = y.reshape(-1)
    labels = raw_labels.astype(np.int64)
    if len(labels) != x.shape[3] or not np.array_equal(labels, raw_labels) \
            or (len(labels) and not 1 <= labels.min() <= labels.max() <= 10):
        raise GanFeaturesError(f"{path}: y must hold {x.shape[3]} integer labels in 1..10")
    labels[labels == 10] = 0
    # (H, W, C, N) -> (N, C, H, W): one strided copy; the result is what the model consumes
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    del mat, x
    return ArrayImageDataset(images, labels, CLASSES, name="svhn", split=split, image_size=image_size,
                             source=str(path))
