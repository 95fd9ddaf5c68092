import pytest
import torch

from gan_features.errors import GanFeaturesError
from gan_features.models import (ARCHITECTURES, Architecture, Discriminator, create_models, discriminator_architecture,
                                  get_architecture)

EXPECTED_DIMS = {"radford-imagenet32": 28672, "radford-svhn32": 7168, "examples64": 15360}


def test_registry_has_the_documented_architectures():
    assert set(EXPECTED_DIMS) <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_runs_and_has_its_feature_dimension(name):
    arch = get_architecture(name)
    d, g = create_models(name, seed=0)
    images = g(g.sample_latents(2))
    assert images.shape == (2, 3, arch.image_size, arch.image_size)
    assert images.abs().max() <= 1
    assert d(images).shape == (2,)
    blocks = d.block_activations(images)
    assert [b.shape[1] for b in blocks] == list(arch.feature_channels)
    assert arch.feature_dim() == EXPECTED_DIMS.get(name, arch.feature_dim())


def test_radford_imagenet32_block_sizes_match_the_paper():
    d = Discriminator("radford-imagenet32")
    sizes = [b.shape[-1] for b in d.block_activations(torch.zeros(1, 3, 32, 32))]
    assert sizes == [32, 16, 16, 8, 8, 4]


def test_block_activations_stop_early():
    d = Discriminator("radford-imagenet32")
    assert len(d.block_activations(torch.zeros(1, 3, 32, 32), upto=1)) == 2


def test_examples64_refuses_32px_input_clearly():
    d = Discriminator("examples64")
    with pytest.raises(GanFeaturesError, match="64x64"):
        d.block_activations(torch.zeros(1, 3, 32, 32))


def test_paper_initialisation_statistics():
    d, g = create_models("radford-imagenet32", seed=0)
    conv = d.main[2].weight
    assert abs(conv.std().item() - 0.02) < 0.001 and abs(conv.mean().item()) < 0.001
    bn = d.main[3]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max() == 0


def test_same_seed_same_weights():
    a, _ = create_models("radford-svhn32", seed=3)
    b, _ = create_models("radford-svhn32", seed=3)
    c, _ = create_models("radford-svhn32", seed=4)
    assert torch.equal(a.main[0].weight, b.main[0].weight)
    assert not torch.equal(a.main[0].weight, c.main[0].weight)


def test_architecture_round_trips_through_a_dict():
    arch = get_architecture("radford-svhn32")
    assert Architecture.from_dict(arch.to_dict()) == arch


def test_unknown_architecture_lists_the_choices():
    with pytest.raises(GanFeaturesError, match="radford-imagenet32"):
        get_architecture("resnet")


def test_resize_generator_shares_the_discriminator_and_upsamples_without_a_checkerboard():
    """radford-imagenet32-resize: the same discriminator (state_dict and features) as the paper's
    architecture; its generator's stride-2 layers resize then convolve. Through one stride-2 layer
    of constant weights, a constant map stays constant inside under resize-conv, where the paper's
    3x3 transposed conv alternates 1 and 2 overlapping taps: the checkerboard."""
    paper, resize = get_architecture("radford-imagenet32"), get_architecture("radford-imagenet32-resize")
    assert resize.discriminator == paper.discriminator and resize.feature_dim() == 28672
    d_paper, g_paper = create_models(paper, seed=0)
    d_resize, g_resize = create_models(resize, seed=0)
    assert {k: v.shape for k, v in d_paper.state_dict().items()} == \
        {k: v.shape for k, v in d_resize.state_dict().items()}
    assert sum(isinstance(m, torch.nn.Upsample) for m in g_resize.modules()) == 3
    assert not any(isinstance(m, torch.nn.Upsample) for m in g_paper.modules())

    def first_stride2(g):
        modules = list(g.main)
        start = next(i for i, m in enumerate(modules) if isinstance(m, (torch.nn.Upsample, torch.nn.ConvTranspose2d)))
        layer = torch.nn.Sequential(*modules[start:start + (2 if isinstance(modules[start], torch.nn.Upsample) else 1)])
        for m in layer.modules():
            if hasattr(m, "weight"):
                torch.nn.init.constant_(m.weight, 1.0)
        return layer

    flat = torch.ones(1, 512, 4, 4)
    with torch.no_grad():
        inner_paper = first_stride2(g_paper)(flat)[0, 0, 1:-1, 1:-1]
        inner_resize = first_stride2(g_resize)(flat)[0, 0, 1:-1, 1:-1]
    assert inner_paper.shape == inner_resize.shape == (6, 6)
    assert inner_paper.max() >= 2 * inner_paper.min()  # the checkerboard
    assert torch.equal(inner_resize, torch.full_like(inner_resize, inner_resize[0, 0].item()))


def test_a_generator_only_variant_shares_the_random_discriminator_baseline(tmp_path):
    """The bench makes one random discriminator per discriminator, not per architecture name: the
    resize variant's is radford-imagenet32's, the same weights (D is initialised before G)."""
    assert discriminator_architecture("radford-imagenet32-resize").name == "radford-imagenet32"
    assert all(discriminator_architecture(name).name == name for name in ARCHITECTURES if not name.endswith("-resize"))
    d_paper, _ = create_models("radford-imagenet32", seed=3)
    d_resize, _ = create_models("radford-imagenet32-resize", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(d_paper.state_dict().values(), d_resize.state_dict().values()))
    from gan_features.bench.config import BenchConfig
    from gan_features.bench.run import _discriminators
    from gan_features.bench.stores import FeatureCache
    from gan_features.train import random_checkpoint
    checkpoints = [(name, str(random_checkpoint(name, tmp_path / f"{name}.pt", seed=1)))
                   for name in ("radford-imagenet32-resize", "radford-svhn32", "radford-imagenet32")]
    (tmp_path / "cache").mkdir()
    rows = _discriminators(BenchConfig(checkpoints=checkpoints), FeatureCache(tmp_path / "cache", "ci", "fp32", False))
    assert [label for label, kind, _ in rows if kind == "random init"] == [
        "random radford-imagenet32 discriminator (seed 0)", "random radford-svhn32 discriminator (seed 0)"]


def test_resize_upsampling_needs_same_convs():
    import dataclasses
    arch = dataclasses.replace(get_architecture("examples64"), generator_upsample="resize")  # 4x4 kernels, padding 1
    with pytest.raises(GanFeaturesError, match="kernel = 2 \\* padding \\+ 1"):
        create_models(arch)
    with pytest.raises(GanFeaturesError, match="generator_upsample"):
        create_models(dataclasses.replace(arch, generator_upsample="bilinear"))


def test_architecture_records_without_generator_upsample_load_as_transposed():
    record = get_architecture("radford-imagenet32").to_dict()
    del record["generator_upsample"]  # checkpoints written before the field existed
    assert Architecture.from_dict(record) == get_architecture("radford-imagenet32")
