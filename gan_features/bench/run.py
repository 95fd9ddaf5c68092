"""``run_bench``: measure every row of Tables 1 and 2, then write both tables together."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..checkpoints import load_checkpoint
from ..data import resolve_root
from ..data.cifar import locate as locate_cifar10
from ..device import pick_device
from ..errors import GanFeaturesError
from ..models import discriminator_architecture
from ..output import figure_classes, write_texts
from ..provenance import provenance
from ..representations import FeatureSpec
from . import config as conf
from .config import TABLE2_PROTOCOL, BenchConfig, checkpoint_layers, make_protocol, svhn_status
from .kept import KEPT_COLUMN, updated_rows
from .layers import layer_rows, write_layers_table
from .measure import measure_or_pending
from .splits import load_splits
from .stores import (
    IMPORTED_KIND,
    FeatureCache,
    Features,
    discriminator_features,
    kmeans_features,
    pixel_features,
    random_checkpoint_path,
)
from .tables import paper_rows_table1, paper_rows_table2, table_texts


def run_bench(config: BenchConfig) -> dict[str, Path]:
    """Measure, then write ``table1_cifar10.md/.csv`` and ``table2_svhn.md/.csv`` into ``config.results_dir``.

    All four files are written together at the end, atomically: a failure anywhere leaves the
    previous tables as they were. With ``config.update`` the rows of every representation not
    measured now are kept from those previous tables (:mod:`.kept`). With ``config.saved_only``
    nothing is measured: the tables show the rows kept in the cache, the rest marked "not measured
    yet". Returns {file name: path}.
    """
    started = time.perf_counter()
    results_dir, cache_dir = Path(config.results_dir), Path(config.cache_dir).expanduser()
    _check_config(config, results_dir)
    cifar_root = _cifar_root(config)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GanFeaturesError(f"cannot create the feature cache {cache_dir}: {error.strerror}") from None
    cache = FeatureCache(cache_dir, config.scale, config.precision, config.progress, read_only=config.saved_only)
    device = pick_device(config.device)
    if config.layers:
        figure = figure_classes()  # before any work: the table's plot needs matplotlib
        train, test, context = load_splits("cifar10", cifar_root, config.scale)
        rows = layer_rows(config, _discriminators(config, cache), train, test, context, cache, device)
        if config.update:
            rows = updated_rows(results_dir / f"{conf.LAYERS_TABLE}.csv", rows, config.precision)
        seconds, record = time.perf_counter() - started, provenance()
        _record_settings(config, rows)
        results_dir.mkdir(parents=True, exist_ok=True)
        return write_layers_table(results_dir, config, rows, context, record, seconds, figure)
    rows1, context1 = _table1_rows(config, cifar_root, cache, device)
    rows2, context2 = _table2_rows(config, cache, device)
    if config.update:
        rows1 = updated_rows(results_dir / f"{conf.TABLE1}.csv", rows1, config.precision)
        rows2 = updated_rows(results_dir / f"{conf.TABLE2}.csv", rows2, config.precision)

    seconds, record = time.perf_counter() - started, provenance()
    _record_settings(config, [*rows1, *rows2])
    texts = table_texts(results_dir, config, rows1, context1, rows2, context2, record, seconds)
    results_dir.mkdir(parents=True, exist_ok=True)
    write_texts(texts)
    return {path.name: path for path in texts}


def _record_settings(config: BenchConfig, rows: list[dict[str, Any]]) -> None:
    settings = json.dumps(config.to_dict(), sort_keys=True)  # API-only settings too, which the command lacks
    for row in rows:
        if row["source"] == "measured" and not row.get(KEPT_COLUMN):  # a kept row keeps the run that measured it
            row["bench_config"] = settings


def _discriminators(config: BenchConfig, cache: FeatureCache) -> list[tuple[str, str, str]]:
    """(label, kind, checkpoint argument) of every discriminator row: the trained ones given, then a
    random one of each of their discriminators' architectures, in order of appearance (made in the cache
    once; a generator-only variant such as radford-imagenet32-resize shares radford-imagenet32's)."""
    rows = [(label, kind, path) for kind, pairs in (
        ("trained discriminator", config.checkpoints),
        ("trained on CIFAR-10 training images (labels unused)", config.cifar_checkpoints)) for label, path in pairs]
    if config.random_baseline:
        architectures = (load_checkpoint(checkpoint_layers(path)[0]).architecture for _, _, path in rows)
        for arch in dict.fromkeys(discriminator_architecture(a).name for a in architectures):
            path = random_checkpoint_path(arch, config.seed, cache.directory, make=not cache.read_only)
            rows.append((f"random {arch} discriminator (seed {config.seed})", "random init", str(path)))
    return rows


def _table1_rows(config: BenchConfig, cifar_root: str, cache: FeatureCache, device
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The paper's Table 1 rows, then ours under both protocols, and the scale's context."""
    train, test, context = load_splits("cifar10", cifar_root, config.scale)
    if config.knn and len(train) < max(conf.KNN_KS):
        raise GanFeaturesError(f"the k-NN's k={max(conf.KNN_KS)} is more than the {len(train)} training images at this "
                               f"scale: pass --no-knn (knn=False) to leave the k-NN columns out")
    rows = paper_rows_table1()

    def measure(make: Callable[[], Features]) -> None:
        # Both protocols and the k-NN read the stores: from memory, one read of each file.
        rows.extend(measure_or_pending("1", lambda: make().holding(), conf.TABLE1_PROTOCOLS, config, context, cache,
                                        knn_device=device if config.knn else None))

    def discriminator(label: str, kind: str, path: str | os.PathLike) -> Callable[[], Features]:
        return lambda: discriminator_features(label, kind, path, train, test, cache, device, config.batch_size)

    for label, kind, path in _discriminators(config, cache):
        measure(discriminator(label, kind, path))
    if config.pixel_baseline:
        measure(lambda: pixel_features(train, test, cache))
    if config.kmeans_centroids:
        measure(lambda: kmeans_features(train, test, cache, config.kmeans_centroids, config.kmeans_options,
                                        config.seed, device))
    return rows, context


def _table2_rows(config: BenchConfig, cache: FeatureCache, device
                 ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The paper's Table 2 rows, then ours when SVHN is on disk (context None when it is not)."""
    rows = paper_rows_table2()
    if not svhn_status(config)[0]:
        return rows, None
    train, test, context = load_splits("svhn", str(config.svhn_root), config.scale)
    models = [(label, path, "trained discriminator") for label, path in config.checkpoints]
    if config.svhn_checkpoint:
        arch = load_checkpoint(config.svhn_checkpoint).architecture.name
        models.insert(0, (f"DCGAN {arch}, the paper authors' SVHN weights (imported)", config.svhn_checkpoint,
                          IMPORTED_KIND))
    for label, path, kind in models:
        rows += measure_or_pending(
            "2", lambda: discriminator_features(label, kind, path, train, test, cache, device, config.batch_size),
            (TABLE2_PROTOCOL,), config, context, cache)
    return rows, context


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
    for label, argument in (*config.checkpoints, *config.cifar_checkpoints):
        path, layers = checkpoint_layers(argument)
        if not Path(path).is_file():
            raise GanFeaturesError(f"checkpoint {path} (for {label!r}) does not exist")
        if layers is not None:  # blocks the architecture lacks: refused now, not after the rows before it
            discriminator = load_checkpoint(path).discriminator
            if discriminator is None:
                raise GanFeaturesError(f"checkpoint {path} (for {label!r}) holds no discriminator")
            FeatureSpec(layers=layers).block_indices(discriminator)
    if config.svhn_checkpoint and not Path(config.svhn_checkpoint).is_file():
        raise GanFeaturesError(f"SVHN checkpoint {config.svhn_checkpoint} does not exist: make it with "
                               f"`gan-features import-radford DIR --out {config.svhn_checkpoint}`")
    if results_dir.exists() and not results_dir.is_dir():
        raise GanFeaturesError(f"results directory {results_dir} exists but is not a directory")
    for name in (*conf.TABLE1_PROTOCOLS, TABLE2_PROTOCOL):
        make_protocol(name, config)  # a bad C grid or override fails now, not after the first extraction
