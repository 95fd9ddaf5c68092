"""pytorch/examples DCGAN discriminators (``netD_epoch_N.pth``) load as ``examples64`` and run unchanged.

Their ``netD`` is rebuilt here literally, independently of gan_features.models, so these tests
catch any drift of our layer layout from theirs.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_features import checkpoints
from gan_features.errors import GanFeaturesError

TAPS = (1, 4, 7, 10)  # their LeakyReLUs: the outputs of the four conv blocks


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def their_netd() -> nn.Sequential:
    """``netD.main`` of pytorch/examples dcgan/main.py (nc=3, ndf=64), layer for layer."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False),
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(128, 256, 4, 2, 1, bias=False),
        nn.BatchNorm2d(256),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(256, 512, 4, 2, 1, bias=False),
        nn.BatchNorm2d(512),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(512, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )


class NetD(nn.Module):
    """Their wrapper: the state_dict keys are ``main.0.weight``, ``main.3.running_mean``, ..."""

    def __init__(self):
        super().__init__()
        self.main = their_netd()

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


@pytest.fixture(scope="module")
def theirs() -> NetD:
    """Random weights and random (but valid) running statistics, as after training; eval mode."""
    torch.manual_seed(0)
    net = NetD()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, 0.05)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1234)
    return net.eval()


@pytest.fixture(scope="module", params=["plain", "dataparallel"])
def ours(request, theirs, tmp_path_factory):
    state = theirs.state_dict()
    if request.param == "dataparallel":  # nn.DataParallel(netD).state_dict() prefixes every key
        state = {f"module.{key}": value for key, value in state.items()}
    path = tmp_path_factory.mktemp("examples") / "netD_epoch_24.pth"
    torch.save(state, path)
    checkpoint = checkpoints.load_checkpoint(path, architecture="examples64")
    assert checkpoint.architecture.name == "examples64" and checkpoint.generator is None
    assert checkpoint.has_running_stats
    return checkpoint.discriminator.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_logits_equal_their_outputs_before_the_sigmoid(theirs, ours, images):
    with torch.no_grad():
        their_logits = theirs.main[:-1](images).flatten()
        torch.testing.assert_close(ours(images), their_logits, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(torch.sigmoid(ours(images)), theirs(images), rtol=1e-6, atol=1e-6)
    assert their_logits.std() > 0.1  # not a degenerate comparison


def test_block_activations_match_theirs_layer_by_layer(theirs, ours, images):
    expected, h = [], images
    with torch.no_grad():
        for index, layer in enumerate(theirs.main):
            h = layer(h.clone())  # their LeakyReLUs are in-place: keep each tap intact
            if index in TAPS:
                expected.append(h)
        blocks = ours.block_activations(images)
    assert [tuple(b.shape) for b in blocks] == [(4, 64, 32, 32), (4, 128, 16, 16), (4, 256, 8, 8), (4, 512, 4, 4)]
    for got, want in zip(blocks, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_running_statistics_are_loaded(theirs, ours):
    our_bn = ours.batchnorm_layers()
    their_bn = [m for m in theirs.main if isinstance(m, nn.BatchNorm2d)]
    assert len(our_bn) == len(their_bn) == 3
    for a, b in zip(our_bn, their_bn):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)


def test_32px_input_is_refused(ours):
    with pytest.raises(GanFeaturesError, match="64x64"):
        ours(torch.zeros(2, 3, 32, 32))
    with pytest.raises(GanFeaturesError, match="64x64"):
        ours.block_activations(torch.zeros(2, 3, 32, 32))
