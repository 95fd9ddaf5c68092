"""The words and cells every bench table shares (Tables 1-2 and the per-block table): numbers,
seconds, chosen C, "not measured yet", and the notes on scale, protocols, the k-NN rule, provenance
and partial tables, so each table writer says them the same way.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..knn import TEMPERATURE as KNN_TEMPERATURE
from . import config as conf
from .config import NOT_MEASURED, BenchConfig, command_line, make_protocol, protocol_overrides
from .splits import SCALE_NAMES


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def number(value: Any, digits: int = 2) -> str:
    return "" if _missing(value) else f"{value:.{digits}f}"


def seconds_text(value: Any) -> str:
    return "?" if _missing(value) else f"{value:.0f}"


def C_text(row: dict[str, Any]) -> str:
    if row.get("C") is None:
        return "?"
    edge = row.get("C_at_grid_edge")
    return f"{row['C']:g}" + (" (grid edge)" if edge else "")


def svm_seconds_text(row: dict[str, Any]) -> str:
    """The SVM wall time, '≥' when earlier runs made fits whose time they did not record."""
    untimed = row.get("resumed_fits") and _missing(row.get("resumed_fit_seconds"))
    return ("≥" if untimed else "") + seconds_text(row.get("svm_wall_time_s"))


def pending_text(row: dict[str, Any]) -> str:
    """A cell's text for a row not measured yet (and how far it got), else ''."""
    return f"{NOT_MEASURED} ({row['progress']})" if row.get("source") == NOT_MEASURED else ""


# What a subset scale's numbers are for, said in its table's note.
SCALE_PURPOSES = {
    "ci": "numbers are for regression checks and not comparable with the paper's.",
    "toy": "a smoke test of the recipe (docs/reproduce.md): its numbers are not comparable with the paper's, "
           "nor with the CI or full scale's."}


def scale_text(context: dict[str, Any], per_class: bool) -> str:
    if context["scale"] == "full":
        return (f"Scale: full ({context['train_rows']:,} training / {context['test_rows']:,} test images).")
    per = (f" = {context['train_rows'] // 10:,} / {context['test_rows'] // 10:,} per class" if per_class
           else ", classes in proportion")
    return (f"Scale: {SCALE_NAMES[context['scale']]}, a fixed subset of {context['dataset']} "
            f"({context['train_rows']:,} training / {context['test_rows']:,} test images{per}; stratified, seed "
            f"{context['subset_seed']}, rows sha256 {context['train_subset_sha256'][:12]} / "
            f"{context['test_subset_sha256'][:12]}): {SCALE_PURPOSES[context['scale']]}")


def scale_title(config: BenchConfig) -> str:
    """The scale as a table's title says it; the toy scale's says at once that it measures nothing."""
    return f"{config.scale} scale" + (": a smoke test, not comparable" if config.scale == "toy" else "")


def protocols_text(names: Sequence[str], config: BenchConfig) -> str:
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
    patience = ("; patience=N: Cs are fitted in ascending order up to the one at which N Cs in a row scored no "
                "better on validation than the best before them" if any(protocol.params.get("patience")
                                                                         for protocol in protocols) else "")
    return (f"Protocols: {'; '.join(parts)} (seed {config.seed}); C chosen on validation rows of the training "
            f"split, never on test{grid}{patience}; '(grid edge)' marks a choice at the grid's end.")


def _grid(Cs: Sequence[float]) -> str:
    return ", ".join(f"{C:g}" for C in Cs)


def provenance_text(name: str, record: dict[str, Any], seconds: float, config: BenchConfig,
                    rows: Sequence[dict[str, Any]] = ()) -> str:
    commit = record.get("git_commit") or "unknown"
    dirty = " (uncommitted changes)" if record.get("git_dirty") else ""
    how = "Written from the rows measured so far" if config.saved_only else "Measured"
    took = "" if config.saved_only else f", {seconds:.0f} s in all"
    reused = sum(str(row.get(key, "")).startswith("reused") for row in rows for key in ("svm_cached", "knn_cached"))
    if reused and not config.saved_only:  # "N s in all" alone would pass a resumed run's time off as the table's
        took = (f", {seconds:.0f} s in this run, which reused {reused} measurements of earlier runs (each row's wall "
                f"times are its own)")
    return (f"{how} with gan-features at commit {commit[:12]}{dirty} on {record.get('hostname')}, "
            f"{record.get('created')}{took}, by {_command_text(record, config)}; every number's provenance (the commit "
            f"and time it was measured at, checkpoint sha256, feature stores, seeds, wall times) is in {name}.csv.")


def _command_text(record: dict[str, Any], config: BenchConfig) -> str:
    """The command that made the tables as recorded, or for a run from Python, what it called."""
    if record.get("command"):
        return f"`{record['command']}`"
    return f"gan_features.bench.run_bench (the same as `{command_line(config)}`)"


def partial_line(rows: list[dict[str, Any]], config: BenchConfig) -> str:
    """The bold line above a table with rows not measured yet: how many are done and how to finish."""
    measured = sum(row["source"] == "measured" for row in rows)
    pending = sum(row["source"] == NOT_MEASURED for row in rows)
    if not pending:
        return ""
    return (f"**Partial: {measured} of {measured + pending} measurements are done; the others say "
            f"'{NOT_MEASURED}' and how far they got. `{command_line(config, saved_only=False)}` measures "
            f"the rest.**")


def knn_note(config: BenchConfig) -> str:
    """The note's sentence on the k-NN columns ('' without them)."""
    if not config.knn:
        return ""
    return (f"k-NN: each test image's k = {' and '.join(map(str, conf.KNN_KS))} training images of highest cosine "
            f"similarity (L2-normalised features) vote with weight exp(similarity / {KNN_TEMPERATURE:g}), as DINO's "
            f"eval_knn.py; measured once per representation on all the training images of this scale, choosing "
            f"nothing (no validation rows); the paper quotes no k-NN.")


def paragraphs(*texts: str) -> str:
    return "\n\n".join(text for text in texts if text)
