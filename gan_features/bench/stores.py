"""Each representation's train and test feature stores in the bench's cache, made once and reused.

A store is reused when its recorded attributes say it holds the same features (the representation's
identity and the dataset's description); otherwise it is made again through
:func:`gan_features.representations.extract_to_store`. The wall times of making it are kept beside
it (``<store>.json``), so a reused store still reports them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoints import load_checkpoint
from ..data import ArrayImageDataset
from ..errors import GanFeaturesError
from ..layers import BlockSet, block_view
from ..output import write_json
from ..radford import SOURCE as RADFORD_SOURCE
from ..representations import (
    DiscriminatorFeatures,
    FeatureSpec,
    KMeansFeatures,
    PixelFeatures,
    Representation,
    extract_to_store,
    standardize_stores,
)
from ..representations.kmeans import STANDARDIZE_EPS
from ..store import FeatureStore
from .config import checkpoint_layers


@dataclass(frozen=True)
class Features:
    """One representation's train and test stores, and how they were made (CSV columns).

    ``blocks``: only these conv blocks' columns of the stores are measured (:meth:`for_blocks`);
    ``held``: the (train, test) stores in memory (:class:`HeldStores`), read instead of the files."""

    label: str
    kind: str
    train_store: Path
    test_store: Path
    dimension: int
    feature_units: int | None  # as the paper counts them: the most maps (or centroids) of one layer
    info: dict[str, Any]
    blocks: BlockSet | None = None
    held: "HeldStores | None" = field(default=None, repr=False, compare=False)

    @property
    def title(self) -> str:
        """The label, and the block set when only some blocks are measured (progress messages)."""
        return self.label if self.blocks is None else f"{self.label} [{self.blocks.name}]"

    def for_blocks(self, blocks: BlockSet) -> "Features":
        """These features restricted to ``blocks``; when the blocks fill every column, the stores are
        measured whole (the same measurement, and cached row, as the whole table's)."""
        if blocks.dimension == self.dimension:
            return self
        info = {**self.info, "layers": ",".join(map(str, blocks.layers))}
        return dataclasses.replace(self, dimension=blocks.dimension, feature_units=blocks.units, info=info,
                                   blocks=blocks)

    def holding(self) -> "Features":
        """These features, their stores read into memory when first measured and kept for every later
        measurement of them and of their block sets (:class:`HeldStores`)."""
        return dataclasses.replace(self, held=HeldStores(self.train_store, self.test_store))

    @contextmanager
    def opened(self) -> Iterator[tuple[FeatureStore, FeatureStore]]:
        """The (train, test) stores, open (or held in memory); column views of :attr:`blocks` when set."""
        with contextlib.ExitStack() as stack:
            held = self.held.stores() if self.held is not None else None
            train, test = held or (stack.enter_context(FeatureStore(self.train_store)),
                                   stack.enter_context(FeatureStore(self.test_store)))
            if self.blocks is None:
                yield train, test
            else:
                yield block_view(train, self.blocks), block_view(test, self.blocks)


class HeldStores:
    """A representation's (train, test) stores, read into memory when first asked for
    (:meth:`FeatureStore.in_memory`) and kept: its protocols, k-NN probe and block sets then read
    each file once. Re-reading is what it saves: a full-scale training store is 5.7 GB, read from
    disk at ~180 MB/s through HDF5 (measured on a 2-core EPYC VM) whenever the page cache lost it to the fits'
    own matrices, and a column view of a file reads every column of its rows. Pairs larger than
    :data:`HOLD_MAX_RAM_FRACTION` of the machine's memory are read from the files every time
    (:meth:`stores` returns None): the fits need room for their own copies."""

    def __init__(self, train: Path, test: Path):
        self._paths, self._held = (train, test), None

    def stores(self) -> tuple[FeatureStore, FeatureStore] | None:
        if self._held is None:
            fits = sum(Path(path).stat().st_size for path in self._paths) <= HOLD_MAX_RAM_FRACTION * physical_memory()
            self._held = tuple(_read_into_memory(path) for path in self._paths) if fits else ()
        return self._held or None


HOLD_MAX_RAM_FRACTION = 0.35  # 8.4 GB of 24 GiB: a full-scale 28,672-d pair (6.9 GB) is held


def physical_memory() -> int:
    """The machine's RAM in bytes (0 where the OS does not say: nothing is held)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _read_into_memory(path: Path) -> FeatureStore:
    with FeatureStore(path) as store:
        return store.in_memory()


class NotMeasured(Exception):
    """A representation's stores are not there and the run may not make them (``saved_only``)."""

    def __init__(self, label: str, kind: str):
        super().__init__(label)
        self.label, self.kind = label, kind


@dataclass
class Recipe:
    """How the bench makes one representation's stores.

    ``tag`` names its files; ``identity``: the store attributes that must match for a store to be
    reused (the dataset's description is added); ``per_precision``: the extraction precision is part of
    the file name; ``together``: both splits come from one fit, so they are reused or made together.
    """

    label: str
    kind: str
    representation: Representation
    tag: str
    identity: dict[str, Any]
    per_precision: bool = True
    together: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class FeatureCache:
    """Feature stores under one directory, reused when their recorded provenance matches.

    ``read_only``: nothing is made; a representation whose stores are missing raises :class:`NotMeasured`.
    """

    def __init__(self, directory: Path, scale: str, precision: str, progress: bool, read_only: bool = False):
        self.directory, self.scale, self.precision, self.progress = directory, scale, precision, progress
        self.read_only = read_only

    def path(self, tag: str, dataset: ArrayImageDataset, precision: bool = True) -> Path:
        suffix = f"_{self.precision}" if precision else ""
        return self.directory / f"{tag}_{dataset.name}-{self.scale}_{dataset.split}{suffix}.h5"

    def matches(self, path: Path, expected: dict[str, Any]) -> bool:
        """True when ``path`` is a complete store whose attributes agree with ``expected``."""
        if not path.is_file():
            return False
        try:
            with FeatureStore(path) as store:
                attrs = store.attrs
        except GanFeaturesError:
            return False
        differing = [key for key, value in expected.items() if canonical(attrs.get(key)) != canonical(value)]
        if differing:
            say(self.progress, f"{path.name} was made differently ({', '.join(differing)}): "
                               + ("not used" if self.read_only else "making it again"))
        return not differing

    @staticmethod
    def timing(path: Path) -> dict[str, Any]:
        return read_json(path.with_name(path.name + ".json")) or {}

    @staticmethod
    def record_timing(path: Path, timing: dict[str, Any]) -> None:
        """Wall times of a store's making, beside it, so a cached store still reports them."""
        write_json(path.with_name(path.name + ".json"), timing)

    def stores(self, recipe: Recipe, train: ArrayImageDataset, test: ArrayImageDataset
               ) -> tuple[dict[str, Path], list[str]]:
        """The recipe's store of each split ({split: path}), made where they cannot be reused, and the
        splits that were reused."""
        stores = {data.split: self.path(recipe.tag, data, recipe.per_precision) for data in (train, test)}
        reusable = {data.split: self.matches(stores[data.split], {**recipe.identity, **data.describe()})
                    for data in (train, test)}
        if recipe.together and not (all(reusable.values()) and _one_fit(stores["train"], stores["test"])):
            reusable = {split: False for split in reusable}
        todo = [data for data in (train, test) if not reusable[data.split]]
        if todo and self.read_only:
            raise NotMeasured(recipe.label, recipe.kind)
        if todo:
            say(self.progress, f"{recipe.label}: making {' and '.join(data.split for data in todo)} features")
            started = time.perf_counter()
            recipe.representation.fit(train, progress=self.progress)
            prepare_s = time.perf_counter() - started
            for data in todo:
                started = time.perf_counter()
                extract_to_store(recipe.representation, data, stores[data.split], overwrite=True,
                                 progress=self.progress)
                seconds = time.perf_counter() - started
                self.record_timing(stores[data.split], {
                    "prepare_s": prepare_s, "extract_s": seconds, "images": len(data),
                    "images_per_s": len(data) / seconds,
                    "device": str(recipe.representation.device), "precision": recipe.representation.precision})
        return stores, [split for split, reused in reusable.items() if reused]

    def features(self, recipe: Recipe, train: ArrayImageDataset, test: ArrayImageDataset) -> Features:
        """:class:`Features` of the recipe's stores (made if needed)."""
        stores, cached = self.stores(recipe, train, test)
        info = {**recipe.info, **self.timing_columns(stores, cached)}
        return Features(recipe.label, recipe.kind, stores["train"], stores["test"], store_dimension(stores["train"]),
                        recipe.representation.feature_units, info)

    def timing_columns(self, stores: dict[str, Path], cached: list[str]) -> dict[str, Any]:
        train_timing, test_timing = self.timing(stores["train"]), self.timing(stores["test"])
        return {"features_cached": "+".join(cached) or "no", "prepare_s": train_timing.get("prepare_s"),
                "extract_train_s": train_timing.get("extract_s"), "extract_test_s": test_timing.get("extract_s"),
                "extract_images_per_s": train_timing.get("images_per_s")}


# ------------------------------------------------------------------------------- the three kinds
IMPORTED_KIND = "imported authors' discriminator"  # weights the paper's authors released (gan-features import-radford)


def discriminator_features(label: str, kind: str, path: str | os.PathLike, train: ArrayImageDataset,
                           test: ArrayImageDataset, cache: FeatureCache, device, batch_size: int = 256) -> Features:
    """Discriminator features of both splits, batch-norm statistics recomputed once over ``train``.

    ``path`` may end in ``@layers=0,1,2,3`` (:func:`~.config.checkpoint_layers`): those blocks only. A
    checkpoint imported from the paper's authors is of that kind whatever ``kind`` says."""
    path, layers = checkpoint_layers(os.fspath(path))
    if cache.read_only and not Path(path).is_file():  # a random baseline not made yet
        raise NotMeasured(label, kind)
    checkpoint = load_checkpoint(path)
    if checkpoint.provenance.get("source") == RADFORD_SOURCE:
        kind = IMPORTED_KIND
    spec = FeatureSpec(layers=layers)  # blocks max-pooled to 4x4; batch-norm statistics recomputed: the paper's
    representation = DiscriminatorFeatures(checkpoint, spec, precision=cache.precision, device=device,
                                           batch_size=batch_size)
    identity = {"checkpoint_sha256": checkpoint.sha256, "feature_spec": spec.to_dict(), "batchnorm": spec.batchnorm,
                "batchnorm_statistics_source": train.describe(), "precision": cache.precision}
    info = {"checkpoint": str(Path(path).resolve()), "checkpoint_sha256": checkpoint.sha256,
            "architecture": checkpoint.architecture.name, "extraction_precision": cache.precision,
            "extraction_device": str(device), "batchnorm": spec.batchnorm,
            "layers": "all" if layers is None else ",".join(map(str, layers))}
    tag = f"d{checkpoint.sha256[:16]}" + ("" if layers is None else "-layers" + "".join(map(str, layers)))
    return cache.features(Recipe(label, kind, representation, tag, identity, info=info), train, test)


def pixel_features(train: ArrayImageDataset, test: ArrayImageDataset, cache: FeatureCache) -> Features:
    """Raw pixels, 3072-d for 32x32 RGB, scaled to [-1, 1] as the discriminators see them."""
    representation = PixelFeatures()
    identity = {key: representation.store_attrs()[key] for key in ("checkpoint_sha256", "feature_spec")}
    info = {"checkpoint": "none", "checkpoint_sha256": "none (raw pixels)"}
    return cache.features(Recipe("raw pixels (3072-d, in [-1, 1])", representation.kind, representation, "pixels",
                                 identity, per_precision=False, info=info), train, test)  # exact: no precision involved


def kmeans_features(train: ArrayImageDataset, test: ArrayImageDataset, cache: FeatureCache, centroids: int,
                    options: dict[str, Any], seed: int, device) -> Features:
    """The k-means baseline (Coates, Lee & Ng 2011), fitted on the training images only, its features
    standardised with the training split's statistics as Coates et al. do before the SVM."""
    label, kind = f"k-means (K={centroids}), fitted on the training images", "k-means baseline"
    model = KMeansFeatures(n_centroids=centroids, **{"seed": seed, "device": device, **options})
    spec = model.feature_spec()  # everything that defines the features, known before fitting
    tag = f"kmeans{centroids}-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]}"
    info = {"checkpoint": "none", "extraction_precision": "fp32",
            "feature_preprocessing": f"standardised: (x - mean) / sqrt(var + {STANDARDIZE_EPS}) over the "
                                     f"training split, as Coates et al."}
    recipe = Recipe(label, kind, model, tag, {"feature_spec": spec}, per_precision=False, together=True, info=info)
    stores, cached = cache.stores(recipe, train, test)  # k-means is fp32
    standardized = standardize_stores(stores["train"], stores["test"], cache.progress, make=not cache.read_only)
    if standardized is None:
        raise NotMeasured(label, kind)
    train_store, test_store = standardized
    return Features(label, kind, train_store, test_store, store_dimension(train_store), centroids,
                    {**info, **cache.timing_columns(stores, cached)})


def random_checkpoint_path(arch: str, seed: int, directory: Path, make: bool = True) -> Path:
    """A seeded random initialisation of ``arch``, saved once in the cache (unless not ``make``) and reused after."""
    from ..train import random_checkpoint

    path = directory / f"random-{arch}-seed{seed}.pt"
    if make and not path.is_file():
        random_checkpoint(arch, path, seed=seed)
    return path


# ---------------------------------------------------------------------------------------- helpers
def store_dimension(path: Path) -> int:
    with FeatureStore(path) as store:
        return store.dimension


def _one_fit(train: Path, test: Path) -> bool:
    """Whether two stores come from one fit of their representation (the same fingerprint)."""
    fingerprints = []
    for path in (train, test):
        with FeatureStore(path) as store:
            fingerprints.append(store.attrs.get("checkpoint_sha256"))
    return fingerprints[0] == fingerprints[1]


def canonical(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, keys as text): how attributes compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def say(progress: bool, message: str) -> None:
    if progress:
        print(f"[bench] {message}", file=sys.stderr, flush=True)
