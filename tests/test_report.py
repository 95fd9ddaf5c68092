"""Result tables: Markdown + CSV round trips, atomic writes, provenance columns."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import gan_features
from gan_features import output, provenance as provenance_module
from gan_features.errors import GanFeaturesError
from gan_features.protocols import ProtocolResult, Summary
from gan_features.provenance import provenance
from gan_features.report import CORE_COLUMNS, results_table, write_result, write_table


def frame() -> pd.DataFrame:
    return pd.DataFrame({"protocol": ["svhn-1000", "cifar10"], "C": [1e-4, 0.002], "test_mean": [22.4812345, 82.8],
                         "fits": [100, 1], "chosen": [True, False],
                         # a hex digest that reads as a number: it must stay text in both files
                         "checkpoint_sha256": ["1234e567", "00ab"]})


def result(protocol: str = "svhn-1000", seed: int = 0, C: float = 1e-3) -> ProtocolResult:
    validation = pd.DataFrame({"C": [1e-4, 1e-3], "mean": [30.0, 25.0], "std": [1.0, 2.0], "ci95": [1.96, 3.92],
                               "fits": [10, 10], "chosen": [False, True]})
    return ProtocolResult(
        protocol=protocol, metric="error", spread="ci95",
        params={"seed": seed, "Cs": (1e-4, 1e-3), "svm": {"backend": "liblinear"}}, chosen_C=C,
        validation=validation, test=Summary(22.5, 0.3, 100), final_validation=Summary(24.0, 0.5, 100),
        wall_time_s=12.5,
        provenance={"train_store": "/data/svhn-train.h5", "test_store": "/data/svhn-test.h5",
                    "checkpoint_sha256": "ab" * 32, "feature_spec": {"grid": 4}, **provenance()})


def test_write_table_round_trips(tmp_path):
    df = frame()
    md_path, csv_path = write_table(df, tmp_path / "new" / "dir", "table", title="SVHN", note="Lower is better.")
    assert (md_path.name, csv_path.name) == ("table.md", "table.csv")
    back = pd.read_csv(csv_path, dtype={"checkpoint_sha256": str})
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    text = md_path.read_text()
    assert text.startswith("# SVHN\n\nLower is better.\n\n|")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(df)  # header, rule, one line per row
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == list(df.columns)
    assert "1234e567" in text and "22.4812" in text and "0.0001" in text


def test_markdown_without_title_or_note_is_just_the_table(tmp_path):
    md_path, _ = write_table(frame(), tmp_path, "plain")
    assert md_path.read_text().startswith("| protocol")


def test_files_are_readable_like_any_other_new_file(tmp_path):
    md_path, csv_path = write_table(frame(), tmp_path, "mode")
    mask = os.umask(0)
    os.umask(mask)
    assert {path.stat().st_mode & 0o777 for path in (md_path, csv_path)} == {0o666 & ~mask}


def test_nothing_written_when_rendering_fails(tmp_path, monkeypatch):
    write_table(frame(), tmp_path, "table")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("cannot render")

    monkeypatch.setattr(pd.DataFrame, "to_markdown", broken)
    with pytest.raises(RuntimeError):
        write_table(frame().iloc[:1], tmp_path, "table")
    with pytest.raises(RuntimeError):
        write_table(frame(), tmp_path, "fresh")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_nothing_half_written_when_writing_fails(tmp_path, monkeypatch):
    write_table(frame(), tmp_path, "table")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output.os, "replace", disk_full)
    with pytest.raises(GanFeaturesError, match="no space left"):  # one line, not a traceback
        write_table(frame().iloc[:1], tmp_path, "table")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no temporaries left


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden"])
def test_table_names_are_plain_file_names(tmp_path, name):
    with pytest.raises(GanFeaturesError, match="plain file name"):
        write_table(frame(), tmp_path, name)


def test_results_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "results").write_text("")
    with pytest.raises(GanFeaturesError, match="not a directory"):
        write_table(frame(), tmp_path / "results", "table")


def test_results_table_has_one_row_per_result_and_provenance_columns(tmp_path):
    table = results_table([result(seed=0), result(protocol="svhn-1000", seed=1, C=2e-3)])
    assert len(table) == 2
    assert list(table.columns[:len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    for column in ("git_commit", "package_version", "torch_version", "hostname", "created", "feature_spec", "svm"):
        assert column in table.columns, column
    assert table["seed"].tolist() == [0, 1] and table["C"].tolist() == [1e-3, 2e-3]
    assert table["test_ci95"].tolist() == pytest.approx([1.96 * 0.3] * 2)
    _, csv_path = write_table(table, tmp_path, "results")
    back = pd.read_csv(csv_path, dtype={"checkpoint_sha256": str, "git_commit": str})
    assert list(back.columns) == list(table.columns) and back["feature_spec"].tolist() == ['{"grid": 4}'] * 2


def test_results_table_of_nothing_has_the_core_columns():
    assert list(results_table([]).columns) == list(CORE_COLUMNS)


def test_write_result_writes_results_and_validation_tables(tmp_path):
    paths = write_result(result(seed=3), tmp_path)
    assert [path.name for path in paths] == ["svm_svhn-1000_svhn-train_seed3.md", "svm_svhn-1000_svhn-train_seed3.csv",
                                             "svm_svhn-1000_svhn-train_seed3_validation.md",
                                             "svm_svhn-1000_svhn-train_seed3_validation.csv"]
    assert "test error: 22.50 +- 0.59 %" in paths[0].read_text()
    pd.testing.assert_frame_equal(pd.read_csv(paths[3]), result().validation)


def test_provenance_outside_a_repository_has_no_commit(tmp_path):
    values = provenance(tmp_path)
    assert values["git_commit"] is None and values["git_dirty"] is None
    assert values["package_version"] == gan_features.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", values["created"])
    for key in ("hostname", "platform", "cpu", "python", "torch_version"):
        assert values[key], key


def test_provenance_records_the_packages_commit():
    source = Path(gan_features.__file__).resolve().parent
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=source,
                                                     capture_output=True).returncode != 0:
        pytest.skip("the package is not in a git checkout here")
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()
    values = provenance()
    assert values["git_commit"] == expected and isinstance(values["git_dirty"], bool)


def test_the_packages_commit_is_the_one_the_process_started_with(monkeypatch):
    """A commit made while a run lasts (hours) must not be recorded as the code that made its numbers."""
    from gan_features import cli

    provenance_module.package_source_state.cache_clear()
    monkeypatch.setattr(provenance_module, "_git", lambda directory, *args: "a" * 40 if args[0] == "rev-parse" else "")
    assert cli.main(["archs"]) == 0  # any command reads the state before it starts
    monkeypatch.setattr(provenance_module, "_git", lambda directory, *args: "b" * 40 if args[0] == "rev-parse" else " M x.py")
    assert provenance()["git_commit"] == "a" * 40 and provenance()["git_dirty"] is False
    assert provenance_module.git_commit() == "a" * 40
    provenance_module.package_source_state.cache_clear()  # other tests see this checkout's real state again


def test_results_name_the_command_line_that_made_them_and_python_calls_none(monkeypatch):
    """The CLI records its real argv for every result it writes; outside a command nothing is recorded."""
    from gan_features import cli, commands

    seen = []
    monkeypatch.setitem(commands.COMMANDS, "archs", lambda args: seen.append(provenance()["command"]))
    assert cli.main(["archs"]) == 0
    assert seen == ["gan-features archs"]
    with provenance_module.recorded_command(["svm", "--train", "a b.h5"]):
        assert provenance()["command"] == "gan-features svm --train 'a b.h5'"
    assert provenance()["command"] is None
