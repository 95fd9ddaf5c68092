"""`gan-features prepare`: a split decoded once into one HDF5 file, resumable, read back as the same images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gan_features.checkpoints import load_checkpoint
from gan_features.cli import main
from gan_features.data import load_dataset
from gan_features.data import prepared as prepared_module
from gan_features.data.prepared import prepare
from gan_features.errors import GanFeaturesError
from gan_features.representations import DiscriminatorFeatures, extract_arrays
from gan_features.store import FeatureStore
from gan_features.train import random_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """An ImageNet-style tree of 14 photos of assorted sizes and formats, 2 classes; chunks of 4 images."""
    monkeypatch.setattr(prepared_module, "CHUNK_IMAGES", 4)
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(("n01440764", "n02102040")):
        folder = tmp_path / "imagenet" / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(7):
            height, width = rng.integers(33, 80, size=2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_{i}.{'JPEG' if i % 2 else 'png'}")
    return tmp_path


def test_prepared_images_and_features_equal_the_folders_bit_for_bit(photos):
    out = prepare("imagenet", "train", photos / "imagenet", 32, photos / "train32.h5", workers=2, progress=False)
    folder = load_dataset("imagenet", "train", photos / "imagenet", 32)
    again = load_dataset("prepared", "train", out, 32)
    assert np.array_equal(again.images.numpy(), folder.materialize(progress=False).images.numpy())
    assert again.labels.tolist() == folder.labels.tolist() and again.classes == folder.classes
    assert again.describe() == folder.describe()  # a feature cache treats both as the same images
    random_checkpoint("radford-svhn32", photos / "d.pt", seed=0)
    features = [extract_arrays(DiscriminatorFeatures(load_checkpoint(photos / "d.pt")).fit(data, progress=False),
                               data, progress=False) for data in (folder, again)]
    assert np.array_equal(features[0][0], features[1][0]) and np.array_equal(features[0][1], features[1][1])
    one_process = prepare("imagenet", "train", photos / "imagenet", 32, photos / "serial.h5", workers=1,
                          progress=False)
    assert np.array_equal(load_dataset("prepared", "train", one_process, 32).images.numpy(), again.images.numpy())


def test_a_stopped_preparation_continues_where_it_was(photos, monkeypatch):
    out = photos / "train32.h5"
    decoded, write = [], prepared_module._write_chunk

    def stop_after_two_chunks(file, index, images):
        if len(decoded) == 2:
            raise KeyboardInterrupt  # as a kill between two chunks
        write(file, index, images)
        decoded.append(index)

    monkeypatch.setattr(prepared_module, "_write_chunk", stop_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        prepare("imagenet", "train", photos / "imagenet", 32, out, workers=1, progress=False)
    assert not out.exists() and (photos / "train32.h5.partial").exists()  # no final name before it is complete
    monkeypatch.setattr(prepared_module, "_write_chunk", lambda *args: decoded.append(args[1]) or write(*args))
    prepare("imagenet", "train", photos / "imagenet", 32, out, workers=1, progress=False)
    assert decoded == [0, 1, 2, 3]  # chunks 0 and 1 were not decoded again
    assert not (photos / "train32.h5.partial").exists()
    whole = prepare("imagenet", "train", photos / "imagenet", 32, photos / "whole.h5", workers=1, progress=False)
    assert np.array_equal(load_dataset("prepared", "train", out, 32).images.numpy(),
                          load_dataset("prepared", "train", whole, 32).images.numpy())


KILLED_PREPARE = """
import os, signal, sys
from gan_features.data import prepared
prepared.CHUNK_IMAGES = 4
root, out, phase = sys.argv[1:]
write = prepared._write_chunk

def write_then_die(file, index, images):  # chunk 2 is written as _write_chunk does, up to ``phase``
    if index != 2:
        return write(file, index, images)
    file["images"][index * 4:index * 4 + len(images)] = images
    if phase == "images written":
        os.kill(os.getpid(), signal.SIGKILL)
    file.flush()
    file["done"][index] = True
    if phase == "marked done, not flushed":
        os.kill(os.getpid(), signal.SIGKILL)
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

prepared._write_chunk = write_then_die
prepared.prepare("imagenet", "train", root, 32, out, workers=1, progress=False)
"""


@pytest.mark.parametrize("phase", ["images written", "marked done, not flushed", "marked done and flushed"])
def test_a_killed_preparation_resumes_to_the_same_bytes(photos, phase):
    """SIGKILL (no clean-up runs) at each point of a chunk's write; a rerun completes the same images."""
    import subprocess
    import sys

    out = photos / "killed.h5"
    killed = subprocess.run([sys.executable, "-c", KILLED_PREPARE, str(photos / "imagenet"), str(out), phase])
    assert killed.returncode == -9 and not out.exists() and (photos / "killed.h5.partial").exists()
    prepare("imagenet", "train", photos / "imagenet", 32, out, workers=1, progress=False)
    whole = prepare("imagenet", "train", photos / "imagenet", 32, photos / "whole.h5", workers=1, progress=False)
    resumed, reference = (load_dataset("prepared", "train", path, 32) for path in (out, whole))
    assert np.array_equal(resumed.images.numpy(), reference.images.numpy())
    assert resumed.labels.tolist() == reference.labels.tolist()


def test_refusals_are_one_line(photos, monkeypatch):
    out = photos / "train32.h5"
    monkeypatch.setattr(prepared_module, "_write_chunk", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prepare("imagenet", "train", photos / "imagenet", 16, out, workers=1, progress=False)
    monkeypatch.undo()
    with pytest.raises(GanFeaturesError, match="partial preparation of other images"):
        prepare("imagenet", "train", photos / "imagenet", 32, out, workers=1, progress=False)
    (photos / "train32.h5.partial").unlink()
    prepare("imagenet", "train", photos / "imagenet", 32, out, workers=1, progress=False)
    with pytest.raises(GanFeaturesError, match="already exists"):
        prepare("imagenet", "train", photos / "imagenet", 32, out, workers=1, progress=False)
    with pytest.raises(GanFeaturesError, match="holds the 'train' split, not 'val'"):
        load_dataset("prepared", "val", out, 32)
    with pytest.raises(GanFeaturesError, match="holds 32 px images, not 64 px"):
        load_dataset("prepared", "train", out, 64)
    with pytest.raises(GanFeaturesError, match="does not exist: make it with `gan-features prepare"):
        load_dataset("prepared", "train", photos / "missing.h5", 32)
    with pytest.raises(GanFeaturesError, match="not a file made by `gan-features prepare`"):
        load_dataset("prepared", "train", photos / "imagenet" / "train" / "n01440764" / "n01440764_0.png", 32)


def test_prepare_then_extract_from_the_command_line(photos, capsys):
    out = photos / "train32.h5"
    assert main(["prepare", "--quiet", "--dataset", "imagenet", "--data-root", str(photos / "imagenet"),
                 "--out", str(out), "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    random_checkpoint("radford-svhn32", photos / "d.pt", seed=0)
    assert main(["extract", "--quiet", "--ckpt", str(photos / "d.pt"), "--dataset", "prepared", "--data-root",
                 str(out), "--out", str(photos / "f.h5")]) == 0, capsys.readouterr().err
    with FeatureStore(photos / "f.h5") as store:
        assert store.attrs["dataset"] == "imagenet" and len(store) == 14


def test_in_memory_batches_come_whole_and_equal_the_per_image_ones():
    """An in-memory dataset assembles each batch in one indexing operation (no per-image Python path);
    the batches are the ones torch's per-image path would give, in the same order."""
    import torch
    from torch.utils.data import DataLoader

    from gan_features.data import ArrayImageDataset, batch_collate

    rng = np.random.default_rng(0)
    data = ArrayImageDataset(rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8), np.arange(50) % 3, ["a", "b", "c"],
                             name="toy", split="train", source="test", image_size=8)
    calls = []
    per_image = type("PerImage", (), {"__len__": lambda self: len(data),
                                      "__getitem__": lambda self, i: calls.append(i) or data[i]})()
    loaders = [DataLoader(source, batch_size=16, shuffle=True, drop_last=True, collate_fn=batch_collate(source),
                          generator=torch.Generator().manual_seed(3)) for source in (data, per_image)]
    batched, single = list(loaders[0]), list(loaders[1])
    assert batch_collate(data) is not None and batch_collate(per_image) is None
    assert len(batched) == len(single) == 3 and len(calls) == 48
    for (images, labels), (images_1, labels_1) in zip(batched, single):
        assert torch.equal(images, images_1) and torch.equal(labels, labels_1)
