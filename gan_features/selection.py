"""Choosing a checkpoint of a training run by validation accuracy, never looking at a test split.

Each checkpoint of a run folder (default ``epoch*.pt``) is scored by a linear probe:

* rows: a fixed, seeded, class-stratified subset of a labelled dataset's TRAINING split, split
  into ``fit_size`` rows that fit the probe and ``validation_size`` disjoint rows that score it
  (rows ranked within each class by a BLAKE2b hash of ``"{seed}:{row}"``, which depends on nothing
  but those bytes, so every machine and numpy version draws the same rows);
* features: the toolkit's (:class:`~gan_features.representations.FeatureSpec` defaults: every conv block
  max-pooled to 4x4, batch-norm statistics recomputed over the fit rows; bf16 by default);
* probe: a :class:`~gan_features.svm.LinearL2SVM` at each C of a small grid (one warm-started
  :func:`~gan_features.svm.fit_c_path`, stopping tolerance ``svm_tol``, 1e-3 by default); the
  checkpoint's score is its best validation accuracy, ties to the first C of the grid, as the
  protocols choose.

Cost: the SVM dominates, and grows with ``fit_size`` much faster than the features do; on a shared
2-core CPU, 28,672-d features of 1,000 fit / 500 validation rows take about a minute of SVM per
checkpoint at tol 1e-3 and several times that at 1e-4, so pass smaller ``fit_size`` /
``validation_size`` there to score many checkpoints.

Only the split passed in is read, and :func:`select_checkpoint` refuses any split but a training
one (:data:`TRAINING_SPLITS`), so test labels cannot reach the choice.

Collapse indicators, from the generator alone (no labels), per checkpoint:

* ``sample_diversity``: the mean pairwise L2 distance between ``diversity_samples`` (256) images
  generated from fixed seeded latents, divided by the same mean over as many real images (a fixed
  stratified draw of the fit rows). About 1: samples are as spread out as real images; towards 0:
  different latents give nearly the same image (mode collapse).
* ``sample_pixel_std``: the per-pixel standard deviation across those samples, averaged over
  pixels, divided by the real images' (low: every sample has nearly the same pixel everywhere).

The real images are the scoring dataset's, not necessarily the GAN's training data, so read the
indicators across the checkpoints of one run rather than as absolute values.

Output, into a folder the caller names: ``selection.csv`` and ``selection.md`` (one row per
checkpoint, the best marked) and ``selection.json`` (settings, best, provenance), each written
atomically after every checkpoint, so an interrupted run keeps what it finished. A later call reuses
the rows of checkpoints already scored with the same settings (same file sha256 and settings
fingerprint) and scores only the others.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoints import Checkpoint, file_sha256, load_checkpoint
from .errors import GanFeaturesError
from .output import write_texts
from .protocols import choose_C_on_validation
from .provenance import provenance
from .report import write_table
from .data.base import Rows, rows_of
from .representations import DiscriminatorFeatures, FeatureSpec, extract_arrays
from .representations.base import describe_dataset
from .subsets import rows_sha256, stratified_rows
from .train import epoch_checkpoint_name

TABLE_NAME = "selection"
SETTINGS_FILE = "selection.json"
DEFAULT_PATTERN = "epoch*.pt"
# Splits that hold training images only. Anything else (test, digits' "all", Imagenette's val, which
# serves as its test set) is refused, so no test label can steer the choice.
TRAINING_SPLITS = ("train", "extra")

# Leading columns of the table, in this order.
COLUMNS = ("checkpoint", "epoch", "step", "images_seen", "validation_accuracy_pct", "C", "sample_diversity",
           "sample_pixel_std", "is_best", "validation_by_C", "checkpoint_sha256", "training_seconds",
           "scoring_seconds", "features_seconds", "svm_seconds", "settings_sha256", "scored_at")


@dataclass(frozen=True)
class SelectionSettings:
    """Everything that changes a score; its fingerprint decides whether a cached row is reused."""

    fit_size: int = 5000
    validation_size: int = 2000
    subset_seed: int = 0
    Cs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    precision: str = "bf16"
    spec: FeatureSpec = FeatureSpec()
    diversity_samples: int = 256
    diversity_seed: int = 0
    # The SVM's stopping tolerance, looser than LinearL2SVM's 1e-4: on epoch-1 features of the
    # radford-imagenet32 run (1,000 fit / 500 validation CIFAR-10 rows) 1e-3 fits the grid ~7x faster
    # with the same best C and accuracy, while 1e-2 moves an accuracy by 1.2 points. A ranking of
    # checkpoints needs no more.
    svm_tol: float = 1e-3

    def __post_init__(self):
        for name in ("fit_size", "validation_size", "diversity_samples"):
            if int(getattr(self, name)) < 2:
                raise GanFeaturesError(f"{name.replace('_', '-')} must be at least 2, got {getattr(self, name)}")
        try:
            Cs = tuple(float(C) for C in self.Cs)
        except (TypeError, ValueError):
            raise GanFeaturesError(f"Cs must be numbers, got {self.Cs!r}") from None
        if not Cs or not all(math.isfinite(C) and C > 0 for C in Cs) or len(set(Cs)) != len(Cs):
            raise GanFeaturesError(f"the C grid must be distinct positive numbers, got {list(Cs)}")
        if not (isinstance(self.svm_tol, (int, float)) and self.svm_tol > 0):
            raise GanFeaturesError(f"svm-tol must be a positive number, got {self.svm_tol!r}")
        if self.precision not in ("fp32", "bf16"):
            raise GanFeaturesError(f"unknown precision {self.precision!r}: use fp32 or bf16")
        if self.spec.batchnorm != "recompute":
            raise GanFeaturesError("selection recomputes batch-norm statistics over the fit rows: use a FeatureSpec "
                                   "with batchnorm='recompute'")
        object.__setattr__(self, "Cs", Cs)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "spec": self.spec.to_dict(), "Cs": list(self.Cs)}


@dataclass
class SelectionResult:
    table: pd.DataFrame
    best: pd.Series
    paths: list[Path]
    scored: int  # checkpoints scored by this call
    reused: int  # checkpoints whose cached row was reused


# ------------------------------------------------------------------------------------------ rows
def fit_validation_rows(labels: np.ndarray, fit_size: int, validation_size: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The probe's disjoint fit and validation rows of a training split."""
    if len(np.unique(labels)) < 2:
        raise GanFeaturesError("the scoring dataset has fewer than 2 classes: a linear probe needs at least 2")
    fit, validation = stratified_rows(labels, [fit_size, validation_size], seed,
                                      fix="lower --fit-size or --validation-size")
    return fit, validation


# ------------------------------------------------------------------------------------------ scoring
def _spread(images: torch.Tensor) -> tuple[float, float]:
    """(mean pairwise L2 distance, per-pixel std averaged over pixels) of a batch of images."""
    flat = images.flatten(1).double()
    return float(torch.pdist(flat).mean()), float(flat.std(dim=0).mean())


@torch.no_grad()
def sample_spread(generator, count: int, seed: int, device) -> tuple[float, float]:
    """:func:`_spread` of ``count`` samples from fixed latents, generated as ONE batch in fp32 (the
    generator normalises with the batch's own statistics, so splitting it would change the images)."""
    latents = generator.sample_latents(count, torch.Generator().manual_seed(seed))
    generator = generator.to(device)
    return _spread(generator(latents.to(device)).float().cpu())


def score_checkpoint(checkpoint: Checkpoint, fit: Rows, validation: Rows, real_spread: tuple[float, float],
                     settings: SelectionSettings, device: str | torch.device = "cpu", batch_size: int = 256,
                     num_workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """One checkpoint's row: best validation accuracy over the C grid, the collapse indicators, timings."""
    from .svm import LinearL2SVM  # imported here: the svm module is large and only this step needs it

    started = time.perf_counter()
    checkpoint.architecture.check_image_size(fit.image_size)
    representation = DiscriminatorFeatures(checkpoint, settings.spec, precision=settings.precision, device=device,
                                           batch_size=batch_size, num_workers=num_workers)
    representation.fit(fit, progress)  # batch-norm statistics over the fit rows
    X_fit, y_fit = extract_arrays(representation, fit, progress)
    X_val, y_val = extract_arrays(representation, validation, progress)
    features_done = time.perf_counter()
    chosen, accuracy = choose_C_on_validation(X_fit, y_fit, X_val, y_val, settings.Cs,
                                              LinearL2SVM(tol=settings.svm_tol))
    del X_fit, X_val
    svm_done = time.perf_counter()
    diversity = pixel_std = float("nan")
    if checkpoint.generator is not None:
        distance, std = sample_spread(checkpoint.generator, settings.diversity_samples, settings.diversity_seed, device)
        diversity, pixel_std = distance / real_spread[0], std / real_spread[1]
    record = checkpoint.provenance
    return {"checkpoint": str(checkpoint.path), "epoch": record.get("epoch"), "step": record.get("step"),
            "images_seen": record.get("images_seen"), "validation_accuracy_pct": accuracy[chosen], "C": chosen,
            "sample_diversity": diversity, "sample_pixel_std": pixel_std,
            "validation_by_C": json.dumps({f"{C:g}": round(a, 4) for C, a in accuracy.items()}),
            "checkpoint_sha256": checkpoint.sha256, "training_seconds": record.get("wall_seconds"),
            "scoring_seconds": round(time.perf_counter() - started, 1),
            "features_seconds": round(features_done - started, 1), "svm_seconds": round(svm_done - features_done, 1)}


# ------------------------------------------------------------------------------------------ the run
def run_checkpoints(run_dir: str | os.PathLike, pattern: str = DEFAULT_PATTERN,
                    also: Sequence[str | os.PathLike] = (), epochs: Sequence[int] | None = None) -> list[Path]:
    """The checkpoints of a run folder matching ``pattern``, in name order (epoch0001.pt, epoch0002.pt, ...),
    or those of the given ``epochs`` (every one must exist), then the files ``also`` names (say, the
    checkpoint a run continued with ``--init-from``, scored beside its epochs in the same table), each once."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GanFeaturesError(f"run folder {run_dir} does not exist")
    if epochs is not None:
        paths = [run_dir / epoch_checkpoint_name(epoch) for epoch in sorted(set(epochs))]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            kept = sorted(p.name for p in run_dir.glob(DEFAULT_PATTERN) if p.is_file())
            have = ("it has no epoch checkpoint" if not kept else f"it has only {kept[0]}" if len(kept) == 1
                    else f"it has {kept[0]} to {kept[-1]}")
            raise GanFeaturesError(f"--epochs: {run_dir} has no {', '.join(missing)} ({have}): "
                                   "choose epochs the run has finished")
    else:
        paths = sorted(p for p in run_dir.glob(pattern) if p.is_file())
        if not paths:
            raise GanFeaturesError(f"no checkpoint in {run_dir} matches {pattern!r}: check the folder or pass --pattern")
    also = [Path(extra) for extra in also]
    for extra in also:
        if not extra.is_file():
            raise GanFeaturesError(f"--also {extra}: no such checkpoint file")
    return unique_files(paths + also)


def unique_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """``paths`` with each file once (a second name of it, or a link to it, dropped), in order, under its first name."""
    unique: dict[Path, Path] = {}
    for path in map(Path, paths):
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def check_training_split(split: str | None) -> None:
    if split not in TRAINING_SPLITS:
        raise GanFeaturesError(f"checkpoint selection scores on a training split ({' or '.join(TRAINING_SPLITS)}), "
                               f"not {split!r}: pass --split train")


def settings_record(settings: SelectionSettings, dataset, fit_rows: np.ndarray, validation_rows: np.ndarray
                    ) -> dict[str, Any]:
    """The settings plus what identifies the rows; its fingerprint is the cache key."""
    data = describe_dataset(dataset)
    return {**settings.to_dict(), "data": data, "fit_rows_sha256": rows_sha256(fit_rows),
            "validation_rows_sha256": rows_sha256(validation_rows),
            "svm": f"LinearL2SVM (torch TRON, tol {settings.svm_tol:g}), fit_c_path", "selection_criterion":
            "best validation accuracy over the C grid; ties to the higher sample_diversity, then the later step"}


def fingerprint(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _cached_rows(csv_path: Path, settings_sha256: str, overwrite: bool) -> dict[tuple[str, str], dict]:
    """Rows of an earlier table made with the same settings, keyed by (checkpoint path, file sha256)."""
    if overwrite or not csv_path.exists():
        return {}
    try:
        old = pd.read_csv(csv_path, dtype={"checkpoint_sha256": str, "settings_sha256": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise GanFeaturesError(f"{csv_path} is not a readable selection table ({type(error).__name__}): pass "
                               f"--overwrite to rescore, or choose another --out") from None
    if not {"checkpoint", "checkpoint_sha256", "settings_sha256"} <= set(old.columns):
        raise GanFeaturesError(f"{csv_path} is not a selection table: choose another --out, or --overwrite")
    if (old["settings_sha256"] != settings_sha256).any():
        raise GanFeaturesError(f"{csv_path} holds scores made with other settings: pass --overwrite to rescore "
                               f"with these, or choose another --out")
    rows = old.drop(columns=["is_best"], errors="ignore").to_dict("records")
    return {(str(row["checkpoint"]), str(row["checkpoint_sha256"])): row for row in rows}


def choose_best(table: pd.DataFrame, min_diversity: float | None = None, required: bool = True) -> int | None:
    """Index of the best row: highest validation accuracy; ties to higher sample diversity, then the later step.

    ``min_diversity``: rows whose ``sample_diversity`` is below it (collapsed generators) are not eligible.
    None when no row is eligible and not ``required`` (a selection still in progress).
    """
    eligible = table
    if min_diversity is not None:
        eligible = table[table["sample_diversity"].fillna(np.inf) >= min_diversity]
        if eligible.empty and not required:
            return None
        if eligible.empty:
            raise GanFeaturesError(f"no checkpoint has sample diversity >= {min_diversity} (highest "
                                   f"{table['sample_diversity'].max():.3g}): lower --min-diversity")
    order = eligible.assign(_div=eligible["sample_diversity"].fillna(-np.inf), _step=eligible["step"].fillna(-1))
    order = order.sort_values(["validation_accuracy_pct", "_div", "_step"], ascending=False, kind="stable")
    return int(order.index[0])


def _write_outputs(rows: list[dict], out_dir: Path, record: dict[str, Any], min_diversity: float | None,
                   final: bool = True) -> tuple[pd.DataFrame, pd.Series | None, list[Path]]:
    table = pd.DataFrame(rows)
    # Mid-selection no checkpoint may be eligible yet (early epochs are often collapsed): not an error.
    best = choose_best(table, min_diversity, required=final)
    table["is_best"] = table.index == best
    table = table[[c for c in COLUMNS if c in table.columns] + [c for c in table.columns if c not in COLUMNS]]
    chosen = None if best is None else table.loc[best]
    title = ("Checkpoint selection (in progress): no checkpoint eligible yet" if chosen is None else
             f"Checkpoint selection: best {Path(chosen['checkpoint']).name} "
             f"({chosen['validation_accuracy_pct']:.2f}% validation accuracy, C={chosen['C']:g})")
    data = record["data"]
    note = (f"Linear L2-SVM probe on {data.get('dataset', 'the dataset')} {data.get('split', '')}: "
            f"{record['fit_size']} fit rows, {record['validation_size']} disjoint validation rows (stratified, seed "
            f"{record['subset_seed']}); no test split is read. Features: FeatureSpec {record['spec']}, "
            f"{record['precision']}, batch-norm statistics recomputed over the fit rows. C grid "
            f"{', '.join(f'{C:g}' for C in record['Cs'])}. sample_diversity / sample_pixel_std: mean pairwise "
            f"distance / per-pixel std of {record['diversity_samples']} generated images relative to real ones "
            f"(towards 0 = collapse)." + (f" Eligible as best: sample_diversity >= {min_diversity}."
                                         if min_diversity is not None else ""))
    paths = list(write_table(table, out_dir, TABLE_NAME, title=title, note=note))
    summary = {"settings": record, "settings_sha256": table["settings_sha256"].iloc[0],
               "min_diversity": min_diversity, "best": None if chosen is None else _plain(chosen.to_dict()),
               "provenance": provenance()}
    paths.append(_write_json_atomic(out_dir / SETTINGS_FILE, summary))
    return table, chosen, paths


def _step_key(row: dict) -> float:
    step = row.get("step")
    return math.inf if step is None or pd.isna(step) else float(step)


def _plain(values: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in values.items()}


def _write_json_atomic(path: Path, value: dict) -> Path:
    write_texts({path: json.dumps(value, indent=2, default=str) + "\n"})
    return path


def select_checkpoint(run_dir: str | os.PathLike, out_dir: str | os.PathLike, dataset,
                      settings: SelectionSettings = SelectionSettings(), pattern: str = DEFAULT_PATTERN,
                      checkpoints: Sequence[str | os.PathLike] | None = None, device: str | torch.device = "cpu",
                      batch_size: int = 256, num_workers: int = 0, min_diversity: float | None = None,
                      overwrite: bool = False, progress: bool = True) -> SelectionResult:
    """Score every checkpoint of ``run_dir`` (or the given ``checkpoints``) and write the table into ``out_dir``.

    ``dataset``: the labelled TRAINING split the probe rows are drawn from (an ImageDataset: ``labels``,
    ``image_size``, ``describe()``); a test split is refused. A file named twice (or through a link) is
    scored once, under its first name. The table holds these checkpoints and those
    an earlier call scored with the same settings whose files are unchanged, in step order.
    ``overwrite``: discard an earlier table in ``out_dir`` (made with other settings) instead of refusing.
    """
    check_training_split(getattr(dataset, "split", None))
    paths = unique_files(checkpoints) if checkpoints is not None else run_checkpoints(run_dir, pattern)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise GanFeaturesError(f"--out {out_dir} exists but is not a folder") from None
    fit_rows, validation_rows = fit_validation_rows(dataset.labels, settings.fit_size, settings.validation_size,
                                                    settings.subset_seed)
    record = settings_record(settings, dataset, fit_rows, validation_rows)
    settings_sha256 = fingerprint(record)
    cached = _cached_rows(out_dir / f"{TABLE_NAME}.csv", settings_sha256, overwrite)
    # rows[i] is the row of paths[i]: cached ones now, the others as they are scored
    rows: dict[int, dict] = {}
    for index, path in enumerate(paths):
        if not path.is_file():
            raise GanFeaturesError(f"checkpoint {path} does not exist")
        row = cached.get((str(path), file_sha256(path)))
        if row is not None:
            rows[index] = row
    reused = len(rows)
    todo = [index for index in range(len(paths)) if index not in rows]
    # Rows of checkpoints this call does not name stay in the table while their files are unchanged.
    named = {str(path) for path in paths}
    earlier = [row for (path, sha), row in cached.items()
               if path not in named and Path(path).is_file() and file_sha256(path) == sha]

    def table_rows() -> list[dict]:
        return sorted(earlier + list(rows.values()), key=lambda row: (_step_key(row), str(row["checkpoint"])))

    fit, validation = rows_of(dataset, fit_rows), rows_of(dataset, validation_rows)
    real_spread = None
    for index in tqdm(todo, desc="score checkpoints", unit="ckpt", disable=not progress):
        checkpoint = load_checkpoint(paths[index])
        if real_spread is None:  # the real reference: a fixed stratified draw of the fit rows
            reference = stratified_rows(fit.labels, [min(settings.diversity_samples, len(fit))],
                                        settings.diversity_seed)[0]
            real = rows_of(fit, reference)
            real_spread = _spread(torch.stack([real[i][0] for i in range(len(real))]))
        row = score_checkpoint(checkpoint, fit, validation, real_spread, settings, device, batch_size, num_workers,
                               progress)
        rows[index] = {**row, "checkpoint": str(paths[index]), "settings_sha256": settings_sha256,
                       "scored_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        # Written after every checkpoint: an interrupted selection keeps what it finished.
        _write_outputs(table_rows(), out_dir, record, min_diversity, final=False)
    table, best, written = _write_outputs(table_rows(), out_dir, record, min_diversity)
    return SelectionResult(table, best, written, scored=len(todo), reused=reused)
