"""Updating a table in place (``bench --update``): the representations a run measures replace their
rows in the table already in the results folder, and every other representation's rows are kept as
they were measured, each with its own provenance columns.

The committed CSV is the durable record of a measurement; the feature cache is not (it lives on one
machine and is keyed by file times). So a new checkpoint, or a lost cache, costs the rows that
changed, not hours re-measuring baselines whose inputs did not. A kept row is only trusted when the
settings that shape its numbers (scale, subset, seed, protocol parameters, C grid, SVM and k-NN
settings, extraction precision) are this run's: otherwise the update is refused, nothing written.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GanFeaturesError

# The columns that must agree between a kept row and this run's rows of the same protocol.
SETTING_COLUMNS = ("scale", "dataset", "train_rows", "test_rows", "subset_seed", "train_subset_sha256",
                   "test_subset_sha256", "seed", "protocol_overrides", "Cs", "svm", "knn_k", "knn_temperature",
                   "knn_precision")
KEPT_COLUMN = "kept"  # on a kept row: the file name of the earlier table it was kept from
_INTEGER = re.compile(r"-?\d+")


def read_table_rows(path: Path, text_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The long-format rows of a CSV the bench wrote, with the types it wrote them from: blanks as
    None, integers, floats and booleans as such, ``text_columns`` (and anything else) as text."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    text = {"table", "model", *text_columns}
    return [{column: (value if column in text else _typed(value)) for column, value in row.items() if value != ""}
            for row in rows]


def _typed(value: str) -> Any:
    if value in ("True", "False"):
        return value == "True"
    if _INTEGER.fullmatch(value):
        return int(value)
    try:
        return float(value)
    except ValueError:
        return value


def updated_rows(previous_csv: Path, rows: list[dict[str, Any]], precision: str) -> list[dict[str, Any]]:
    """``rows`` (this run's: the paper's, then the measured or pending ones) with the rows of every
    representation this run did not measure taken from ``previous_csv``, in the earlier table's order.
    ``precision``: this run's extraction precision, which a kept discriminator row must share.

    Raises :class:`GanFeaturesError` when a kept row was measured under other settings than this run's
    rows of its protocol, or under a protocol this run measures nothing with (then nothing checks it).
    """
    if not previous_csv.is_file():
        return rows
    fresh = [row for row in rows if row["kind"] != "paper"]
    text_columns = [column for row in fresh for column, value in row.items() if isinstance(value, str)]
    try:
        previous = [row for row in read_table_rows(previous_csv, text_columns) if row.get("kind") != "paper"]
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise GanFeaturesError(f"--update cannot read the table it would update, {previous_csv}: {error}") from None
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in fresh:
        by_model.setdefault(row["model"], []).append(row)
    merged = [row for row in rows if row["kind"] == "paper"]
    for model in dict.fromkeys(row["model"] for row in previous):
        if model in by_model:  # measured by this run: its rows replace the earlier ones
            merged += by_model.pop(model)
            continue
        for row in (row for row in previous if row["model"] == model):
            _check_settings(row, fresh, previous_csv, precision)
            merged.append(_kept(row, previous_csv))
    for remaining in by_model.values():  # representations the earlier table did not have
        merged += remaining
    return merged


def _check_settings(row: dict[str, Any], fresh: list[dict[str, Any]], previous_csv: Path, precision: str) -> None:
    if row.get("source") != "measured":
        return  # a pending row has no number to keep wrong
    extracted = row.get("checkpoint") not in (None, "none")  # pixels and k-means have no checkpoint, own precision
    if extracted and row.get("extraction_precision") != precision:
        raise GanFeaturesError(f"--update: {row['model']!r} in {previous_csv} was extracted in "
                               f"{row.get('extraction_precision')}, this run extracts in {precision}: measure it "
                               f"again in this run (or all rows, without --update)")
    peers = [peer for peer in fresh if peer.get("source") == "measured" and peer["protocol"] == row["protocol"]]
    if not peers:
        raise GanFeaturesError(f"--update: {previous_csv} has {row['model']!r} under {row['protocol']}, which this run "
                               f"measures for nothing, so nothing checks its settings: measure that row too, or "
                               f"leave out --update")
    for column in SETTING_COLUMNS:
        if not _same(row.get(column), peers[0].get(column)):
            raise GanFeaturesError(
                f"--update: {row['model']!r} ({row['protocol']}) in {previous_csv} was measured with {column} = "
                f"{row.get(column)!r}, this run uses {peers[0].get(column)!r}: measure it again in this run (or all "
                f"rows, without --update)")


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def _kept(row: dict[str, Any], previous_csv: Path) -> dict[str, Any]:
    """A kept row as this table shows it: its numbers and provenance untouched, marked as reused."""
    row = {**row, KEPT_COLUMN: previous_csv.name}
    measured = row.get("created") or "(time unknown)"
    for column in ("svm_cached", "knn_cached"):
        if column in row:
            row[column] = f"reused: kept by --update from the earlier {previous_csv.name} (measured {measured})"
    return row


def update_note(rows: Sequence[dict[str, Any]]) -> str:
    """The note's sentence on which representations an update kept ('' when it kept none)."""
    kept: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get(KEPT_COLUMN):
            kept.setdefault(row["model"], row)
    if not kept:
        return ""
    parts = [f"{model} (measured at commit {str(row.get('git_commit') or 'unknown')[:12]}, "
             f"{str(row.get('created') or 'time unknown')[:10]})" for model, row in kept.items()]
    return (f"Updated with `--update`: the rows of {'; '.join(parts)} are kept from the table this one replaced, "
            f"under the same settings (scale, subset, seed, protocols, C grid, SVM and k-NN settings, precision; "
            f"checked); every other row was measured by the run named below.")
