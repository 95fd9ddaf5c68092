"""What a bench run measures: :class:`BenchConfig`, the scales and the protocols as measured.

Each field of :class:`BenchConfig` is a ``gan-features bench`` flag; :func:`command_line` writes the
command for a config, which the tables print where they tell the reader how to measure what is
missing (a partial table, Table 2 without SVHN).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..device import PRECISIONS
from ..errors import GanFeaturesError
from ..knn import KS as KNN_KS  # noqa: F401  (read as config.KNN_KS, so one assignment changes every use)
from ..protocols import PROTOCOLS, Protocol, get_protocol

SCALES = ("full", "ci", "toy")
# Full-scale tables are the ones to set beside the paper's, so they sit at the top of results/. The toy
# scale has no default: its tables say nothing about the paper, so they must not land among these.
DEFAULT_RESULTS_DIRS = {"full": "results", "ci": os.path.join("results", "ci")}
CI_SUBSET_SEED = 20151119  # a fixed constant (the paper's arXiv submission date); never change it
CI_SIZES = {"train": 10_000, "test": 2_000}  # CIFAR-10: 1,000 / 200 per class
# Every scale's protocols stop their ascending C path once 2 Cs in a row score no better on validation
# (patience): the largest Cs take most of a path's time (at full scale, C = 5e-3 and 1e-2 of the 45,000-row
# path took 2,500 of its 3,900 s), and no validation curve of the committed tables rises again after two
# such Cs: every full-scale curve of the whole grid (results/table1_cifar10.csv, validation_by_C) peaks once,
# so patience chooses the C the whole grid chose. C is still chosen on validation rows only.
BENCH_PATIENCE = 2
FULL_PROTOCOL_OVERRIDES: dict[str, dict[str, Any]] = {
    name: {"patience": BENCH_PATIENCE} for name in ("cifar10", "cifar10-400", "svhn-1000")}
# The CI training subset has 10,000 rows, so the few-label protocols cannot hold out their default
# 10,000 for validation: 2,000 are held out and the draws come from the other 8,000. cifar10-400 also
# makes fewer draws (2 to choose C, 4 to test, instead of 5 and 10): CI must stay well under its time
# limit with four representations, two of them 28,672-d, and the per-block table.
CI_PROTOCOL_OVERRIDES: dict[str, dict[str, Any]] = {
    "cifar10": {"patience": BENCH_PATIENCE},
    "cifar10-400": {"validation_size": 2_000, "selection_draws": 2, "test_draws": 4, "patience": BENCH_PATIENCE},
    "svhn-1000": {"validation_size": 2_000, "patience": BENCH_PATIENCE}}
# The toy scale: a smoke test of the whole recipe (benchmarks/reproduce.py --toy, which CI runs), drawn
# as the CI subset is (same seed and salts, so it is a subset of it), 100 / 50 images per class. Its
# 1,000 training rows hold out 200 for validation, so the few-label protocols draw 40 (cifar10-400) or
# 20 (svhn-1000, whose smallest class has ~64 rows in proportion) labels per class from the other 800,
# and make two draws to choose C and three to test: minutes, not a measurement.
TOY_SIZES = {"train": 1_000, "test": 500}
TOY_PROTOCOL_OVERRIDES: dict[str, dict[str, Any]] = {
    "cifar10": {"patience": BENCH_PATIENCE},
    "cifar10-400": {"n_per_class": 40, "validation_size": 200, "selection_draws": 2, "test_draws": 3,
                    "patience": BENCH_PATIENCE},
    "svhn-1000": {"n_per_class": 20, "validation_size": 200, "selection_draws": 2, "test_draws": 3,
                  "patience": BENCH_PATIENCE}}
TABLE1_PROTOCOLS = ("cifar10", "cifar10-400")
TABLE2_PROTOCOL = "svhn-1000"
TABLE1, TABLE2 = "table1_cifar10", "table2_svhn"
LAYERS_TABLE = "layers_cifar10"  # the per-block table (``layers``): its .md, .csv and .png
LAYERS_PROTOCOL = "cifar10-400"  # its SVM protocol: the cheap one of Table 1's two
KNN_PRECISION = "fp32"  # how the k-NN holds the training matrix (gan_features.knn); k and T: knn.KS, knn.TEMPERATURE
NOT_MEASURED = "not measured yet"  # the source of a row a saved_only run has no measurement for
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
CACHE_ENV = "GAN_FEATURES_CACHE"
DEFAULT_KMEANS_CENTROIDS = 1600


@dataclass
class BenchConfig:
    """Everything a bench run depends on. Each field is a ``gan-features bench`` flag (:func:`command_line`)."""

    checkpoints: Sequence[tuple[str, str]] = ()  # (label, path): our trained discriminators
    cifar_checkpoints: Sequence[tuple[str, str]] = ()  # (label, path): trained on CIFAR-10 train, labels unused
    cifar_root: str | None = None  # folder holding cifar-10-batches-py/ (default: $GAN_FEATURES_DATA)
    svhn_root: str | None = None  # folder holding train_32x32.mat and test_32x32.mat; Table 2 is measured if so
    svhn_checkpoint: str | None = None  # the paper authors' SVHN discriminator (gan-features import-radford)
    scale: str = "ci"  # "ci" (fixed stratified subset), "toy" (a smaller one, a smoke test) or "full"
    results_dir: str | None = None  # default: DEFAULT_RESULTS_DIRS[scale] (results, results/ci); toy: required
    cache_dir: str | None = None  # default: $GAN_FEATURES_CACHE/bench, else ~/.cache/gan-features/bench
    seed: int = 0  # protocols (validation splits, label draws) and the random discriminator
    precision: str = "bf16"  # feature extraction: the committed tables' precision
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
    layers: bool = False  # instead of Tables 1 and 2: each discriminator's blocks alone and 1..k (LAYERS_TABLE)
    update: bool = False  # keep the rows of representations not measured now from the tables in results_dir
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
            if self.scale not in DEFAULT_RESULTS_DIRS:
                raise GanFeaturesError(f"the {self.scale} scale has no default results folder: pass --results DIR "
                                       f"(outside results/: its tables are not comparable with any there)")
            self.results_dir = DEFAULT_RESULTS_DIRS[self.scale]
        elif self.scale not in DEFAULT_RESULTS_DIRS:
            for scale, folder in DEFAULT_RESULTS_DIRS.items():
                if os.path.abspath(self.results_dir) == os.path.abspath(folder):
                    raise GanFeaturesError(f"--results {self.results_dir} is where the {scale}-scale tables go, and "
                                           f"{self.scale}-scale ones would replace them: choose another folder")
        if self.cache_dir is None:
            base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gan-features")
            self.cache_dir = os.path.join(base, "bench")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


LAYERS_MARK = "@layers="  # "LABEL=PATH@layers=0,1,2,3": the row uses these conv blocks only


def checkpoint_layers(path: str) -> tuple[str, tuple[int, ...] | None]:
    """A checkpoint argument's file and the conv blocks its row uses (None: every block)."""
    file, mark, layers = str(path).rpartition(LAYERS_MARK)
    if not mark:
        return str(path), None
    try:
        blocks = tuple(sorted({int(block) for block in layers.split(",")}))
    except ValueError:
        blocks = ()
    if not blocks or min(blocks) < 0 or not file:
        raise GanFeaturesError(f"{path!r}: after {LAYERS_MARK!r} give comma-separated conv block indices from 0, "
                               f"e.g. PATH{LAYERS_MARK}0,1,2,3")
    return file, blocks


def _labelled(items: Sequence, what: str) -> tuple[tuple[str, str], ...]:
    """(label, path) pairs, from pairs or from the CLI's ``"LABEL=PATH"`` strings; a path may end in
    ``@layers=0,1,2,3`` (:func:`checkpoint_layers`, checked here)."""
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
        checkpoint_layers(path)
        pairs.append((label, path))
    return tuple(pairs)


def command_line(config: BenchConfig, **changes: Any) -> str:
    """The ``gan-features bench`` command that runs ``config`` (with ``changes``), shell-quoted."""
    config = dataclasses.replace(config, **changes)
    default = BenchConfig(scale=config.scale, results_dir=config.results_dir)  # the toy scale has no default folder
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
                                   ("--saved-only", not config.saved_only), ("--layers", not config.layers),
                                   ("--update", not config.update)) if not on]
    return " ".join(shlex.quote(arg) for arg in args)


def subset_sizes(scale: str) -> dict[str, int] | None:
    """{"train": n, "test": n} of a subset scale (read when called, so a test may shrink them), None at full."""
    return {"ci": CI_SIZES, "toy": TOY_SIZES}.get(scale)


def scale_protocol_overrides(scale: str) -> dict[str, dict[str, Any]]:
    """The protocol changes a scale makes, by protocol name (at full scale: patience only)."""
    return {"full": FULL_PROTOCOL_OVERRIDES, "ci": CI_PROTOCOL_OVERRIDES, "toy": TOY_PROTOCOL_OVERRIDES}[scale]


def make_protocol(name: str, config: BenchConfig) -> Protocol:
    """The protocol as measured: the scale's changes, then ``config.Cs``, then ``config.protocol_overrides``.

    Later ones win, so a C grid may come from any of the three (e.g. a shorter one at CI scale).
    """
    overrides = {**scale_protocol_overrides(config.scale).get(name, {}),
                 **({"Cs": config.Cs} if config.Cs is not None else {}),
                 **config.protocol_overrides.get(name, {})}
    return get_protocol(name, seed=config.seed, **overrides)


def protocol_overrides(protocol: Protocol) -> dict[str, Any]:
    """The parameters that differ from the protocol's defaults (the seed aside)."""
    default = type(protocol)().params
    return {key: value for key, value in protocol.params.items() if key != "seed" and value != default[key]}


def svhn_status(config: BenchConfig) -> tuple[bool, str]:
    """Whether SVHN is on disk, and if not, why not (for the one-line note)."""
    if not config.svhn_root:
        return False, "no SVHN folder was given"
    root = Path(config.svhn_root).expanduser()
    missing = [name for name in SVHN_FILES if not (root / name).is_file()]
    if missing:
        return False, f"{' and '.join(missing)} not found in {root}"
    return True, ""


