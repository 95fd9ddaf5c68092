"""Measuring one representation: its SVM rows under each protocol and its k-NN rows, each kept
in the cache (``rows/<key>.json``) so that ``resume`` reuses it, keyed by every input that shapes
its numbers (the stores' fingerprints, the protocol, every SVM setting in force).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..knn import TEMPERATURE as KNN_TEMPERATURE
from ..knn import knn_probe
from ..output import write_json
from ..protocols import Protocol, svm_description
from ..svm import count_saved_fits
from . import config as conf
from .config import KNN_PRECISION, NOT_MEASURED, BenchConfig, make_protocol, protocol_overrides
from .stores import FeatureCache, Features, NotMeasured, canonical, read_json, say


def _grid_edge(C: float, Cs: Sequence[float]) -> str:
    """'low'/'high' when the chosen C is the grid's end: the best C may lie outside the grid."""
    return "low" if C == min(Cs) else "high" if C == max(Cs) else ""


def measured_row(table: str, features: Features, result: dict[str, Any], protocol: Protocol,
                 context: dict[str, Any]) -> dict[str, Any]:
    """One long-format row: the score, the representation's provenance, then the protocol's.

    ``result``: :meth:`ProtocolResult.to_row` (flat, so a row measured earlier can be reused).
    """
    row: dict[str, Any] = {
        "table": table, "model": features.label, "kind": features.kind, "source": "measured",
        "protocol": result["protocol"], "metric": result["metric"], "test_mean": result["test_mean"],
        "test_std": result["test_std"], "test_ci95": result["test_ci95"], "quoted": None, "C": result["C"],
        "C_at_grid_edge": _grid_edge(result["C"], protocol.Cs), "feature_dimension": features.dimension,
        "max_feature_units": features.feature_units,
        "protocol_overrides": json.dumps(protocol_overrides(protocol), sort_keys=True),
        "train_store": str(features.train_store), "test_store": str(features.test_store),
        "svm_wall_time_s": svm_seconds(result), **context, **features.info}
    for key, value in result.items():
        if key != "wall_time_s":  # kept as svm_wall_time_s, apart from the extraction times
            row.setdefault(key, value)
    return row


def pending_row(table: str, label: str, kind: str, protocol: str, context: dict[str, Any], progress: str,
                features: Features | None = None) -> dict[str, Any]:
    """The long-format row of a measurement not made yet (``saved_only``): what it is, how far it got."""
    row: dict[str, Any] = {"table": table, "model": label, "kind": kind, "source": NOT_MEASURED,
                           "protocol": protocol, "metric": "error" if table == "2" else "accuracy",
                           "progress": progress, **context}
    if features is not None:
        row.update(feature_dimension=features.dimension, max_feature_units=features.feature_units,
                   train_store=str(features.train_store), test_store=str(features.test_store), **features.info)
    return row


def measure_or_pending(table: str, make: Callable[[], Features], protocols: Sequence[str], config: BenchConfig,
                        context: dict[str, Any], cache: FeatureCache, knn_device: torch.device | None = None
                        ) -> list[dict[str, Any]]:
    """The rows of the representation ``make`` returns, then its k-NN rows when ``knn_device`` is given;
    "not measured yet" ones when it has no stores."""
    try:
        features = make()
    except NotMeasured as missing:
        names = [*protocols, *(knn_protocols() if knn_device is not None else ())]
        return [pending_row(table, missing.label, missing.kind, name, context, "no features yet") for name in names]
    rows = _measure(table, features, protocols, config, context, cache)
    if knn_device is not None:
        rows += _measure_knn(table, features, config, context, cache, knn_device)
    return rows


def svm_seconds(result: dict[str, Any]) -> float:
    """The row's SVM time: the last run's wall time plus the solve time of the fits it resumed."""
    return result["wall_time_s"] + (result.get("resumed_fit_seconds") or 0.0)


def _resumed_note(result: dict[str, Any]) -> str:
    """``svm_cached`` for a row finished by this run after an earlier, stopped run made some fits."""
    fits, seconds = result.get("resumed_fits", 0), result.get("resumed_fit_seconds")
    if not fits:
        return "no"
    if seconds is None:
        return (f"partly: {fits} of the C path's fits by an earlier run, which did not record their time "
                "(svm_wall_time_s covers the last run only)")
    return f"partly: {fits} of the C path's fits by an earlier run (their {seconds:.0f} s solve time included)"


def _store_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies a store's contents without reading 6 GB: a store is only ever rewritten whole."""
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _row_key(table: str, features: Features, context: dict[str, Any], **settings: Any) -> str:
    """The measured row's identity: every input that shapes its numbers (``settings``: the evaluation's)."""
    inputs = {"table": table, "label": features.label, "kind": features.kind, **settings, "context": context,
              "train": _store_fingerprint(features.train_store), "test": _store_fingerprint(features.test_store)}
    if features.blocks is not None:  # some blocks' columns only (the whole stores keep their key)
        inputs["layers"] = list(features.blocks.layers)
    return hashlib.sha256(json.dumps(canonical(inputs), sort_keys=True).encode()).hexdigest()[:32]


def _measure(table: str, features: Features, protocols: Sequence[str], config: BenchConfig,
             context: dict[str, Any], cache: FeatureCache) -> list[dict[str, Any]]:
    rows = []
    for name in protocols:
        protocol = make_protocol(name, config)
        # Every SVM setting in force, defaults included: a changed default is a different row.
        key = _row_key(table, features, context, protocol=protocol.name, params=protocol.params,
                       svm_params=svm_description(config.svm_params))
        saved = cache.directory / "rows" / f"{key}.json"
        fits = saved.with_suffix(".fits")  # the row's fitted Cs while it is being measured
        result = read_json(saved) if config.resume else None
        if result is None and config.saved_only:
            saved_fits = count_saved_fits(fits)
            rows.append(pending_row(table, features.label, features.kind, name, context,
                                    f"{saved_fits} fits of its C path saved" if saved_fits else "not started",
                                    features))
            continue
        if result is not None:
            say(config.progress, f"{features.title}: {name}: reusing the row measured {result.get('created')} "
                                  f"({saved.name})")
            # a reused row still says whether an earlier run made part of its C path
            cached = "; ".join(part for part in (f"reused: measured {result.get('created') or '(time unknown)'}",
                                                 _resumed_note(result)) if part != "no")
        else:
            if not config.resume:
                shutil.rmtree(fits, ignore_errors=True)
            reused = count_saved_fits(fits)
            say(config.progress, f"{features.title}: {name}" + (f" (reusing {reused} saved fits)" if reused else ""))
            with features.opened() as (train, test):
                result = protocol.run(train, test, svm_params=config.svm_params or None, progress=config.progress,
                                      checkpoint_dir=fits).to_row()
            saved.parent.mkdir(exist_ok=True)
            write_json(saved, result)
            shutil.rmtree(fits, ignore_errors=True)
            cached = _resumed_note(result)
        rows.append({**measured_row(table, features, result, protocol, context), "svm_cached": cached})
    return rows


def knn_protocols() -> tuple[str, ...]:
    """The long table's "protocol" of each k-NN row, one per k."""
    return tuple(_knn_protocol(k) for k in conf.KNN_KS)


def _knn_protocol(k: int) -> str:
    return f"knn-k{k}"


def _measure_knn(table: str, features: Features, config: BenchConfig, context: dict[str, Any], cache: FeatureCache,
                 device: torch.device) -> list[dict[str, Any]]:
    """The k-NN rows of one representation (one probe, a row per k), kept and reused as the SVM rows are."""
    settings = {"ks": list(conf.KNN_KS), "temperature": KNN_TEMPERATURE, "precision": KNN_PRECISION}
    saved = cache.directory / "rows" / f"{_row_key(table, features, context, knn=settings)}.json"
    kept = read_json(saved) if config.resume else None
    if kept is None and config.saved_only:
        return [pending_row(table, features.label, features.kind, name, context, "not started", features)
                for name in knn_protocols()]
    if kept is not None:
        created = kept["rows"][0].get("created") or "(time unknown)"
        say(config.progress, f"{features.title}: k-NN: reusing the rows measured {created} ({saved.name})")
        cached = f"reused: measured {created}"
    else:
        say(config.progress, f"{features.title}: k-NN (k = {', '.join(map(str, conf.KNN_KS))})")
        with features.opened() as (train, test):
            result = knn_probe(train, test, ks=conf.KNN_KS, temperature=KNN_TEMPERATURE, device=device,
                               precision=KNN_PRECISION, progress=config.progress)
        kept = {"rows": result.to_rows()}
        saved.parent.mkdir(exist_ok=True)
        write_json(saved, kept)
        cached = "no"
    return [knn_row(table, features, result, context, cached) for result in kept["rows"]]


def knn_row(table: str, features: Features, result: dict[str, Any], context: dict[str, Any],
            cached: str) -> dict[str, Any]:
    """One long-format k-NN row from one of :meth:`KnnResult.to_rows` (a k): the score, then provenance."""
    row: dict[str, Any] = {
        "table": table, "model": features.label, "kind": features.kind, "source": "measured",
        "protocol": _knn_protocol(result["k"]), "metric": result["metric"], "test_mean": result["accuracy"],
        "quoted": None, "feature_dimension": features.dimension, "max_feature_units": features.feature_units,
        "train_store": str(features.train_store), "test_store": str(features.test_store), "knn_k": result["k"],
        "knn_temperature": result["temperature"], "knn_wall_time_s": result["wall_time_s"], "knn_cached": cached,
        "knn_precision": result["precision"], "knn_device": result["device"], **context, **features.info}
    for key, value in result.items():
        if key not in ("k", "accuracy", "temperature", "wall_time_s", "precision", "device", "probe", "n_train",
                       "n_test"):  # kept under knn_ names above, or as train_rows / test_rows
            row.setdefault(key, value)
    return row
