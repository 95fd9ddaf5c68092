"""``gan-features bench``: the paper's Table 1 (CIFAR-10) and Table 2 (SVHN) beside our measurements.

Table 1 holds the paper's rows, quoted (:mod:`gan_features.paper`), then ours, each measured under
two protocols (:mod:`gan_features.protocols`): ``cifar10`` (all training labels; C chosen on a
seeded held-out 10% of the training rows, then refit on all) and ``cifar10-400`` (400 labels per
class, mean +- std over draws; C chosen on validation rows disjoint from the draws). Our rows:

* each trained discriminator given (``checkpoints``; optionally ``cifar_checkpoints``, trained on
  CIFAR-10's own training images with the labels unused);
* a randomly initialised discriminator of each of their architectures (seeded): what the
  architecture gives before any training;
* raw pixels (3072-d, in [-1, 1]): the floor;
* the k-means baseline (:mod:`gan_features.kmeans`, K=1600 by default), fitted on the training
  images only; left out, with a note, in a checkout without that module.

Beside the SVM's, each of our Table 1 representations gets the weighted k-NN probe
(:mod:`gan_features.knn`, DINO's: k = 20 and 200, temperature 0.07), measured once per
representation on all the scale's training images (it chooses nothing, so it needs no validation
rows); in the CSV those are rows of "protocol" ``knn-k20`` and ``knn-k200``. The paper quotes none.

Table 2 holds the paper's SVHN rows, and ours (the paper authors' SVHN discriminator imported by
``gan-features import-radford``, and our trained ones) under ``svhn-1000`` when SVHN is on disk.

Scales: ``full`` uses every image; ``ci`` a fixed stratified subset (10,000 train = 1,000 per class,
2,000 test = 200 per class for CIFAR-10) chosen by hashing row indices with :data:`CI_SUBSET_SEED`,
which gives the same rows on every machine and under every numpy version (a numpy Generator's
streams are not guaranteed stable across releases). The tables go to ``results/`` (full) or
``results/ci`` (ci) unless ``results_dir`` says otherwise; CI regenerates the ci ones and compares
them with the committed ones (``benchmarks/check_ci_tables.py``).

Features are cached in HDF5 stores under ``cache_dir`` (outside the repository), one per
(representation, dataset, scale, split, precision), and reused when their recorded provenance
matches, so a rerun only refits the SVMs. Batch-norm statistics are recomputed over the (subset)
training images, once per checkpoint for both splits. Every measured number's provenance (code
commit, checkpoint sha256, feature stores, seeds, wall times) is in the CSV beside each table.

Each measured row is also kept under ``cache_dir/rows``, keyed by its feature stores (path, size,
modification time), protocol and SVM settings. With ``resume`` a run reuses such rows instead of
refitting, so a full-scale run (hours on a CPU) can be stopped and continued; a reused row keeps the
commit and time it was measured at, and says so (``svm_cached``). While a row is measured, each fitted
C of its selection paths is saved beside it (``<key>.fits/``), so ``resume`` also continues a row
stopped part-way (one full-scale ``cifar10`` path is hours); its SVM wall time is then the last run's
plus the solve time each resumed fit recorded (``svm_cached`` says how many fits that was).

With ``saved_only`` a run measures nothing: it writes the tables from the rows already kept, the
others marked "not measured yet" with how far they got (saved fits, or no features yet), and says
above the table how many rows are done. That is how a full-scale run in progress is looked at, or
committed part-way, without stopping it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import paper
from .checkpoints import load_checkpoint
from .data import ArrayImageDataset, load_dataset, resolve_root
from .data.cifar import locate as locate_cifar10
from .device import PRECISIONS, pick_device
from .errors import GanFeaturesError
from .features import FeatureSpec, extract_to_store, prepare_discriminator
from .knn import KS as KNN_KS
from .knn import TEMPERATURE as KNN_TEMPERATURE
from .knn import knn_probe
from .protocols import PROTOCOLS, Protocol, get_protocol, svm_description
from .report import _markdown, _write_atomic, git_commit, provenance
from .store import FeatureStore, FeatureWriter, write_features
from .subsets import rows_sha256, stratified_rows
from .svm import count_saved_fits

SCALES = ("full", "ci")
# Full-scale tables are the ones to set beside the paper's, so they sit at the top of results/.
DEFAULT_RESULTS_DIRS = {"full": "results", "ci": os.path.join("results", "ci")}
CI_SUBSET_SEED = 20151119  # a fixed constant (the paper's arXiv submission date); never change it
CI_SIZES = {"train": 10_000, "test": 2_000}  # CIFAR-10: 1,000 / 200 per class
# The CI training subset has 10,000 rows, so the few-label protocols cannot hold out their default
# 10,000 for validation: 2,000 are held out and the draws come from the other 8,000. cifar10-400 also
# makes fewer draws (2 to choose C, 4 to test, instead of 5 and 10): with them, one 28,672-d
# representation had not finished its 10 test fits after 16 minutes (2026-11-24), and CI must stay
# under 45 minutes with four representations, two of them 28,672-d.
CI_PROTOCOL_OVERRIDES: dict[str, dict[str, Any]] = {
    "cifar10": {},
    "cifar10-400": {"validation_size": 2_000, "selection_draws": 2, "test_draws": 4},
    "svhn-1000": {"validation_size": 2_000}}
TABLE1_PROTOCOLS = ("cifar10", "cifar10-400")
TABLE2_PROTOCOL = "svhn-1000"
TABLE1, TABLE2 = "table1_cifar10", "table2_svhn"
KNN_PRECISION = "fp32"  # how the k-NN holds the training matrix (gan_features.knn); k and T: knn.KS, knn.TEMPERATURE
NOT_MEASURED = "not measured yet"  # the source of a row a saved_only run has no measurement for
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
CACHE_ENV = "GAN_FEATURES_CACHE"
DEFAULT_KMEANS_CENTROIDS = 1600
KMEANS_STANDARDIZE_EPS = 0.01  # Coates et al.'s: sqrt(var + 0.01)

# Long-format CSV: one row per (model, protocol); these columns first, then all provenance.
LEADING_COLUMNS = ("table", "model", "kind", "source", "protocol", "metric", "test_mean", "test_std", "test_ci95",
                   "quoted", "C", "C_at_grid_edge", "feature_dimension", "max_feature_units", "scale", "train_rows",
                   "test_rows", "protocol_overrides", "seed", "checkpoint", "checkpoint_sha256", "train_store",
                   "test_store", "features_cached", "extraction_precision", "extraction_device", "prepare_s",
                   "extract_train_s", "extract_test_s", "svm_wall_time_s", "svm_cached", "knn_k", "knn_temperature",
                   "knn_wall_time_s", "knn_cached", "progress", "git_commit", "git_dirty")


# ------------------------------------------------------------------------------------------- config
@dataclass
class BenchConfig:
    """Everything a bench run depends on. Each field is a ``gan-features bench`` flag (:func:`command_line`)."""

    checkpoints: Sequence[tuple[str, str]] = ()  # (label, path): our trained discriminators
    cifar_checkpoints: Sequence[tuple[str, str]] = ()  # (label, path): trained on CIFAR-10 train, labels unused
    cifar_root: str | None = None  # folder holding cifar-10-batches-py/ (default: $GAN_FEATURES_DATA)
    svhn_root: str | None = None  # folder holding train_32x32.mat and test_32x32.mat; Table 2 is measured if so
    svhn_checkpoint: str | None = None  # the paper authors' SVHN discriminator (gan-features import-radford)
    scale: str = "ci"  # "ci" (fixed stratified subset) or "full"
    results_dir: str | None = None  # default: DEFAULT_RESULTS_DIRS[scale] (results, results/ci)
    cache_dir: str | None = None  # default: $GAN_FEATURES_CACHE/bench, else ~/.cache/gan-features/bench
    seed: int = 0  # protocols (validation splits, label draws) and the random discriminator
    precision: str = "bf16"  # feature extraction; bf16 autocast is 2-4x faster on CPU
    device: str = "auto"
    batch_size: int = 256
    kmeans_centroids: int | None = DEFAULT_KMEANS_CENTROIDS  # None or 0: no k-means row
    kmeans_options: dict[str, Any] = field(default_factory=dict)  # more KMeansFeatures arguments
    random_baseline: bool = True
    pixel_baseline: bool = True
    knn: bool = True  # the k-NN probe's Table 1 columns beside the SVM's
    Cs: Sequence[float] | None = None  # C grid of every protocol (default: the paper's analysis grid)
    protocol_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # applied after the scale's
    svm_params: dict[str, Any] = field(default_factory=dict)  # LinearL2SVM arguments (backend, device...)
    resume: bool = False  # reuse rows an earlier run measured on the same stores and settings
    saved_only: bool = False  # measure nothing: tables from the rows kept so far, the rest "not measured yet"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise GanFeaturesError(f"unknown scale {self.scale!r}: use one of {', '.join(SCALES)}")
        if self.precision not in PRECISIONS:
            raise GanFeaturesError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        self.checkpoints = _labelled(self.checkpoints, "checkpoints")
        self.cifar_checkpoints = _labelled(self.cifar_checkpoints, "cifar_checkpoints")
        labels = [label for label, _ in (*self.checkpoints, *self.cifar_checkpoints)]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise GanFeaturesError(f"checkpoint labels must be unique (rows are matched by them): "
                                   f"{', '.join(map(repr, duplicates))} given twice")
        centroids = self.kmeans_centroids
        if centroids is not None:
            if isinstance(centroids, bool) or not isinstance(centroids, (int, np.integer)) or centroids < 0:
                raise GanFeaturesError(f"kmeans_centroids must be a positive integer (0 or None: no k-means row), "
                                       f"got {centroids!r}")
            self.kmeans_centroids = int(centroids) or None  # 0 means "no k-means row", as None does
        if self.batch_size < 1:
            raise GanFeaturesError(f"batch_size must be at least 1, got {self.batch_size}")
        unknown = sorted(set(self.protocol_overrides) - set(PROTOCOLS))
        if unknown:
            raise GanFeaturesError(f"protocol_overrides names unknown protocols {', '.join(unknown)}: "
                                   f"use {', '.join(sorted(PROTOCOLS))}")
        if self.Cs is not None:
            self.Cs = tuple(self.Cs)
        if self.saved_only:
            self.resume = True  # the saved rows are all it can show
        if self.results_dir is None:
            self.results_dir = DEFAULT_RESULTS_DIRS[self.scale]
        if self.cache_dir is None:
            base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gan-features")
            self.cache_dir = os.path.join(base, "bench")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _labelled(items: Sequence, what: str) -> tuple[tuple[str, str], ...]:
    """(label, path) pairs, from pairs or from the CLI's ``"LABEL=PATH"`` strings."""
    pairs = []
    for item in items:
        if isinstance(item, str):
            label, sep, path = item.partition("=")
            if not sep:
                raise GanFeaturesError(f"{what}: {item!r} must be LABEL=PATH (e.g. 'DCGAN on Imagenette=run/d.pt')")
        else:
            label, path = item
            if "=" in str(label):  # the command line splits LABEL=PATH at the first "="
                raise GanFeaturesError(f"{what}: label {label!r} contains '=': choose a label without it")
        label, path = str(label).strip(), os.fspath(path)
        if not label or not path:
            raise GanFeaturesError(f"{what}: {item!r} needs both a label and a path")
        pairs.append((label, path))
    return tuple(pairs)


def command_line(config: BenchConfig, **changes: Any) -> str:
    """The ``gan-features bench`` command that runs ``config`` (with ``changes``), shell-quoted."""
    config = dataclasses.replace(config, **changes)
    default = BenchConfig(scale=config.scale)
    args = ["gan-features", "bench", "--scale", config.scale]
    if config.cifar_root:
        args += ["--cifar-root", config.cifar_root]
    for flag, pairs in (("--ckpt", config.checkpoints), ("--cifar-ckpt", config.cifar_checkpoints)):
        for label, path in pairs:
            args += [flag, f"{label}={path}"]
    for flag, value, default_value in (
            ("--svhn-root", config.svhn_root, None), ("--svhn-ckpt", config.svhn_checkpoint, None),
            ("--results", config.results_dir, None), ("--cache-dir", config.cache_dir, default.cache_dir),
            ("--seed", config.seed, 0), ("--precision", config.precision, "bf16"), ("--device", config.device, "auto"),
            ("--batch-size", config.batch_size, 256),
            ("--kmeans-centroids", config.kmeans_centroids or 0, DEFAULT_KMEANS_CENTROIDS)):
        if value is not None and value != default_value:
            args += [flag, str(value)]
    if config.Cs is not None:
        args += ["--C", ",".join(str(float(C)) for C in config.Cs)]  # shortest text that reads back exactly
    args += [flag for flag, on in (("--no-random", config.random_baseline), ("--no-pixels", config.pixel_baseline),
                                   ("--no-knn", config.knn), ("--resume", not config.resume),
                                   ("--saved-only", not config.saved_only)) if not on]
    return " ".join(shlex.quote(arg) for arg in args)


# ------------------------------------------------------------------------------------------ subsets
def stratified_subset(labels: np.ndarray, size: int, seed: int = CI_SUBSET_SEED, salt: str = "") -> np.ndarray:
    """``size`` row indices (sorted) with every class in proportion, the same on every machine.

    Each class gets its share of ``size`` (largest remainders, ties to the lower class); within a
    class the rows with the smallest BLAKE2b hash of ``"{salt}:{seed}:{row}"`` are taken
    (:func:`gan_features.subsets.stratified_rows`).
    """
    n = len(labels)
    if not 0 < size <= n:
        raise GanFeaturesError(f"a subset of {size} rows cannot be drawn from {n}")
    return stratified_rows(labels, [size], seed, salt=salt)[0]


def ci_subset(dataset: ArrayImageDataset, size: int, seed: int = CI_SUBSET_SEED
              ) -> tuple[ArrayImageDataset, dict[str, Any]]:
    """The fixed CI subset of a dataset split, and what identifies it."""
    if len(dataset) < size:
        raise GanFeaturesError(f"the CI scale takes {size} {dataset.name} {dataset.split} images but "
                               f"{len(dataset)} are there: use scale 'full'")
    rows = stratified_subset(dataset.labels, size, seed, salt=f"{dataset.name}/{dataset.split}")
    digest = rows_sha256(rows)
    subset = ArrayImageDataset(
        dataset.images[torch.from_numpy(rows)].numpy(), dataset.labels[rows], dataset.classes, name=dataset.name,
        split=dataset.split, image_size=dataset.image_size,
        source=f"{dataset.source}; CI subset: {size} rows stratified by class, seed {seed}, rows sha256 {digest}")
    return subset, {"subset_seed": seed, "subset_sha256": digest}


def _load_splits(name: str, root: str, scale: str) -> tuple[ArrayImageDataset, ArrayImageDataset, dict[str, Any]]:
    """Train and test splits at ``scale``, and columns describing them for every row."""
    train, test = (load_dataset(name, split, root=root) for split in ("train", "test"))
    context: dict[str, Any] = {"scale": scale, "dataset": name, "subset_seed": None, "train_subset_sha256": None,
                               "test_subset_sha256": None}
    if scale == "ci":
        train, info = ci_subset(train, CI_SIZES["train"])
        test, test_info = ci_subset(test, CI_SIZES["test"])
        context.update(subset_seed=info["subset_seed"], train_subset_sha256=info["subset_sha256"],
                       test_subset_sha256=test_info["subset_sha256"])
    context.update(train_rows=len(train), test_rows=len(test))
    return train, test, context


# ------------------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class Features:
    """One representation's train and test stores, and how they were made (CSV columns)."""

    label: str
    kind: str
    train_store: Path
    test_store: Path
    dimension: int
    feature_units: int | None  # as the paper counts them: the most maps (or centroids) of one layer
    info: dict[str, Any]


class _NotMeasured(Exception):
    """A representation's stores are not there and the run may not make them (``saved_only``)."""

    def __init__(self, label: str, kind: str):
        super().__init__(label)
        self.label, self.kind = label, kind


class _Cache:
    """Feature stores under one directory, reused when their recorded provenance matches.

    ``read_only``: nothing is made; a representation whose stores are missing raises :class:`_NotMeasured`.
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
        differing = [key for key, value in expected.items() if _canonical(attrs.get(key)) != _canonical(value)]
        if differing:
            _say(self.progress, f"{path.name} was made differently ({', '.join(differing)}): "
                                + ("not used" if self.read_only else "making it again"))
        return not differing

    @staticmethod
    def timing(path: Path) -> dict[str, Any]:
        return _read_json(path.with_name(path.name + ".json")) or {}

    @staticmethod
    def record_timing(path: Path, timing: dict[str, Any]) -> None:
        """Wall times of a store's making, beside it, so a cached store still reports them."""
        _write_atomic({path.with_name(path.name + ".json"): json.dumps(timing, indent=1, sort_keys=True)})


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _timing_columns(cache: _Cache, train_path: Path, test_path: Path, cached: list[str]) -> dict[str, Any]:
    train_timing, test_timing = cache.timing(train_path), cache.timing(test_path)
    return {"features_cached": "+".join(cached) or "no", "prepare_s": train_timing.get("prepare_s"),
            "extract_train_s": train_timing.get("extract_s"), "extract_test_s": test_timing.get("extract_s"),
            "extract_images_per_s": train_timing.get("images_per_s")}


def _store_dimension(path: Path) -> int:
    with FeatureStore(path) as store:
        return store.dimension


def checkpoint_features(label: str, kind: str, path: str | os.PathLike, train: ArrayImageDataset,
                        test: ArrayImageDataset, cache: _Cache, device, batch_size: int = 256) -> Features:
    """Discriminator features of both splits, batch-norm statistics recomputed once over ``train``."""
    if cache.read_only and not Path(path).is_file():  # a random baseline not made yet
        raise _NotMeasured(label, kind)
    checkpoint = load_checkpoint(path)
    spec = FeatureSpec()  # every block max-pooled to 4x4; batch-norm statistics recomputed: the paper's
    tag = f"d{checkpoint.sha256[:16]}"
    stores, todo, cached = {}, [], []
    for data in (train, test):
        stores[data.split] = store = cache.path(tag, data)
        expected = {"checkpoint_sha256": checkpoint.sha256, "feature_spec": spec.to_dict(),
                    "batchnorm": spec.batchnorm, "batchnorm_statistics_source": train.describe(),
                    "precision": cache.precision, **data.describe()}
        if cache.matches(store, expected):
            cached.append(data.split)
        else:
            todo.append(data)
    if todo and cache.read_only:
        raise _NotMeasured(label, kind)
    if todo:
        _say(cache.progress, f"{label}: extracting {' and '.join(d.split for d in todo)} features")
        started = time.perf_counter()
        # statistics computed at the extraction precision, as `gan-features extract` does
        discriminator = prepare_discriminator(checkpoint, spec, train, device, progress=cache.progress,
                                              precision=cache.precision)
        prepare_s = time.perf_counter() - started
        for data in todo:
            started = time.perf_counter()
            extract_to_store(checkpoint, data, stores[data.split], spec, statistics_dataset=train,
                             batch_size=batch_size, device=device, precision=cache.precision, overwrite=True,
                             progress=cache.progress, discriminator=discriminator)
            seconds = time.perf_counter() - started
            cache.record_timing(stores[data.split], {"prepare_s": prepare_s, "extract_s": seconds,
                                                     "images": len(data), "images_per_s": len(data) / seconds,
                                                     "device": str(device), "precision": cache.precision})
    info = {"checkpoint": str(Path(path).resolve()), "checkpoint_sha256": checkpoint.sha256,
            "architecture": checkpoint.architecture.name, "extraction_precision": cache.precision,
            "extraction_device": str(device), "batchnorm": spec.batchnorm,
            **_timing_columns(cache, stores["train"], stores["test"], cached)}
    return Features(label, kind, stores["train"], stores["test"], _store_dimension(stores["train"]),
                    max(checkpoint.architecture.feature_channels), info)


def pixel_features(train: ArrayImageDataset, test: ArrayImageDataset, cache: _Cache) -> Features:
    """Raw pixels, 3072-d for 32x32 RGB, scaled to [-1, 1] as the discriminators see them."""
    label, kind = "raw pixels (3072-d, in [-1, 1])", "raw pixels"
    spec = {"raw_pixels": True, "scale": "[-1, 1]", "order": "channel-planar (C, H, W)"}
    stores, cached = {}, []
    for data in (train, test):
        store = cache.path("pixels", data, precision=False)  # exact: no precision involved
        stores[data.split] = store
        expected = {"checkpoint_sha256": "none (raw pixels)", "feature_spec": spec, **data.describe()}
        if cache.matches(store, expected):
            cached.append(data.split)
            continue
        if cache.read_only:
            raise _NotMeasured(label, kind)
        started = time.perf_counter()
        pixels = data.images.reshape(len(data), -1).numpy().astype(np.float32) / 127.5 - 1.0
        write_features(store, pixels, data.labels, {**expected, "architecture": "none",
                                                    "git_commit": git_commit() or "none"}, overwrite=True)
        cache.record_timing(store, {"extract_s": time.perf_counter() - started, "images": len(data)})
    info = {"checkpoint": "none", "checkpoint_sha256": "none (raw pixels)",
            **_timing_columns(cache, stores["train"], stores["test"], cached)}
    return Features(label, kind, stores["train"], stores["test"],
                    _store_dimension(stores["train"]), None, info)


def kmeans_features(train: ArrayImageDataset, test: ArrayImageDataset, cache: _Cache, centroids: int,
                    options: dict[str, Any], seed: int, device) -> Features:
    """The k-means baseline (Coates, Lee & Ng 2011), fitted on the training images only."""
    from .kmeans import KMeansFeatures, extract_kmeans_to_store

    label, kind = f"k-means (K={centroids}), fitted on the training images", "k-means baseline"
    model = KMeansFeatures(n_centroids=centroids, **{"seed": seed, "device": device, **options})
    spec = model.feature_spec()  # everything that defines the features, known before fitting
    tag = f"kmeans{centroids}-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]}"
    stores = {data.split: cache.path(tag, data, precision=False) for data in (train, test)}  # k-means is fp32
    # Both stores must come from one fit (the same fingerprint), so they are reused or remade together.
    reuse = all(cache.matches(stores[data.split], {"feature_spec": spec, **data.describe()}) for data in (train, test))
    reuse = reuse and _attr(stores["train"], "checkpoint_sha256") == _attr(stores["test"], "checkpoint_sha256")
    if not reuse and cache.read_only:
        raise _NotMeasured(label, kind)
    if not reuse:
        _say(cache.progress, f"k-means (K={centroids}): fitting on {len(train)} training images")
        started = time.perf_counter()
        model.fit(train, progress=cache.progress)  # the dataset, so the fit records which images it saw
        fit_s = time.perf_counter() - started
        for data in (train, test):
            started = time.perf_counter()
            extract_kmeans_to_store(model, data, stores[data.split], overwrite=True, progress=cache.progress)
            seconds = time.perf_counter() - started
            cache.record_timing(stores[data.split], {"prepare_s": fit_s, "extract_s": seconds, "images": len(data),
                                                     "images_per_s": len(data) / seconds})
    cached = ["train", "test"] if reuse else []
    info = {"checkpoint": "none", "extraction_precision": "fp32",
            "feature_preprocessing": f"standardised: (x - mean) / sqrt(var + {KMEANS_STANDARDIZE_EPS}) over the "
                                     f"training split, as Coates et al.",
            **_timing_columns(cache, stores["train"], stores["test"], cached)}
    standardized = standardized_stores(stores["train"], stores["test"], cache.progress, make=not cache.read_only)
    if standardized is None:
        raise _NotMeasured(label, kind)
    train_store, test_store = standardized
    return Features(label, kind, train_store, test_store, _store_dimension(train_store), centroids, info)


def standardized_stores(train_path: Path, test_path: Path, progress: bool = True, make: bool = True
                        ) -> tuple[Path, Path] | None:
    """Copies of both stores with every feature standardised by the training split's mean and variance.

    Coates et al.'s k-means pipeline does this before its SVM: the raw sum-pooled triangle activations
    are ~10^4 times larger in squared norm than discriminator features, so on them C would mean
    something else entirely and the solver crawls. Statistics come from training images only (no
    labels), like the batch-norm statistics recomputed for the discriminators. Reused while the
    source stores are unchanged (their fingerprint and creation time are recorded). ``make=False``:
    None instead of making them.
    """
    sources = {"train": train_path, "test": test_path}
    targets = {split: path.with_name(path.stem + "_standardized.h5") for split, path in sources.items()}
    stamp = {split: {key: _attr(path, key) for key in ("checkpoint_sha256", "created", "count")}
             for split, path in sources.items()}
    if all(targets[split].is_file() and _attr(targets[split], "standardized_from") == stamp[split]
           for split in sources):
        return targets["train"], targets["test"]
    if not make:
        return None
    _say(progress, f"standardising {train_path.name} and {test_path.name}")
    with FeatureStore(train_path) as store:
        total = np.zeros(store.dimension)
        squares = np.zeros(store.dimension)
        for _, block in store.iter_chunks():
            block = block.astype(np.float64)
            total += block.sum(axis=0)
            squares += np.square(block).sum(axis=0)
        mean = total / len(store)
        # Coates' MATLAB var: unbiased; computed from sums in float64, which is ample for these ranges
        var = np.maximum(squares - len(store) * mean ** 2, 0.0) / max(len(store) - 1, 1)
    scale = 1.0 / np.sqrt(var + KMEANS_STANDARDIZE_EPS)
    for split, source in sources.items():
        with FeatureStore(source) as store:
            attrs = {key: value for key, value in store.attrs.items()
                     if key not in ("count", "dimension", "created", "package_version")}
            attrs["feature_spec"] = {**attrs.get("feature_spec", {}),
                                     "standardized": {"statistics": "training split", "eps": KMEANS_STANDARDIZE_EPS}}
            attrs["standardized_from"] = stamp[split]
            with FeatureWriter(targets[split], len(store), store.dimension, attrs, overwrite=True) as writer:
                for start, block in store.iter_chunks():
                    writer.append(((block - mean) * scale).astype(np.float32), store.labels[start:start + len(block)])
    return targets["train"], targets["test"]


def _attr(path: Path, key: str) -> Any:
    with FeatureStore(path) as store:
        return store.attrs.get(key)


def random_checkpoint_path(arch: str, seed: int, directory: Path, make: bool = True) -> Path:
    """A seeded random initialisation of ``arch``, saved once in the cache (unless not ``make``) and reused after."""
    from .train import random_checkpoint

    path = directory / f"random-{arch}-seed{seed}.pt"
    if make and not path.is_file():
        random_checkpoint(arch, path, seed=seed)
    return path


# ----------------------------------------------------------------------------------------- measuring
def make_protocol(name: str, config: BenchConfig) -> Protocol:
    """The protocol as measured: the scale's changes, then ``config.Cs``, then ``config.protocol_overrides``.

    Later ones win, so a C grid may come from any of the three (e.g. a shorter one at CI scale).
    """
    overrides = {**(CI_PROTOCOL_OVERRIDES.get(name, {}) if config.scale == "ci" else {}),
                 **({"Cs": config.Cs} if config.Cs is not None else {}),
                 **config.protocol_overrides.get(name, {})}
    return get_protocol(name, seed=config.seed, **overrides)


def protocol_overrides(protocol: Protocol) -> dict[str, Any]:
    """The parameters that differ from the protocol's defaults (the seed aside)."""
    default = type(protocol)().params
    return {key: value for key, value in protocol.params.items() if key != "seed" and value != default[key]}


def _grid_edge(C: float, Cs: Sequence[float]) -> str:
    """'low'/'high' when the chosen C is the grid's end: the best C may lie outside the grid."""
    return "low" if C == min(Cs) else "high" if C == max(Cs) else ""


def measured_row(table: str, features: Features, result: dict[str, Any], protocol: Protocol,
                 context: dict[str, Any]) -> dict[str, Any]:
    """One long-format row: the score, the representation's provenance, then the protocol's.

    ``result``: :meth:`ProtocolResult.to_row` (flat, so a row measured earlier can be reused).
    """
    row: dict[str, Any] = {
        "table": table, "model": features.label, "kind": features.kind, "source": "measured",
        "protocol": result["protocol"], "metric": result["metric"], "test_mean": result["test_mean"],
        "test_std": result["test_std"], "test_ci95": result["test_ci95"], "quoted": None, "C": result["C"],
        "C_at_grid_edge": _grid_edge(result["C"], protocol.Cs), "feature_dimension": features.dimension,
        "max_feature_units": features.feature_units,
        "protocol_overrides": json.dumps(protocol_overrides(protocol), sort_keys=True),
        "train_store": str(features.train_store), "test_store": str(features.test_store),
        "svm_wall_time_s": _svm_seconds(result), **context, **features.info}
    for key, value in result.items():
        if key != "wall_time_s":  # kept as svm_wall_time_s, apart from the extraction times
            row.setdefault(key, value)
    return row


def pending_row(table: str, label: str, kind: str, protocol: str, context: dict[str, Any], progress: str,
                features: Features | None = None) -> dict[str, Any]:
    """The long-format row of a measurement not made yet (``saved_only``): what it is, how far it got."""
    row: dict[str, Any] = {"table": table, "model": label, "kind": kind, "source": NOT_MEASURED,
                           "protocol": protocol, "metric": "error" if table == "2" else "accuracy",
                           "progress": progress, **context}
    if features is not None:
        row.update(feature_dimension=features.dimension, max_feature_units=features.feature_units,
                   train_store=str(features.train_store), test_store=str(features.test_store), **features.info)
    return row


def _measure_or_pending(table: str, make: Callable[[], Features], protocols: Sequence[str], config: BenchConfig,
                        context: dict[str, Any], cache: _Cache, knn_device: torch.device | None = None
                        ) -> list[dict[str, Any]]:
    """The rows of the representation ``make`` returns, then its k-NN rows when ``knn_device`` is given;
    "not measured yet" ones when it has no stores."""
    try:
        features = make()
    except _NotMeasured as missing:
        names = [*protocols, *(knn_protocols() if knn_device is not None else ())]
        return [pending_row(table, missing.label, missing.kind, name, context, "no features yet") for name in names]
    rows = _measure(table, features, protocols, config, context, cache)
    if knn_device is not None:
        rows += _measure_knn(table, features, config, context, cache, knn_device)
    return rows


def _svm_seconds(result: dict[str, Any]) -> float:
    """The row's SVM time: the last run's wall time plus the solve time of the fits it resumed."""
    return result["wall_time_s"] + (result.get("resumed_fit_seconds") or 0.0)


def _resumed_note(result: dict[str, Any]) -> str:
    """``svm_cached`` for a row finished by this run after an earlier, stopped run made some fits."""
    fits, seconds = result.get("resumed_fits", 0), result.get("resumed_fit_seconds")
    if not fits:
        return "no"
    if seconds is None:
        return (f"partly: {fits} of the C path's fits by an earlier run, which did not record their time "
                "(svm_wall_time_s covers the last run only)")
    return f"partly: {fits} of the C path's fits by an earlier run (their {seconds:.0f} s solve time included)"


def _store_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a store's contents without reading 6 GB: a store is only ever rewritten whole."""
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _row_key(table: str, features: Features, context: dict[str, Any], **settings: Any) -> str:
    """The measured row's identity: every input that shapes its numbers (``settings``: the evaluation's)."""
    inputs = {"table": table, "label": features.label, "kind": features.kind, **settings, "context": context,
              "train": _store_fingerprint(features.train_store), "test": _store_fingerprint(features.test_store)}
    return hashlib.sha256(json.dumps(_canonical(inputs), sort_keys=True).encode()).hexdigest()[:32]


def _measure(table: str, features: Features, protocols: Sequence[str], config: BenchConfig,
             context: dict[str, Any], cache: _Cache) -> list[dict[str, Any]]:
    rows = []
    for name in protocols:
        protocol = make_protocol(name, config)
        # Every SVM setting in force, defaults included: a changed default is a different row.
        key = _row_key(table, features, context, protocol=protocol.name, params=protocol.params,
                       svm_params=svm_description(config.svm_params))
        saved = cache.directory / "rows" / f"{key}.json"
        fits = saved.with_suffix(".fits")  # the row's fitted Cs while it is being measured
        result = _read_json(saved) if config.resume else None
        if result is None and config.saved_only:
            saved_fits = count_saved_fits(fits)
            rows.append(pending_row(table, features.label, features.kind, name, context,
                                    f"{saved_fits} fits of its C path saved" if saved_fits else "not started",
                                    features))
            continue
        if result is not None:
            _say(config.progress, f"{features.label}: {name}: reusing the row measured {result.get('created')} "
                                  f"({saved.name})")
            # a reused row still says whether an earlier run made part of its C path
            cached = "; ".join(part for part in (f"reused: measured {result.get('created') or '(time unknown)'}",
                                                 _resumed_note(result)) if part != "no")
        else:
            if not config.resume:
                shutil.rmtree(fits, ignore_errors=True)
            reused = count_saved_fits(fits)
            _say(config.progress, f"{features.label}: {name}" + (f" (reusing {reused} saved fits)" if reused else ""))
            result = protocol.run(features.train_store, features.test_store, svm_params=config.svm_params or None,
                                  progress=config.progress, checkpoint_dir=fits).to_row()
            saved.parent.mkdir(exist_ok=True)
            _write_atomic({saved: json.dumps(result, indent=1, sort_keys=True, default=_plain)})
            shutil.rmtree(fits, ignore_errors=True)
            cached = _resumed_note(result)
        rows.append({**measured_row(table, features, result, protocol, context), "svm_cached": cached})
    return rows


def knn_protocols() -> tuple[str, ...]:
    """The long table's "protocol" of each k-NN row, one per k."""
    return tuple(_knn_protocol(k) for k in KNN_KS)


def _knn_protocol(k: int) -> str:
    return f"knn-k{k}"


def _measure_knn(table: str, features: Features, config: BenchConfig, context: dict[str, Any], cache: _Cache,
                 device: torch.device) -> list[dict[str, Any]]:
    """The k-NN rows of one representation (one probe, a row per k), kept and reused as the SVM rows are."""
    settings = {"ks": list(KNN_KS), "temperature": KNN_TEMPERATURE, "precision": KNN_PRECISION}
    saved = cache.directory / "rows" / f"{_row_key(table, features, context, knn=settings)}.json"
    kept = _read_json(saved) if config.resume else None
    if kept is None and config.saved_only:
        return [pending_row(table, features.label, features.kind, name, context, "not started", features)
                for name in knn_protocols()]
    if kept is not None:
        created = kept["rows"][0].get("created") or "(time unknown)"
        _say(config.progress, f"{features.label}: k-NN: reusing the rows measured {created} ({saved.name})")
        cached = f"reused: measured {created}"
    else:
        _say(config.progress, f"{features.label}: k-NN (k = {', '.join(map(str, KNN_KS))})")
        result = knn_probe(features.train_store, features.test_store, ks=KNN_KS, temperature=KNN_TEMPERATURE,
                           device=device, precision=KNN_PRECISION, progress=config.progress)
        kept = {"rows": result.to_rows()}
        saved.parent.mkdir(exist_ok=True)
        _write_atomic({saved: json.dumps(kept, indent=1, sort_keys=True, default=_plain)})
        cached = "no"
    return [knn_row(table, features, result, context, cached) for result in kept["rows"]]


def knn_row(table: str, features: Features, result: dict[str, Any], context: dict[str, Any],
            cached: str) -> dict[str, Any]:
    """One long-format k-NN row from one of :meth:`KnnResult.to_rows` (a k): the score, then provenance."""
    row: dict[str, Any] = {
        "table": table, "model": features.label, "kind": features.kind, "source": "measured",
        "protocol": _knn_protocol(result["k"]), "metric": result["metric"], "test_mean": result["accuracy"],
        "quoted": None, "feature_dimension": features.dimension, "max_feature_units": features.feature_units,
        "train_store": str(features.train_store), "test_store": str(features.test_store), "knn_k": result["k"],
        "knn_temperature": result["temperature"], "knn_wall_time_s": result["wall_time_s"], "knn_cached": cached,
        "knn_precision": result["precision"], "knn_device": result["device"], **context, **features.info}
    for key, value in result.items():
        if key not in ("k", "accuracy", "temperature", "wall_time_s", "precision", "device", "probe", "n_train",
                       "n_test"):  # kept under knn_ names above, or as train_rows / test_rows
            row.setdefault(key, value)
    return row


def _plain(value: Any) -> Any:
    """numpy scalars as the Python numbers they hold (a reused row then reads back the same)."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------- the paper
def paper_rows_table1() -> list[dict[str, Any]]:
    rows = []
    for quoted in paper.TABLE1:
        for protocol, cell in (("cifar10", quoted.accuracy), ("cifar10-400", quoted.accuracy_400)):
            rows.append({"table": "1", "model": quoted.model, "kind": "paper", "source": paper.TABLE1_SOURCE,
                         "protocol": protocol, "metric": "accuracy", "test_mean": cell.value,
                         "test_std": cell.spread, "quoted": cell.text, "max_feature_units": quoted.max_feature_units})
    return rows


def paper_rows_table2() -> list[dict[str, Any]]:
    return [{"table": "2", "model": quoted.model, "kind": "paper", "source": paper.TABLE2_SOURCE,
             "protocol": TABLE2_PROTOCOL, "metric": "error", "test_mean": quoted.error.value,
             "test_std": quoted.error.spread, "quoted": quoted.error.text} for quoted in paper.TABLE2]


# -------------------------------------------------------------------------------------------- tables
def long_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Every row and column, :data:`LEADING_COLUMNS` first: the CSV."""
    table = pd.DataFrame(rows)
    for column in table.columns:  # integers stay integers beside the paper rows' blanks (not 3.0)
        values = [row[column] for row in rows if row.get(column) is not None]
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            table[column] = table[column].astype("Int64")
    leading = [column for column in LEADING_COLUMNS if column in table.columns]
    return table[leading + [column for column in table.columns if column not in leading]]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _num(value: Any, digits: int = 2) -> str:
    return "" if _missing(value) else f"{value:.{digits}f}"


def _seconds(value: Any) -> str:
    return "?" if _missing(value) else f"{value:.0f}"


def _C(row: dict[str, Any]) -> str:
    if row.get("C") is None:
        return "?"
    edge = row.get("C_at_grid_edge")
    return f"{row['C']:g}" + (" (grid edge)" if edge else "")


def _feature_seconds(row: dict[str, Any]) -> str:
    if "features_cached" not in row:  # no features yet
        return "?"
    total = sum(v for v in (row.get("prepare_s"), row.get("extract_train_s"), row.get("extract_test_s"))
                if isinstance(v, (int, float)) and not np.isnan(v))
    cached = row.get("features_cached")
    return f"{total:.0f}" + (f" (cached: {cached})" if cached and cached != "no" else "")


WALL_TIME_COLUMN = "wall time (s): features / SVM all / SVM 400 / k-NN"


def wide_table1(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The readable Markdown subset: one line per model, the two protocols and the k-NN side by side."""
    knn_column = f"k-NN accuracy (%), k={' / '.join(map(str, KNN_KS))}"
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], {})[row["protocol"]] = row
    lines = []
    for model, cells in by_model.items():
        full, few = cells.get("cifar10", {}), cells.get("cifar10-400", {})
        knn = [cells[name] for name in knn_protocols() if name in cells]
        first = full or few or knn[0]
        if first["kind"] == "paper":
            lines.append({"model": model, "source": "quoted from the paper", "accuracy (%)": full.get("quoted", ""),
                          "accuracy, 400 per class (%)": few.get("quoted", ""), knn_column: "",
                          "max # of feature units": first.get("max_feature_units", ""), "feature dimension": "",
                          "C: all labels / 400 per class": "", WALL_TIME_COLUMN: ""})
            continue
        units, dimension = first.get("max_feature_units"), first.get("feature_dimension")
        full_text = _pending(full) or _num(full.get("test_mean"))
        few_text = _pending(few) or (f"{_num(few.get('test_mean'))} ± {_num(few.get('test_std'))}" if few else "")
        knn_text = (_pending(knn[0]) or " / ".join(_num(r.get("test_mean")) for r in knn)) if knn else ""
        lines.append({
            "model": model, "source": _sources(full, few, *knn), "accuracy (%)": full_text,
            "accuracy, 400 per class (%)": few_text, knn_column: knn_text,
            "max # of feature units": "" if units is None else str(units),
            "feature dimension": "" if dimension is None else str(dimension),
            "C: all labels / 400 per class": " / ".join(_C(r) for r in (full, few) if r),
            WALL_TIME_COLUMN: " / ".join([_feature_seconds(first)] + [_svm_seconds_text(r) for r in (full, few) if r]
                                         + ([_seconds(knn[0].get("knn_wall_time_s"))] if knn else []))})
    return pd.DataFrame(lines)


def _svm_seconds_text(row: dict[str, Any]) -> str:
    """The SVM wall time, '≥' when earlier runs made fits whose time they did not record."""
    untimed = row.get("resumed_fits") and _missing(row.get("resumed_fit_seconds"))
    return ("≥" if untimed else "") + _seconds(row.get("svm_wall_time_s"))


def _sources(*rows: dict[str, Any]) -> str:
    """'measured', 'not measured yet', or 'measured in part' for a line of the wide table."""
    sources = {row["source"] for row in rows if row}
    return "measured" if sources == {"measured"} else NOT_MEASURED if "measured" not in sources else "measured in part"


def _pending(row: dict[str, Any]) -> str:
    """A cell's text for a row not measured yet (and how far it got), else ''."""
    return f"{NOT_MEASURED} ({row['progress']})" if row.get("source") == NOT_MEASURED else ""


def wide_table2(rows: list[dict[str, Any]]) -> pd.DataFrame:
    lines = []
    for row in rows:
        if row["kind"] == "paper":
            lines.append({"model": row["model"], "source": "quoted from the paper",
                          "test error (%), 1000 labels": row["quoted"], "feature dimension": "", "C": "",
                          "wall time (s): features / SVM": ""})
        else:
            dimension = row.get("feature_dimension")
            lines.append({"model": row["model"], "source": row["source"],
                          "test error (%), 1000 labels": _pending(row) or f"{_num(row['test_mean'])} ± "
                                                                          f"{_num(row['test_ci95'])}",
                          "feature dimension": "" if dimension is None else str(dimension), "C": _C(row),
                          "wall time (s): features / SVM": f"{_feature_seconds(row)} / "
                                                           f"{_seconds(row.get('svm_wall_time_s'))}"})
    return pd.DataFrame(lines)


def _scale_text(context: dict[str, Any], per_class: bool) -> str:
    if context["scale"] == "full":
        return (f"Scale: full ({context['train_rows']:,} training / {context['test_rows']:,} test images).")
    per = (f" = {context['train_rows'] // 10:,} / {context['test_rows'] // 10:,} per class" if per_class
           else ", classes in proportion")
    return (f"Scale: CI, a fixed subset of {context['dataset']} ({context['train_rows']:,} training / "
            f"{context['test_rows']:,} test images{per}; stratified, seed {context['subset_seed']}, rows sha256 "
            f"{context['train_subset_sha256'][:12]} / {context['test_subset_sha256'][:12]}): numbers are for "
            f"regression checks and not comparable with the paper's.")


def _protocols_text(names: Sequence[str], config: BenchConfig) -> str:
    protocols = [make_protocol(name, config) for name in names]
    grids = {protocol.Cs for protocol in protocols}
    parts = []
    for name, protocol in zip(names, protocols):
        changed = {k: v for k, v in protocol_overrides(protocol).items() if k != "Cs"}
        text = ", ".join(f"{k}={v}" for k, v in changed.items())
        if len(grids) > 1:  # grids differ between protocols (e.g. at CI scale): each says its own
            text = ", ".join(filter(None, [text, f"C from {_grid(protocol.Cs)}"]))
        parts.append(f"`{name}`" + (f" with {text}" if text else ""))
    grid = "" if len(grids) > 1 else f", from {_grid(protocols[0].Cs)}"
    return (f"Protocols: {'; '.join(parts)} (seed {config.seed}); C chosen on validation rows of the training "
            f"split, never on test{grid}; '(grid edge)' marks a choice at the grid's end.")


def _grid(Cs: Sequence[float]) -> str:
    return ", ".join(f"{C:g}" for C in Cs)


def _provenance_text(name: str, record: dict[str, Any], seconds: float, config: BenchConfig) -> str:
    commit = record.get("git_commit") or "unknown"
    dirty = " (uncommitted changes)" if record.get("git_dirty") else ""
    how = "Written from the rows measured so far" if config.saved_only else "Measured"
    took = "" if config.saved_only else f", {seconds:.0f} s in all"
    return (f"{how} with gan-features at commit {commit[:12]}{dirty} on {record.get('hostname')}, "
            f"{record.get('created')}{took}, by `{command_line(config)}`; every number's provenance (the commit "
            f"and time it was measured at, checkpoint sha256, feature stores, seeds, wall times) is in {name}.csv.")


def partial_line(rows: list[dict[str, Any]], config: BenchConfig) -> str:
    """The bold line above a table with rows not measured yet: how many are done and how to finish."""
    measured = sum(row["source"] == "measured" for row in rows)
    pending = sum(row["source"] == NOT_MEASURED for row in rows)
    if not pending:
        return ""
    return (f"**Partial: {measured} of {measured + pending} measurements are done; the others say "
            f"'{NOT_MEASURED}' and how far they got. `{command_line(config, saved_only=False)}` measures "
            f"the rest.**")


def table1_note(context: dict[str, Any], config: BenchConfig, record: dict[str, Any], seconds: float) -> str:
    lines = [f"Paper rows: {paper.CITATION}, Table 1 (its DCGAN was trained on Imagenet-1k).",
             _scale_text(context, per_class=True), _protocols_text(TABLE1_PROTOCOLS, config),
             (f"Features: every conv block max-pooled to 4x4 and concatenated, batch-norm statistics recomputed "
              f"over the training images, extracted in {config.precision}; raw pixels in [-1, 1]; k-means fitted on "
              f"the training images only, its features standardised with the training split's mean and variance as "
              f"Coates et al. did."),
             _knn_note(config), _provenance_text(TABLE1, record, seconds, config)]
    return _paragraphs(*lines)


def _knn_note(config: BenchConfig) -> str:
    """The note's sentence on the k-NN columns ('' without them)."""
    if not config.knn:
        return ""
    return (f"k-NN: each test image's k = {' and '.join(map(str, KNN_KS))} training images of highest cosine "
            f"similarity (L2-normalised features) vote with weight exp(similarity / {KNN_TEMPERATURE:g}), as DINO's "
            f"eval_knn.py; measured once per representation on all the training images of this scale, choosing "
            f"nothing (no validation rows); the paper quotes no k-NN.")


def svhn_status(config: BenchConfig) -> tuple[bool, str]:
    """Whether SVHN is on disk, and if not, why not (for the one-line note)."""
    if not config.svhn_root:
        return False, "no SVHN folder was given"
    root = Path(config.svhn_root).expanduser()
    missing = [name for name in SVHN_FILES if not (root / name).is_file()]
    if missing:
        return False, f"{' and '.join(missing)} not found in {root}"
    return True, ""


def svhn_absent_line(config: BenchConfig, reason: str) -> str:
    """The one line that says Table 2 has only the paper's rows, and the exact command for ours."""
    from .radford import SVHN

    checkpoint = config.svhn_checkpoint or "radford-svhn.pt"
    steps = []
    if not config.svhn_checkpoint:
        steps.append(f"gan-features import-radford PATH/TO/{SVHN.directory} --out {checkpoint}")
    svhn_root = config.svhn_root or "DIR_WITH_train_32x32.mat_AND_test_32x32.mat"
    steps.append(command_line(config, svhn_root=svhn_root, svhn_checkpoint=checkpoint, saved_only=False))
    return (f"**SVHN was not available here ({reason}), so only the paper's rows are shown.** To measure ours: "
            f"`{' && '.join(steps)}`")


# ---------------------------------------------------------------------------------------------- run
def run_bench(config: BenchConfig) -> dict[str, Path]:
    """Measure, then write ``table1_cifar10.md/.csv`` and ``table2_svhn.md/.csv`` into ``config.results_dir``.

    All four files are written together at the end, atomically: a failure anywhere leaves the
    previous tables as they were. With ``config.saved_only`` nothing is measured: the tables show the
    rows kept in the cache, the rest marked "not measured yet". Returns {file name: path}.
    """
    started = time.perf_counter()
    results_dir, cache_dir = Path(config.results_dir), Path(config.cache_dir).expanduser()
    _check_config(config, results_dir)
    cifar_root = _cifar_root(config)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GanFeaturesError(f"cannot create the feature cache {cache_dir}: {error.strerror}") from None
    cache = _Cache(cache_dir, config.scale, config.precision, config.progress, read_only=config.saved_only)
    device = pick_device(config.device)
    rows1, context1 = _table1_rows(config, cifar_root, cache, device)
    rows2, context2 = _table2_rows(config, cache, device)

    seconds, record = time.perf_counter() - started, provenance()
    settings = json.dumps(config.to_dict(), sort_keys=True)  # API-only settings too, which the command lacks
    for row in (*rows1, *rows2):
        if row["source"] == "measured":
            row["bench_config"] = settings
    if context2 is None:
        note2 = svhn_absent_line(config, svhn_status(config)[1])
    else:
        note2 = _paragraphs(partial_line(rows2, config), f"Paper rows: {paper.CITATION}, Table 2.",
                            _scale_text(context2, per_class=False),
                            _protocols_text((TABLE2_PROTOCOL,), config) + " Test error: mean ± 1.96 std over the "
                            "draws, as the original analysis printed it.",
                            moved_choices(results_dir / f"{TABLE2}.csv", rows2),
                            _provenance_text(TABLE2, record, seconds, config))
    texts = {
        results_dir / f"{TABLE1}.md": _markdown(
            wide_table1(rows1),
            f"Table 1: CIFAR-10, linear L2-SVM{' and k-NN' * config.knn} on features ({config.scale} scale)",
            _paragraphs(partial_line(rows1, config), table1_note(context1, config, record, seconds),
                        moved_choices(results_dir / f"{TABLE1}.csv", rows1))),
        results_dir / f"{TABLE1}.csv": _csv(rows1),
        results_dir / f"{TABLE2}.md": _markdown(
            wide_table2(rows2), f"Table 2: SVHN, 1000 labels, linear L2-SVM on features ({config.scale} scale)", note2),
        results_dir / f"{TABLE2}.csv": _csv(rows2),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(texts)
    return {path.name: path for path in texts}


def moved_choices(previous_csv: Path, rows: list[dict[str, Any]]) -> str:
    """The note's paragraph on every measured SVM row whose chosen C differs from the one in the
    table it replaces (``previous_csv``, if any), with the new run's validation score at each C:
    what explains a moved C (a near tie between two Cs, or features that changed)."""
    try:
        old = pd.read_csv(previous_csv)
    except (OSError, ValueError):  # no earlier table, or not one of ours
        return ""
    if not {"model", "protocol", "source", "C", "validation_mean"} <= set(old.columns):
        return ""
    then = {(row.model, row.protocol): row for row in old[old["source"] == "measured"].itertuples()}
    moves = []
    for row in rows:
        before = then.get((row["model"], row["protocol"]))
        if row["source"] != "measured" or before is None or row["protocol"] not in (*TABLE1_PROTOCOLS, TABLE2_PROTOCOL) \
                or not np.isfinite(before.C) or np.isclose(before.C, row["C"], rtol=1e-9, atol=0):
            continue
        by_C = json.loads(row.get("validation_by_C") or "{}")
        now = ", ".join(f"{C} {score:.2f}" for C, score in by_C.items()) or "not recorded"
        moves.append(f"{row['model']}, `{row['protocol']}`: C {before.C:g} -> {row['C']:g} (validation "
                     f"{row['metric']} then {before.validation_mean:.2f} % at {before.C:g}; now, by C: {now})")
    if not moves:
        return ""
    return f"Chosen C moved from the table this replaces ({previous_csv.name} in git): " + "; ".join(moves) + "."


def _paragraphs(*texts: str) -> str:
    return "\n\n".join(text for text in texts if text)


def _table1_rows(config: BenchConfig, cifar_root: str, cache: _Cache, device
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The paper's Table 1 rows, then ours under both protocols, and the scale's context."""
    train, test, context = _load_splits("cifar10", cifar_root, config.scale)
    if config.knn and len(train) < max(KNN_KS):
        raise GanFeaturesError(f"the k-NN's k={max(KNN_KS)} is more than the {len(train)} training images at this "
                               f"scale: pass --no-knn (knn=False) to leave the k-NN columns out")
    rows = paper_rows_table1()

    def measure(make: Callable[[], Features]) -> None:
        rows.extend(_measure_or_pending("1", make, TABLE1_PROTOCOLS, config, context, cache,
                                        knn_device=device if config.knn else None))

    def discriminator(label: str, kind: str, path: str | os.PathLike) -> Callable[[], Features]:
        return lambda: checkpoint_features(label, kind, path, train, test, cache, device, config.batch_size)

    for kind, pairs in (("trained discriminator", config.checkpoints),
                        ("trained on CIFAR-10 training images (labels unused)", config.cifar_checkpoints)):
        for label, path in pairs:
            measure(discriminator(label, kind, path))
    if config.random_baseline:  # one per architecture among the trained ones, in order of appearance
        for arch in dict.fromkeys(load_checkpoint(path).architecture.name
                                  for _, path in (*config.checkpoints, *config.cifar_checkpoints)):
            path = random_checkpoint_path(arch, config.seed, cache.directory, make=not cache.read_only)
            measure(discriminator(f"random {arch} discriminator (seed {config.seed})", "random init", path))
    if config.pixel_baseline:
        measure(lambda: pixel_features(train, test, cache))
    if config.kmeans_centroids:
        measure(lambda: kmeans_features(train, test, cache, config.kmeans_centroids, config.kmeans_options,
                                        config.seed, device))
    return rows, context


def _table2_rows(config: BenchConfig, cache: _Cache, device) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The paper's Table 2 rows, then ours when SVHN is on disk (context None when it is not)."""
    rows = paper_rows_table2()
    if not svhn_status(config)[0]:
        return rows, None
    train, test, context = _load_splits("svhn", str(config.svhn_root), config.scale)
    models = [(label, path, "trained discriminator") for label, path in config.checkpoints]
    if config.svhn_checkpoint:
        arch = load_checkpoint(config.svhn_checkpoint).architecture.name
        models.insert(0, (f"DCGAN {arch}, the paper authors' SVHN weights (imported)", config.svhn_checkpoint,
                          "imported authors' discriminator"))
    for label, path, kind in models:
        rows += _measure_or_pending(
            "2", lambda: checkpoint_features(label, kind, path, train, test, cache, device, config.batch_size),
            (TABLE2_PROTOCOL,), config, context, cache)
    return rows, context


def _csv(rows: list[dict[str, Any]]) -> str:
    return long_table(rows).to_csv(index=False, lineterminator="\n")


def _cifar_root(config: BenchConfig) -> str:
    root = resolve_root(config.cifar_root)
    if root is None:
        raise GanFeaturesError("no CIFAR-10 folder: pass --cifar-root DIR (the folder holding cifar-10-batches-py/) "
                               "or set $GAN_FEATURES_DATA")
    if locate_cifar10(Path(root).expanduser()) is None:
        raise GanFeaturesError(f"CIFAR-10 not found in {root}: no cifar-10-batches-py/ or cifar-10-batches-bin/ "
                               f"there; point --cifar-root at the folder holding the extracted official archive")
    return root


def _check_config(config: BenchConfig, results_dir: Path) -> None:
    """Every path the run needs, checked before minutes of work rather than after."""
    for label, path in (*config.checkpoints, *config.cifar_checkpoints):
        if not Path(path).is_file():
            raise GanFeaturesError(f"checkpoint {path} (for {label!r}) does not exist")
    if config.svhn_checkpoint and not Path(config.svhn_checkpoint).is_file():
        raise GanFeaturesError(f"SVHN checkpoint {config.svhn_checkpoint} does not exist: make it with "
                               f"`gan-features import-radford DIR --out {config.svhn_checkpoint}`")
    if results_dir.exists() and not results_dir.is_dir():
        raise GanFeaturesError(f"results directory {results_dir} exists but is not a directory")
    for name in (*TABLE1_PROTOCOLS, TABLE2_PROTOCOL):
        make_protocol(name, config)  # a bad C grid or override fails now, not after the first extraction


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


__all__ = [
    "CI_PROTOCOL_OVERRIDES",
    "CI_SIZES",
    "CI_SUBSET_SEED",
    "BenchConfig",
    "Features",
    "ci_subset",
    "command_line",
    "rows_sha256",
    "run_bench",
    "stratified_subset",
    "svhn_status",
]
