"""Result tables: DataFrames written as ``<name>.md`` and ``<name>.csv`` under a results directory.

Both files are rendered before either is touched and written together (:func:`gan_features.output.write_texts`),
so a failure never leaves a half-written or stale-mixed pair. Every table row of results carries its
provenance (:mod:`gan_features.provenance`: code commit, stores, checkpoint, seed, C). Results are
duck-typed (``to_row``, ``describe``, ``to_rows``): this module sits below the protocols and probes that
make them.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import GanFeaturesError
from .output import write_texts
from .provenance import cpu_model, git_commit

# Leading columns of a results table, in this order; whatever else the rows hold follows.
CORE_COLUMNS = ("protocol", "metric", "test_mean", "test_std", "test_ci95", "test_fits", "C", "seed",
                "validation_mean", "wall_time_s", "train_store", "test_store", "checkpoint_sha256")


# ----------------------------------------------------------------------------------------------- tables
def results_table(results: Sequence[Any]) -> pd.DataFrame:
    """One row per result, :data:`CORE_COLUMNS` first, then parameters and provenance."""
    if not results:
        return pd.DataFrame(columns=list(CORE_COLUMNS))
    table = pd.DataFrame([result.to_row() for result in results])
    leading = [column for column in CORE_COLUMNS if column in table.columns]
    return table[leading + [column for column in table.columns if column not in leading]]


def check_table_name(name: str) -> None:
    """Refuse a table name that is not a plain file name (it would write outside the results folder)."""
    if not name or Path(name).name != name or name.startswith("."):
        raise GanFeaturesError(f"table name {name!r} must be a plain file name without directories")


def result_table_name(protocol: str, train_store: str | os.PathLike, seed: int) -> str:
    """:func:`write_result`'s default name: runs on other features or seeds do not overwrite each other."""
    return f"svm_{protocol}_{Path(train_store).stem}_seed{seed}"


def write_table(df: pd.DataFrame, results_dir: str | os.PathLike, name: str, *, title: str | None = None,
                note: str | None = None) -> tuple[Path, Path]:
    """Write ``df`` as ``<name>.md`` (optional title and note above the table) and ``<name>.csv``."""
    check_table_name(name)
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise GanFeaturesError(f"results directory {results_dir} exists but is not a directory") from None
    # Render both first: a table that cannot be rendered leaves nothing behind.
    texts = {results_dir / f"{name}.md": render_markdown(df, title, note),
             results_dir / f"{name}.csv": df.to_csv(index=False, lineterminator="\n")}
    write_texts(texts)
    md_path, csv_path = texts
    return md_path, csv_path


def write_result(result: Any, results_dir: str | os.PathLike, name: str | None = None) -> list[Path]:
    """A run's one-row results table and its per-C validation table, as md + csv each.

    ``name`` defaults to ``svm_<protocol>_<train store>_seed<seed>``, so runs on other features
    or seeds do not overwrite each other.
    """
    if name is None:
        name = result_table_name(result.protocol, result.provenance["train_store"], result.params["seed"])
    scores = f"{result.metric} (%)"
    note = result.describe().splitlines()[-1]
    paths = write_table(results_table([result]), results_dir, name, title=f"{result.protocol}: test {scores}",
                        note=note)
    validation_paths = write_table(
        result.validation, results_dir, f"{name}_validation",
        title=f"{result.protocol}: validation {scores} per C",
        note=f"C chosen on training-store validation rows: {result.chosen_C:g}. Features: "
             f"{result.provenance['train_store']}.")
    return [*paths, *validation_paths]


def check_table_writable(results_dir: str | os.PathLike, name: str, overwrite: bool) -> None:
    """Refuse, before any work is done, a bad table name, or to replace ``<name>.md``/``.csv`` in
    ``results_dir`` unless asked to."""
    check_table_name(name)
    for path in (Path(results_dir) / f"{name}.md", Path(results_dir) / f"{name}.csv"):
        if path.exists() and not overwrite:
            raise GanFeaturesError(f"{path} already exists: pass --overwrite to replace it, or choose another "
                                   f"--results folder")


def write_knn_result(result: Any, results_dir: str | os.PathLike, name: str = "knn",
                     overwrite: bool = False) -> list[Path]:
    """A k-NN probe's table (one row per k, with its provenance) as ``<name>.md`` and ``<name>.csv``;
    an existing pair is replaced only with ``overwrite``."""
    check_table_writable(results_dir, name, overwrite)
    table = pd.DataFrame(result.to_rows())
    note = (f"Weighted k-NN (cosine similarity of L2-normalised features, votes weighted by "
            f"exp(similarity / {result.temperature:g})), {result.n_train:,} training / {result.n_test:,} test rows. "
            f"Features: {result.provenance['train_store']} (train), {result.provenance['test_store']} (test).")
    return list(write_table(table, results_dir, name, title="k-NN probe: test accuracy (%)", note=note))


def render_markdown(df: pd.DataFrame, title: str | None, note: str | None) -> str:
    try:
        import tabulate  # noqa: F401  (pandas' to_markdown needs it)
    except ImportError:
        raise GanFeaturesError("writing Markdown tables needs the 'tabulate' package: pip install tabulate") from None
    numeric = [pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) for dtype in df.dtypes]
    # Cells are formatted here and number parsing is off: tabulate would otherwise read a hex digest
    # such as "12e4..." as a float and print it as one.
    cells = pd.DataFrame({column: [_format(value) for value in df[column]] for column in df.columns},
                         columns=df.columns)
    table = cells.to_markdown(index=False, disable_numparse=True,
                              colalign=["right" if flag else "left" for flag in numeric] or None)
    parts = ([f"# {title}"] if title else []) + ([note] if note else []) + [table]
    return "\n\n".join(parts) + "\n"


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


def write_benchmark(out_dir: str | os.PathLike, name: str, title: str, table: pd.DataFrame, notes: Sequence[str],
                    load: tuple[float, float], csv_table: pd.DataFrame | None = None) -> str:
    """A benchmark's ``<name>.md`` (title, this machine, the 1-minute load average before and after,
    ``notes``, then ``table``) and ``<name>.csv`` (``csv_table``, default ``table``), written
    atomically; returns the markdown. Figures only mean something on a quiet machine, hence the load."""
    import torch

    lines = [f"# {title} ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC})", "",
             f"- CPU {cpu_model()} x {os.cpu_count()}, torch {torch.__version__}, threads "
             f"{torch.get_num_threads()}, commit {git_commit() or 'unknown'}",
             f"- load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after (only meaningful on a quiet machine)",
             *(f"- {note}" for note in notes), "", ""]  # a blank line: a table right after a list joins the list
    markdown = "\n".join(lines) + table.to_markdown(index=False) + "\n"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_texts({out / f"{name}.md": markdown,
                   out / f"{name}.csv": (table if csv_table is None else csv_table).to_csv(index=False)})
    return markdown
