"""Result tables: DataFrames written as ``<name>.md`` and ``<name>.csv`` under a results directory.

Both files are written atomically (temporary file beside the target, then ``os.replace``) and
rendered before either is touched, so a failure never leaves a half-written or stale-mixed pair.
Every table row of results carries its provenance (code commit, stores, checkpoint, seed, C).
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from .errors import GanFeaturesError
from .output import writing_together

if TYPE_CHECKING:  # protocols and knn import this module; the names are needed for annotations only
    from .knn import KnnResult
    from .protocols import ProtocolResult

# Leading columns of a results table, in this order; whatever else the rows hold follows.
CORE_COLUMNS = ("protocol", "metric", "test_mean", "test_std", "test_ci95", "test_fits", "C", "seed",
                "validation_mean", "wall_time_s", "train_store", "test_store", "checkpoint_sha256")


def provenance(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where and with what code a result was made.

    ``repo``: the directory whose git commit is recorded; by default this package's own source,
    which is the code that produced the numbers, wherever the command was run from, as this process
    first saw it (:func:`package_source_state`).
    """
    from . import __version__

    commit, dirty = _source_state(Path(repo)) if repo is not None else package_source_state()
    return {"git_commit": commit, "git_dirty": dirty,
            "package_version": __version__, "python": platform.python_version(),
            "torch_version": _distribution_version("torch"),
            "hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu_model(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


@functools.cache
def cpu_model() -> str:
    """The processor's model name: numbers from the same seeds differ in their last bits between CPUs
    (BLAS kernels, bfloat16 support), and timings far more."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(directory: str | os.PathLike | None = None) -> str | None:
    """The commit of ``directory`` (default: this package's source, :func:`package_source_state`), None
    outside a git checkout."""
    return _source_state(Path(directory))[0] if directory is not None else package_source_state()[0]


@functools.cache
def package_source_state() -> tuple[str | None, bool | None]:
    """This package's source commit and whether it had uncommitted changes, read once per process.

    Once, because a run lasts hours: commits made while it runs are not the code it loaded, and a
    result must name the code that made it. The CLI reads it before a command starts.
    """
    return _source_state(Path(__file__).resolve().parent)


def _source_state(directory: Path) -> tuple[str | None, bool | None]:
    commit = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, None if status is None else bool(status)


def _git(directory: Path, *args: str) -> str | None:
    """git's output in ``directory``, or None when there is no git or no repository."""
    try:
        done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _distribution_version(name: str) -> str | None:
    try:  # metadata, not an import: importing torch takes seconds a table does not need
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------- tables
def results_table(results: Sequence["ProtocolResult"]) -> pd.DataFrame:
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
    texts = {results_dir / f"{name}.md": _markdown(df, title, note),
             results_dir / f"{name}.csv": df.to_csv(index=False, lineterminator="\n")}
    _write_atomic(texts)
    md_path, csv_path = texts
    return md_path, csv_path


def write_result(result: "ProtocolResult", results_dir: str | os.PathLike, name: str | None = None) -> list[Path]:
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


def write_knn_result(result: "KnnResult", results_dir: str | os.PathLike, name: str = "knn",
                     overwrite: bool = False) -> list[Path]:
    """A k-NN probe's table (one row per k, with its provenance) as ``<name>.md`` and ``<name>.csv``;
    an existing pair is replaced only with ``overwrite``."""
    check_table_writable(results_dir, name, overwrite)
    table = pd.DataFrame(result.to_rows())
    note = (f"Weighted k-NN (cosine similarity of L2-normalised features, votes weighted by "
            f"exp(similarity / {result.temperature:g})), {result.n_train:,} training / {result.n_test:,} test rows. "
            f"Features: {result.provenance['train_store']} (train), {result.provenance['test_store']} (test).")
    return list(write_table(table, results_dir, name, title="k-NN probe: test accuracy (%)", note=note))


def _markdown(df: pd.DataFrame, title: str | None, note: str | None) -> str:
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


def _write_atomic(texts: dict[Path, str]) -> None:
    """Write each text to ``<name>.partial`` beside its target, then rename them all over the
    targets (:func:`gan_features.output.writing_together`): a failure (disk full, an error while
    writing) never leaves one file of a pair new and the other old or missing."""
    with writing_together(list(texts)) as partials:
        for text, partial in zip(texts.values(), partials):
            with open(partial, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())


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
    _write_atomic({out / f"{name}.md": markdown,
                   out / f"{name}.csv": (table if csv_table is None else csv_table).to_csv(index=False)})
    return markdown
