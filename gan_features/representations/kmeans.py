"""Single-layer k-means features (Coates, Lee & Ng 2011): the DCGAN paper's "1 Layer K-means" baseline.

One file (over 500 lines) on purpose: it is one published algorithm, checked step by step against
Coates' MATLAB code below; its fit, transform and file format share every constant.

Pipeline, following the details of Coates' released MATLAB code (``kmeans_demo.m`` and
``extract_features.m``):

fit (training images only)
    1. ``n_patches`` random ``p x p x 3`` patches (uniformly random image and position, seeded).
    2. Brightness/contrast normalisation of each patch on the 0..255 scale:
       ``(x - mean(x)) / sqrt(var(x) + 10)``, ``var`` the unbiased variance over the patch's values
       (MATLAB's ``var``).
    3. ZCA whitening: ``w = (x - M) P`` with ``P = V diag(1 / sqrt(d + 0.1)) V^T`` from the
       eigendecomposition ``V diag(d) V^T`` of the (unbiased) covariance of the normalised patches.
    4. ``n_centroids`` centroids by scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans`, started
       from K distinct random patches (its ``init="random"``; Coates' code also starts at random),
       then ``epochs`` passes over all patches in shuffled mini-batches of ``kmeans_batch_size``
       (``partial_fit``: a fixed number of passes rather than the inertia-based early stopping of
       ``fit``, so cost and result do not hinge on a noisy heuristic). scikit-learn's reassignment
       of near-empty clusters stays on. One initialisation (``n_init=1``).

       Measured on CIFAR-10 (400,000 patches, K = 1600, one fixed probe of 20,000 patches),
       inertia per patch after 10 epochs: random start 22.44, greedy k-means++ on 4,800 patches
       22.48; and k-means++ (sequential over the 1600 centres) cost more CPU than all 10 epochs.
       Epochs 10 -> 15 lowered the inertia by only 0.1% more (22.44 -> 22.41).

transform
    Every ``p x p`` patch at ``stride`` (27 x 27 positions for 32 x 32 images and p = 6), the same
    normalisation and whitening, then the "triangle" activation ``f_k = max(0, mean_j(z_j) - z_k)``,
    ``z_k`` the Euclidean distance to centroid k, sum-pooled over the four quadrants of the position
    grid: ``4 * n_centroids`` features per image, quadrant-major (top-left, top-right, bottom-left,
    bottom-right; K values each). The first half of an odd grid is the larger one (14 + 13 rows
    for 27), MATLAB's ``round(27 / 2)`` in Coates' code.

Coates further standardises every feature with the training set's mean and variance before the
SVM. The stores hold the features as defined above; :func:`standardize_stores` makes the
standardised copies the bench evaluates (statistics from the training store only).

Cost: the distances dominate, ``L * K * D`` multiply-adds per image (729 x 1600 x 108 = 126 M
for CIFAR-10), computed as one matrix product ``x . c`` per batch. They are followed by five
element-wise passes over the ``(L, K)`` activations, which is why batches are small on CPU: a
few images keep the activations in cache (measured here: ~1.5x faster than 16+ images).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import GanFeaturesError
from ..output import writing
from ..store import CHUNK_BYTES, FeatureStore, FeatureWriter
from .base import Representation

ARCHITECTURE = "kmeans-coates2011"
CONTRAST_EPS = 10.0  # added to each patch's variance (0..255 scale) before dividing: Coates' value
ZCA_EPS = 0.1  # added to the covariance eigenvalues before inverting: Coates' value
FILE_FORMAT = 1  # version of the .npz layout written by KMeansFeatures.save

# Activations per transform step when batch_size is not given: ~16 MiB of float32 on CPU keeps
# the element-wise passes in cache; GPUs want large steps to fill the device.
_STEP_ELEMENTS = {"cpu": 1 << 22, "other": 1 << 27}
_SAMPLE_CHUNK = 65536  # patches gathered / normalised per step in fit (bounds int64 index memory)
_INERTIA_SAMPLE = 20000  # patches the per-epoch inertia is measured on (progress and fit_info_)

Images = Union[torch.Tensor, np.ndarray, Any]  # uint8 (N, C, H, W), or a dataset holding them as .images


# ---------------------------------------------------------------------------------------------------
# building blocks (public so that tests can check each against a hand computation)

def normalize_patches(patches: torch.Tensor, eps: float = CONTRAST_EPS) -> torch.Tensor:
    """Per-patch brightness/contrast normalisation of float rows (n, D), in place; returns them.

    ``(x - mean(x)) / sqrt(var(x) + eps)`` with the unbiased variance, as Coates' code. Written as
    mean + vector norm because ``torch.var_mean`` over short rows measured ~10x slower.
    """
    patches.sub_(patches.mean(dim=1, keepdim=True))
    var = torch.linalg.vector_norm(patches, dim=1, keepdim=True).square_().div_(patches.shape[1] - 1)
    return patches.mul_(var.add_(eps).rsqrt_())


def zca_whitening(patches: torch.Tensor, eps: float = ZCA_EPS,
                  chunk: int = _SAMPLE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening of rows (n, D): returns ``(mean (D,), P (D, D))``, to be applied as ``(x - mean) @ P``.

    ``P = V diag(1 / sqrt(d + eps)) V^T`` from the unbiased covariance ``V diag(d) V^T``. The
    moments are accumulated chunk by chunk in float64 (no float64 copy of all patches) and the
    eigendecomposition is done in float64; the results are float32.
    """
    n, dim = patches.shape
    if n < 2:
        raise GanFeaturesError(f"ZCA whitening needs at least 2 patches, got {n}")
    total = torch.zeros(dim, dtype=torch.float64)
    for start in range(0, n, chunk):
        total += patches[start:start + chunk].sum(0, dtype=torch.float64)
    mean = total / n
    cov = torch.zeros(dim, dim, dtype=torch.float64)
    for start in range(0, n, chunk):
        centred = patches[start:start + chunk].double() - mean  # centre first: no cancellation
        cov.addmm_(centred.T, centred)
    cov /= n - 1
    # a D x D problem needs no threads; and on an oversubscribed machine multithreaded LAPACK was
    # measured to take 0.5-1.5 s on it instead of 1 ms, spinning for descheduled threads
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        eigenvalues, eigenvectors = (torch.from_numpy(a) for a in np.linalg.eigh(cov.numpy()))
    scale = eigenvalues.clamp(min=0).add(eps).rsqrt()  # clamp: rounding can make zero eigenvalues < 0
    matrix = (eigenvectors * scale) @ eigenvectors.T
    return mean.float(), matrix.float()


def triangle_activation(x: torch.Tensor, centroids: torch.Tensor,
                        centroid_sq_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Coates' "triangle" encoding of rows (n, D) against centroids (K, D): (n, K), ``max(0, mean(z) - z_k)``.

    ``z_k = ||x - c_k||`` from ``||x||^2 - 2 x.c_k + ||c_k||^2`` (one matrix product), worked in
    place on the one (n, K) buffer. float32 rounding of that expansion is ~1e-6 relative to
    ``||x||^2``, negligible next to the mean distance the activation subtracts.
    """
    if centroid_sq_norms is None:
        centroid_sq_norms = centroids.square().sum(1)
    z = torch.addmm(centroid_sq_norms, x, centroids.T, alpha=-2.0)
    z.add_(x.square().sum(1, keepdim=True)).clamp_(min=0).sqrt_()  # clamp: rounding may dip below 0
    mean = z.mean(dim=1, keepdim=True)
    return torch.sub(mean, z, out=z).clamp_(min=0)


def quadrant_sum_pool(activations: torch.Tensor) -> torch.Tensor:
    """Sum (n, R, C, K) activation maps over the four quadrants of the R x C grid: (n, 4 * K).

    Quadrant-major: top-left, top-right, bottom-left, bottom-right, K values each. An odd side
    splits with the larger half first (27 -> 14 + 13), as MATLAB's ``round(27 / 2)`` in Coates' code.
    """
    n, rows, cols, k = activations.shape
    device = activations.device
    top, left = (rows + 1) // 2, (cols + 1) // 2
    r = torch.arange(rows, device=device)[:, None]
    c = torch.arange(cols, device=device)[None, :]
    quadrant = ((r >= top).long() * 2 + (c >= left).long()).reshape(-1)  # 0 TL, 1 TR, 2 BL, 3 BR
    target = (torch.arange(n, device=device)[:, None] * 4 + quadrant).reshape(-1)
    # one index_add_ over rows: measured ~8x faster than four strided quadrant sums on CPU
    pooled = torch.zeros(n * 4, k, dtype=activations.dtype, device=device)
    return pooled.index_add_(0, target, activations.reshape(n * rows * cols, k)).view(n, 4 * k)


def extract_patches(images: torch.Tensor, patch_size: int, stride: int = 1) -> tuple[torch.Tensor, int, int]:
    """All patches of float images (n, C, H, W) at ``stride``: ``(n * R * C', C * p * p)`` rows, R, C'.

    Rows are image-major then row-major over positions; a patch's values are ordered channel, row,
    column, the same order :func:`_sample_patches` uses in fit.
    """
    windows = images.unfold(2, patch_size, stride).unfold(3, patch_size, stride)  # (n, C, R, C', p, p)
    n, channels, rows, cols = windows.shape[:4]
    patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(n * rows * cols, channels * patch_size ** 2)
    return patches, rows, cols


# ---------------------------------------------------------------------------------------------------
# input handling

def _as_uint8_images(images: Images, what: str) -> torch.Tensor:
    """The uint8 (N, C, H, W) tensor behind ``images`` (no copy), or a one-line GanFeaturesError."""
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        held = getattr(images, "images", None)
        if held is None:
            hint = " (an image-folder dataset: call .materialize() first)" if hasattr(images, "materialize") else ""
            raise GanFeaturesError(f"{what} takes uint8 images (N, 3, H, W) as a tensor, an array or a dataset "
                                   f"holding them as .images, got {type(images).__name__}{hint}")
        images = held
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype != torch.uint8:
        raise GanFeaturesError(f"{what} takes uint8 images on the 0..255 scale, got {images.dtype}: convert "
                               f"[-1, 1] floats with ((x + 1) * 127.5).round().to(torch.uint8)")
    if images.ndim != 4:
        raise GanFeaturesError(f"{what} takes images shaped (N, C, H, W), got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise GanFeaturesError(f"{what} got no images")
    return images


def _check_fit_source(images: Images) -> dict | None:
    """Provenance of a dataset given to fit; refuse evaluation splits (k-means must not see them)."""
    if isinstance(images, (torch.Tensor, np.ndarray)):  # (a tensor's .split is a method)
        return None
    split = getattr(images, "split", None)
    if split in ("test", "val", "valid", "validation"):
        raise GanFeaturesError(f"refusing to fit k-means on the {split!r} split: fit on training images only")
    describe = getattr(images, "describe", None)
    return describe() if callable(describe) else None


def _sample_patches(images: torch.Tensor, count: int, patch_size: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random patches (count, C * p * p) uint8: uniform image and position, with replacement."""
    n, channels, height, width = images.shape
    index = rng.integers(n, size=count)
    top = rng.integers(height - patch_size + 1, size=count)
    left = rng.integers(width - patch_size + 1, size=count)
    start = torch.from_numpy(((index * channels * height) + top) * width + left)
    c, r, q = np.meshgrid(np.arange(channels), np.arange(patch_size), np.arange(patch_size), indexing="ij")
    offsets = torch.from_numpy((c * height * width + r * width + q).reshape(-1))  # channel, row, column order
    flat = images.reshape(-1)
    out = torch.empty(count, offsets.numel(), dtype=torch.uint8)
    for s in range(0, count, _SAMPLE_CHUNK):
        out[s:s + _SAMPLE_CHUNK] = flat[start[s:s + _SAMPLE_CHUNK, None] + offsets]
    return out


# ---------------------------------------------------------------------------------------------------
# the model

class KMeansFeatures(Representation):
    """Coates et al. (2011) single-layer k-means features, sklearn-style: ``fit(train_images)``, ``transform(images)``.

    Parameters
    ----------
    n_centroids, patch_size, stride, whiten, n_patches:
        The feature definition (Coates' CIFAR-10 setup: 1600, 6, 1, True, 400,000).
    batch_size:
        Images per transform step; ``None`` picks ~16 MiB of activations on CPU (3 images at
        K = 1600) and ~512 MiB on other devices. Does not change the features.
    seed:
        Seeds the patch sampling, the initial centroids and the mini-batch order.
    epochs, kmeans_batch_size:
        Mini-batch k-means: passes over the patches and patches per mini-batch (large enough to
        amortise the per-call overhead; scikit-learn advises at least 256 x cores).
    device:
        Where transform computes (``"cpu"``, ``"cuda"``, ...). Fit's k-means runs on CPU.

    Fitted attributes: ``centroids_`` (K, D), ``whiten_mean_`` (D,), ``whiten_matrix_`` (D, D), all
    float32 numpy (identity whitening when ``whiten=False``), and ``fit_info_`` (provenance).
    """

    kind = "k-means baseline"
    precision = "fp32"

    def __init__(self, n_centroids: int = 1600, patch_size: int = 6, stride: int = 1, whiten: bool = True,
                 n_patches: int = 400_000, batch_size: int | None = None, seed: int = 0, *, epochs: int = 10,
                 kmeans_batch_size: int = 8192, device: str | torch.device = "cpu"):
        for name, value in (("n_centroids", n_centroids), ("patch_size", patch_size), ("stride", stride),
                            ("n_patches", n_patches), ("epochs", epochs), ("kmeans_batch_size", kmeans_batch_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise GanFeaturesError(f"{name} must be a positive integer, got {value!r}")
        if n_patches < n_centroids:
            raise GanFeaturesError(f"n_patches ({n_patches}) must be at least n_centroids ({n_centroids})")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise GanFeaturesError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.n_centroids, self.patch_size, self.stride = int(n_centroids), int(patch_size), int(stride)
        self.whiten, self.n_patches, self.batch_size, self.seed = bool(whiten), int(n_patches), batch_size, int(seed)
        self.epochs, self.kmeans_batch_size = int(epochs), int(kmeans_batch_size)
        self._device = torch.device(device)
        self.centroids_: np.ndarray | None = None
        self.whiten_mean_: np.ndarray | None = None
        self.whiten_matrix_: np.ndarray | None = None
        self.fit_info_: dict = {}
        self.path: Path | None = None  # file the model was last saved to or loaded from
        self._device_cache: dict[str, tuple[torch.Tensor, ...]] = {}

    # -- description
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (sklearn convention)."""
        return {"n_centroids": self.n_centroids, "patch_size": self.patch_size, "stride": self.stride,
                "whiten": self.whiten, "n_patches": self.n_patches, "batch_size": self.batch_size, "seed": self.seed,
                "epochs": self.epochs, "kmeans_batch_size": self.kmeans_batch_size, "device": str(self.device)}

    def feature_spec(self) -> dict[str, Any]:
        """What defines the features (stored as ``feature_spec``): no batch size or device, which don't."""
        params = self.get_params()
        for key in ("batch_size", "device"):
            params.pop(key)
        return {**params, "contrast_eps": CONTRAST_EPS, "zca_eps": ZCA_EPS if self.whiten else None,
                "activation": "triangle", "pooling": "quadrant-sum",
                "kmeans": "sklearn-MiniBatchKMeans, random-patch init, n_init=1"}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"KMeansFeatures({shown}){'' if self.is_fitted else ' (not fitted)'}"

    @property
    def is_fitted(self) -> bool:
        return self.centroids_ is not None

    @property
    def patch_dimension(self) -> int:
        """Values per patch, C * p * p (108 for RGB 6 x 6); known once fitted."""
        self._check_fitted()
        return self.centroids_.shape[1]

    @property
    def device(self) -> torch.device:
        """Where transform computes."""
        return self._device

    @property
    def dimension(self) -> int:
        """Features per image: 4 quadrants x K."""
        return 4 * self.n_centroids

    @property
    def feature_units(self) -> int:
        return self.n_centroids

    def fingerprint(self) -> str:
        """sha256 of what transform computes with: centroids, whitening and patch geometry.

        Equal for every store made with one fitted model (train and test), different for any
        other fit; stored as ``checkpoint_sha256``.
        """
        self._check_fitted()
        digest = hashlib.sha256()
        header = {"patch_size": self.patch_size, "stride": self.stride,
                  "whiten": self.whiten, "contrast_eps": CONTRAST_EPS, "shape": list(self.centroids_.shape)}
        digest.update(json.dumps(header, sort_keys=True).encode())
        for array in (self.centroids_, self.whiten_mean_, self.whiten_matrix_):
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
        return digest.hexdigest()

    # -- fit
    def fit(self, images: Images, progress: bool = True) -> "KMeansFeatures":
        """Learn the whitening and the centroids from random patches of the training images; returns self.

        ``images``: uint8 (N, C, H, W) tensor or array, or a dataset holding them as ``.images``
        (evaluation splits are refused). ``progress``: a tqdm bar over the k-means mini-batches.
        """
        source = _check_fit_source(images)
        images = _as_uint8_images(images, "fit")
        self._check_geometry(images)
        started = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        patches = _sample_patches(images, self.n_patches, self.patch_size, rng).float()
        for s in range(0, len(patches), _SAMPLE_CHUNK):
            normalize_patches(patches[s:s + _SAMPLE_CHUNK])
        if self.whiten:
            mean, matrix = zca_whitening(patches)
            bias = -(mean @ matrix)
            for s in range(0, len(patches), _SAMPLE_CHUNK):  # (x - mean) @ P, as transform applies it
                chunk = patches[s:s + _SAMPLE_CHUNK]
                chunk.copy_(torch.addmm(bias, chunk, matrix))
        else:
            dim = patches.shape[1]
            mean, matrix = torch.zeros(dim), torch.eye(dim)
        sampled_s = time.perf_counter() - started
        centroids, kmeans_info = self._kmeans(patches.numpy(), rng, progress)
        self.centroids_ = centroids
        self.whiten_mean_, self.whiten_matrix_ = mean.numpy(), matrix.numpy()
        self._device_cache.clear()
        self.path = None
        self.fit_info_ = {"images": len(images), "image_shape": list(images.shape[1:]), "source": source,
                          "patches": self.n_patches, **kmeans_info, "sampling_whitening_s": round(sampled_s, 2),
                          "fit_s": round(time.perf_counter() - started, 2)}
        return self

    def _kmeans(self, patches: np.ndarray, rng: np.random.Generator, progress: bool) -> tuple[np.ndarray, dict]:
        """Centroids of the preprocessed patches by MiniBatchKMeans; see the module docstring."""
        from sklearn.cluster import MiniBatchKMeans

        n, k = len(patches), self.n_centroids
        batch = min(self.kmeans_batch_size, n)
        seed = int(rng.integers(2 ** 31))  # for sklearn's reassignments; derived from self.seed
        init = patches[np.sort(rng.choice(n, size=k, replace=False))]  # K random patches (distinct rows)
        # compute_labels=False: partial_fit would otherwise re-assign every mini-batch a second time
        kmeans = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, batch_size=batch, random_state=seed,
                                 compute_labels=False)
        probe = patches[rng.choice(n, size=min(n, _INERTIA_SAMPLE), replace=False)]
        inertia: list[float] = []
        steps = n // batch  # the remainder of each shuffled pass is left out; other passes cover it
        with tqdm(total=self.epochs * steps, desc=f"k-means K={k}", unit="batch", disable=not progress) as bar:
            for _ in range(self.epochs):
                order = rng.permutation(n)
                for s in range(steps):
                    kmeans.partial_fit(patches[np.sort(order[s * batch:(s + 1) * batch])])
                    bar.update()
                inertia.append(float(-kmeans.score(probe) / len(probe)))
                bar.set_postfix(inertia=f"{inertia[-1]:.4g}")
        info = {"kmeans_batch": batch, "kmeans_steps": self.epochs * steps,
                "inertia_per_patch": [round(v, 5) for v in inertia]}
        return np.ascontiguousarray(kmeans.cluster_centers_, dtype=np.float32), info

    # -- transform
    def transform(self, images: Images, progress: bool = False) -> np.ndarray:
        """Features (N, 4 * K) float32 of uint8 images (N, C, H, W) (or a dataset holding them)."""
        images = self._checked_images(images)
        out = np.empty((len(images), self.dimension), dtype=np.float32)
        for start, block in self.iter_transform(images, progress=progress):
            out[start:start + len(block)] = block
        return out

    def iter_transform(self, images: Images, block_rows: int | None = None, progress: bool = False,
                       desc: str = "k-means features") -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, features of images[start:start + n])`` in order, ``block_rows`` images at a time.

        Steps of ``batch_size`` images are computed and gathered into blocks of ``block_rows``
        (default: one step), so a writer gets large blocks while memory stays bounded.
        """
        images = self._checked_images(images)
        step = self._step_images(images)
        block_rows = max(step, block_rows or step)
        tensors = self._tensors()
        with torch.inference_mode(), tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
            for start in range(0, len(images), block_rows):
                stop = min(start + block_rows, len(images))
                block = np.empty((stop - start, self.dimension), dtype=np.float32)
                for s in range(start, stop, step):
                    chunk = images[s:min(s + step, stop)]
                    block[s - start:s - start + len(chunk)] = self._features(chunk, tensors).cpu().numpy()
                    bar.update(len(chunk))
                yield start, block

    def blocks(self, dataset, progress: bool = True):
        """Features of a dataset holding uint8 ``.images`` and one label per image, in blocks of whole
        HDF5 chunks (a partial-chunk write would re-read and re-write the chunk)."""
        images = self._checked_images(dataset)
        labels = getattr(dataset, "labels", None)
        if labels is None or np.shape(labels) != (len(images),):
            raise GanFeaturesError(f"k-means features of a dataset need one label per image ({len(images)} images, "
                                   f"labels {None if labels is None else np.shape(labels)})")
        labels = np.asarray(labels)
        rows_per_chunk = max(1, CHUNK_BYTES // (self.dimension * 4))
        block_rows = rows_per_chunk * math.ceil(1024 / rows_per_chunk)
        name = f"{getattr(dataset, 'name', 'images')}/{getattr(dataset, 'split', '?')}"
        return ((block, labels[start:start + len(block)]) for start, block in
                self.iter_transform(images, block_rows=block_rows, progress=progress, desc=f"k-means features {name}"))

    def store_attrs(self) -> dict[str, Any]:
        """``checkpoint_sha256`` = :meth:`fingerprint` and ``feature_spec`` = :meth:`feature_spec`, so the
        train and test stores of one fit pass the protocols' consistency checks and stores of different
        fits do not."""
        self._check_fitted()
        return {"checkpoint_sha256": self.fingerprint(), "checkpoint_path": str(self.path) if self.path else "none",
                "architecture": ARCHITECTURE, "architecture_config": self.feature_spec(),
                "feature_spec": self.feature_spec(), "kmeans_fit": self.fit_info_}

    def _features(self, images: torch.Tensor, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Features of one step of uint8 images (n, C, H, W): (n, 4K) float32 on the compute device."""
        centroids, sq_norms, bias, matrix = tensors
        x = images.to(self.device, non_blocking=True).float()
        patches, rows, cols = extract_patches(x, self.patch_size, self.stride)
        normalize_patches(patches)
        if self.whiten:
            patches = torch.addmm(bias, patches, matrix)  # (x - M) @ P, with bias = -M @ P
        activations = triangle_activation(patches, centroids, sq_norms)
        return quadrant_sum_pool(activations.view(len(images), rows, cols, -1))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        """(centroids, their squared norms, whitening bias -M P, P) as float32 tensors on the device, cached."""
        self._check_fitted()
        key = str(self.device)
        if key not in self._device_cache:
            centroids = torch.from_numpy(self.centroids_).to(self.device)
            matrix = torch.from_numpy(self.whiten_matrix_).to(self.device)
            bias = -(torch.from_numpy(self.whiten_mean_).to(self.device) @ matrix)
            self._device_cache[key] = (centroids, centroids.square().sum(1), bias, matrix)
        return self._device_cache[key]

    def _step_images(self, images: torch.Tensor) -> int:
        if self.batch_size is not None:
            return self.batch_size
        positions = self._grid(images.shape[2]) * self._grid(images.shape[3])
        budget = _STEP_ELEMENTS["cpu" if self.device.type == "cpu" else "other"]
        return max(1, budget // (positions * self.n_centroids))

    def _grid(self, side: int) -> int:
        return (side - self.patch_size) // self.stride + 1

    # -- checks
    def _check_fitted(self) -> None:
        if self.centroids_ is None:
            raise GanFeaturesError("this KMeansFeatures is not fitted: call fit(training images) or "
                                   "KMeansFeatures.load(path) first")

    def _check_geometry(self, images: torch.Tensor) -> None:
        height, width = images.shape[2:]
        if min(height, width) < self.patch_size + self.stride:
            raise GanFeaturesError(f"images of {height}x{width} are too small for {self.patch_size}x{self.patch_size} "
                                   f"patches at stride {self.stride}: quadrant pooling needs at least 2x2 patch "
                                   f"positions, i.e. images of at least {self.patch_size + self.stride} px")

    def _checked_images(self, images: Images) -> torch.Tensor:
        self._check_fitted()
        images = _as_uint8_images(images, "transform")
        self._check_geometry(images)
        channels = self.patch_dimension // self.patch_size ** 2
        if images.shape[1] != channels:
            raise GanFeaturesError(f"the model was fitted on {channels}-channel images, got {images.shape[1]} "
                                   f"channels (shape {tuple(images.shape)})")
        return images

    # -- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model as a plain .npz (arrays and JSON text only; no pickles). Returns the path."""
        self._check_fitted()
        path = Path(path)
        meta = {"format": FILE_FORMAT, "params": self.get_params(), "fit_info": self.fit_info_,
                "sha256": self.fingerprint()}
        # never a half-written model under the real name; a file object: np.savez would append .npz to a name
        with writing(path) as partial, open(partial, "wb") as f:
            np.savez(f, centroids=self.centroids_, whiten_mean=self.whiten_mean_, whiten_matrix=self.whiten_matrix_,
                     meta=np.array(json.dumps(meta, sort_keys=True)))
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "KMeansFeatures":
        """Read a model written by :meth:`save`, without executing code (``allow_pickle=False``)."""
        path = Path(path)
        if not path.exists():
            raise GanFeaturesError(f"k-means model {path} does not exist: fit one and save() it first")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {key: f[key] for key in ("centroids", "whiten_mean", "whiten_matrix", "meta")}
            meta = json.loads(str(arrays.pop("meta")))
            params = dict(meta["params"])
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise GanFeaturesError(f"{path} is not a k-means model saved by KMeansFeatures.save "
                                   f"({type(error).__name__}: {str(error)[:200]})") from None
        if meta.get("format") != FILE_FORMAT:
            raise GanFeaturesError(f"{path} has k-means file format {meta.get('format')!r}; this version reads "
                                   f"{FILE_FORMAT}")
        if device is not None:
            params["device"] = str(device)
        model = cls(**params)
        model.centroids_ = np.ascontiguousarray(arrays["centroids"], dtype=np.float32)
        model.whiten_mean_ = np.ascontiguousarray(arrays["whiten_mean"], dtype=np.float32)
        model.whiten_matrix_ = np.ascontiguousarray(arrays["whiten_matrix"], dtype=np.float32)
        model.fit_info_ = meta.get("fit_info", {})
        k, dim = model.centroids_.shape
        if k != model.n_centroids or model.whiten_mean_.shape != (dim,) or model.whiten_matrix_.shape != (dim, dim):
            raise GanFeaturesError(f"{path}: array shapes do not match (centroids {model.centroids_.shape}, "
                                   f"whitening {model.whiten_mean_.shape} / {model.whiten_matrix_.shape})")
        if model.fingerprint() != meta.get("sha256"):
            raise GanFeaturesError(f"{path}: contents do not match the sha256 recorded at save time (corrupted "
                                   f"or edited): fit and save the model again")
        model.path = path
        return model


STANDARDIZE_EPS = 0.01  # Coates et al.'s: sqrt(var + 0.01)


def standardize_stores(train_path: Path, test_path: Path, progress: bool = True, make: bool = True
                       ) -> tuple[Path, Path] | None:
    """Copies of both stores (``<name>_standardized.h5``) with every feature standardised by the
    training split's mean and variance, as Coates et al. do before their SVM.

    Without it the raw sum-pooled triangle activations are ~10^4 times larger in squared norm than
    discriminator features, so C would mean something else entirely and the solver crawls.
    Statistics come from the training store only (no labels). Reused while the source stores are
    unchanged (their fingerprint and creation time are recorded); ``make=False``: None instead of
    making them.
    """
    sources = {"train": train_path, "test": test_path}
    targets = {split: path.with_name(path.stem + "_standardized.h5") for split, path in sources.items()}
    stamp = {split: {key: _attr(path, key) for key in ("checkpoint_sha256", "created", "count")}
             for split, path in sources.items()}
    if all(targets[split].is_file() and _attr(targets[split], "standardized_from") == stamp[split]
           for split in sources):
        return targets["train"], targets["test"]
    if not make:
        return None
    if progress:
        print(f"standardising {train_path.name} and {test_path.name}", file=sys.stderr, flush=True)
    with FeatureStore(train_path) as store:
        total = np.zeros(store.dimension)
        squares = np.zeros(store.dimension)
        for _, block in store.iter_chunks():
            block = block.astype(np.float64)
            total += block.sum(axis=0)
            squares += np.square(block).sum(axis=0)
        mean = total / len(store)
        # Coates' MATLAB var: unbiased; computed from sums in float64, which is ample for these ranges
        var = np.maximum(squares - len(store) * mean ** 2, 0.0) / max(len(store) - 1, 1)
    scale = 1.0 / np.sqrt(var + STANDARDIZE_EPS)
    for split, source in sources.items():
        with FeatureStore(source) as store:
            attrs = {key: value for key, value in store.attrs.items()
                     if key not in ("count", "dimension", "created", "package_version")}
            attrs["feature_spec"] = {**attrs.get("feature_spec", {}),
                                     "standardized": {"statistics": "training split", "eps": STANDARDIZE_EPS}}
            attrs["standardized_from"] = stamp[split]
            with FeatureWriter(targets[split], len(store), store.dimension, attrs, overwrite=True) as writer:
                for start, block in store.iter_chunks():
                    writer.append(((block - mean) * scale).astype(np.float32), store.labels[start:start + len(block)])
    return targets["train"], targets["test"]


def _attr(path: Path, key: str) -> Any:
    with FeatureStore(path) as store:
        return store.attrs.get(key)
