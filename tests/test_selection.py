"""Checkpoint selection on a tiny real run: the table, its cache, the collapse indicator, and no test data."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import gan_features.data.digits as digits_module
import gan_features.selection as selection
from gan_features.checkpoints import file_sha256, load_checkpoint, save_checkpoint
from gan_features.cli import main
from gan_features.errors import GanFeaturesError
from gan_features.selection import (SelectionSettings, choose_best, fit_validation_rows, run_checkpoints,
                                    select_checkpoint, stratified_rows)
from tiny_runs import digits_train, train_tiny_run

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SMALL = SelectionSettings(fit_size=200, validation_size=100, diversity_samples=64)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("selection") / "run")


@pytest.fixture(scope="module")
def scored(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("selection-out")
    return out, select_checkpoint(run_dir, out, digits_train(), SMALL, progress=False)


def test_rows_are_disjoint_stratified_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    fit, validation = fit_validation_rows(labels, 50, 20, seed=0)
    assert len(fit) == 50 and len(validation) == 20 and not set(fit) & set(validation)
    np.testing.assert_array_equal(np.bincount(labels[fit]), [5, 10, 15, 20])
    np.testing.assert_array_equal(np.bincount(labels[validation]), [2, 4, 6, 8])
    again, _ = fit_validation_rows(labels, 50, 20, seed=0)
    other, _ = fit_validation_rows(labels, 50, 20, seed=1)
    np.testing.assert_array_equal(fit, again)
    assert not np.array_equal(fit, other)
    (first,) = stratified_rows(labels, [7], seed=0)
    assert len(first) == 7
    with pytest.raises(GanFeaturesError, match="cannot be drawn"):
        fit_validation_rows(labels, 90, 20, seed=0)


def test_table_has_one_row_per_epoch_checkpoint_and_names_the_best(run_dir, scored):
    out, result = scored
    table = pd.read_csv(out / "selection.csv")
    assert list(table["checkpoint"]) == [str(run_dir / "epoch0001.pt"), str(run_dir / "epoch0002.pt")]
    assert list(table["epoch"]) == [1, 2] and list(table["step"]) == [3, 6]
    assert list(table["images_seen"]) == [192, 384]
    assert list(table["checkpoint_sha256"]) == [file_sha256(run_dir / f"epoch000{i}.pt") for i in (1, 2)]
    assert table["validation_accuracy_pct"].between(50, 100).all()  # digits features of a trained D: far above 10%
    assert set(table["C"]) <= set(SMALL.Cs)
    for _, row in table.iterrows():
        by_C = json.loads(row["validation_by_C"])
        assert max(by_C.values()) == pytest.approx(row["validation_accuracy_pct"])
        assert by_C[f"{row['C']:g}"] == pytest.approx(row["validation_accuracy_pct"])
    assert (table["sample_diversity"] > 0).all() and (table["sample_pixel_std"] > 0).all()
    assert table["scoring_seconds"].gt(0).all() and table["settings_sha256"].nunique() == 1
    assert table["is_best"].sum() == 1
    best = table[table["is_best"]].iloc[0]
    assert best["validation_accuracy_pct"] == table["validation_accuracy_pct"].max()
    assert result.best["checkpoint"] == best["checkpoint"] and result.scored == 2 and result.reused == 0
    assert best["checkpoint"].split("/")[-1] in (out / "selection.md").read_text().splitlines()[0]
    summary = json.loads((out / "selection.json").read_text())
    assert summary["best"]["checkpoint"] == best["checkpoint"]
    assert summary["settings"]["data"]["split"] == "train" and summary["settings"]["fit_size"] == 200
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.tmp"))


def test_a_second_call_reuses_the_table_without_extracting(run_dir, scored, monkeypatch, tmp_path):
    out, first = scored

    def no_extraction(*args, **kwargs):
        raise AssertionError("a cached checkpoint was extracted again")

    monkeypatch.setattr(selection, "extract_arrays", no_extraction)
    monkeypatch.setattr("gan_features.representations.discriminator.prepare_discriminator", no_extraction)
    again = select_checkpoint(run_dir, out, digits_train(), SMALL, progress=False)
    assert again.scored == 0 and again.reused == 2
    pd.testing.assert_frame_equal(again.table.reset_index(drop=True), pd.read_csv(out / "selection.csv"),
                                  check_dtype=False)
    assert again.best["checkpoint"] == first.best["checkpoint"]
    one = select_checkpoint(run_dir, out, digits_train(), SMALL, checkpoints=[run_dir / "epoch0002.pt"],
                            progress=False)
    assert (one.scored, one.reused) == (0, 1)
    assert list(one.table["checkpoint"]) == list(again.table["checkpoint"])  # the other row stays in the table
    link = tmp_path / "link.pt"
    link.symlink_to(run_dir / "epoch0002.pt")
    twice = select_checkpoint(run_dir, out, digits_train(), SMALL, progress=False,
                              checkpoints=[run_dir / "epoch0002.pt", link, run_dir / "epoch0002.pt"])
    assert (twice.scored, twice.reused) == (0, 1)  # one file named three times: one row


def test_only_new_checkpoints_are_scored_and_other_settings_are_refused(run_dir, scored, tmp_path):
    data = digits_train()
    interrupted = pd.read_csv(scored[0] / "selection.csv").iloc[:1]  # as if stopped after the first checkpoint
    interrupted.to_csv(tmp_path / "selection.csv", index=False)
    both = select_checkpoint(run_dir, tmp_path, data, SMALL, progress=False)
    assert (both.scored, both.reused) == (1, 1) and len(both.table) == 2
    pd.testing.assert_frame_equal(both.table.drop(columns=["scored_at", "scoring_seconds", "features_seconds",
                                                           "svm_seconds"]),
                                  scored[1].table.drop(columns=["scored_at", "scoring_seconds", "features_seconds",
                                                                "svm_seconds"]), check_dtype=False)
    other = SelectionSettings(fit_size=200, validation_size=100, diversity_samples=64, Cs=(1e-3,))
    with pytest.raises(GanFeaturesError, match="other settings.*--overwrite"):
        select_checkpoint(run_dir, tmp_path, data, other, progress=False)
    redone = select_checkpoint(run_dir, tmp_path, data, other, checkpoints=[run_dir / "epoch0002.pt"],
                               overwrite=True, progress=False)
    assert (redone.scored, redone.reused) == (1, 0) and list(redone.table["C"]) == [1e-3]


def test_collapsed_generator_scores_near_zero_diversity(run_dir, scored, tmp_path):
    source = load_checkpoint(run_dir / "epoch0002.pt")
    generator = source.generator
    with torch.no_grad():
        generator.main[-2].weight.zero_()  # the last transposed conv: every latent gives tanh(0), one grey image
    collapsed = save_checkpoint(tmp_path / "collapsed.pt", source.architecture, source.discriminator, generator,
                                source.provenance)
    result = select_checkpoint(run_dir, tmp_path / "out", digits_train(), SMALL, checkpoints=[collapsed],
                               progress=False)
    (flat,), healthy = result.table.to_dict("records"), pd.read_csv(scored[0] / "selection.csv").iloc[1]
    assert flat["sample_diversity"] < 1e-6 and flat["sample_pixel_std"] < 1e-6
    assert healthy["sample_diversity"] > 0.05 and healthy["sample_pixel_std"] > 0.05
    # the same discriminator: a collapsed generator alone does not change the probe's accuracy
    assert flat["validation_accuracy_pct"] == pytest.approx(healthy["validation_accuracy_pct"])


def test_best_is_the_highest_accuracy_among_checkpoints_with_enough_diversity():
    table = pd.DataFrame({"validation_accuracy_pct": [90.0, 95.0, 95.0, 99.0], "sample_diversity": [0.5, 0.4, 0.6, 0.01],
                          "step": [1, 2, 3, 4]})
    assert choose_best(table) == 3
    assert choose_best(table, min_diversity=0.1) == 2  # the tie goes to the more diverse one
    assert choose_best(table.assign(sample_diversity=0.5), min_diversity=0.1) == 3
    assert choose_best(table.assign(sample_diversity=0.5, validation_accuracy_pct=95.0)) == 3  # then the later step
    with pytest.raises(GanFeaturesError, match="--min-diversity"):
        choose_best(table, min_diversity=0.9)
    assert choose_best(table, min_diversity=0.9, required=False) is None  # mid-selection: not an error


def test_test_splits_are_refused_and_never_loaded(run_dir, tmp_path, monkeypatch, capsys):
    data = digits_train()
    for split in ("test", "all"):
        data.split = split
        with pytest.raises(GanFeaturesError, match="training split"):
            select_checkpoint(run_dir, tmp_path, data, SMALL, progress=False)
    loaded = []
    real_reader = digits_module.load_digits_dataset

    def train_only(split="train", **kwargs):
        loaded.append(split)
        if split != "train":
            raise AssertionError(f"selection read the {split!r} split")
        return real_reader(split=split, **kwargs)

    monkeypatch.setattr(digits_module, "load_digits_dataset", train_only)
    code = main(["select", str(run_dir), "--out", str(tmp_path / "cli"), "--dataset", "digits", "--pattern",
                 "epoch0001.pt", "--fit-size", "200", "--validation-size", "100", "--C", "1e-3", "--device", "cpu",
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert loaded == ["train"] and "best:" in out and (tmp_path / "cli" / "selection.csv").exists()
    code = main(["select", str(run_dir), "--out", str(tmp_path / "cli2"), "--dataset", "digits", "--split", "test",
                 "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and "--split train" in err and len(err.strip().splitlines()) == 1
    assert loaded == ["train"]  # refused before reading anything


def test_errors_are_one_line(run_dir, tmp_path, capsys):
    code = main(["select", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code = main(["select", str(run_dir), "--out", str(tmp_path / "o"), "--pattern", "nothing*.pt", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and "--pattern" in err
    with pytest.raises(GanFeaturesError, match="C grid"):
        SelectionSettings(Cs=(0.0,))


def test_epochs_name_checkpoints_by_epoch_and_a_missing_one_is_refused(run_dir, tmp_path):
    assert run_checkpoints(run_dir, epochs=[2, 1, 2]) == [run_dir / "epoch0001.pt", run_dir / "epoch0002.pt"]
    assert run_checkpoints(run_dir, pattern="nothing*.pt", epochs=[2]) == [run_dir / "epoch0002.pt"]
    with pytest.raises(GanFeaturesError, match=r"has no epoch0003\.pt, epoch0009\.pt \(it has epoch0001\.pt to "):
        run_checkpoints(run_dir, epochs=[1, 3, 9])
    (tmp_path / "epoch0001.pt").write_bytes(b"")
    with pytest.raises(GanFeaturesError, match=r"has no epoch0002\.pt \(it has only epoch0001\.pt\)"):
        run_checkpoints(tmp_path, epochs=[2])


def test_also_scores_checkpoints_outside_the_run_folder_in_the_same_table(run_dir, tmp_path, capsys):
    outside = tmp_path / "started-from.pt"
    outside.write_bytes((run_dir / "epoch0001.pt").read_bytes())
    common = ["--out", str(tmp_path / "table"), "--dataset", "digits", "--epochs", "2", "--fit-size", "200",
              "--validation-size", "100", "--C", "1e-3", "--device", "cpu", "--quiet"]
    # named twice, and once more as the run's own epoch0002.pt: each file is scored once
    code = main(["select", str(run_dir), *common, "--also", str(outside), "--also", str(outside),
                 "--also", str(run_dir / "epoch0002.pt")])
    _, err = capsys.readouterr()
    assert code == 0, err
    table = pd.read_csv(tmp_path / "table" / "selection.csv")
    assert len(table) == 2
    scored = dict(zip(table["checkpoint"], table["checkpoint_sha256"]))  # the table orders rows by epoch
    assert scored == {str(path): file_sha256(path) for path in (run_dir / "epoch0002.pt", outside)}
    code = main(["select", str(run_dir), *common, "--also", str(tmp_path / "missing.pt")])
    _, err = capsys.readouterr()
    assert code == 2 and "--also" in err and "missing.pt" in err and len(err.strip().splitlines()) == 1
