import numpy as np
import pytest
import torch

from gan_features.checkpoints import Checkpoint
from gan_features.data import ArrayImageDataset
from gan_features.errors import GanFeaturesError
from gan_features.representations import DiscriminatorFeatures, FeatureSpec, extract_to_store, iter_features
from gan_features.representations.discriminator import pool_blocks, pooled_features, recompute_batchnorm
from gan_features.models import create_models, get_architecture
from gan_features.store import FeatureStore


def test_max_pooling_to_a_grid_on_a_hand_made_map():
    # one 8x8 channel whose 2x2 cells hold known maxima: cell (i, j) has max 10*i + j
    x = torch.zeros(1, 1, 8, 8)
    for i in range(4):
        for j in range(4):
            x[0, 0, 2 * i, 2 * j + 1] = 10 * i + j
    out = pool_blocks([x], FeatureSpec(grid=4))
    assert out.shape == (1, 16)
    assert out[0].tolist() == [10 * i + j for i in range(4) for j in range(4)]


def test_blocks_concatenate_in_layer_order_channel_major():
    a = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # already 4x4: pooling is identity
    b = -torch.ones(1, 1, 8, 8)
    out = pool_blocks([a, b], FeatureSpec(grid=4))
    assert out.shape == (1, 48)
    assert torch.equal(out[0, :32], a.flatten())
    assert torch.equal(out[0, 32:], -torch.ones(16))


def test_average_pooling_and_grid_one():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    assert pool_blocks([x], FeatureSpec(grid=1, pooling="avg")).item() == pytest.approx(7.5)
    assert pool_blocks([x], FeatureSpec(grid=1)).item() == 15


def test_feature_dimension_and_layer_subsets():
    d, _ = create_models("radford-imagenet32")
    d.eval()
    x = torch.randn(2, 3, 32, 32)
    assert pooled_features(d, x, FeatureSpec()).shape == (2, 28672)
    spec = FeatureSpec(layers=(0, 1, 2, 3))
    assert spec.dimension(d) == (128 + 128 + 256 + 256) * 16
    assert pooled_features(d, x, spec).shape == (2, spec.dimension(d))
    with pytest.raises(GanFeaturesError, match="0..5"):
        FeatureSpec(layers=(6,)).dimension(d)


def test_bad_spec_values_are_refused():
    with pytest.raises(GanFeaturesError):
        FeatureSpec(pooling="median")
    with pytest.raises(GanFeaturesError):
        FeatureSpec(batchnorm="batch")


def _images(n=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    return ArrayImageDataset(images, rng.integers(0, 3, n), ["a", "b", "c"], name="toy", split="train",
                             source="random", image_size=size)


def test_recomputed_statistics_are_means_of_per_batch_statistics():
    d, _ = create_models("radford-svhn32", seed=0)
    data = _images(40)
    prepared = recompute_batchnorm(d, data, batch_size=16, progress=False)  # batches of 16, 16, 8
    # by hand: the first batch-norm sees conv2(lrelu(conv1(x))) of each batch
    means, variances = [], []
    for start in (0, 16, 32):
        x = torch.stack([data[i][0] for i in range(start, min(start + 16, 40))])
        with torch.no_grad():
            h = d.main[2](d.main[1](d.main[0](x)))
        means.append(h.mean(dim=(0, 2, 3)))
        variances.append(h.var(dim=(0, 2, 3), unbiased=False))
    bn = prepared.main[3]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0), rtol=1e-4, atol=1e-6)
    assert not prepared.training
    assert torch.equal(d.main[3].running_mean, torch.zeros(128))  # the original is left alone


def test_extraction_is_batch_size_independent_in_eval_mode():
    d, _ = create_models("radford-svhn32", seed=0)
    data = _images(20)
    prepared = recompute_batchnorm(d, data, progress=False)
    a = np.concatenate([f for f, _ in iter_features(prepared, data, FeatureSpec(), batch_size=7, progress=False)])
    b = np.concatenate([f for f, _ in iter_features(prepared, data, FeatureSpec(), batch_size=20, progress=False)])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_extract_to_store_records_provenance(tmp_path):
    arch = get_architecture("radford-svhn32")
    d, g = create_models(arch, seed=0)
    checkpoint = Checkpoint(arch, d, g, {}, None, tmp_path / "x.pt", "abc123", has_running_stats=False)
    data = _images(10)
    fitted = DiscriminatorFeatures(checkpoint).fit(data, progress=False)  # statistics over these images
    out = extract_to_store(fitted, data, tmp_path / "f.h5", progress=False)
    with FeatureStore(out) as store:
        assert store.features.shape == (10, 7168)
        assert store.attrs["checkpoint_sha256"] == "abc123"
        assert store.attrs["batchnorm"] == "recompute"
        assert store.attrs["feature_spec"]["grid"] == 4
        assert store.attrs["dataset"] == "toy" and store.attrs["split"] == "train"
        np.testing.assert_array_equal(store.labels, data.labels)
    with pytest.raises(GanFeaturesError, match="running statistics"):
        extract_to_store(DiscriminatorFeatures(checkpoint, FeatureSpec(batchnorm="running")), data, tmp_path / "g.h5",
                         progress=False)
    with pytest.raises(GanFeaturesError, match="already exists"):
        extract_to_store(fitted, data, out, progress=False)


def test_a_failing_background_write_is_raised_in_the_caller_and_never_blocks_it():
    from gan_features.representations.base import appending_in_background

    class FailingWriter:
        def __init__(self):
            self.rows = []

        def append(self, rows, labels):
            if len(self.rows) == 1:
                raise OSError(28, "No space left on device")
            self.rows.append(rows)

    writer = FailingWriter()
    with pytest.raises(OSError, match="No space left"):
        with appending_in_background(writer) as append:
            for block in range(50):  # far more than the queue holds: the caller must not block
                append(np.full((2, 3), block, dtype=np.float32), np.zeros(2))
    assert len(writer.rows) == 1
    done = []
    with appending_in_background(type("W", (), {"append": lambda self, rows, labels: done.append(rows[0, 0])})()) as append:
        for block in range(5):
            append(np.full((1, 1), block, dtype=np.float32), np.zeros(1))
    assert done == [0, 1, 2, 3, 4]  # every block, in order, written before the block is left


def test_statistics_stop_at_the_last_block_the_features_use():
    d, _ = create_models("radford-svhn32", seed=0)
    prepared = recompute_batchnorm(d, _images(20), progress=False, upto=1)
    first, last = prepared.batchnorm_layers()  # blocks 1 and 2 (block 0 has none)
    assert not torch.equal(first.running_mean, torch.zeros_like(first.running_mean))
    assert torch.equal(last.running_mean, torch.zeros_like(last.running_mean))  # block 2 never ran
    assert torch.equal(last.running_var, torch.ones_like(last.running_var))
