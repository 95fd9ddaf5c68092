import pytest
import torch

from gan_features.errors import GanFeaturesError
from gan_features.models import ARCHITECTURES, Architecture, Discriminator, create_models, get_architecture

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
