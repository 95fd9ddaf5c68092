"""Prepared datasets: a split decoded once into one uint8 HDF5 array, read back whole into memory.

At 32x32 a GPU trains far faster than a CPU decodes full-size JPEGs, so an ImageNet run that decodes
every image every epoch is paced by its data path. :func:`prepare` decodes each image once, exactly
as the folder readers do (:func:`.folders.load_image`: RGB, short side resized, centre crop), in
parallel worker processes, into ``images`` (N, 3, size, size) uint8 with ``labels`` (N,) int64, the
class names and the provenance (3.9 GB for ImageNet-1k's 1.28M training images at 32 px).

It is resumable: images are decoded in chunks of :data:`CHUNK_IMAGES`, and each finished chunk is
marked in the file (``done``), so a run stopped at any point continues where it was; the file gets
its final name only when every chunk is in (until then it is ``<out>.partial``). A partial file of
another dataset, split, size or image list is refused rather than mixed in.

:func:`load_prepared` (the ``prepared`` reader: ``--dataset prepared --data-root FILE.h5``) holds the
array in memory and feeds batches without a per-image decode; features extracted from it equal those
extracted from the folder it was prepared from, bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ..errors import GanFeaturesError, one_line
from ..output import check_output, disk_error, output_lock, partial_path
from ..provenance import provenance
from .base import ArrayImageDataset

FORMAT = "gan-features prepared images, version 1"
CHUNK_IMAGES = 1024  # images written and marked done together (3 MB at 32 px)
JOB_IMAGES = 64  # images one worker decodes at a time


def prepare(name: str, split: str, root: str | os.PathLike | None, size: int, out: str | os.PathLike, *,
            workers: int | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Decode split ``split`` of dataset ``name`` (read from ``root``) once, at ``size`` px, into the
    HDF5 file ``out``; returns its path. ``workers``: decoding processes (default: every core)."""
    from . import load_dataset

    out = check_output(out, overwrite, example="imagenet32-train.h5")
    dataset = load_dataset(name, split, root, size)
    samples = getattr(dataset, "samples", None)  # (path, label) of a folder dataset; None: held in memory
    identity = {"format": FORMAT, **dataset.describe(), "image_size": size,
                "images_sha256": _images_sha256(dataset, samples)}
    partial = partial_path(out)
    with output_lock(out):
        try:
            with _open_partial(partial, identity, dataset, size) as file:
                _decode_missing(file, dataset, samples, size, workers, progress)
                file.attrs["provenance"] = json.dumps(provenance(), sort_keys=True)
            os.replace(partial, out)
        except OSError as error:
            raise disk_error(error, out) from None
    return out


def _images_sha256(dataset, samples) -> str:
    """What identifies the images: the list of files (relative to the root) and labels, or for a
    dataset held in memory its pixels."""
    digest = hashlib.sha256()
    if samples is not None:
        root = Path(dataset.source)
        for path, label in samples:
            digest.update(f"{Path(path).relative_to(root)}\t{label}\n".encode())
    else:
        digest.update(np.ascontiguousarray(dataset.images.numpy()).tobytes())
    return digest.hexdigest()


class _open_partial:
    """The partial file, created or, when it holds the same images, reopened to continue."""

    def __init__(self, partial: Path, identity: dict, dataset, size: int):
        self.partial, self.identity, self.dataset, self.size = partial, identity, dataset, size

    def __enter__(self) -> h5py.File:
        if self.partial.exists():
            try:
                file = h5py.File(self.partial, "r+")
            except OSError:
                file = None  # not an HDF5 file (a crash while creating it): start again
            if file is not None:
                if file.attrs.get("identity") == json.dumps(self.identity, sort_keys=True):
                    self.file = file
                    return file
                file.close()
                raise GanFeaturesError(f"{self.partial} is a partial preparation of other images (another dataset, "
                                       f"split, size or file list): remove it, or prepare into another --out")
            self.partial.unlink()
        n, chunks = len(self.dataset), -(-len(self.dataset) // CHUNK_IMAGES)
        file = h5py.File(self.partial, "w")
        file.attrs["identity"] = json.dumps(self.identity, sort_keys=True)
        file.attrs["class_names"] = json.dumps([str(name) for name in self.dataset.classes])
        for key, value in self.identity.items():
            file.attrs[key] = value if isinstance(value, (int, str)) else json.dumps(value)
        file.create_dataset("images", (n, 3, self.size, self.size), dtype=np.uint8,
                            chunks=(min(n, CHUNK_IMAGES), 3, self.size, self.size))
        file.create_dataset("labels", data=np.asarray(self.dataset.labels, dtype=np.int64))
        file.create_dataset("done", (chunks,), dtype=bool)
        self.file = file
        return file

    def __exit__(self, *exc) -> None:
        self.file.close()


def _decode_missing(file: h5py.File, dataset, samples, size: int, workers: int | None, progress: bool) -> None:
    """Decode and write every chunk not yet marked done, marking each as it lands."""
    done = file["done"][:]
    todo = [index for index in range(len(done)) if not done[index]]
    bar = tqdm(total=len(dataset), initial=len(dataset) - sum(_chunk_length(i, len(dataset)) for i in todo),
               desc=f"preparing {dataset.name} {dataset.split}", unit="img", disable=not progress)
    with bar:
        if samples is None:  # already decoded in memory: a copy
            for index in todo:
                lo, hi = index * CHUNK_IMAGES, min((index + 1) * CHUNK_IMAGES, len(dataset))
                _write_chunk(file, index, dataset.images[lo:hi].numpy())
                bar.update(hi - lo)
            return
        paths = [path for path, _ in samples]
        # Decoding jobs are smaller than chunks, so that the workers run out of work together (a few chunks
        # shared among workers left one of them idle for the last): each chunk is written once all its jobs are in.
        jobs = []  # (chunk index, (paths, size))
        for index in todo:
            hi = index * CHUNK_IMAGES + _chunk_length(index, len(paths))
            jobs += [(index, (paths[lo:min(lo + JOB_IMAGES, hi)], size))
                     for lo in range(index * CHUNK_IMAGES, hi, JOB_IMAGES)]
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
        with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            decoded = (pool.map if pool else map)(_decode_images, [job for _, job in jobs])  # in order
            pending: list[np.ndarray] = []
            for (index, _), images in zip(jobs, decoded):
                pending.append(images)
                bar.update(len(images))
                if sum(map(len, pending)) == _chunk_length(index, len(paths)):
                    _write_chunk(file, index, np.concatenate(pending))
                    pending = []


def _chunk_length(index: int, total: int) -> int:
    return min((index + 1) * CHUNK_IMAGES, total) - index * CHUNK_IMAGES


def _decode_images(job: tuple[list[str], int]) -> np.ndarray:
    from .folders import load_image

    paths, size = job
    return np.stack([load_image(path, size) for path in paths])


def _write_chunk(file: h5py.File, index: int, images: np.ndarray) -> None:
    lo = index * CHUNK_IMAGES
    file["images"][lo:lo + len(images)] = images
    file.flush()  # the images are on disk before the chunk is marked done
    file["done"][index] = True
    file.flush()


def load_prepared(split: str = "train", root: str | os.PathLike | None = None, image_size: int | None = None,
                  download: bool = False) -> ArrayImageDataset:
    """The ``prepared`` reader: ``root`` is a file made by :func:`prepare`; its images are read into memory.
    ``split`` and ``image_size`` must be the file's (a prepared file holds one split at one size)."""
    if download:
        raise GanFeaturesError("a prepared file is made by `gan-features prepare`, not downloaded")
    if root is None:
        raise GanFeaturesError("the prepared reader needs the file: pass --data-root FILE.h5 (made by "
                               "`gan-features prepare`)")
    path = Path(root).expanduser()
    if not path.is_file():
        raise GanFeaturesError(f"prepared file {path} does not exist: make it with `gan-features prepare --out {path}`")
    try:
        with h5py.File(path, "r") as file:
            attrs = dict(file.attrs)
            if attrs.get("format") != FORMAT:
                raise GanFeaturesError(f"{path} is not a file made by `gan-features prepare`")
            images, labels = file["images"][:], file["labels"][:]
    except (OSError, KeyError) as error:
        raise GanFeaturesError(f"{path} is not a file made by `gan-features prepare` ({one_line(error)})") from None
    if attrs["split"] != split:
        raise GanFeaturesError(f"{path} holds the {attrs['split']!r} split, not {split!r}: pass --split "
                               f"{attrs['split']} or prepare the {split!r} split")
    if image_size is not None and image_size != attrs["image_size"]:
        raise GanFeaturesError(f"{path} holds {attrs['image_size']} px images, not {image_size} px: prepare it again "
                               f"with --size {image_size}")
    return ArrayImageDataset(images, labels, json.loads(attrs["class_names"]), name=attrs["dataset"], split=split,
                             source=attrs["source"], image_size=int(attrs["image_size"]))
