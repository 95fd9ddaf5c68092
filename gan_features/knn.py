"""The weighted k-nearest-neighbour probe most self-supervised papers quote, beside the L2-SVM.

As ``eval_knn.py`` of facebookresearch/dino (Caron et al. 2021) does it:

1. every feature row is L2-normalised, so a dot product is a cosine similarity;
2. each test row's cosine similarity to every training row is computed, and the ``max(ks)`` most
   similar training rows are found in one search (the first ``k`` of them are the k nearest);
3. those neighbours vote for their labels with weight ``exp(similarity / temperature)``
   (temperature 0.07), and the class with the largest summed weight is the prediction;
4. accuracy (%) is reported for each k (20 and 200 by default).

Nothing is chosen: k and the temperature are fixed in advance, so the test store is read only to be
scored. Conventions where DINO leaves things open:

* a row of zeros has no direction: its cosine similarity to every row is taken as 0 (it is left as
  zeros instead of being divided by a zero norm), so a zero training row ranks below every row with a
  positive similarity, and a zero test row sees all training rows as equally similar;
* ties in the vote (equal summed weights) go to the lowest class index (the smallest label);
* ties in similarity at the k-th place are broken by ``torch.topk`` (unspecified order);
* non-finite features (NaN, inf) are refused: they cannot be ranked.

Speed: features extracted in bfloat16 are bfloat16 numbers, so their dot products are exact as
bfloat16 GEMMs with float32 accumulation (2.4x float32's speed on one AVX512-BF16 core), but their
normalised copies are not. Where every training and test value is a bfloat16 number and the CPU
multiplies bfloat16 natively, the training rows are held as they are with their inverse norms, and
each similarity is the raw product scaled by both inverse norms afterwards: the same cosine up to
float32 rounding. Other features are normalised first and multiplied in float32.

Memory: the training matrix is held once, as float32 (or bfloat16 with ``precision="bf16"``,
normalised, half the memory; its similarities are then computed in float32 from the rounded
features, a bounded chunk of training rows at a time). :func:`knn_probe` reads a training
store straight into that matrix block by block and streams the test store in blocks of
``batch_size`` rows; the largest scratch array is one similarity block, ``batch_size x n_train``
float32. :func:`knn_predict` on in-memory arrays leaves the caller's array as it is, so it holds the
caller's matrix and the normalised one.
"""
from __future__ import annotations

import json
import math
import operator
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .device import pick_device
from .errors import GanFeaturesError
from .provenance import provenance
from .store import StoreLike, check_store_pair, opened_store, store_pair_provenance
from .svm.gram import bfloat16_gemms, exact_in_bfloat16

KS: tuple[int, ...] = (20, 200)  # DINO's
TEMPERATURE = 0.07  # DINO's
BATCH_SIZE = 256  # test rows per similarity block
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # how the normalised training matrix is held
READ_BLOCK_BYTES = 64 << 20  # training-store rows read (and bf16 rows upcast) per block


# --------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class KnnResult:
    """One k-NN probe: test accuracy (%) per k, what it ran on, how long it took, provenance."""

    accuracy: dict[int, float]  # k -> test accuracy, percent
    n_train: int
    n_test: int
    temperature: float
    wall_time_s: float
    provenance: dict  # the stores (as ProtocolResult records them) and report.provenance()
    precision: str = "fp32"  # of the held training matrix
    device: str = "cpu"

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat row per k (structured values as JSON text, so CSV round-trips): the results table."""
        settings = {"probe": "knn", "metric": "accuracy", "temperature": self.temperature,
                    "precision": self.precision, "device": self.device, "n_train": self.n_train,
                    "n_test": self.n_test, "wall_time_s": self.wall_time_s}
        extra = {key: json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value
                 for key, value in self.provenance.items()}
        return [{"k": k, "accuracy": accuracy, **settings, **extra} for k, accuracy in self.accuracy.items()]

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"k-NN probe: cosine similarity, votes weighted by exp(similarity / {self.temperature:g}); "
                 f"{self.n_train:,} training rows, {self.n_test:,} test rows ({self.precision} on {self.device}, "
                 f"{self.wall_time_s:.1f} s)"]
        lines += [f"k={k}: test accuracy {accuracy:.2f} %" for k, accuracy in self.accuracy.items()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- settings
def check_settings(ks: int | Iterable[int], temperature: float, n_train: int | None = None
                   ) -> tuple[tuple[int, ...], float]:
    """``ks`` as distinct increasing whole numbers >= 1 (and <= ``n_train``), and a positive finite temperature."""
    given = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    try:
        ks = tuple(sorted({_whole(k) for k in given}))
    except TypeError:
        raise GanFeaturesError(f"k must be whole numbers, got {given!r}") from None
    if not ks or ks[0] < 1:
        raise GanFeaturesError(f"k must be whole numbers of at least 1, got {given}")
    if n_train is not None and ks[-1] > n_train:
        raise GanFeaturesError(f"k={ks[-1]} is more than the {n_train} training rows: use a k of at most {n_train}")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise GanFeaturesError(f"temperature must be a number, got {temperature!r}") from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise GanFeaturesError(f"temperature must be a positive number, got {temperature}")
    return ks, temperature


def _whole(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("True/False are not a k")
    return operator.index(value)


def _dtype(precision: str) -> torch.dtype:
    try:
        return DTYPES[precision]
    except KeyError:
        raise GanFeaturesError(f"unknown precision {precision!r}: use one of {', '.join(DTYPES)}") from None


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(device)


def _batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise GanFeaturesError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    return int(batch_size)


# ---------------------------------------------------------------------------------------- the search
def _checked(block: np.ndarray | torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    """``block`` as float32 rows on ``device``, refused if not 2-d or not finite."""
    block = torch.as_tensor(block).to(device=device, dtype=torch.float32)
    if block.ndim != 2:
        raise GanFeaturesError(f"{what}: expected a 2-d (rows, features) matrix, got shape {tuple(block.shape)}")
    if not torch.isfinite(block).all():
        raise GanFeaturesError(f"{what} hold non-finite features (NaN or inf): the k-NN cannot rank them")
    return block


def _norms(rows: torch.Tensor) -> torch.Tensor:
    """Each row's L2 norm, and 1 for a zero row (left as zeros: its cosine similarity to every row is 0)."""
    norms = torch.linalg.vector_norm(rows, dim=1)
    return torch.where(norms > 0, norms, torch.ones_like(norms))


class _Neighbours:
    """The training matrix, held once, and the weighted vote of each test row's neighbours. Rows are
    held raw with their norms where every value is a bfloat16 number (``norms`` is then set; see the
    module docstring), else normalised (``norms`` is None). Divisions, not products with 1 / norm:
    float64's cosines rank near-ties the same way."""

    def __init__(self, labels: np.ndarray, dimension: int, blocks: Iterable[tuple[int, Any]], dtype: torch.dtype,
                 device: torch.device, what: str):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise GanFeaturesError(f"{what}: labels must be 1-d, got shape {labels.shape}")
        self.classes, codes = np.unique(labels, return_inverse=True)  # class index = rank of the label
        self.codes = torch.as_tensor(codes.reshape(-1), device=device)
        self.device = device
        self.features = torch.empty((len(labels), dimension), dtype=dtype, device=device)
        norms = torch.empty(len(labels), dtype=torch.float32, device=device)
        raw = dtype == torch.float32  # until a block holds a value that is not a bfloat16 number
        filled = 0
        for start, block in blocks:
            rows = _checked(block, device, f"{what} rows {start}..{start + len(block) - 1}")
            if rows.shape[1] != dimension:
                raise GanFeaturesError(f"{what}: rows of dimension {rows.shape[1]}, expected {dimension}")
            if start + len(rows) > len(labels):
                raise GanFeaturesError(f"{what}: more feature rows than the {len(labels)} labels")
            norms[start:start + len(rows)] = block_norms = _norms(rows)
            raw = raw and exact_in_bfloat16(rows)
            held = rows if dtype == torch.float32 else rows / block_norms[:, None]  # bfloat16 held: normalised
            self.features[start:start + len(rows)] = held  # cast to the held dtype
            filled += len(rows)
        if filled != len(labels):
            raise GanFeaturesError(f"{what}: {filled} feature rows but {len(labels)} labels")
        self.norms: torch.Tensor | None = norms if raw else None
        if not raw and dtype == torch.float32:  # a block was not bfloat16 numbers: every row normalised
            self.features.div_(norms[:, None])
        rows_per_chunk = READ_BLOCK_BYTES // (4 * max(dimension, 1))
        self.chunk = len(labels) if dtype == torch.float32 else max(1, rows_per_chunk)

    def similarities(self, queries: torch.Tensor) -> torch.Tensor:
        """Cosine similarities (float32), queries (float32, not normalised) x training rows."""
        norms = _norms(queries)
        if self.norms is not None:
            with bfloat16_gemms(exact_in_bfloat16(queries)):  # both sides exact in bfloat16: nothing is rounded
                out = queries @ self.features.T
            return out.div_(norms[:, None]).div_(self.norms)
        queries = queries / norms[:, None]
        if self.features.dtype == torch.float32:
            return queries @ self.features.T
        out = torch.empty((len(queries), len(self.features)), dtype=torch.float32, device=self.device)
        for start in range(0, len(self.features), self.chunk):  # bf16 rows upcast a chunk at a time
            out[:, start:start + self.chunk] = queries @ self.features[start:start + self.chunk].float().T
        return out

    def predict(self, block: Any, ks: Sequence[int], temperature: float, what: str) -> dict[int, np.ndarray]:
        """The predicted label of each row of ``block`` for each k, from one top-max(ks) search."""
        queries = _checked(block, self.device, what)
        if queries.shape[1] != self.features.shape[1]:
            raise GanFeaturesError(f"{what}: {queries.shape[1]}-d features but the training rows are "
                                   f"{self.features.shape[1]}-d")
        similar, nearest = self.similarities(queries).topk(max(ks), dim=1)  # most similar first
        weights, votes_for = (similar / temperature).exp_(), self.codes[nearest]
        predictions = {}
        for k in ks:
            votes = torch.zeros((len(queries), len(self.classes)), dtype=torch.float32, device=self.device)
            votes.scatter_add_(1, votes_for[:, :k], weights[:, :k])
            predictions[k] = self.classes[votes.argmax(dim=1).cpu().numpy()]  # ties: the first, lowest class
        return predictions


def _array_blocks(features: Any, rows: int) -> Iterator[tuple[int, Any]]:
    for start in range(0, len(features), rows):
        yield start, features[start:start + rows]


def _bar(total: int, what: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=what, unit="row", unit_scale=True, disable=not progress, leave=False)


# ------------------------------------------------------------------------------------------------ API
def knn_predict(train_features: np.ndarray | torch.Tensor, train_labels: np.ndarray | Sequence[int],
                test_features: np.ndarray | torch.Tensor, ks: Iterable[int] = KS, temperature: float = TEMPERATURE,
                device: str | torch.device = "cpu", batch_size: int = BATCH_SIZE, precision: str = "fp32",
                progress: bool = False) -> dict[int, np.ndarray]:
    """The weighted k-NN prediction of every test row, for each k: {k: labels (n_test,)}.

    In-memory arrays or tensors, (rows, features); labels are any integers (predictions are labels
    of the training set). See the module docstring for the rule and its conventions.
    """
    ks, temperature = check_settings(ks, temperature, len(train_labels))
    batch_size, device = _batch_size(batch_size), _device(device)
    if len(train_features) != len(train_labels):
        raise GanFeaturesError(f"{len(train_features)} training rows but {len(train_labels)} labels")
    dimension = train_features.shape[1] if train_features.ndim == 2 else -1
    neighbours = _Neighbours(np.asarray(train_labels), dimension, _array_blocks(train_features, batch_size),
                             _dtype(precision), device, "training features")
    parts: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    with _bar(len(test_features), "k-NN", progress) as bar:
        for start, block in _array_blocks(test_features, batch_size):
            for k, predicted in neighbours.predict(block, ks, temperature, f"test rows from {start}").items():
                parts[k].append(predicted)
            bar.update(len(block))
    empty = neighbours.classes[:0]
    return {k: np.concatenate(part) if part else empty for k, part in parts.items()}


def knn_probe(train_store: StoreLike, test_store: StoreLike, ks: Iterable[int] = KS,
              temperature: float = TEMPERATURE, device: str | torch.device = "cpu", batch_size: int = BATCH_SIZE,
              precision: str = "fp32", progress: bool = True, train_split: str = "train",
              test_split: str = "test") -> KnnResult:
    """Test accuracy of the weighted k-NN for each k, on a training and a test feature store (paths or
    open :class:`FeatureStore`s, which stay open).

    The pair is checked as the SVM protocols check it (:func:`gan_features.store.check_store_pair`: not
    the same file, same dimension, discriminator, feature spec and dataset, the expected splits, the
    same label set). Then the training store is read once into the normalised matrix and the test
    store is streamed through the search in blocks of ``batch_size`` rows.
    """
    started = time.perf_counter()
    ks, temperature = check_settings(ks, temperature)
    batch_size, device, dtype = _batch_size(batch_size), _device(device), _dtype(precision)
    with opened_store(train_store) as train, opened_store(test_store) as test:
        check_store_pair(train, test, train_split, test_split, "the k-NN probe's")
        ks, _ = check_settings(ks, temperature, len(train))
        read_rows = max(1, READ_BLOCK_BYTES // (train.dimension * train.features.dtype.itemsize))
        with _bar(len(train), "k-NN: reading the training store", progress) as bar:
            neighbours = _Neighbours(train.labels, train.dimension, _counted(train.iter_chunks(read_rows), bar),
                                     dtype, device, f"training store {train.path}")
        correct = dict.fromkeys(ks, 0)
        with _bar(len(test), "k-NN", progress) as bar:
            for start, block in test.iter_chunks(batch_size):
                truth = test.labels[start:start + len(block)]
                what = f"test store {test.path} rows {start}..{start + len(block) - 1}"
                for k, predicted in neighbours.predict(block, ks, temperature, what).items():
                    correct[k] += int(np.count_nonzero(predicted == truth))
                bar.update(len(block))
        stores = store_pair_provenance(train, test)
        n_train, n_test = len(train), len(test)
    return KnnResult(accuracy={k: 100.0 * count / n_test for k, count in correct.items()}, n_train=n_train,
                     n_test=n_test, temperature=temperature, wall_time_s=time.perf_counter() - started,
                     provenance={**stores, **provenance()}, precision=precision, device=str(device))


def _counted(blocks: Iterable[tuple[int, Any]], bar: tqdm) -> Iterator[tuple[int, Any]]:
    for start, block in blocks:
        yield start, block
        bar.update(len(block))
