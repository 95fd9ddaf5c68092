"""The dataset readers on tiny files written in exactly the official on-disk formats."""
from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from gan_features.data import cifar, load_dataset, svhn
from gan_features.data.base import ArrayImageDataset
from gan_features.data.folders import load_folder, load_imagenet
from gan_features.errors import GanFeaturesError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OFFLINE_URL = "http://127.0.0.1:9/"  # the discard port: refused at once, no network needed


def error_of(call, *args, **kwargs) -> str:
    """The message of the GanFeaturesError ``call`` raises, checked to be one line."""
    with pytest.raises(GanFeaturesError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- CIFAR-10 writers, independent of the reader ------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Pickles like the official Python-2 files: bytes as str opcodes, numpy globals under ``module``."""
    dispatch = dict(pickle._Pickler.dispatch)
    numpy_module = "numpy.core"

    def save_bytes(self, obj):
        n = len(obj)
        opcode = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(opcode + obj)
        self.memoize(obj)
    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith(("numpy.core", "numpy._core")):
            module = self.numpy_module + module.split("core", 1)[1]
            self.write(pickle.GLOBAL + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)
    dispatch[type] = save_global


def py2_pickle(obj, path: Path, numpy_module: str = "numpy.core") -> bytes:
    buffer = io.BytesIO()
    pickler = Py2Pickler(buffer, protocol=2)
    pickler.numpy_module = numpy_module
    pickler.dump(obj)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def tiny_cifar(per_batch: int = 2, test_count: int = 3, seed: int = 0):
    """Random rows (N, 3072) and labels for five train batches and the test batch."""
    rng = np.random.default_rng(seed)
    batches = [(rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), rng.integers(0, 10, per_batch).tolist())
               for _ in range(5)]
    test = (rng.integers(0, 256, (test_count, 3072), dtype=np.uint8), rng.integers(0, 10, test_count).tolist())
    return batches, test


def write_cifar_python(folder: Path, batches, test, numpy_module: str = "numpy.core") -> list[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    raws = []
    for i, (data, labels) in enumerate([*batches, test]):
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        record = {b"batch_label": f"batch {name}".encode(), b"labels": labels, b"data": data,
                  b"filenames": [f"img_{i}_{k}.png".encode() for k in range(len(labels))]}
        raws.append(py2_pickle(record, folder / name, numpy_module))
    py2_pickle({b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": len(batches[0][1]),
                b"num_vis": 3072}, folder / "batches.meta", numpy_module)
    return raws


def write_cifar_binary(folder: Path, batches, test) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (data, labels) in enumerate([*batches, test]):
        name = f"data_batch_{i + 1}.bin" if i < 5 else "test_batch.bin"
        (folder / name).write_bytes(b"".join(bytes([label]) + row.tobytes() for row, label in zip(data, labels)))
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")  # the official file ends in blanks


def planar_pixels(rows: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) from official rows by the documented index c*1024 + h*32 + w."""
    c, h, w = np.indices((3, 32, 32))
    return rows[:, c * 1024 + h * 32 + w]


def check_cifar(ds, rows: np.ndarray, labels: list[int]) -> None:
    assert isinstance(ds, ArrayImageDataset)
    assert ds.classes == CLASSES
    assert ds.images.shape == (len(labels), 3, 32, 32)
    assert np.array_equal(ds.images.numpy(), planar_pixels(rows))
    assert ds.labels.tolist() == labels
    image, label = ds[1]
    assert image.dtype == torch.float32 and label == labels[1]
    assert torch.allclose(image, torch.from_numpy(planar_pixels(rows[1:2])[0]).float() / 127.5 - 1)


# --- CIFAR-10 python version --------------------------------------------------------------------

@pytest.mark.parametrize("numpy_module", ["numpy.core", "numpy._core"])
def test_cifar_python_train_is_the_five_batches_in_order(tmp_path, numpy_module):
    batches, test = tiny_cifar()
    raws = write_cifar_python(tmp_path / "cifar-10-batches-py", batches, test, numpy_module)
    # the test files really are laid out like the originals (numpy globals, no Python-3 bytes shim)
    assert f"c{numpy_module}.multiarray\n_reconstruct\n".encode() in raws[0]
    assert b"_codecs" not in raws[0]
    ds = load_dataset("cifar10", "train", root=tmp_path)
    check_cifar(ds, np.concatenate([d for d, _ in batches]), sum((labels for _, labels in batches), []))
    assert ds.name == "cifar10" and ds.split == "train" and "cifar-10-batches-py" in ds.source


def test_cifar_python_test_split_with_root_the_batches_folder(tmp_path):
    batches, test = tiny_cifar()
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_python(folder, batches, test)
    check_cifar(cifar.load_cifar10("test", root=str(folder)), *test)


def test_cifar_resizes_to_image_size(tmp_path):
    batches, test = tiny_cifar()
    write_cifar_python(tmp_path / "cifar-10-batches-py", batches, test)
    ds = cifar.load_cifar10("test", root=tmp_path, image_size=16)
    assert ds[0][0].shape == (3, 16, 16) and ds.image_size == 16


# --- CIFAR-10 binary version --------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_binary_version(tmp_path, split):
    batches, test = tiny_cifar()
    write_cifar_binary(tmp_path / "cifar-10-batches-bin", batches, test)
    ds = cifar.load_cifar10(split, root=tmp_path)
    if split == "train":
        check_cifar(ds, np.concatenate([d for d, _ in batches]), sum((labels for _, labels in batches), []))
    else:
        check_cifar(ds, *test)
    assert "cifar-10-batches-bin" in ds.source


def test_cifar_python_version_wins_over_binary(tmp_path):
    batches, test = tiny_cifar(seed=1)
    other_batches, other_test = tiny_cifar(seed=2)
    write_cifar_python(tmp_path / "cifar-10-batches-py", batches, test)
    write_cifar_binary(tmp_path / "cifar-10-batches-bin", other_batches, other_test)
    check_cifar(cifar.load_cifar10("test", root=tmp_path), *test)


def test_cifar_binary_truncated_record_is_refused(tmp_path):
    batches, test = tiny_cifar()
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar_binary(folder, batches, test)
    with open(folder / "test_batch.bin", "ab") as f:
        f.write(b"\x01\x02")
    assert "test_batch.bin" in error_of(cifar.load_cifar10, "test", root=tmp_path)


# --- the restricted unpickler -------------------------------------------------------------------

class RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsEval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload, refused", [
    (RunsShell, f"{os.system.__module__}.system"),
    (RunsEval, "__builtin__.eval"),  # protocol 2 writes Python 2's name for builtins
    (None, "numpy.load"),  # an allowed module does not allow its every name
])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, payload, refused):
    batches, test = tiny_cifar()
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_python(folder, batches, test)
    marker = tmp_path / "pwned"
    if payload is None:
        raw = b"\x80\x02cnumpy\nload\nq\x00X\x05\x00\x00\x00/etc/q\x01\x85R."
    else:  # str keys: bytes keys would make Python 3 emit a _codecs global, refused before the payload
        raw = pickle.dumps({"data": payload(marker), "labels": [0]}, protocol=2)
    (folder / "test_batch").write_bytes(raw)
    message = error_of(cifar.load_cifar10, "test", root=tmp_path)
    assert refused in message and str(folder / "test_batch") in message
    assert not marker.exists()


def test_damaged_pickle_is_a_clear_error(tmp_path):
    batches, test = tiny_cifar()
    folder = tmp_path / "cifar-10-batches-py"
    raws = write_cifar_python(folder, batches, test)
    (folder / "test_batch").write_bytes(raws[-1][: len(raws[-1]) // 2])
    assert "test_batch" in error_of(cifar.load_cifar10, "test", root=tmp_path)


# --- CIFAR-10 errors and download ---------------------------------------------------------------

def test_cifar_missing_data_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GAN_FEATURES_DATA", raising=False)
    assert "GAN_FEATURES_DATA" in error_of(load_dataset, "cifar10")
    message = error_of(cifar.load_cifar10, "train", root=tmp_path)
    assert "cifar-10-batches-py" in message and str(tmp_path) in message and "--download" in message
    batches, test = tiny_cifar()
    write_cifar_python(tmp_path / "cifar-10-batches-py", batches, test)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert "data_batch_3" in error_of(cifar.load_cifar10, "train", root=tmp_path)
    assert "train, test" in error_of(cifar.load_cifar10, "validation", root=tmp_path)


def test_cifar_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_URL", OFFLINE_URL + "cifar-10-python.tar.gz")
    message = error_of(cifar.load_cifar10, "train", root=tmp_path / "data", download=True)
    assert "could not download" in message and OFFLINE_URL in message
    assert list((tmp_path / "data").iterdir()) == []  # no half-written file left behind


def official_like_tarball(tmp_path: Path, test) -> tuple[Path, str]:
    """A tar.gz shaped like cifar-10-python.tar.gz (one cifar-10-batches-py/ folder) and its md5."""
    batches, _ = tiny_cifar()
    write_cifar_python(tmp_path / "src" / "cifar-10-batches-py", batches, test)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_cifar_download_verifies_md5_and_extracts(tmp_path, monkeypatch):
    _, test = tiny_cifar()
    archive, md5 = official_like_tarball(tmp_path, test)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())  # file:// exercises the real fetch path
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5)
    root = tmp_path / "data"
    check_cifar(cifar.load_cifar10("test", root=root, download=True), *test)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_cifar_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    _, test = tiny_cifar()
    archive, _ = official_like_tarball(tmp_path, test)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "0" * 32)
    root = tmp_path / "data"
    assert "md5" in error_of(cifar.load_cifar10, "test", root=root, download=True)
    assert list(root.iterdir()) == []


# --- SVHN ---------------------------------------------------------------------------------------

def write_svhn(path: Path, n: int, label_dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(label_dtype).reshape(n, 1)  # 1..10, 10 meaning digit 0
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


@pytest.mark.parametrize("label_dtype", [np.uint8, np.float64])
def test_svhn_official_mat_layout(tmp_path, label_dtype):
    x, y = write_svhn(tmp_path / "train_32x32.mat", 12, label_dtype)
    ds = svhn.load_svhn("train", root=tmp_path)
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert ds.images.shape == (12, 3, 32, 32) and ds.images.is_contiguous()
    n, c, h, w = np.indices(ds.images.shape)
    assert np.array_equal(ds.images.numpy(), x[h, w, c, n])
    assert ds[9][1] == 0


@pytest.mark.parametrize("split", ["test", "extra"])
def test_svhn_split_files(tmp_path, split):
    write_svhn(tmp_path / f"{split}_32x32.mat", 3, np.uint8, seed=5)
    ds = load_dataset("svhn", split, root=tmp_path, image_size=16)
    assert len(ds) == 3 and ds.split == split and ds[0][0].shape == (3, 16, 16)


def test_svhn_errors(tmp_path, monkeypatch):
    assert "train, test, extra" in error_of(svhn.load_svhn, "valid", root=tmp_path)
    message = error_of(svhn.load_svhn, "test", root=tmp_path)
    assert "test_32x32.mat" in message and str(tmp_path) in message and "--download" in message
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                    "y": np.array([[3], [11]], np.uint8)})
    assert "1..10" in error_of(svhn.load_svhn, "train", root=tmp_path)
    monkeypatch.delenv("GAN_FEATURES_DATA", raising=False)
    assert "GAN_FEATURES_DATA" in error_of(load_dataset, "svhn")


def test_svhn_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(svhn, "URL_BASE", OFFLINE_URL)
    message = error_of(svhn.load_svhn, "test", root=tmp_path, download=True)
    assert "could not download" in message and "test_32x32.mat" in message
    assert list(tmp_path.iterdir()) == []


# --- image folders and ImageNet -----------------------------------------------------------------

def save_image(path: Path, pixels: np.ndarray) -> None:
    """Save an (H, W, 3) or (H, W) uint8 array; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def random_pixels(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_wide_and_tall_images_are_centre_cropped_on_the_long_side(tmp_path):
    wide, tall = random_pixels(20, 40, 0), random_pixels(40, 20, 1)
    save_image(tmp_path / "a" / "wide.png", wide)
    save_image(tmp_path / "b" / "tall.png", tall)
    ds = load_folder(root=tmp_path, image_size=20)  # short side already 20: a pure crop, exact pixels
    expected = [wide[:, 10:30], tall[10:30, :]]
    for i, pixels in enumerate(expected):
        assert torch.equal(ds[i][0], torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 127.5 - 1)


def test_short_side_resize_then_centre_crop_keeps_the_middle_third(tmp_path):
    pixels = np.zeros((32, 96, 3), np.uint8)  # H 32, W 96: red | green | blue thirds of 32 columns
    pixels[:, :32, 0] = pixels[:, 32:64, 1] = pixels[:, 64:, 2] = 255
    save_image(tmp_path / "only" / "thirds.png", pixels)
    image, _ = load_folder(root=tmp_path, image_size=16)[0]  # resized to 48x16, then the middle 16 columns
    assert image.shape == (3, 16, 16)
    green = torch.tensor([-1.0, 1.0, -1.0])[:, None, None]
    assert torch.equal(image[:, :, 2:14], green.expand(3, 16, 12))  # away from the antialiased seams
    assert image[0, :, 0].gt(-1).all() and image[2, :, -1].gt(-1).all()  # the seams do blend a little


def make_split_tree(root: Path) -> None:
    save_image(root / "train" / "dog" / "b.png", random_pixels(30, 50, 2))
    save_image(root / "train" / "dog" / "nested" / "c.JPEG", random_pixels(40, 36, 3))
    save_image(root / "train" / "cat" / "a.jpg", random_pixels(33, 33, 4))
    save_image(root / "train" / "cat" / "gray.png", np.full((24, 40), 200, np.uint8))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    save_image(root / "test" / "cat" / "t.png", random_pixels(32, 32, 5))
    save_image(root / "test" / "dog" / "u.png", random_pixels(32, 32, 6))


def test_folder_follows_imagefolder_conventions(tmp_path):
    make_split_tree(tmp_path)
    ds = load_dataset("folder", "train", root=tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert [Path(p).name for p, _ in ds.samples] == ["a.jpg", "gray.png", "b.png", "c.JPEG"]
    assert ds.labels.tolist() == [0, 0, 1, 1] and len(ds) == 4
    for i in range(len(ds)):
        image, _ = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
    gray, _ = ds[1]
    assert torch.allclose(gray, torch.full((3, 32, 32), 200 / 127.5 - 1))
    assert len(load_folder("test", root=tmp_path)) == 2
    flat = load_folder("anything", root=tmp_path / "train")  # no split folder: root holds the classes
    assert flat.classes == ["cat", "dog"] and len(flat) == 4


def test_materialize_and_dataloader_workers_match_lazy_items(tmp_path):
    make_split_tree(tmp_path)
    ds = load_folder("train", root=tmp_path, image_size=24)
    lazy = torch.stack([ds[i][0] for i in range(len(ds))])
    memory = ds.materialize(progress=False)
    assert isinstance(memory, ArrayImageDataset) and memory.classes == ds.classes
    assert torch.equal(torch.stack([memory[i][0] for i in range(len(memory))]), lazy)
    assert memory.labels.tolist() == ds.labels.tolist() and memory.describe() == ds.describe()
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)  # items must pickle and reopen
    images, labels = next(iter(loader))
    assert torch.equal(images, lazy) and labels.tolist() == ds.labels.tolist()


def test_folder_errors(tmp_path, monkeypatch):
    make_split_tree(tmp_path / "tree")
    assert "'val'" in error_of(load_folder, "val", root=tmp_path / "tree")
    (tmp_path / "empty").mkdir()
    assert str(tmp_path / "empty") in error_of(load_folder, root=tmp_path / "empty")
    (tmp_path / "no_images" / "cls").mkdir(parents=True)
    assert "cls" in error_of(load_folder, root=tmp_path / "no_images")
    assert str(tmp_path / "missing") in error_of(load_folder, root=tmp_path / "missing")
    assert "cannot be downloaded" in error_of(load_folder, root=tmp_path / "tree", download=True)
    monkeypatch.delenv("GAN_FEATURES_DATA", raising=False)
    assert "GAN_FEATURES_DATA" in error_of(load_dataset, "folder")


def test_imagenet_layout(tmp_path):
    for split, seed in (("train", 0), ("val", 10)):
        for k, wnid in enumerate(["n01440764", "n02102040"]):
            save_image(tmp_path / split / wnid / f"{wnid}_{k}.JPEG", random_pixels(48, 64, seed + k))
    train, val = load_imagenet("train", root=tmp_path), load_dataset("imagenet", "val", root=tmp_path)
    assert train.classes == val.classes == ["n01440764", "n02102040"]
    assert train.labels.tolist() == val.labels.tolist() == [0, 1]
    assert train.name == "imagenet" and val.split == "val" and train[0][0].shape == (3, 32, 32)


def test_imagenet_errors(tmp_path):
    save_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", random_pixels(40, 50, 0))
    assert "wnid" in error_of(load_imagenet, "val", root=tmp_path)
    assert str(tmp_path / "train") in error_of(load_imagenet, "train", root=tmp_path)
    assert "train, val" in error_of(load_imagenet, "test", root=tmp_path)
    assert "image-net.org" in error_of(load_imagenet, "train", root=tmp_path, download=True)
    assert "GAN_FEATURES_DATA" in error_of(load_imagenet, "train", root=None)


# --- damaged images and decompression bombs in a folder dataset ---------------------------------

def png_declaring(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` black pixels, written chunk by chunk: the
    zlib stream of zeros is ~1000x smaller than the pixels (20000 x 20000: ~50 KB of file for 400
    megapixels, 1.2 GB once decoded as RGB)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits of one row
    idat = b"".join(compressor.compress(row * min(1000, height - start)) for start in range(0, height, 1000))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat + compressor.flush())
            + chunk(b"IEND", b""))


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def bad_image_bytes(kind: str) -> tuple[str, bytes]:
    """(file name, content) of one unreadable image file."""
    png, jpeg = encoded(random_pixels(64, 64, 0), "PNG"), encoded(random_pixels(64, 64, 0), "JPEG")
    if kind == "bomb":
        return "bomb.png", png_declaring(20000, 20000)  # above PIL's error level (2 x ~89.5 megapixels)
    if kind == "bomb-warning-level":
        return "big.png", png_declaring(12000, 10000)  # 120 MP: above PIL's warning level, below its error level
    if kind == "truncated-png":
        return "cut.png", png[: len(png) // 2]
    if kind == "truncated-jpeg":
        return "cut.jpg", jpeg[: len(jpeg) // 2]
    if kind == "corrupt-png":  # header intact, compressed pixel data overwritten
        return "corrupt.png", png[:200] + bytes(60) + png[260:]
    if kind == "text-as-jpeg":
        return "notes.jpg", b"not an image, whatever the extension says\n"
    if kind == "empty":
        return "empty.png", b""
    if kind == "png-header-only":
        return "header.png", png[:40]
    raise ValueError(kind)


BAD_IMAGES = ["bomb", "bomb-warning-level", "truncated-png", "truncated-jpeg", "corrupt-png", "text-as-jpeg", "empty",
              "png-header-only"]


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_unreadable_images_are_one_line_errors_naming_the_file(tmp_path, monkeypatch, kind):
    import warnings

    from PIL import ImageFile

    name, content = bad_image_bytes(kind)
    save_image(tmp_path / "good" / "a.png", random_pixels(40, 40, 1))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / name).write_bytes(content)
    assert len(content) < 100_000  # a bomb is cheap to make and to store...
    ds = load_folder(root=tmp_path)
    assert ds.classes == ["bad", "good"] and ds[1][0].shape == (3, 32, 32)  # the good image still loads
    if kind.startswith("bomb"):  # ...and must be refused from its header, without decoding any pixel
        load = ImageFile.ImageFile.load
        monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded the pixels of a bomb")
                            if self.size[0] * self.size[1] > 10**6 else load(self))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        message = error_of(ds.__getitem__, 0)
        assert error_of(ds.materialize, progress=False) == message
    assert str(tmp_path / "bad" / name) in message
    if kind.startswith("bomb"):
        assert "remove it from the dataset" in message and ("megapixels" in message or "pixels" in message)


def test_bomb_is_refused_even_when_pil_checks_are_switched_off(tmp_path, monkeypatch):
    """Users switch PIL's check off (Image.MAX_IMAGE_PIXELS = None) for big scans; the reader's own limit holds."""
    from PIL import ImageFile

    from gan_features.data import folders

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded the pixels of a bomb"))
    path = tmp_path / "cls" / "bomb.png"
    path.parent.mkdir()
    path.write_bytes(png_declaring(20000, 20000))
    message = error_of(load_folder(root=tmp_path).__getitem__, 0)
    assert f"image {path} declares 20000 x 20000 pixels (400 megapixels)" in message
    assert f"{folders.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels" in message


def test_images_up_to_the_limit_are_read(tmp_path, monkeypatch):
    from gan_features.data import folders

    monkeypatch.setattr(folders, "MAX_IMAGE_PIXELS", 40 * 30)
    save_image(tmp_path / "cls" / "at_limit.png", random_pixels(30, 40, 0))
    save_image(tmp_path / "cls" / "over.png", random_pixels(31, 40, 0))
    ds = load_folder(root=tmp_path, image_size=16)
    assert ds[0][0].shape == (3, 16, 16)
    assert "over.png declares 40 x 31 pixels" in error_of(ds.__getitem__, 1)


def test_a_bad_image_fails_the_cli_in_one_line_and_writes_nothing(tmp_path, capsys):
    from gan_features.cli import main
    from gan_features.train import random_checkpoint

    for split in ("train", "test"):
        save_image(tmp_path / "imgs" / split / "cls" / "a.png", random_pixels(40, 40, 1))
    bomb = tmp_path / "imgs" / "test" / "cls" / "b.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    random_checkpoint("radford-svhn32", tmp_path / "d.pt")
    # statistics on the good train split; the bomb is met while rows are being written to f.h5.partial
    code = main(["extract", "--quiet", "--ckpt", str(tmp_path / "d.pt"), "--dataset", "folder", "--data-root",
                 str(tmp_path / "imgs"), "--split", "test", "--batch-size", "1", "--device", "cpu",
                 "--out", str(tmp_path / "f.h5")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(bomb) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt", "imgs"]  # no store, .partial or .lock


# --- stores record the dataset's class names ----------------------------------------------------

def _store_of(dataset, out: Path):
    from gan_features.checkpoints import Checkpoint
    from gan_features.representations import DiscriminatorFeatures, extract_to_store
    from gan_features.models import create_models, get_architecture
    from gan_features.store import FeatureStore

    arch = get_architecture("radford-svhn32")
    d, g = create_models(arch, seed=0)
    checkpoint = Checkpoint(arch, d, g, {}, None, out.with_suffix(".pt"), "abc123", has_running_stats=False)
    extract_to_store(DiscriminatorFeatures(checkpoint).fit(dataset, progress=False), dataset, out, progress=False)
    return FeatureStore(out)


def test_stores_record_class_names_of_cifar10(tmp_path):
    import h5py

    batches, test = tiny_cifar()
    write_cifar_python(tmp_path / "cifar-10-batches-py", batches, test)
    with _store_of(cifar.load_cifar10("test", root=str(tmp_path)), tmp_path / "f.h5") as store:
        assert store.attrs["class_names"] == CLASSES  # from batches.meta, index = label
        assert store.attrs["num_classes"] == 10
    with h5py.File(tmp_path / "f.h5", "r") as raw:  # a JSON list of strings, readable without this package
        assert json.loads(raw.attrs["class_names"]) == CLASSES


def test_stores_record_class_names_of_folders_and_digits(tmp_path):
    for wnid, seed in (("n02102040", 0), ("n01440764", 1)):
        save_image(tmp_path / "imagenet" / "val" / wnid / f"{wnid}_1.JPEG", random_pixels(40, 48, seed))
    make_split_tree(tmp_path / "tree")
    with _store_of(load_imagenet("val", root=tmp_path / "imagenet"), tmp_path / "i.h5") as store:
        assert store.attrs["class_names"] == ["n01440764", "n02102040"]
        assert store.labels.tolist() == [0, 1]
    with _store_of(load_folder("test", root=tmp_path / "tree"), tmp_path / "t.h5") as store:
        assert store.attrs["class_names"] == ["cat", "dog"]
    digits = load_dataset("digits", "test")
    small = ArrayImageDataset(digits.images.numpy()[:12], digits.labels[:12], digits.classes, name="digits",
                              split="test", source="digits", image_size=32)
    with _store_of(small, tmp_path / "d.h5") as store:
        assert store.attrs["class_names"] == [str(d) for d in range(10)]


def test_too_many_class_names_for_one_attribute_are_left_out(tmp_path):
    classes = [f"class-with-a-long-name-{i:05d}" for i in range(3000)]  # ~100 KB of JSON: over HDF5 1.x's limit
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    data = ArrayImageDataset(images, np.arange(4), classes, name="many", split="train", source="x", image_size=32)
    with _store_of(data, tmp_path / "f.h5") as store:  # the store is written, without the names
        assert "class_names" not in store.attrs and store.attrs["num_classes"] == 3000
