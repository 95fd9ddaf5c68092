"""The bench: CI subsets, the paper's rows, table layout and provenance, caching, the CLI, the CI table check.

The end-to-end runs use a synthetic CIFAR-10 written in the official python format (classes
differ in colour, so every representation separates them) and radford-svhn32 checkpoints.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import pickle
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from gan_features import bench, cli, paper
from gan_features.svm.estimator import DEFAULT_PRECONDITIONER_RANK
from gan_features.bench import (
    CI_SUBSET_SEED,
    BenchConfig,
    checkpoint_layers,
    command_line,
    long_table,
    rows_sha256,
    run_bench,
    stratified_subset,
)
from gan_features.data import ArrayImageDataset
from gan_features.representations import discriminator as discriminator_module
from gan_features.errors import GanFeaturesError
from gan_features.protocols import PAPER_CS, Protocol
from gan_features.store import FeatureStore
from gan_features.train import random_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # small kernels on 2 shared cores
REPO = Path(__file__).resolve().parents[1]
# Every function through which the bench makes features: patched to refuse where nothing may be made.
FEATURE_MAKERS = ("gan_features.representations.discriminator.prepare_discriminator",
                  "gan_features.bench.stores.extract_to_store", "gan_features.representations.base.FeatureWriter",
                  "gan_features.representations.kmeans.FeatureWriter")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY = {"cifar10-400": {"n_per_class": 5, "validation_size": 50, "selection_draws": 1, "test_draws": 2},
        "svhn-1000": {"n_per_class": 5, "validation_size": 50, "selection_draws": 1, "test_draws": 2}}
TRAINED = "DCGAN svhn32 (test stand-in)"


def coloured_images(per_class: int, rng: np.random.Generator, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images, each its class's colour plus noise; labels shuffled."""
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    images = colours[labels][:, :, None, None] + rng.normal(0, 40, (len(labels), 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_cifar10(root: Path, train_per_class: int = 20, test_per_class: int = 10, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` in the official layout: pickled dicts with bytes keys, rows (N, 3072)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(10, 3))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(obj, name):
        with open(folder / name, "wb") as handle:
            pickle.dump(obj, handle, protocol=3)

    images, labels = coloured_images(train_per_class, rng, colours)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        dump({b"data": images[part].reshape(len(part), -1), b"labels": labels[part].tolist()}, f"data_batch_{i + 1}")
    images, labels = coloured_images(test_per_class, rng, colours)
    dump({b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}, "test_batch")
    dump({b"label_names": [name.encode() for name in CLASSES]}, "batches.meta")
    return root


def write_svhn(root: Path, train_per_class: int = 20, test_per_class: int = 10, seed: int = 1) -> Path:
    """train_32x32.mat / test_32x32.mat as the official files: X (32, 32, 3, N), y in 1..10."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(10, 3))
    root.mkdir(parents=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = coloured_images(per_class, rng, colours)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0),
                                                        "y": np.where(labels == 0, 10, labels)[:, None]})
    return root


def tiny_config(tmp: Path, **changes) -> BenchConfig:
    """Small enough for a test: tiny protocol draws, 2 Cs, k-means on 2,000 patches, liblinear.

    liblinear: the solver is not what these tests are about (tests/test_svm.py is), and on a
    few hundred separable rows it is the quicker one.
    """
    values = {"checkpoints": [(TRAINED, str(tmp / "trained.pt"))], "cifar_root": str(tmp / "cifar"),
              "scale": "full", "results_dir": str(tmp / "results"), "cache_dir": str(tmp / "cache"),
              "Cs": (1e-2, 1e-1), "protocol_overrides": TINY, "kmeans_centroids": 8,
              "kmeans_options": {"n_patches": 2000, "epochs": 1}, "svm_params": {"backend": "liblinear"},
              "progress": False}
    return BenchConfig(**{**values, **changes})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One bench run on synthetic CIFAR-10 (no SVHN), counting batch-norm preparations."""
    tmp = tmp_path_factory.mktemp("bench")
    write_cifar10(tmp / "cifar")
    random_checkpoint("radford-svhn32", tmp / "trained.pt", seed=7)  # stands in for a trained one
    config = tiny_config(tmp)
    prepared = []
    with pytest.MonkeyPatch.context() as patch:
        original = discriminator_module.prepare_discriminator
        patch.setattr(discriminator_module, "prepare_discriminator",
                      lambda *a, **k: prepared.append(a[0].path) or original(*a, **k))
        paths = run_bench(config)
    return tmp, config, paths, prepared


# --------------------------------------------------------------------------------------- CI subsets
def test_ci_subset_is_stratified_deterministic_and_pinned():
    labels = np.random.default_rng(3).permutation(np.repeat(np.arange(10), 5000))  # CIFAR-10's train shape
    rows = stratified_subset(labels, 10_000, CI_SUBSET_SEED, salt="cifar10/train")
    assert len(rows) == len(np.unique(rows)) == 10_000 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [1000] * 10
    assert np.array_equal(rows, stratified_subset(labels, 10_000, CI_SUBSET_SEED, salt="cifar10/train"))
    assert not np.array_equal(rows, stratified_subset(labels, 10_000, CI_SUBSET_SEED, salt="cifar10/test"))
    assert not np.array_equal(rows, stratified_subset(labels, 10_000, CI_SUBSET_SEED + 1, salt="cifar10/train"))
    # Pinned: the rows depend on nothing but (seed, salt, labels); a change here changes every CI number.
    pinned = stratified_subset(np.arange(1000) % 10, 100, CI_SUBSET_SEED, salt="cifar10/train")
    assert pinned[:6].tolist() == [13, 20, 39, 41, 49, 53]
    assert rows_sha256(pinned) == "11b36251da7e11656d5576890c7fd74558f453dab272f74230a857c7d89fed9c"


def test_subset_keeps_unbalanced_classes_in_proportion():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert np.bincount(labels[stratified_subset(labels, 10)]).tolist() == [5, 3, 2]
    assert np.bincount(labels[stratified_subset(labels, 7)]).tolist() == [4, 2, 1]  # largest remainder: 3.5
    with pytest.raises(GanFeaturesError):
        stratified_subset(labels, 101)


def test_ci_subset_dataset_carries_its_fingerprint():
    rng = np.random.default_rng(0)
    images, labels = coloured_images(100, rng, rng.integers(0, 255, (10, 3)))
    data = ArrayImageDataset(images, labels, CLASSES, name="cifar10", split="train", source="synthetic",
                             image_size=32)
    subset, info = bench.ci_subset(data, 500)
    assert len(subset) == 500 and np.bincount(subset.labels).tolist() == [50] * 10
    rows = stratified_subset(labels, 500, CI_SUBSET_SEED, salt="cifar10/train")
    assert np.array_equal(subset.images.numpy(), images[rows]) and info["subset_sha256"] == rows_sha256(rows)
    assert info["subset_sha256"] in subset.describe()["source"]  # so cached stores know their rows
    with pytest.raises(GanFeaturesError, match="use scale 'full'"):
        bench.ci_subset(data, 2_000)


# ------------------------------------------------------------------------------------- paper rows
def test_paper_rows_are_the_papers():
    quoted = {row.model: (row.accuracy.text, row.accuracy_400.text, row.max_feature_units) for row in paper.TABLE1}
    assert quoted == {"1 Layer K-means": ("80.6%", "63.7% (±0.7%)", "4800"),
                      "3 Layer K-means Learned RF": ("82.0%", "70.7% (±0.7%)", "3200"),
                      "View Invariant K-means": ("81.9%", "72.6% (±0.7%)", "6400"),
                      "Exemplar CNN": ("84.3%", "77.4% (±0.2%)", "1024"),
                      "DCGAN (ours) + L2-SVM": ("82.8%", "73.8% (±0.4%)", "512")}
    assert [(r.model, r.error.text) for r in paper.TABLE2] == [
        ("KNN", "77.93%"), ("TSVM", "66.55%"), ("M1+KNN", "65.63%"), ("M1+TSVM", "54.33%"), ("M1+M2", "36.02%"),
        ("SWWAE without dropout", "27.83%"), ("SWWAE with dropout", "23.56%"), ("DCGAN (ours) + L2-SVM", "22.48%"),
        ("Supervised CNN with the same architecture", "28.87% (validation)")]
    dcgan = paper.TABLE1[-1]
    assert (dcgan.accuracy.value, dcgan.accuracy_400.value, dcgan.accuracy_400.spread) == (82.8, 73.8, 0.4)
    assert paper.TABLE2[-1].error.value == 28.87 and paper.TABLE2[-1].error.spread is None


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_held_stores_read_each_file_once_unless_the_pair_is_too_large_for_memory(bench_run, monkeypatch):
    """Table 1's protocols and k-NN read a representation's stores from memory, one read of each file,
    the same rows as the files; a pair larger than its share of RAM is read from the files every time."""
    from gan_features.bench import stores

    _, _, paths, _ = bench_run
    row = pd.read_csv(paths["table1_cifar10.csv"]).query("source == 'measured'").iloc[0]
    features = stores.Features(label="x", kind="k", train_store=Path(row["train_store"]),
                               test_store=Path(row["test_store"]), dimension=int(row["feature_dimension"]),
                               feature_units=None, info={})
    held = features.holding()
    with held.opened() as (train, test), features.opened() as (train_file, test_file):
        assert train._file is None and test._file is None  # in memory: no file behind them
        np.testing.assert_array_equal(train.load()[0], train_file.load()[0])
        np.testing.assert_array_equal(test.labels, test_file.labels)
    with held.opened() as (again, _):
        assert again is train  # kept, not read again
    monkeypatch.setattr(stores, "physical_memory", lambda: 1 << 20)  # 1 MiB of RAM: nothing fits
    with features.holding().opened() as (train, _):
        assert train._file is not None  # read from the file


@pytest.mark.slow
def test_table1_has_papers_rows_verbatim_then_ours_with_provenance(bench_run):
    tmp, config, paths, prepared = bench_run
    assert sorted(paths) == ["table1_cifar10.csv", "table1_cifar10.md", "table2_svhn.csv", "table2_svhn.md"]
    markdown = paths["table1_cifar10.md"].read_text()
    for row in paper.TABLE1:
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row.model} "))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:6] == [row.model, "quoted from the paper", row.accuracy.text, row.accuracy_400.text,
                             "", row.max_feature_units]  # "": the k-NN column (the paper quotes none)
    rows = read_csv(paths["table1_cifar10.csv"])
    quoted = [r for r in rows if r["source"] != "measured"]
    assert [(r["model"], r["protocol"], r["quoted"]) for r in quoted] == [
        (p.model, protocol, cell.text) for p in paper.TABLE1
        for protocol, cell in (("cifar10", p.accuracy), ("cifar10-400", p.accuracy_400))]
    assert all(r["source"] == paper.TABLE1_SOURCE and not r["git_commit"] and not r["train_store"] for r in quoted)

    measured = [r for r in rows if r["source"] == "measured"]
    models = list(dict.fromkeys(r["model"] for r in measured))
    assert models == [TRAINED, "random radford-svhn32 discriminator (seed 0)", "raw pixels (3072-d, in [-1, 1])",
                      "k-means (K=8), fitted on the training images"]
    assert [r["protocol"] for r in measured] == ["cifar10", "cifar10-400", "knn-k20", "knn-k200"] * len(models)
    for r in measured:
        assert 0 <= float(r["test_mean"]) <= 100 and Path(r["train_store"]).is_file()
    measured = [r for r in measured if not r["protocol"].startswith("knn")]  # the SVM's (the k-NN's: below)
    for r in measured:
        assert float(r["C"]) in config.Cs
        assert r["git_commit"] and r["seed"] == "0" and float(r["svm_wall_time_s"]) > 0
        assert Path(r["train_store"]).is_file() and Path(r["test_store"]).is_file()
        assert Path(r["train_store"]).parent == Path(config.cache_dir)  # features live in the cache, not results
        assert r["scale"] == "full" and r["train_rows"] == "200" and r["test_rows"] == "100"
        if r["protocol"] == "cifar10-400":
            assert r["protocol_overrides"] and '"n_per_class": 5' in r["protocol_overrides"]
            assert int(r["test_fits"]) == 2
    trained = next(r for r in measured if r["model"] == TRAINED)
    assert trained["checkpoint_sha256"] == hashlib.sha256((tmp / "trained.pt").read_bytes()).hexdigest()
    assert trained["feature_dimension"] == "7168" and trained["max_feature_units"] == "256"
    assert trained["extraction_precision"] == "bf16" and float(trained["extract_train_s"]) > 0
    assert trained["batchnorm"] == "recompute" and trained["features_cached"] == "no"
    pixels = next(r for r in measured if r["model"].startswith("raw pixels"))
    assert pixels["feature_dimension"] == "3072" and pixels["checkpoint_sha256"] == "none (raw pixels)"
    # k-means: standardised with the training split's statistics before the SVM, as Coates et al.
    row = next(r for r in measured if r["model"] == "k-means (K=8), fitted on the training images")
    assert row["train_store"].endswith("_standardized.h5") and row["feature_dimension"] == str(4 * 8)
    with FeatureStore(row["train_store"]) as store:
        features = store.features[:]
    assert np.allclose(features.mean(axis=0), 0, atol=1e-4) and np.all(features.std(axis=0) <= 1)
    assert features.std(axis=0).max() > 0.9
    # colour classes: the trained stand-in's features separate them
    assert float(trained["test_mean"]) > 50
    # batch-norm statistics prepared once per checkpoint (trained, random), not once per split
    assert len(prepared) == 2 and len(set(prepared)) == 2
    assert "(cached" not in markdown and "measured" in markdown and "7168" in markdown


def test_table1_has_knn_columns_for_every_measured_representation(bench_run):
    """Each measured representation's k-NN (k = 20 and 200, on all training rows) beside its SVM columns."""
    from gan_features.knn import knn_probe

    _, _, paths, _ = bench_run
    text = paths["table1_cifar10.md"].read_text()
    assert text.startswith("# Table 1: CIFAR-10, linear L2-SVM and k-NN on features")
    assert "vote with weight exp(similarity / 0.07), as DINO's eval_knn.py" in text
    header, _, *lines = [[cell.strip() for cell in line.strip("|").split("|")]
                         for line in text.splitlines() if line.startswith("|")]
    column = header.index("k-NN accuracy (%), k=20 / 200")
    assert column == header.index("accuracy, 400 per class (%)") + 1
    cells = {line[0]: line[column] for line in lines}
    assert all(cells[row.model] == "" for row in paper.TABLE1)  # the paper quotes no k-NN
    rows = [r for r in read_csv(paths["table1_cifar10.csv"]) if r["source"] == "measured"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    assert len(models) == 4
    for model in models:
        knn = {r["protocol"]: r for r in rows if r["model"] == model and r["protocol"].startswith("knn")}
        assert sorted(knn) == ["knn-k20", "knn-k200"]
        k20, k200 = knn["knn-k20"], knn["knn-k200"]
        assert cells[model] == f"{float(k20['test_mean']):.2f} / {float(k200['test_mean']):.2f}"
        assert (k20["knn_k"], k200["knn_k"], k20["knn_temperature"], k20["metric"]) == ("20", "200", "0.07", "accuracy")
        assert k20["train_rows"] == "200" and k20["knn_cached"] == "no" and float(k20["knn_wall_time_s"]) > 0
        assert k20["git_commit"] and k20["checkpoint_sha256"] and k20["train_store"] == k200["train_store"]
        again = knn_probe(k20["train_store"], k20["test_store"], progress=False)  # the module's numbers, as stored
        assert again.accuracy == {20: float(k20["test_mean"]), 200: float(k200["test_mean"])}
    assert float(next(r for r in rows if r["model"] == TRAINED and r["protocol"] == "knn-k20")["test_mean"]) > 50


def test_knn_needs_as_many_training_images_as_its_largest_k(bench_run, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.config, "CI_SIZES", {"train": 150, "test": 50})
    config = tiny_config(bench_run[0], scale="ci", cache_dir=str(tmp_path / "cache"),
                         results_dir=str(tmp_path / "results"))
    assert "k=200 is more than the 150 training images at this scale: pass --no-knn" in error_of(run_bench, config)
    assert not (tmp_path / "results").exists()
    table = bench.wide_table1(bench.paper_rows_table1())
    assert (table["k-NN accuracy (%), k=20 / 200"] == "").all()


@pytest.mark.slow
def test_table2_without_svhn_says_so_in_one_line_with_the_command(bench_run):
    _, config, paths, _ = bench_run
    text = paths["table2_svhn.md"].read_text()
    notes = [line for line in text.splitlines() if "SVHN was not available here" in line]
    assert len(notes) == 1
    note = notes[0]
    assert "no SVHN folder was given" in note and "only the paper's rows are shown" in note
    assert "gan-features import-radford" in note and "--svhn-root" in note and "--svhn-ckpt radford-svhn.pt" in note
    assert command_line(config, svhn_root="DIR_WITH_train_32x32.mat_AND_test_32x32.mat",
                        svhn_checkpoint="radford-svhn.pt") in note
    assert text.index(note) < text.index("| KNN ")
    rows = read_csv(paths["table2_svhn.csv"])
    assert [(r["model"], r["quoted"]) for r in rows] == [(p.model, p.error.text) for p in paper.TABLE2]
    assert {r["source"] for r in rows} == {paper.TABLE2_SOURCE}


@pytest.mark.slow
def test_rerun_reuses_cached_features_and_reproduces_every_number(bench_run, monkeypatch):
    tmp, config, paths, _ = bench_run
    first = pd.read_csv(paths["table1_cifar10.csv"])

    def refuse(*args, **kwargs):
        raise AssertionError("features were made again instead of read from the cache")

    for target in FEATURE_MAKERS:
        monkeypatch.setattr(target, refuse)
    monkeypatch.setattr("gan_features.representations.kmeans.KMeansFeatures.fit", refuse)
    again = run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "again")}))
    second = pd.read_csv(again["table1_cifar10.csv"])
    measured = second["source"] == "measured"
    assert (second.loc[measured, "features_cached"] == "train+test").all()
    assert second["test_mean"].tolist() == first["test_mean"].tolist()  # seeded end to end
    assert second["C"].fillna(0).tolist() == first["C"].fillna(0).tolist()
    assert "(cached: train+test)" in again["table1_cifar10.md"].read_text()


def test_resume_reuses_measured_rows_and_refits_what_changed(bench_run, monkeypatch):
    """A resumed run fits nothing already measured on the same stores; a rewritten store is refitted."""
    tmp, config, _, _ = bench_run
    measured_tables = run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "measured")}))
    first = pd.read_csv(measured_tables["table1_cifar10.csv"])  # the rows now kept in the cache
    knn_rows = first["protocol"].str.startswith("knn")
    assert (first.loc[(first["source"] == "measured") & ~knn_rows, "svm_cached"] == "no").all()
    assert (first.loc[knn_rows, "knn_cached"] == "no").all() and knn_rows.sum() == 8
    fits = []
    original, probe = Protocol.run, bench.measure.knn_probe
    monkeypatch.setattr(Protocol, "run", lambda self, *a, **k: fits.append(self.name) or original(self, *a, **k))
    monkeypatch.setattr(bench.measure, "knn_probe", lambda train, *a, **k: fits.append(f"knn {train.path.stem}")
                        or probe(train, *a, **k))

    resumed = run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "resumed"), "resume": True}))
    second = pd.read_csv(resumed["table1_cifar10.csv"])
    measured = second["source"] == "measured"
    assert fits == []
    assert not (second.loc[measured, "svm_cached"] == "no").any()
    assert second.loc[knn_rows, "knn_cached"].str.startswith("reused: measured ").all()
    for column in ("test_mean", "test_std", "C", "svm_wall_time_s", "knn_wall_time_s", "git_commit", "created"):
        assert second[column].astype(str).tolist() == first[column].astype(str).tolist(), column
    # the note does not pass this run's seconds off as the table's: it counts what it reused
    reused = int(measured.sum())  # each measured line is one SVM row or one k-NN row, all reused
    assert f"which reused {reused} measurements of earlier runs" in resumed["table1_cifar10.md"].read_text()
    assert "s in all" in measured_tables["table1_cifar10.md"].read_text()

    # A row is keyed by every SVM setting in force: the defaults written out are the same row; any
    # other setting (a changed default, too) is a row not measured yet.
    spelled_out = {**config.svm_params, "preconditioner_rank": DEFAULT_PRECONDITIONER_RANK, "tol": 1e-4}
    run_bench(BenchConfig(**{**vars(config), "svm_params": spelled_out, "results_dir": str(tmp / "spelled"),
                             "resume": True}))
    assert fits == []
    other = pd.read_csv(run_bench(BenchConfig(**{**vars(config), "svm_params": {**spelled_out, "tol": 1e-3},
                                                 "results_dir": str(tmp / "other"), "resume": True,
                                                 "saved_only": True}))["table1_cifar10.csv"])
    svm_rows = other["protocol"].isin(["cifar10", "cifar10-400"]) & (other["kind"] != "paper")
    assert svm_rows.sum() == 8 and (other.loc[svm_rows, "source"] == "not measured yet").all()

    pixels = Path(second.loc[second["kind"] == "raw pixels", "train_store"].iloc[0])
    os.utime(pixels, ns=(pixels.stat().st_atime_ns, pixels.stat().st_mtime_ns + 10**9))  # as if rewritten
    third = pd.read_csv(run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "third"),
                                                 "resume": True}))["table1_cifar10.csv"])
    assert sorted(fits) == ["cifar10", "cifar10-400", f"knn {pixels.stem}"]  # the pixel rows only
    refitted = third["kind"] == "raw pixels"
    assert (third.loc[refitted & ~knn_rows, "svm_cached"] == "no").all()
    assert (third.loc[refitted & knn_rows, "knn_cached"] == "no").all()
    assert third["test_mean"].tolist() == first["test_mean"].tolist()  # seeded: the same numbers again


def test_resume_continues_a_row_stopped_part_way_from_its_saved_fits(bench_run, monkeypatch):
    """A run stopped after its C path (here: while scoring the test set) leaves the path's fits;
    the resumed run fits only the final model and says that the row was partly measured before."""
    import gan_features.protocols as protocols
    import gan_features.svm as svm

    tmp, config, _, _ = bench_run
    # The torch solver (liblinear fits are not checkpointed), our discriminator's cached features only.
    config = BenchConfig(**{**vars(config), "svm_params": {}, "random_baseline": False, "pixel_baseline": False,
                            "kmeans_centroids": None, "knn": False})
    monkeypatch.setattr(bench.config, "TABLE1_PROTOCOLS", ("cifar10",))
    scored = protocols._store_correct

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocols, "_store_correct", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "stopped")}))
    rows = Path(config.cache_dir) / "rows"
    (fits,) = rows.glob("*.fits")
    assert {p.name for p in (fits / "selection-0").iterdir()} == {f"C={C!r}.pt" for C in config.Cs}
    assert not (tmp / "stopped").exists()

    monkeypatch.setattr(protocols, "_store_correct", scored)
    solved = []
    original = svm.problem._Problem.solve
    monkeypatch.setattr(svm.problem._Problem, "solve", lambda self, C, *a: solved.append(C) or original(self, C, *a))
    table = pd.read_csv(run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "continued"),
                                                 "resume": True}))["table1_cifar10.csv"])
    (row,) = table[table["source"] == "measured"].to_dict("records")
    assert solved == [row["C"]]  # the refit on all rows; the path came from the saved fits
    assert row["resumed_fits"] == len(config.Cs)
    # The row's SVM time adds the solve time the stopped run recorded for its fits.
    assert row["svm_wall_time_s"] > row["resumed_fit_seconds"] > 0
    assert row["svm_cached"] == (f"partly: {len(config.Cs)} of the C path's fits by an earlier run "
                                 f"(their {row['resumed_fit_seconds']:.0f} s solve time included)")
    assert not list(rows.glob("*.fits"))  # removed once the row itself is kept

    again = pd.read_csv(run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp / "again"),
                                                 "resume": True}))["table1_cifar10.csv"])
    (reused,) = again[again["source"] == "measured"].to_dict("records")
    assert reused["svm_cached"] == f"reused: measured {row['created']}; {row['svm_cached']}"  # still says so
    assert reused["svm_wall_time_s"] == row["svm_wall_time_s"]


def test_update_remeasures_the_named_representation_and_keeps_every_other_row_as_it_was(bench_run, monkeypatch):
    """``update``: a new checkpoint under an existing label replaces that label's rows; the baselines'
    rows come from the table already there, cell for cell, and the note says which were kept. Kept rows
    measured under other settings are refused with nothing written."""
    tmp, config, paths, _ = bench_run
    results = tmp / "updated"
    shutil.copytree(paths["table1_cifar10.csv"].parent, results)
    before = pd.read_csv(results / "table1_cifar10.csv", dtype=str, keep_default_na=False)
    random_checkpoint("radford-svhn32", tmp / "retrained.pt", seed=8)
    update = BenchConfig(**{**vars(config), "checkpoints": [(TRAINED, str(tmp / "retrained.pt"))],
                            "random_baseline": False, "pixel_baseline": False, "kmeans_centroids": None,
                            "results_dir": str(results), "update": True})
    fits = []
    original = Protocol.run
    monkeypatch.setattr(Protocol, "run", lambda self, train, *a, **k: fits.append(Path(train.path).name)
                        or original(self, train, *a, **k))
    refused = BenchConfig(**{**vars(update), "seed": 1})
    with pytest.raises(GanFeaturesError, match=r"--update: '.*' \(cifar10\) in .* was measured with seed = 0, "
                                               r"this run uses 1"):
        run_bench(refused)
    assert pd.read_csv(results / "table1_cifar10.csv", dtype=str, keep_default_na=False).equals(before)
    fits.clear()

    written = run_bench(update)
    after = pd.read_csv(written["table1_cifar10.csv"], dtype=str, keep_default_na=False)
    assert len(fits) == 2 and len(set(fits)) == 1  # the two protocols of the new checkpoint's features only
    assert list(dict.fromkeys(after["model"])) == list(dict.fromkeys(before["model"]))  # in the table's order
    ours = after["model"] == TRAINED
    assert (after.loc[ours, "checkpoint"] == str((tmp / "retrained.pt").resolve())).all()
    assert (after.loc[ours, "kept"] == "").all()
    kept_models = [m for m in dict.fromkeys(before["model"]) if m != TRAINED
                   and (before.loc[before["model"] == m, "kind"] != "paper").all()]
    assert len(kept_models) == 3  # the random discriminator, the pixels and k-means
    for model in kept_models:
        old, new = before[before["model"] == model], after[after["model"] == model]
        for column in before.columns:
            if column not in ("svm_cached", "knn_cached"):
                assert new[column].tolist() == old[column].tolist(), (model, column)
        assert (new["kept"] == "table1_cifar10.csv").all()
        cached = new["svm_cached"].where(new["svm_cached"] != "", new["knn_cached"])
        assert cached.str.startswith("reused: kept by --update from the earlier table1_cifar10.csv").all()
    note = written["table1_cifar10.md"].read_text()
    assert "Updated with `--update`: the rows of " in note and all(model in note for model in kept_models)
    assert command_line(update).endswith(" --update") and command_line(update) in note  # how it was made


def test_update_refuses_rows_it_cannot_check(tmp_path):
    """A kept row under a protocol this run measures nothing with, or extracted in another precision."""
    from gan_features.bench.kept import updated_rows

    base = {"table": "1", "kind": "trained discriminator", "source": "measured", "seed": 0, "scale": "full",
            "checkpoint": "/x/d.pt", "extraction_precision": "bf16"}
    previous = tmp_path / "table1_cifar10.csv"
    previous.write_text(long_table([{**base, "model": "old", "protocol": "cifar10-400"},
                                    {**base, "model": "old", "protocol": "cifar10"}]).to_csv(index=False))
    fresh = [{**base, "model": "new", "protocol": "cifar10"}]
    with pytest.raises(GanFeaturesError, match="cifar10-400, which this run measures for nothing"):
        updated_rows(previous, fresh, "bf16")
    fresh.append({**base, "model": "new", "protocol": "cifar10-400"})
    with pytest.raises(GanFeaturesError, match="was extracted in bf16, this run extracts in fp32"):
        updated_rows(previous, fresh, "fp32")
    merged = updated_rows(previous, fresh, "bf16")
    assert [(row["model"], row["protocol"]) for row in merged] == [
        ("old", "cifar10-400"), ("old", "cifar10"), ("new", "cifar10"), ("new", "cifar10-400")]
    assert merged[0]["seed"] == 0 and merged[0]["kept"] == "table1_cifar10.csv"
    assert updated_rows(tmp_path / "absent.csv", fresh, "bf16") == fresh  # nothing to keep


def test_wide_table_marks_an_svm_time_that_misses_earlier_runs_fits():
    """Fits resumed from checkpoints that recorded no time: the row's SVM time is a lower bound."""
    base = {"table": "1", "model": "m", "kind": "trained discriminator", "source": "measured", "test_mean": 69.6,
            "test_std": 0.0, "C": 2e-4, "C_at_grid_edge": "", "feature_dimension": 28672, "max_feature_units": 512,
            "features_cached": "train+test", "prepare_s": 1.0, "extract_train_s": 2.0, "extract_test_s": 3.0}
    rows = [{**base, "protocol": "cifar10", "svm_wall_time_s": 2859.6, "resumed_fits": 6,
             "resumed_fit_seconds": None},
            {**base, "protocol": "cifar10-400", "svm_wall_time_s": 553.3, "resumed_fits": 2,
             "resumed_fit_seconds": 100.0}]
    (line,) = bench.wide_table1(rows).to_dict("records")
    assert line["wall time (s): features / SVM all / SVM 400 / k-NN"] == "6 (cached: train+test) / ≥2860 / 553"


def test_saved_only_writes_the_rows_measured_so_far_and_measures_nothing(bench_run, tmp_path, monkeypatch):
    """A run stopped after its first row; --saved-only shows that row and marks the rest with how far they
    got, making no features and fitting nothing; once the run is finished it shows the finished tables."""
    data = bench_run[0]
    config = tiny_config(data, cache_dir=str(tmp_path / "cache"), results_dir=str(tmp_path / "results"),
                         random_baseline=False, kmeans_centroids=None)
    saved_only = BenchConfig(**{**vars(config), "saved_only": True, "results_dir": str(tmp_path / "partial")})
    refuse_fits = lambda *a, **k: pytest.fail("a saved-only run fitted an SVM")  # noqa: E731
    refuse_features = lambda *a, **k: pytest.fail("a saved-only run made features")  # noqa: E731

    def saved_only_table() -> tuple[pd.DataFrame, str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Protocol, "run", refuse_fits)
            for target in FEATURE_MAKERS:
                patch.setattr(target, refuse_features)
            paths = run_bench(saved_only)
        return pd.read_csv(paths["table1_cifar10.csv"]), paths["table1_cifar10.md"].read_text()

    table, text = saved_only_table()  # nothing measured yet: not even features
    ours = table[table["source"] != "measured"].query("kind != 'paper'")
    assert sorted(ours["model"]) == sorted([TRAINED] * 4 + ["raw pixels (3072-d, in [-1, 1])"] * 4)  # 2 SVM, 2 k-NN
    assert (ours["source"] == "not measured yet").all() and (ours["progress"] == "no features yet").all()
    assert "**Partial: 0 of 8 measurements are done" in text and "not measured yet (no features yet)" in text
    assert not list(Path(config.cache_dir).glob("*.h5"))

    original, calls = Protocol.run, []

    def stop_at_the_second_row(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Protocol, "run", stop_at_the_second_row)
    with pytest.raises(KeyboardInterrupt):
        run_bench(config)
    monkeypatch.setattr(Protocol, "run", original)
    table, text = saved_only_table()
    rows = {(row["model"], row["protocol"]): row for row in table.to_dict("records")}
    assert rows[(TRAINED, "cifar10")]["source"] == "measured"
    assert rows[(TRAINED, "cifar10-400")]["progress"] == "not started"  # its features are there
    assert rows[(TRAINED, "knn-k20")]["progress"] == rows[(TRAINED, "knn-k200")]["progress"] == "not started"
    assert rows[(TRAINED, "cifar10-400")]["feature_dimension"] == rows[(TRAINED, "cifar10")]["feature_dimension"]
    assert rows[("raw pixels (3072-d, in [-1, 1])", "cifar10")]["progress"] == "no features yet"
    assert "**Partial: 1 of 8 measurements are done" in text
    assert "--resume` measures the rest" in text and "--saved-only" in text  # the provenance line's command
    assert "Written from the rows measured so far" in text
    assert "--saved-only" not in (tmp_path / "partial" / "table2_svhn.md").read_text()  # its command measures

    finished = pd.read_csv(run_bench(BenchConfig(**{**vars(config), "resume": True}))["table1_cifar10.csv"])
    table, text = saved_only_table()
    assert "Partial" not in text and "not measured yet" not in text
    for column in ("model", "protocol", "test_mean", "test_std", "C", "created"):
        assert table[column].astype(str).tolist() == finished[column].astype(str).tolist(), column


@pytest.mark.slow
def test_svhn_present_measures_table2(tmp_path):
    write_cifar10(tmp_path / "cifar")
    write_svhn(tmp_path / "svhn")
    random_checkpoint("radford-svhn32", tmp_path / "trained.pt", seed=7)
    random_checkpoint("radford-svhn32", tmp_path / "authors-svhn.pt", seed=8)  # stands in for the import
    config = tiny_config(tmp_path, svhn_root=str(tmp_path / "svhn"), svhn_checkpoint=str(tmp_path / "authors-svhn.pt"),
                         random_baseline=False, pixel_baseline=False, kmeans_centroids=None)
    paths = run_bench(config)
    text = paths["table2_svhn.md"].read_text()
    assert "not available" not in text and "svhn-1000" in text
    rows = read_csv(paths["table2_svhn.csv"])
    measured = [r for r in rows if r["source"] == "measured"]
    assert [r["model"] for r in measured] == ["DCGAN radford-svhn32, the paper authors' SVHN weights (imported)",
                                              TRAINED]
    for r in measured:
        assert r["protocol"] == "svhn-1000" and r["metric"] == "error" and r["dataset"] == "svhn"
        assert 0 <= float(r["test_mean"]) <= 100 and int(r["test_fits"]) == 2 and r["checkpoint_sha256"]
    assert [r["model"] for r in rows if r["source"] != "measured"] == [p.model for p in paper.TABLE2]
    table1 = read_csv(paths["table1_cifar10.csv"])
    assert [r["model"] for r in table1 if r["source"] == "measured"] == [TRAINED] * 4  # 2 SVM, 2 k-NN


# ------------------------------------------------------------------------------------ bad config
def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(GanFeaturesError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_configuration_is_one_line_and_writes_nothing(tmp_path):
    write_cifar10(tmp_path / "cifar")
    random_checkpoint("radford-svhn32", tmp_path / "trained.pt", seed=7)
    assert "does not exist" in error_of(run_bench, tiny_config(tmp_path, checkpoints=[("x", str(tmp_path / "no.pt"))]))
    assert "CIFAR-10 not found" in error_of(run_bench, tiny_config(tmp_path, cifar_root=str(tmp_path)))
    assert "use scale 'full'" in error_of(run_bench, tiny_config(tmp_path, scale="ci"))
    assert "unknown scale" in error_of(tiny_config, tmp_path, scale="huge")
    assert "unique" in error_of(tiny_config, tmp_path, checkpoints=["a=x.pt"], cifar_checkpoints=[("a", "y.pt")])
    assert "LABEL=PATH" in error_of(tiny_config, tmp_path, checkpoints=["no-label.pt"])
    assert "unknown protocols" in error_of(tiny_config, tmp_path, protocol_overrides={"cifar100": {}})
    assert "no parameter" in error_of(run_bench, tiny_config(tmp_path, protocol_overrides={"cifar10": {"folds": 5}}))
    assert "Cs must be" in error_of(run_bench, tiny_config(tmp_path, Cs=(1e-3, -1.0)))
    assert not (tmp_path / "results").exists()


def test_command_line_round_trips_the_cli_flags(tmp_path):
    config = BenchConfig(checkpoints=["DCGAN on Imagenette=run/d.pt"], cifar_root="/data", scale="full",
                         kmeans_centroids=0, seed=3, cache_dir=str(tmp_path), pixel_baseline=False)
    assert config.kmeans_centroids is None and config.results_dir == "results"  # full-scale tables: top level
    assert command_line(config) == ("gan-features bench --scale full --cifar-root /data --ckpt "
                                    "'DCGAN on Imagenette=run/d.pt' --results results --cache-dir "
                                    f"{tmp_path} --seed 3 --kmeans-centroids 0 --no-pixels")
    assert BenchConfig(cache_dir=str(tmp_path)).results_dir == str(Path("results") / "ci")
    assert command_line(BenchConfig(cache_dir=str(tmp_path)), Cs=(1e-3, 0.01)) == (
        f"gan-features bench --scale ci --results results/ci --cache-dir {tmp_path} --C 0.001,0.01")
    assert "contains '='" in error_of(BenchConfig, checkpoints=[("a=b", "d.pt")])  # would not parse back


def test_c_grid_comes_from_the_scale_then_the_config_then_protocol_overrides(monkeypatch, tmp_path):
    monkeypatch.setattr(bench.config, "CI_PROTOCOL_OVERRIDES", {"cifar10": {"Cs": (1e-3, 1e-2)},
                                                         "cifar10-400": {"validation_size": 2000, "selection_draws": 2}})
    ci = BenchConfig(cache_dir=str(tmp_path))
    assert bench.make_protocol("cifar10", ci).Cs == (1e-3, 1e-2)
    assert bench.make_protocol("cifar10-400", ci).Cs == PAPER_CS
    assert bench.make_protocol("cifar10", BenchConfig(scale="full", cache_dir=str(tmp_path))).Cs == PAPER_CS
    assert bench.make_protocol("cifar10", BenchConfig(cache_dir=str(tmp_path), Cs=(0.1,))).Cs == (0.1,)
    overridden = BenchConfig(cache_dir=str(tmp_path), Cs=(0.1,), protocol_overrides={"cifar10": {"Cs": [0.5]}})
    assert bench.make_protocol("cifar10", overridden).Cs == (0.5,)
    text = bench.wording.protocols_text(bench.TABLE1_PROTOCOLS, ci)  # each grid said where they differ
    assert ("Protocols: `cifar10` with C from 0.001, 0.01; `cifar10-400` with validation_size=2000, "
            "selection_draws=2, C from 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01 (seed 0); C chosen on "
            "validation rows of the training split, never on test; '(grid edge)'") in text
    text = bench.wording.protocols_text(bench.TABLE1_PROTOCOLS, BenchConfig(scale="full", cache_dir=str(tmp_path)))
    assert text.startswith("Protocols: `cifar10` with patience=2; `cifar10-400` with patience=2 (seed 0); C chosen on "
                           "validation rows of the training split, never on test, from 0.0001, 0.0002, 0.0005, 0.001, "
                           "0.002, 0.005, 0.01; patience=N:")
    toy = BenchConfig(scale="toy", results_dir=str(tmp_path / "toy"), cache_dir=str(tmp_path))
    text = bench.wording.protocols_text(bench.TABLE1_PROTOCOLS, toy)  # patience is said, and what it means
    assert text.startswith("Protocols: `cifar10` with patience=2; `cifar10-400` with n_per_class=40, ") and \
        "patience=N: Cs are fitted in ascending order up to the one at which N Cs in a row scored no better" in text


# -------------------------------------------------------------------------------- the CLI
def cli_config(monkeypatch, argv: list[str]) -> BenchConfig:
    """The BenchConfig ``gan-features bench ARGV`` hands to run_bench (which is not run)."""
    seen = []
    monkeypatch.setattr(bench, "run_bench", lambda config: seen.append(config) or {})
    assert cli.main(["bench", *argv]) == 0
    return seen[0]


@pytest.mark.parametrize("changes", [
    {},
    {"checkpoints": [("DCGAN on Imagenette (ours)", "runs/a b/d.pt"), ("second", "x=y.pt")],
     "cifar_checkpoints": [("on CIFAR-10", "c.pt")], "cifar_root": "/data/cifar 10", "svhn_root": "/data/svhn",
     "svhn_checkpoint": "radford-svhn.pt", "scale": "full", "results_dir": "out/tables", "seed": 7,
     "precision": "fp32", "device": "cpu", "batch_size": 64, "kmeans_centroids": 0, "Cs": (1e-4, 2.5e-3, 1 / 3),
     "random_baseline": False, "pixel_baseline": False, "knn": False, "resume": True},
    {"kmeans_centroids": 400, "Cs": (0.01,), "pixel_baseline": False},
    {"saved_only": True},
    {"layers": True, "resume": True},
    {"update": True, "random_baseline": False},
])
def test_cli_parses_command_line_back_into_the_same_config(tmp_path, monkeypatch, changes):
    config = BenchConfig(**{"cache_dir": str(tmp_path / "cache"), **changes})
    argv = shlex.split(command_line(config))
    assert argv[:2] == ["gan-features", "bench"]
    assert cli_config(monkeypatch, argv[2:]) == config


def test_cli_defaults_are_the_configs(monkeypatch, tmp_path):
    monkeypatch.setenv(bench.CACHE_ENV, str(tmp_path))
    assert cli_config(monkeypatch, []) == BenchConfig()
    assert cli_config(monkeypatch, ["--scale", "full", "--quiet"]) == BenchConfig(scale="full", progress=False)
    assert BenchConfig().cache_dir == str(tmp_path / "bench")


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    write_cifar10(tmp_path / "cifar")
    for argv, expected in ((["--ckpt", "no-label.pt"], "LABEL=PATH"),
                           (["--ckpt", f"x={tmp_path / 'missing.pt'}"], "does not exist"),
                           (["--ckpt", "a=x.pt", "--cifar-ckpt", "a=y.pt"], "unique"),
                           (["--C", "1e-3,-1"], "Cs must be")):
        code = cli.main(["bench", "--quiet", "--cifar-root", str(tmp_path / "cifar"), "--cache-dir",
                         str(tmp_path / "cache"), "--results", str(tmp_path / "results"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("gan-features bench: error: ") and expected in err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_cli_bench_end_to_end_at_ci_scale(bench_run, tmp_path, monkeypatch, capsys):
    """`gan-features bench --scale ci` on the synthetic CIFAR-10, with the CI subset and protocols shrunk."""
    data = bench_run[0]
    monkeypatch.setattr(bench.config, "CI_SIZES", {"train": 150, "test": 50})  # of the 200 / 100 images there
    monkeypatch.setattr(bench.config, "CI_PROTOCOL_OVERRIDES", TINY)
    monkeypatch.setattr(bench.config, "KNN_KS", (5, 20))  # the default k=200 is more than these 150 training rows
    argv = ["bench", "--quiet", "--threads", "1", "--scale", "ci", "--cifar-root", str(data / "cifar"),
            "--ckpt", f"{TRAINED}={data / 'trained.pt'}", "--results", str(tmp_path / "results"), "--cache-dir",
            str(tmp_path / "cache"), "--C", "0.01,0.1", "--kmeans-centroids", "0", "--no-random"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    names = ["table1_cifar10.md", "table1_cifar10.csv", "table2_svhn.md", "table2_svhn.csv"]
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "results" / name) for name in names]
    rows = [r for r in read_csv(tmp_path / "results" / "table1_cifar10.csv") if r["source"] == "measured"]
    assert [(r["model"], r["protocol"]) for r in rows] == [
        (model, protocol) for model in (TRAINED, "raw pixels (3072-d, in [-1, 1])")
        for protocol in ("cifar10", "cifar10-400", "knn-k5", "knn-k20")]
    for r in rows:
        assert r["scale"] == "ci" and (r["train_rows"], r["test_rows"]) == ("150", "50") and r["train_subset_sha256"]
        assert float(r["C"]) in (0.01, 0.1) if r["protocol"].startswith("cifar10") else r["knn_k"] in ("5", "20")
    # the note's command is the one that was run, as typed (recorded, not rebuilt from the settings)
    expected = shlex.join(["gan-features", *argv])
    assert f"`{expected}`" in (tmp_path / "results" / "table1_cifar10.md").read_text()


# ------------------------------------------------------------------------------------- CI check
def load_checker():
    spec = importlib.util.spec_from_file_location("check_ci_tables", REPO / "benchmarks" / "check_ci_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def ci_tables(directory: Path, scores: dict[tuple[str, str], float]) -> Path:
    """Both CI tables as the bench writes them: the paper's rows plus measured ``scores``."""
    measured = [{"table": "1", "model": model, "kind": "test", "source": "measured", "protocol": protocol,
                 "metric": "accuracy", "test_mean": score, "scale": "ci", "train_subset_sha256": "ab" * 32,
                 "test_subset_sha256": "cd" * 32} for (model, protocol), score in scores.items()]
    directory.mkdir(parents=True)
    long_table(bench.paper_rows_table1() + measured).to_csv(directory / "table1_cifar10.csv", index=False)
    long_table(bench.paper_rows_table2()).to_csv(directory / "table2_svhn.csv", index=False)
    return directory


SCORES = {("DCGAN trained", "cifar10"): 61.25, ("DCGAN trained", "cifar10-400"): 55.1,
          ("raw pixels", "cifar10"): 38.4, ("raw pixels", "cifar10-400"): 33.0}


def with_choice(directory: Path, C: float, by_C: dict[str, float]) -> Path:
    """``directory``'s CI tables with every measured row's chosen C and validation scores set."""
    path = directory / "table1_cifar10.csv"
    table = pd.read_csv(path)
    measured = table["source"] == "measured"
    table.loc[measured, "C"] = C
    table["validation_by_C"] = table["validation_by_C"].astype(object) if "validation_by_C" in table else None
    table.loc[measured, "validation_by_C"] = json.dumps(by_C)
    table.to_csv(path, index=False)
    return directory


def test_ci_check_passes_a_c_moved_at_a_near_tie_and_fails_one_moved_further(tmp_path, capsys):
    """Two machines may split a near tie of validation scores differently; a real change moves more."""
    check = load_checker()
    committed = with_choice(ci_tables(tmp_path / "committed", SCORES), 1e-4, {"0.0001": 59.2, "0.0005": 59.2})
    moved = {**SCORES, ("raw pixels", "cifar10"): SCORES[("raw pixels", "cifar10")] - 1.65}
    near = with_choice(ci_tables(tmp_path / "near", moved), 5e-4, {"0.0001": 59.1, "0.0005": 59.3})
    assert check.main(["--committed", str(committed), "--fresh", str(near)]) == 0
    assert "C near tie (0.0001 -> 0.0005)" in capsys.readouterr().out
    far = with_choice(ci_tables(tmp_path / "far", moved), 5e-4, {"0.0001": 58.0, "0.0005": 59.3})
    assert check.main(["--committed", str(committed), "--fresh", str(far)]) == 1
    assert "FAIL raw pixels [cifar10]: committed 38.40, fresh 36.75 (moved -1.65, tolerance 1)" in capsys.readouterr().out


def test_ci_check_passes_on_identical_tables(tmp_path, capsys):
    check = load_checker()
    committed, fresh = ci_tables(tmp_path / "committed", SCORES), ci_tables(tmp_path / "fresh", SCORES)
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "check passed: 4 committed rows" in out and "FAIL" not in out and "DCGAN trained" in out


def test_ci_check_fails_on_a_moved_row_unless_within_tolerance(tmp_path, capsys):
    check = load_checker()
    committed = ci_tables(tmp_path / "committed", SCORES)
    fresh = ci_tables(tmp_path / "fresh", {**SCORES, ("raw pixels", "cifar10-400"): 34.5})  # +1.5 points
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 1
    failures = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert failures == ["FAIL raw pixels [cifar10-400]: committed 33.00, fresh 34.50 (moved +1.50, tolerance 1)"]
    assert check.main(["--committed", str(committed), "--fresh", str(fresh), "--tolerance", "cifar10-400=2"]) == 0
    assert check.main(["--committed", str(committed), "--fresh", str(fresh), "--tolerance", "0.5"]) == 1


KNN_SCORES = {("DCGAN trained", "knn-k20"): 52.3, ("DCGAN trained", "knn-k200"): 50.1,
              ("raw pixels", "knn-k20"): 30.2, ("raw pixels", "knn-k200"): 29.0}


def test_ci_check_compares_knn_rows_when_both_tables_have_them(tmp_path, capsys):
    check = load_checker()
    committed = ci_tables(tmp_path / "committed", {**SCORES, **KNN_SCORES})
    fresh = ci_tables(tmp_path / "fresh", {**SCORES, **KNN_SCORES, ("raw pixels", "knn-k200"): 27.5})  # -1.5
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 1
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        "FAIL raw pixels [knn-k200]: committed 29.00, fresh 27.50 (moved -1.50, tolerance 1)"]
    assert "check failed: 8 committed rows" in out and "predate" not in out
    assert check.main(["--committed", str(committed), "--fresh", str(fresh), "--tolerance", "knn-k200=2"]) == 0


def test_ci_check_passes_committed_tables_from_before_the_knn_columns_and_says_so(tmp_path, capsys):
    check = load_checker()
    committed = ci_tables(tmp_path / "committed", SCORES)  # as results/ci was before the k-NN
    fresh = ci_tables(tmp_path / "fresh", {**SCORES, **KNN_SCORES})
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "note: the committed tables have no k-NN rows (they predate the k-NN columns)" in out
    assert sum(line.rstrip().endswith("new") for line in out.splitlines()) == 4
    assert "check passed: 4 committed rows" in out
    assert check.main(["--committed", str(fresh), "--fresh", str(committed)]) == 1  # k-NN rows gone: missing
    assert "FAIL raw pixels [knn-k20]: committed 30.20, fresh: missing" in capsys.readouterr().out


def test_ci_check_fails_on_a_missing_row_or_another_subset(tmp_path, capsys):
    check = load_checker()
    committed = ci_tables(tmp_path / "committed", SCORES)
    fresh = ci_tables(tmp_path / "fresh", {k: v for k, v in SCORES.items() if k != ("DCGAN trained", "cifar10")})
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 1
    out = capsys.readouterr().out
    assert "FAIL DCGAN trained [cifar10]: committed 61.25, fresh: missing (tolerance 1)" in out
    other = tmp_path / "other"
    shutil.copytree(committed, other)
    table = pd.read_csv(other / "table1_cifar10.csv")
    table.loc[table["source"] == "measured", "train_subset_sha256"] = "ef" * 32
    table.to_csv(other / "table1_cifar10.csv", index=False)
    assert check.main(["--committed", str(committed), "--fresh", str(other)]) == 1
    assert "different CI subsets" in capsys.readouterr().out
    assert check.main(["--committed", str(committed), "--fresh", str(tmp_path / "nowhere")]) == 2
    partial = tmp_path / "partial"
    shutil.copytree(committed, partial)
    table = pd.read_csv(partial / "table1_cifar10.csv")
    table.loc[table["model"] == "DCGAN trained", ["source", "test_mean"]] = [bench.NOT_MEASURED, None]
    table.to_csv(partial / "table1_cifar10.csv", index=False)
    assert check.main(["--committed", str(partial), "--fresh", str(committed)]) == 2
    assert "was not measured (the table was written with --saved-only)" in capsys.readouterr().err


def test_a_moved_choice_of_C_is_explained_in_the_note(tmp_path):
    previous = tmp_path / "table1_cifar10.csv"
    assert bench.moved_choices(previous, []) == ""  # no earlier table
    pd.DataFrame([
        {"model": "random D", "protocol": "cifar10", "source": "measured", "C": 5e-4, "validation_mean": 59.5},
        {"model": "random D", "protocol": "cifar10-400", "source": "measured", "C": 1e-4, "validation_mean": 53.7},
        {"model": "random D", "protocol": "knn-k20", "source": "measured", "C": None, "validation_mean": None},
    ]).to_csv(previous, index=False)
    rows = [{"model": "random D", "protocol": "cifar10", "source": "measured", "C": 1e-4, "metric": "accuracy",
             "validation_by_C": json.dumps({"0.0001": 59.2, "0.0005": 59.1})},
            {"model": "random D", "protocol": "cifar10-400", "source": "measured", "C": 1e-4, "metric": "accuracy",
             "validation_by_C": "{}"},
            {"model": "random D", "protocol": "knn-k20", "source": "measured", "C": None, "metric": "accuracy"},
            {"model": "new D", "protocol": "cifar10", "source": "measured", "C": 1e-3, "metric": "accuracy"}]
    text = bench.moved_choices(previous, rows)
    assert text == ("Chosen C moved from the table this replaces (table1_cifar10.csv in git): random D, `cifar10`: "
                    "C 0.0005 -> 0.0001 (validation accuracy then 59.50 % at 0.0005; now, by C: 0.0001 59.20, "
                    "0.0005 59.10).")
    assert bench.moved_choices(previous, rows[1:]) == ""  # nothing moved


def test_a_row_of_the_authors_weights_uses_the_chosen_blocks_and_says_whose_they_are(tmp_path):
    """``--ckpt LABEL=PATH@layers=0,1``: those blocks only; an import-radford checkpoint is the authors'."""
    from gan_features.checkpoints import load_checkpoint, save_checkpoint

    write_cifar10(tmp_path / "cifar")
    source = load_checkpoint(random_checkpoint("radford-svhn32", tmp_path / "random.pt", seed=3))
    save_checkpoint(tmp_path / "authors.pt", source.architecture, source.discriminator, source.generator,
                    {"source": "radford-dcgan"}, has_running_stats=False)
    label = "the authors' D, blocks 1-2"
    paths = run_bench(tiny_config(tmp_path, checkpoints=[f"{label}={tmp_path / 'authors.pt'}@layers=1,0"],
                                  random_baseline=False, pixel_baseline=False, kmeans_centroids=None, knn=False))
    rows = [r for r in read_csv(paths["table1_cifar10.csv"]) if r["source"] == "measured"]
    assert [r["model"] for r in rows] == [label] * 2
    assert {r["dimension"] for r in rows} == {str((64 + 128) * 16)}
    assert {r["max_feature_units"] for r in rows} == {"128"}  # the most maps of the blocks used
    assert {r["kind"] for r in rows} == {"imported authors' discriminator"} and {r["layers"] for r in rows} == {"0,1"}
    assert all(0 <= float(r["test_mean"]) <= 100 for r in rows)


def test_a_bad_layer_selection_is_one_line(tmp_path):
    for bad in ("x=d.pt@layers=", "x=d.pt@layers=a,b", "x=d.pt@layers=-1", "x=@layers=0"):
        assert "block indices" in error_of(tiny_config, tmp_path, checkpoints=[bad])
    assert checkpoint_layers("d.pt@layers=3,1,1") == ("d.pt", (1, 3))
    write_cifar10(tmp_path / "cifar")
    random_checkpoint("radford-svhn32", tmp_path / "d.pt", seed=1)
    assert "do not exist" in error_of(run_bench, tiny_config(tmp_path, checkpoints=[f"x={tmp_path / 'd.pt'}@layers=0,5"]))
    assert not (tmp_path / "results").exists()
    assert checkpoint_layers("runs/a@b/d.pt") == ("runs/a@b/d.pt", None)


def test_layers_table_probes_each_block_alone_and_cumulatively(bench_run, monkeypatch):
    """``bench --layers``: every discriminator's blocks alone and 1..k under cifar10-400 and the k-NN, on
    column views of Table 1's stores; the all-blocks rows are Table 1's own (reused with --resume)."""
    tmp, config, paths, _ = bench_run
    layers_config = BenchConfig(**{**vars(config), "results_dir": str(tmp / "layers"), "layers": True,
                                   "resume": True})

    def no_matplotlib():
        raise GanFeaturesError("plotting needs matplotlib: pip install 'gan-features[plots]'")

    with monkeypatch.context() as patch:  # refused before any work, nothing written
        patch.setattr("gan_features.bench.run.figure_classes", no_matplotlib)
        with pytest.raises(GanFeaturesError, match="matplotlib"):
            run_bench(layers_config)
    assert not (tmp / "layers").exists()

    for target in FEATURE_MAKERS:  # the stores of Table 1's run are read, never made again
        monkeypatch.setattr(target, lambda *a, **k: (_ for _ in ()).throw(AssertionError("features made again")))
    read_whole = []  # each store is read into memory once for all of its block sets
    in_memory = FeatureStore.in_memory
    monkeypatch.setattr(FeatureStore, "in_memory", lambda store: read_whole.append(store.path) or in_memory(store))
    written = run_bench(layers_config)
    assert len(read_whole) == 4 and len(set(read_whole)) == 4  # two discriminators' train and test stores
    assert sorted(written) == ["layers_cifar10.csv", "layers_cifar10.md", "layers_cifar10.png"]
    assert written["layers_cifar10.png"].read_bytes()[:4] == b"\x89PNG"
    rows = pd.read_csv(written["layers_cifar10.csv"])
    table1 = pd.read_csv(paths["table1_cifar10.csv"])
    random_label = "random radford-svhn32 discriminator (seed 0)"
    assert list(dict.fromkeys(rows["model"])) == [TRAINED, random_label]
    sets = ["block 1", "block 2", "block 3", "blocks 1-2", "blocks 1-3"]
    for model in (TRAINED, random_label):
        mine = rows[rows["model"] == model]
        assert list(dict.fromkeys(mine["blocks"])) == sets
        assert all(sorted(mine[mine["blocks"] == s]["protocol"]) == ["cifar10-400", "knn-k20", "knn-k200"]
                   for s in sets)
        dims = mine.drop_duplicates("blocks")["feature_dimension"].tolist()
        assert dims == [1024, 2048, 4096, 3072, 7168]
        every = mine[mine["blocks"] == "blocks 1-3"].set_index("protocol")
        theirs = table1[table1["model"] == model].set_index("protocol")
        for protocol in ("cifar10-400", "knn-k20", "knn-k200"):
            assert every.loc[protocol, "test_mean"] == theirs.loc[protocol, "test_mean"]
        assert every.loc["cifar10-400", "svm_cached"].startswith("reused")
        assert (mine[mine["blocks"] != "blocks 1-3"]["svm_cached"].dropna() == "no").all()
    assert (rows["source"] == "measured").all() and (rows["table"] == "layers").all()
    text = written["layers_cifar10.md"].read_text()
    assert f"## {TRAINED}" in text and "| blocks 1-2 " in text and "--layers" in text
    assert not (tmp / "layers" / "table1_cifar10.md").exists()


def test_layers_table_saved_only_marks_what_is_not_measured(bench_run, tmp_path):
    """``--layers --saved-only`` on a cache without the discriminators' stores measures nothing and says so."""
    _, config, _, _ = bench_run
    written = run_bench(BenchConfig(**{**vars(config), "results_dir": str(tmp_path / "partial"), "layers": True,
                                       "saved_only": True, "cache_dir": str(tmp_path / "empty-cache")}))
    rows = pd.read_csv(written["layers_cifar10.csv"])
    assert set(rows["source"]) == {"not measured yet"} and set(rows["progress"]) == {"no features yet"}
    assert sorted(set(rows["protocol"])) == ["cifar10-400", "knn-k20", "knn-k200"]
    text = written["layers_cifar10.md"].read_text()
    assert "**Partial: 0 of 6 measurements are done" in text and "--layers" in text
    assert not (tmp_path / "empty-cache" / "rows").exists()


def layers_table(directory: Path, scores: dict[str, float]) -> Path:
    """A per-block CI table beside ``directory``'s tables: ``scores`` by block set, one model, cifar10-400."""
    rows = [{"table": "layers", "model": "DCGAN trained", "kind": "test", "source": "measured",
             "protocol": "cifar10-400", "metric": "accuracy", "test_mean": score, "scale": "ci",
             "train_subset_sha256": "ab" * 32, "test_subset_sha256": "cd" * 32, "blocks": blocks}
            for blocks, score in scores.items()]
    long_table(rows).to_csv(directory / "layers_cifar10.csv", index=False)
    return directory


def test_ci_check_compares_each_block_set_of_a_committed_per_block_table(tmp_path, capsys):
    check = load_checker()
    blocks = {"block 1": 48.2, "block 2": 56.2, "blocks 1-2": 56.3}
    committed = layers_table(ci_tables(tmp_path / "committed", SCORES), blocks)
    fresh = layers_table(ci_tables(tmp_path / "fresh", SCORES), {**blocks, "block 2": 54.0})
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 1
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        "FAIL DCGAN trained [block 2] [cifar10-400]: committed 56.20, fresh 54.00 (moved -2.20, tolerance 1)"]
    assert "check failed: 7 committed rows" in out
    (fresh / "layers_cifar10.csv").unlink()  # committed but not made again: its rows are missing
    assert check.main(["--committed", str(committed), "--fresh", str(fresh)]) == 2
    assert "layers_cifar10.csv" in capsys.readouterr().err
    plain = ci_tables(tmp_path / "plain", SCORES)  # no per-block table committed: a fresh one is only new
    assert check.main(["--committed", str(plain), "--fresh", str(committed)]) == 0
