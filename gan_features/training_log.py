"""A run's ``log.jsonl`` (one JSON record per logged step) as a table, and its loss curves as a PNG.

Training appends to the log, so a resumed run repeats the steps between its last checkpoint and
the interruption; :func:`read_training_log` keeps the history that led to the final weights (a
record whose step is not past the previous one starts over from that step).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .errors import GanFeaturesError
from .output import figure_classes, writing

CURVES = {"loss_d": "D loss", "loss_g": "G loss (non-saturating)"}
PROBABILITIES = {"d_real": "D(real)", "d_fake": "D(G(z))"}


def read_training_log(path: str | os.PathLike, upto_step: int | None = None) -> pd.DataFrame:
    """The records of ``log.jsonl`` along the history of the final weights, up to ``upto_step``.

    A last line without its newline (the run is writing it) is skipped; any other line that is not
    a JSON record with a step is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise GanFeaturesError(f"training log {path} does not exist: pass the run folder that holds log.jsonl")
    lines = path.read_text().split("\n")
    records: list[dict] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number == len(lines):  # no newline yet: a record still being written
                continue
            raise GanFeaturesError(f"{path}:{number} is not a training log record: check the file") from None
        while records and records[-1]["step"] >= step:  # a resume: its records replace the abandoned ones
            records.pop()
        records.append({**record, "step": step})
    table = pd.DataFrame(records)
    if upto_step is not None and not table.empty:
        table = table[table["step"] <= upto_step]
    if table.empty:
        raise GanFeaturesError(f"{path} has no records" + (f" up to step {upto_step} (the checkpoint's): export a "
                                                           f"later checkpoint" if upto_step is not None else ""))
    return table.reset_index(drop=True)


def plot_training_curves(log: pd.DataFrame, path: str | os.PathLike, mark_step: int | None = None,
                         title: str | None = None) -> Path:
    """D and G losses (top) and D's mean output on real and generated batches (bottom) against the step.

    ``mark_step``: a dashed line at the exported checkpoint. Written to ``<path>.partial``, then renamed.
    """
    Figure, FigureCanvasAgg = figure_classes()
    missing = [key for key in (*CURVES, *PROBABILITIES) if key not in log.columns]
    if missing:
        raise GanFeaturesError(f"the training log has no {', '.join(missing)} column: it was not written by "
                               f"gan_features.train")
    figure = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    losses, probabilities = figure.subplots(2, 1, sharex=True)
    for key, label in CURVES.items():
        losses.plot(log["step"], log[key], label=label, linewidth=1)
    losses.set_ylabel("loss")
    for key, label in PROBABILITIES.items():
        probabilities.plot(log["step"], log[key], label=label, linewidth=1)
    probabilities.set_ylabel("mean sigmoid output")
    probabilities.set_ylim(-0.02, 1.02)
    probabilities.set_xlabel("optimiser step")
    for axes in (losses, probabilities):
        if mark_step is not None:
            axes.axvline(mark_step, color="gray", linestyle="--", linewidth=1, label=f"checkpoint (step {mark_step})")
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    if title:
        figure.suptitle(title)
    path = Path(path)
    with writing(path) as partial:
        figure.savefig(partial, format="png")
    return path
