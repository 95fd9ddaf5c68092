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
* the k-means baseline (:class:`gan_features.representations.KMeansFeatures`, K=1600 by default),
  fitted on the training images only.

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
them with the committed ones (``benchmarks/check_ci_tables.py``). ``toy`` is a smaller subset drawn
the same way (1,000 train / 500 test for CIFAR-10, so part of the CI subset) with the few-label
protocols shrunk to fit it (:data:`TOY_PROTOCOL_OVERRIDES`): the smoke test of the whole recipe
(``benchmarks/reproduce.py --toy``); it has no default results folder and its tables say they are
not comparable with anything.

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

With ``layers`` a run writes the per-block table instead (:mod:`.layers`: ``layers_cifar10.md/.csv/.png``):
for each discriminator row, ``cifar10-400`` and the k-NN on each conv block alone and on blocks 1..k,
read as column views of the same stores; its all-blocks rows are Table 1's (the same cache key).

Modules: :mod:`.config` (what a run measures), :mod:`.splits` (full scale or the CI subset),
:mod:`.stores` (each representation's stores in the cache), :mod:`.measure` (the SVM and k-NN rows,
kept for ``resume``), :mod:`.tables` (rendering), :mod:`.layers` (the per-block table), :mod:`.run`
(:func:`run_bench`).
"""
from ..subsets import rows_sha256
from . import config, layers, measure, run, splits, stores, tables
from .config import (
    CACHE_ENV,
    CI_PROTOCOL_OVERRIDES,
    CI_SIZES,
    CI_SUBSET_SEED,
    DEFAULT_KMEANS_CENTROIDS,
    FULL_PROTOCOL_OVERRIDES,
    LAYERS_PROTOCOL,
    LAYERS_TABLE,
    NOT_MEASURED,
    SCALES,
    TABLE1,
    TABLE1_PROTOCOLS,
    TABLE2,
    TABLE2_PROTOCOL,
    TOY_PROTOCOL_OVERRIDES,
    TOY_SIZES,
    BenchConfig,
    checkpoint_layers,
    command_line,
    make_protocol,
    scale_protocol_overrides,
    subset_sizes,
    svhn_status,
)
from .measure import knn_protocols
from .run import run_bench
from .splits import ci_subset, stratified_subset
from .stores import Features
from .tables import long_table, moved_choices, paper_rows_table1, paper_rows_table2, wide_table1, wide_table2

__all__ = [
    "CACHE_ENV",
    "CI_PROTOCOL_OVERRIDES",
    "CI_SIZES",
    "CI_SUBSET_SEED",
    "DEFAULT_KMEANS_CENTROIDS",
    "FULL_PROTOCOL_OVERRIDES",
    "LAYERS_PROTOCOL",
    "LAYERS_TABLE",
    "NOT_MEASURED",
    "SCALES",
    "TABLE1",
    "TABLE1_PROTOCOLS",
    "TABLE2",
    "TABLE2_PROTOCOL",
    "TOY_PROTOCOL_OVERRIDES",
    "TOY_SIZES",
    "BenchConfig",
    "Features",
    "checkpoint_layers",
    "ci_subset",
    "command_line",
    "config",
    "knn_protocols",
    "layers",
    "long_table",
    "make_protocol",
    "measure",
    "moved_choices",
    "paper_rows_table1",
    "paper_rows_table2",
    "rows_sha256",
    "run",
    "run_bench",
    "scale_protocol_overrides",
    "splits",
    "stores",
    "stratified_subset",
    "subset_sizes",
    "svhn_status",
    "tables",
    "wide_table1",
    "wide_table2",
]
