"""Single-layer k-means features (gan_features.representations.kmeans): building blocks against hand computations,
reproducibility, persistence, stores, and usefulness on a small separable problem."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from gan_features.data import ArrayImageDataset
from gan_features.errors import GanFeaturesError
from gan_features.representations import extract_to_store
from gan_features.representations.kmeans import (ARCHITECTURE, KMeansFeatures, extract_patches, normalize_patches,
                                                 quadrant_sum_pool, triangle_activation, zca_whitening)
from gan_features.store import REQUIRED_ATTRS, FeatureStore

SMALL = dict(n_centroids=16, n_patches=3000, epochs=3, kmeans_batch_size=512)


def random_images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def gratings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 32x32 sinusoidal gratings: near-horizontal vs near-vertical stripes.

    Random phase, frequency, colour, contrast, brightness and noise per image, so no single pixel
    (nor any linear function of the pixels) tells the classes apart; local orientation does.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    angle = np.where(labels == 0, 0.0, np.pi / 2) + rng.uniform(-0.3, 0.3, n)
    freq = rng.uniform(0.35, 0.7, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    proj = np.cos(angle)[:, None, None] * y + np.sin(angle)[:, None, None] * x
    wave = np.sin(freq[:, None, None] * proj + phase[:, None, None])  # (n, 32, 32)
    colour = rng.uniform(0.3, 1.0, (n, 3, 1, 1))
    contrast = rng.uniform(30, 100, (n, 1, 1, 1))
    brightness = rng.uniform(80, 170, (n, 1, 1, 1))
    images = brightness + contrast * colour * wave[:, None] + rng.normal(0, 12, (n, 3, 32, 32))
    return np.clip(images, 0, 255).round().astype(np.uint8), labels


@pytest.fixture(scope="module")
def fitted() -> KMeansFeatures:
    return KMeansFeatures(**SMALL, seed=0).fit(random_images(60), progress=False)


# -- building blocks, by hand

def test_triangle_activation_hand_case():
    centroids = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    x = torch.tensor([[0.0, 0.0],    # distances (0, 5), mean 2.5 -> (2.5, 0)
                      [3.0, 0.0],    # distances (3, 4), mean 3.5 -> (0.5, 0)
                      [3.0, 4.0],    # distances (5, 0), mean 2.5 -> (0, 2.5)
                      [1.5, 2.0]])   # equidistant (2.5, 2.5) -> (0, 0)
    expected = torch.tensor([[2.5, 0.0], [0.5, 0.0], [0.0, 2.5], [0.0, 0.0]])
    torch.testing.assert_close(triangle_activation(x, centroids), expected, atol=1e-5, rtol=0)


def test_triangle_activation_matches_direct_distances():
    gen = torch.Generator().manual_seed(0)
    x, centroids = torch.randn(50, 7, generator=gen), torch.randn(9, 7, generator=gen)
    z = torch.cdist(x.double(), centroids.double())
    expected = (z.mean(1, keepdim=True) - z).clamp(min=0).float()
    torch.testing.assert_close(triangle_activation(x, centroids), expected, atol=1e-5, rtol=1e-5)


def test_quadrant_sum_pool_hand_case():
    # 3x3 grid, K=2: channel 0 holds 1..9 row-major, channel 1 holds 10x that. 3 splits as 2 + 1.
    grid = torch.arange(1.0, 10.0).view(3, 3)
    activations = torch.stack([grid, 10 * grid], dim=-1)[None]  # (1, 3, 3, 2)
    # top-left 1+2+4+5, top-right 3+6, bottom-left 7+8, bottom-right 9; quadrant-major
    expected = torch.tensor([[12.0, 120.0, 9.0, 90.0, 15.0, 150.0, 9.0, 90.0]])
    torch.testing.assert_close(quadrant_sum_pool(activations), expected)


def test_quadrant_sum_pool_27_grid_splits_14_13():
    activations = torch.ones(2, 27, 27, 1)
    assert quadrant_sum_pool(activations).tolist() == [[196.0, 182.0, 182.0, 169.0]] * 2


def test_normalize_patches_hand_case():
    patch = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    var = np.var(np.arange(1, 11), ddof=1)  # MATLAB's var: unbiased
    expected = (patch - 5.5) / np.sqrt(var + 10)
    torch.testing.assert_close(normalize_patches(patch.clone()), expected)


def test_zca_whitening_gives_identity_covariance():
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen))
    variances = torch.logspace(0.7, 2.7, 12)  # 5 .. 500: far above eps = 0.1, and strongly unequal
    data = (torch.randn(50000, 12, generator=gen) * variances.sqrt()) @ rotation.T + 3.0  # correlated, offset
    assert (torch.cov(data.T) - torch.eye(12)).abs().max() > 10  # not white to begin with
    mean, matrix = zca_whitening(data)
    white = (data - mean) @ matrix
    cov = torch.cov(white.T)
    torch.testing.assert_close(cov, torch.eye(12), atol=0.03, rtol=0)
    # exactly: eigenvalues d / (d + eps) of the sample covariance, i.e. eps is 0.1 as in Coates' code
    sample = torch.linalg.eigvalsh(torch.cov(data.double().T))
    torch.testing.assert_close(torch.linalg.eigvalsh(cov.double()), sample / (sample + 0.1), atol=1e-4, rtol=0)
    torch.testing.assert_close(matrix, matrix.T)  # ZCA, not merely any whitening: symmetric


def test_extract_patches_order_matches_fit_sampling():
    images = torch.from_numpy(random_images(2, size=8))
    patches, rows, cols = extract_patches(images.float(), 3, stride=2)
    assert (rows, cols) == (3, 3) and patches.shape == (2 * 9, 27)
    # patch at image 1, grid (2, 1) -> pixels [4:7, 2:5], channel-major
    expected = images[1, :, 4:7, 2:5].reshape(-1).float()
    torch.testing.assert_close(patches[9 + 2 * 3 + 1], expected)


# -- the model

def test_output_shape_dtype_and_values(fitted):
    features = fitted.transform(random_images(5, seed=1))
    assert features.shape == (5, 4 * 16) and features.dtype == np.float32
    assert np.isfinite(features).all() and (features >= 0).all() and features.sum() > 0


def test_without_whitening_is_identity_whitening():
    model = KMeansFeatures(**SMALL, whiten=False).fit(random_images(20), progress=False)
    np.testing.assert_array_equal(model.whiten_matrix_, np.eye(108, dtype=np.float32))
    np.testing.assert_array_equal(model.whiten_mean_, np.zeros(108, dtype=np.float32))
    assert model.feature_spec()["zca_eps"] is None and model.transform(random_images(2)).shape == (2, 64)


def test_transform_matches_direct_computation(fitted):
    """The batched pipeline equals a slow per-patch computation from the fitted arrays."""
    image = random_images(1, seed=2, size=12)
    x = torch.from_numpy(image).double()[0]
    rows = []
    for r in range(7):
        for c in range(7):
            p = x[:, r:r + 6, c:c + 6].reshape(-1)
            p = (p - p.mean()) / torch.sqrt(p.var() + 10)
            w = (p - torch.from_numpy(fitted.whiten_mean_).double()) @ torch.from_numpy(fitted.whiten_matrix_).double()
            z = torch.linalg.vector_norm(w - torch.from_numpy(fitted.centroids_).double(), dim=1)
            rows.append((z.mean() - z).clamp(min=0))
    grid = torch.stack(rows).view(7, 7, -1)
    expected = torch.cat([grid[:4, :4].sum((0, 1)), grid[:4, 4:].sum((0, 1)),
                          grid[4:, :4].sum((0, 1)), grid[4:, 4:].sum((0, 1))])
    np.testing.assert_allclose(fitted.transform(image)[0], expected.numpy(), rtol=1e-4, atol=1e-3)


def test_batch_size_does_not_change_features(fitted):
    images = random_images(7, seed=3)
    fitted.batch_size = 1
    try:
        a = fitted.transform(images)
    finally:
        fitted.batch_size = None
    b = fitted.transform(images)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_seeded_fit_reproduces_and_seeds_differ():
    images = random_images(40, seed=4)
    a = KMeansFeatures(**SMALL, seed=7).fit(images, progress=False)
    b = KMeansFeatures(**SMALL, seed=7).fit(images, progress=False)
    c = KMeansFeatures(**SMALL, seed=8).fit(images, progress=False)
    np.testing.assert_array_equal(a.centroids_, b.centroids_)
    np.testing.assert_array_equal(a.whiten_matrix_, b.whiten_matrix_)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.centroids_, c.centroids_)


def test_fit_records_decreasing_inertia(fitted):
    info = fitted.fit_info_
    assert info["images"] == 60 and info["patches"] == 3000 and len(info["inertia_per_patch"]) == 3
    assert info["inertia_per_patch"][-1] <= info["inertia_per_patch"][0]


def test_features_separate_a_small_texture_problem():
    """Orientation classes of gratings: k-means features + a linear SVM far above chance (50%),
    where the same SVM on raw pixels stays near chance (random phase defeats linear pixel models)."""
    train_x, train_y = gratings(300, seed=10)
    test_x, test_y = gratings(200, seed=11)
    model = KMeansFeatures(n_centroids=32, n_patches=10000, epochs=5, kmeans_batch_size=2048, seed=0)
    model.fit(train_x, progress=False)
    f_train, f_test = model.transform(train_x), model.transform(test_x)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-3  # Coates standardises features before the SVM
    accuracy = LinearSVC(C=1e-2).fit((f_train - mean) / std, train_y).score((f_test - mean) / std, test_y)
    raw = LinearSVC(C=1e-2).fit(train_x.reshape(300, -1) / 255, train_y).score(test_x.reshape(200, -1) / 255, test_y)
    assert accuracy > 0.9 and raw < 0.7, (accuracy, raw)


# -- persistence and stores

def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and path.exists()
    loaded = KMeansFeatures.load(path)
    assert loaded.get_params() == fitted.get_params() and loaded.fingerprint() == fitted.fingerprint()
    images = random_images(3, seed=5)
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))
    with np.load(path, allow_pickle=False) as f:  # plain arrays only
        assert set(f.files) == {"centroids", "whiten_mean", "whiten_matrix", "meta"}


def test_load_refuses_tampered_and_pickled_files(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["centroids"] = arrays["centroids"] + 1
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(GanFeaturesError, match="sha256"):
        KMeansFeatures.load(tmp_path / "tampered.npz")
    arrays["meta"] = np.array([{"evil": 1}], dtype=object)  # an object array needs pickle to load
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(GanFeaturesError, match="not a k-means model"):
        KMeansFeatures.load(tmp_path / "pickled.npz")


def _dataset(images: np.ndarray, split: str) -> ArrayImageDataset:
    labels = np.arange(len(images)) % 3
    return ArrayImageDataset(images, labels, ["a", "b", "c"], name="toy", split=split, source="test", image_size=32)


def test_store_round_trip_with_attrs(fitted, tmp_path):
    train, test = _dataset(random_images(9, seed=6), "train"), _dataset(random_images(5, seed=7), "test")
    paths = [extract_to_store(fitted, ds, tmp_path / f"{ds.split}.h5", progress=False) for ds in (train, test)]
    attrs = []
    for path, ds in zip(paths, (train, test)):
        with FeatureStore(path) as store:
            features, labels = store.load()
            np.testing.assert_array_equal(features, fitted.transform(ds))
            np.testing.assert_array_equal(labels, ds.labels)
            assert set(REQUIRED_ATTRS) <= set(store.attrs)
            assert store.attrs["split"] == ds.split and store.attrs["count"] == len(ds)
            assert store.attrs["dimension"] == 64 and store.attrs["architecture"] == ARCHITECTURE
            assert store.attrs["checkpoint_sha256"] == fitted.fingerprint()
            assert store.attrs["feature_spec"] == json.loads(json.dumps(fitted.feature_spec()))
            attrs.append(store.attrs)
    # train/test stores of one model agree on everything the SVM protocols compare
    for key in ("checkpoint_sha256", "architecture", "feature_spec", "dataset"):
        assert attrs[0][key] == attrs[1][key]
    with pytest.raises(GanFeaturesError, match="already exists"):
        extract_to_store(fitted, train, paths[0], progress=False)


def test_different_fits_give_different_store_hashes(tmp_path):
    images = random_images(30, seed=8)
    a = KMeansFeatures(**SMALL, seed=1).fit(images, progress=False)
    b = KMeansFeatures(**SMALL, seed=2).fit(images, progress=False)
    ds = _dataset(random_images(4, seed=9), "test")
    hashes = []
    for name, model in (("a", a), ("b", b)):
        with FeatureStore(extract_to_store(model, ds, tmp_path / f"{name}.h5", progress=False)) as store:
            hashes.append(store.attrs["checkpoint_sha256"])
    assert hashes[0] != hashes[1]


# -- errors

def _one_line_error(match: str):
    """pytest.raises for a GanFeaturesError whose message matches and fits on one line (the CLI prints it)."""
    class Check:
        def __enter__(self):
            self.raises = pytest.raises(GanFeaturesError, match=match)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            assert "\n" not in str(self.info.value)
            return handled
    return Check()


def test_clear_errors(fitted):
    with _one_line_error("not fitted"):
        KMeansFeatures(**SMALL).transform(random_images(2))
    with _one_line_error("uint8"):
        fitted.transform(random_images(2).astype(np.float32))
    with _one_line_error(r"\(N, C, H, W\)"):
        fitted.transform(random_images(2)[0])
    with _one_line_error("too small"):
        fitted.transform(random_images(2, size=6))
    with _one_line_error("3-channel"):
        fitted.transform(random_images(2)[:, :1])
    with _one_line_error("materialize"):
        fitted.transform(type("ImageFolderDataset", (), {"materialize": None})())
    with _one_line_error("training images only"):
        KMeansFeatures(**SMALL).fit(_dataset(random_images(4), "test"), progress=False)
    with _one_line_error("at least n_centroids"):
        KMeansFeatures(n_centroids=100, n_patches=50)
    with _one_line_error("positive integer"):
        KMeansFeatures(patch_size=0)
    with _one_line_error("does not exist"):
        KMeansFeatures.load("/nonexistent/model.npz")
