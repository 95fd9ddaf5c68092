"""The bench's tables: the paper's quoted rows, ours in long form (the CSV, every column) and wide
form (the Markdown, one line per model), and the notes that say how they were measured.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import paper
from ..report import render_markdown
from . import config as conf
from .config import (
    NOT_MEASURED,
    TABLE1,
    TABLE2,
    TABLE2_PROTOCOL,
    BenchConfig,
    command_line,
    svhn_status,
)
from .kept import update_note
from .measure import knn_protocols
from .wording import (C_text, knn_note, number, paragraphs, partial_line, pending_text, protocols_text,
                      provenance_text, scale_text, scale_title, seconds_text, svm_seconds_text)

# Long-format CSV: one row per (model, protocol); these columns first, then all provenance.
LEADING_COLUMNS = ("table", "model", "kind", "source", "protocol", "metric", "test_mean", "test_std", "test_ci95",
                   "quoted", "C", "C_at_grid_edge", "feature_dimension", "max_feature_units", "scale", "train_rows",
                   "test_rows", "protocol_overrides", "seed", "checkpoint", "checkpoint_sha256", "train_store",
                   "test_store", "features_cached", "extraction_precision", "extraction_device", "prepare_s",
                   "extract_train_s", "extract_test_s", "svm_wall_time_s", "svm_cached", "knn_k", "knn_temperature",
                   "knn_wall_time_s", "knn_cached", "progress", "git_commit", "git_dirty")


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


def long_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Every row and column, :data:`LEADING_COLUMNS` first: the CSV."""
    table = pd.DataFrame(rows)
    for column in table.columns:  # integers stay integers beside the paper rows' blanks (not 3.0)
        values = [row[column] for row in rows if row.get(column) is not None]
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            table[column] = table[column].astype("Int64")
    leading = [column for column in LEADING_COLUMNS if column in table.columns]
    return table[leading + [column for column in table.columns if column not in leading]]


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
    knn_column = f"k-NN accuracy (%), k={' / '.join(map(str, conf.KNN_KS))}"
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
        full_text = pending_text(full) or number(full.get("test_mean"))
        few_text = pending_text(few) or (f"{number(few.get('test_mean'))} ± {number(few.get('test_std'))}" if few else "")
        knn_text = (pending_text(knn[0]) or " / ".join(number(r.get("test_mean")) for r in knn)) if knn else ""
        lines.append({
            "model": model, "source": _sources(full, few, *knn), "accuracy (%)": full_text,
            "accuracy, 400 per class (%)": few_text, knn_column: knn_text,
            "max # of feature units": "" if units is None else str(units),
            "feature dimension": "" if dimension is None else str(dimension),
            "C: all labels / 400 per class": " / ".join(C_text(r) for r in (full, few) if r),
            WALL_TIME_COLUMN: " / ".join([_feature_seconds(first)] + [svm_seconds_text(r) for r in (full, few) if r]
                                         + ([seconds_text(knn[0].get("knn_wall_time_s"))] if knn else []))})
    return pd.DataFrame(lines)


def _sources(*rows: dict[str, Any]) -> str:
    """'measured', 'not measured yet', or 'measured in part' for a line of the wide table."""
    sources = {row["source"] for row in rows if row}
    return "measured" if sources == {"measured"} else NOT_MEASURED if "measured" not in sources else "measured in part"


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
                          "test error (%), 1000 labels": pending_text(row) or f"{number(row['test_mean'])} ± "
                                                                          f"{number(row['test_ci95'])}",
                          "feature dimension": "" if dimension is None else str(dimension), "C": C_text(row),
                          "wall time (s): features / SVM": f"{_feature_seconds(row)} / "
                                                           f"{seconds_text(row.get('svm_wall_time_s'))}"})
    return pd.DataFrame(lines)


def table1_note(context: dict[str, Any], config: BenchConfig, record: dict[str, Any], seconds: float,
                rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"Paper rows: {paper.CITATION}, Table 1 (its DCGAN was trained on Imagenet-1k).",
             scale_text(context, per_class=True), protocols_text(conf.TABLE1_PROTOCOLS, config),
             (f"Features: every conv block max-pooled to 4x4 and concatenated, batch-norm statistics recomputed "
              f"over the training images, extracted in {config.precision}; raw pixels in [-1, 1]; k-means fitted on "
              f"the training images only, its features standardised with the training split's mean and variance as "
              f"Coates et al. did."),
             knn_note(config), update_note(rows), provenance_text(TABLE1, record, seconds, config, rows)]
    return paragraphs(*lines)


def svhn_absent_line(config: BenchConfig, reason: str) -> str:
    """The one line that says Table 2 has only the paper's rows, and the exact command for ours."""
    from ..radford import SVHN

    checkpoint = config.svhn_checkpoint or "radford-svhn.pt"
    steps = []
    if not config.svhn_checkpoint:
        steps.append(f"gan-features import-radford PATH/TO/{SVHN.directory} --out {checkpoint}")
    svhn_root = config.svhn_root or "DIR_WITH_train_32x32.mat_AND_test_32x32.mat"
    steps.append(command_line(config, svhn_root=svhn_root, svhn_checkpoint=checkpoint, saved_only=False))
    return (f"**SVHN was not available here ({reason}), so only the paper's rows are shown.** To measure ours: "
            f"`{' && '.join(steps)}`")


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
        svm_protocols = (*conf.TABLE1_PROTOCOLS, TABLE2_PROTOCOL)
        if row["source"] != "measured" or before is None or row["protocol"] not in svm_protocols \
                or not np.isfinite(before.C) or np.isclose(before.C, row["C"], rtol=1e-9, atol=0):
            continue
        by_C = json.loads(row.get("validation_by_C") or "{}")
        now = ", ".join(f"{C} {score:.2f}" for C, score in by_C.items()) or "not recorded"
        moves.append(f"{row['model']}, `{row['protocol']}`: C {before.C:g} -> {row['C']:g} (validation "
                     f"{row['metric']} then {before.validation_mean:.2f} % at {before.C:g}; now, by C: {now})")
    if not moves:
        return ""
    return f"Chosen C moved from the table this replaces ({previous_csv.name} in git): " + "; ".join(moves) + "."


def table_texts(results_dir: Path, config: BenchConfig, rows1: list[dict[str, Any]], context1: dict[str, Any],
                rows2: list[dict[str, Any]], context2: dict[str, Any] | None, record: dict[str, Any],
                seconds: float) -> dict[Path, str]:
    """Both tables' Markdown and CSV, by path; Table 2 without ``context2`` holds the paper's rows only."""
    if context2 is None:
        note2 = svhn_absent_line(config, svhn_status(config)[1])
    else:
        note2 = paragraphs(partial_line(rows2, config), f"Paper rows: {paper.CITATION}, Table 2.",
                           scale_text(context2, per_class=False),
                           protocols_text((TABLE2_PROTOCOL,), config) + " Test error: mean ± 1.96 std over the "
                           "draws, as the original analysis printed it.",
                           moved_choices(results_dir / f"{TABLE2}.csv", rows2), update_note(rows2),
                           provenance_text(TABLE2, record, seconds, config, rows2))
    return {
        results_dir / f"{TABLE1}.md": render_markdown(
            wide_table1(rows1),
            f"Table 1: CIFAR-10, linear L2-SVM{' and k-NN' * config.knn} on features ({scale_title(config)})",
            paragraphs(partial_line(rows1, config), table1_note(context1, config, record, seconds, rows1),
                       moved_choices(results_dir / f"{TABLE1}.csv", rows1))),
        results_dir / f"{TABLE1}.csv": _csv(rows1),
        results_dir / f"{TABLE2}.md": render_markdown(
            wide_table2(rows2), f"Table 2: SVHN, 1000 labels, linear L2-SVM on features ({scale_title(config)})",
            note2),
        results_dir / f"{TABLE2}.csv": _csv(rows2),
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    return long_table(rows).to_csv(index=False, lineterminator="\n")


