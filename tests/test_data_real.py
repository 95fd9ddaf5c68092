"""The readers on the real datasets in the shared folder (skipped where $GAN_FEATURES_SHARED is unset)."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_features.data import load_dataset
from gan_features.data.cifar import load_cifar10
from gan_features.data.folders import load_imagenet

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def cifar10_root(shared_dir: Path, tmp_path_factory) -> Path:
    """Real CIFAR-10 rebuilt once per session in the official python layout (about 10-30 s)."""
    out = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(shared_dir / "tools" / "build-cifar10-batches"), str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def imagenette_root(shared_dir: Path, tmp_path_factory) -> Path:
    """Imagenette's training split (ImageNet's train/<wnid>/*.JPEG layout) extracted once per session."""
    out = tmp_path_factory.mktemp("imagenette")
    with tarfile.open(shared_dir / "data" / "imagenette" / "imagenette2-train-64px.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return out


def check_item(ds) -> None:
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert -1 <= image.min() < image.max() <= 1  # a real photo: in range and not constant
    assert 0 <= label < len(ds.classes)


def test_real_cifar10_train(cifar10_root: Path, shared_dir: Path):
    ds = load_cifar10("train", root=str(cifar10_root))
    assert len(ds) == 50_000 and ds.classes == CIFAR10_CLASSES
    assert np.bincount(ds.labels, minlength=10).tolist() == [5_000] * 10
    official_order = (shared_dir / "data" / "cifar10" / "train-order-labels.txt").read_text().split()
    assert [ds.classes[label] for label in ds.labels] == official_order
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()  # one compact array, ~150 MB
    check_item(ds)


def test_real_cifar10_test(cifar10_root: Path):
    ds = load_dataset("cifar10", "test", root=cifar10_root)
    assert len(ds) == 10_000 and ds.classes == CIFAR10_CLASSES
    assert np.bincount(ds.labels, minlength=10).tolist() == [1_000] * 10
    check_item(ds)


def test_real_imagenette_as_imagenet(imagenette_root: Path):
    ds = load_imagenet("train", root=str(imagenette_root))
    assert len(ds) == 9_469 and len(ds.classes) == 10
    assert all(wnid.startswith("n") and len(wnid) == 9 for wnid in ds.classes)
    assert len(np.unique(ds.labels)) == 10
    check_item(ds)
    last, label = ds[len(ds) - 1]
    assert last.shape == (3, 32, 32) and label == 9
    memory = ds.materialize(progress=False)  # decodes every photo (about 5 s): none may be unreadable
    assert memory.images.shape == (9_469, 3, 32, 32) and torch.equal(memory[len(ds) - 1][0], last)
