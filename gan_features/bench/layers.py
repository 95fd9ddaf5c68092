"""The per-block table (``bench --layers``): for each discriminator, the cheap probes of each conv
block alone and of blocks 1..k, as the Markdown and CSV beside the other tables and a PNG.

Every block set is measured on the columns of the discriminator's own two stores that its blocks
fill (:mod:`gan_features.layers`): nothing is extracted twice, and the batch-norm statistics are the
ones Table 1's features use. The set of all the stores' blocks is Table 1's own measurement (same
stores, protocol and cache key), so with ``resume`` and the cache of a Table 1 run it is reused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..layers import block_sets
from ..output import writing_together
from ..report import render_markdown
from ..store import FeatureStore
from . import config as conf
from .config import LAYERS_PROTOCOL, LAYERS_TABLE, BenchConfig
from .kept import update_note
from .measure import knn_protocols, measure_or_pending, pending_row
from .stores import FeatureCache, NotMeasured, discriminator_features
from .tables import long_table
from .wording import (C_text, knn_note, number, paragraphs, partial_line, pending_text, protocols_text,
                      provenance_text, scale_text, scale_title, seconds_text, svm_seconds_text)

TABLE_ROW = "1"  # the measurement's key: Table 1's, so the every-block rows are shared with it


def layer_rows(config: BenchConfig, discriminators: list[tuple[str, str, str]], train, test,
               context: dict[str, Any], cache: FeatureCache, device) -> list[dict[str, Any]]:
    """Long-format rows: for each (label, kind, checkpoint) and each of its block sets, the
    :data:`LAYERS_PROTOCOL` row and the k-NN rows (when ``config.knn``)."""
    names = (LAYERS_PROTOCOL, *(knn_protocols() if config.knn else ()))
    rows = []
    for label, kind, path in discriminators:
        try:
            features = discriminator_features(label, kind, path, train, test, cache, device, config.batch_size)
        except NotMeasured as missing:
            rows += [pending_row("layers", missing.label, missing.kind, name, context, "no features yet")
                     for name in names]
            continue
        features = features.holding()  # each store read once, when a set is first measured, for all of them
        with FeatureStore(features.train_store) as store:
            sets = block_sets(store)
        for blocks in sets:
            part = features.for_blocks(blocks)
            for row in measure_or_pending(TABLE_ROW, lambda: part, (LAYERS_PROTOCOL,), config, context, cache,
                                          knn_device=device if config.knn else None):
                rows.append({**row, "table": "layers", "blocks": blocks.name,
                             "layers": ",".join(map(str, blocks.layers)), "alone": blocks.alone,
                             "cumulative": blocks.cumulative})
    return rows


def _ordered(rows: list[dict[str, Any]]) -> dict[str, list[list[dict[str, Any]]]]:
    """By model, the rows of each block set in table order: each block alone, then blocks 1..k (k >= 2)."""
    by_model: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], {}).setdefault(row.get("blocks", "?"), []).append(row)
    ordered = {}
    for model, sets in by_model.items():
        alone = [cells for cells in sets.values() if cells[0].get("alone") is not False]
        cumulative = [cells for cells in sets.values() if cells[0].get("alone") is False]
        ordered[model] = alone + cumulative
    return ordered


def wide_layers(cells_by_set: list[list[dict[str, Any]]]) -> pd.DataFrame:
    """One model's readable table: a line per block set."""
    knn_column = f"k-NN accuracy (%), k={' / '.join(map(str, conf.KNN_KS))}"
    lines = []
    for cells in cells_by_set:
        by_protocol = {row["protocol"]: row for row in cells}
        svm = by_protocol.get(LAYERS_PROTOCOL, {})
        knn = [by_protocol[name] for name in knn_protocols() if name in by_protocol]
        first = cells[0]
        line = {"blocks": first.get("blocks", "?"),
                "series": "blocks 1..k" if first.get("alone") is False else "alone",
                "feature dimension": "" if first.get("feature_dimension") is None else str(first["feature_dimension"]),
                "accuracy, 400 per class (%)": pending_text(svm) or (f"{number(svm.get('test_mean'))} ± "
                                                                 f"{number(svm.get('test_std'))}" if svm else ""),
                "C": C_text(svm) if svm and not pending_text(svm) else ""}
        if knn:
            line[knn_column] = pending_text(knn[0]) or " / ".join(number(row.get("test_mean")) for row in knn)
        line["wall time (s): SVM / k-NN"] = " / ".join(
            ([svm_seconds_text(svm)] if svm and not pending_text(svm) else [])
            + ([seconds_text(knn[0].get("knn_wall_time_s"))] if knn and not pending_text(knn[0]) else []))
        lines.append(line)
    return pd.DataFrame(lines)


def layers_note(config: BenchConfig, rows: list[dict[str, Any]], context: dict[str, Any], record: dict[str, Any],
                seconds: float) -> str:
    return paragraphs(
        partial_line(rows, config),
        "Blocks are numbered from the input (the paper's ImageNet discriminator has six; `--layers` and "
        "`@layers=` take 0-based indices). Each block's features are its activations max-pooled to 4x4 "
        "(C x 16 values); a set of blocks is those columns of the same feature stores as Table 1's, with the "
        "same batch-norm statistics (recomputed over the training images), so the set of all of a "
        "discriminator's blocks is its Table 1 measurement. 'alone': that block only; 'blocks 1..k': the first k "
        "blocks concatenated.",
        scale_text(context, per_class=True), protocols_text((LAYERS_PROTOCOL,), config), knn_note(config),
        update_note(rows), provenance_text(LAYERS_TABLE, record, seconds, config, rows))


def plot_layers(rows: list[dict[str, Any]], path: Path, title: str, figure_classes: tuple[type, type]) -> None:
    """Accuracy against the block, one colour per discriminator: solid, blocks 1..k; dashed, the block alone.
    Left the SVM (mean ± std over the test draws), right the k-NN's smallest k; the legend below both."""
    from matplotlib.lines import Line2D  # figure_classes has checked that matplotlib is there

    Figure, FigureCanvasAgg = figure_classes
    knn = knn_protocols()[0]
    panels = [(LAYERS_PROTOCOL, "linear L2-SVM, 400 labels per class")]
    if any(row["protocol"] == knn for row in rows):
        panels.append((knn, f"k-NN, k={conf.KNN_KS[0]}"))
    models = _ordered(rows)
    figure = Figure(figsize=(6 * len(panels), 4.2 + 0.25 * len(models)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    colours = [f"C{i}" for i in range(10)]
    for axes, (protocol, panel_title) in zip(axes_list, panels):
        for index, sets in enumerate(models.values()):
            for series, style in (("cumulative", "-"), ("alone", "--")):
                points = []
                for cells in sets:
                    row = next((r for r in cells if r["protocol"] == protocol and r["source"] == "measured"), None)
                    if row is not None and row.get(series):
                        points.append((int(str(row["layers"]).split(",")[-1]) + 1, row["test_mean"],
                                       row.get("test_std") or 0.0))
                if points:
                    x, y, spread = zip(*sorted(points))
                    axes.errorbar(x, y, yerr=spread if protocol == LAYERS_PROTOCOL else None, fmt=style + "o",
                                  color=colours[index % len(colours)], markersize=4, linewidth=1.2, capsize=2)
        axes.set_xlabel("conv block k (from the input)")
        axes.set_ylabel("test accuracy (%)")
        axes.set_title(panel_title, fontsize="medium")
        axes.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[index % len(colours)], marker="o", markersize=4, label=model)
               for index, model in enumerate(models)]
    handles += [Line2D([], [], color="black", linestyle="-", label="solid: blocks 1..k"),
                Line2D([], [], color="black", linestyle="--", label="dashed: block k alone")]
    figure.legend(handles=handles, loc="outside lower center", ncols=1, fontsize="small", frameon=False)
    figure.suptitle(title, fontsize="medium")
    figure.savefig(path, format="png")


def write_layers_table(results_dir: Path, config: BenchConfig, rows: list[dict[str, Any]], context: dict[str, Any],
                       record: dict[str, Any], seconds: float, figure_classes: tuple[type, type]) -> dict[str, Path]:
    """``layers_cifar10.md``, ``.csv`` and ``.png`` into ``results_dir``, all three or none."""
    title = f"Per-block probes: CIFAR-10, each discriminator's conv blocks alone and 1..k ({scale_title(config)})"
    sections = [f"# {title}", layers_note(config, rows, context, record, seconds)]
    for model, sets in _ordered(rows).items():
        sections.append(f"## {model}\n\n" + render_markdown(wide_layers(sets), None, None).rstrip())
    paths = [results_dir / f"{LAYERS_TABLE}.{suffix}" for suffix in ("md", "csv", "png")]
    with writing_together(paths) as (md, csv, png):
        md.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
        csv.write_text(long_table(rows).to_csv(index=False, lineterminator="\n"), encoding="utf-8")
        plot_layers(rows, png, title, figure_classes)
    return {path.name: path for path in paths}
