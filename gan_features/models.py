"""DCGAN generators and discriminators, built from named architectures.

Every discriminator is a ``main`` sequence of conv blocks (conv, optional batch-norm,
LeakyReLU(0.2)) followed by one conv that maps the last block to a single logit. The
activations after each LeakyReLU are the blocks whose max-pooled maps form the features.
The layer order of ``main`` is the pytorch/examples DCGAN layout, so that project's
``netD`` state_dicts load into ``examples64`` with their keys unchanged.

The paper's discriminators end in a dense layer on the flattened 4x4 map; a conv whose kernel
covers that whole map computes the same dot product, which keeps one model class for all.
The sigmoid is left out: training uses logits (``BCEWithLogitsLoss``) for numerical stability.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .errors import GanFeaturesError

# Architecture.generator_upsample: each choice and how a model card names the generator's layers
GENERATOR_UPSAMPLING = {"transposed": "transposed convs",
                        "resize": "nearest-neighbour upsampling by the stride then a stride-1 conv"}
LEAKY_SLOPE = 0.2
INIT_STD = 0.02  # the paper: all weights from N(0, 0.02)


@dataclass(frozen=True)
class ConvSpec:
    """One (transposed) convolution: output channels, kernel, stride, padding, batch-norm after it."""

    out_channels: int
    kernel: int
    stride: int
    padding: int
    batchnorm: bool = True


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a DCGAN pair; stored verbatim in every checkpoint."""

    name: str
    image_size: int
    discriminator: tuple[ConvSpec, ...]
    head_kernel: int  # the final conv to one logit covers the whole last map
    latent_dim: int
    latent_distribution: str  # "uniform" on [-1, 1] or "gaussian"
    generator_input: str  # "dense": linear + BatchNorm1d; "conv": 1x1 -> 4x4 transposed conv
    generator_base_channels: int  # channels of the 4x4 map the generator starts from
    generator: tuple[ConvSpec, ...]  # upsampling convs; the last one outputs the image (tanh)
    image_channels: int = 3
    bn_eps: float = 1e-5
    description: str = ""
    # How the generator's stride-s layers upsample: "transposed", the paper's fractionally-strided
    # convs; "resize", nearest-neighbour upsampling by s then a stride-1 "same" conv (Odena, Dumoulin
    # & Olah 2016, "Deconvolution and Checkerboard Artifacts"): a 3x3 kernel at stride 2 overlaps
    # unevenly (1 and 2 taps in turn), which paints a grid on the samples; resizing first cannot.
    generator_upsample: str = "transposed"

    @property
    def feature_channels(self) -> tuple[int, ...]:
        return tuple(layer.out_channels for layer in self.discriminator)

    def feature_dim(self, grid: int = 4) -> int:
        return sum(self.feature_channels) * grid * grid

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Architecture":
        values = dict(values)
        for key in ("discriminator", "generator"):
            values[key] = tuple(ConvSpec(**layer) for layer in values[key])
        return cls(**values)

    def check_image_size(self, size: int) -> None:
        if size != self.image_size:
            raise GanFeaturesError(
                f"architecture {self.name!r} takes {self.image_size}x{self.image_size} images, got "
                f"{size}x{size}: resize the data to {self.image_size} (--image-size {self.image_size})"
            )


def _radford_imagenet32() -> Architecture:
    d = [(128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)]
    g = [(512, 2), (256, 1), (256, 2), (128, 1), (128, 2), (3, 1)]
    return Architecture(
        name="radford-imagenet32",
        image_size=32,
        discriminator=tuple(ConvSpec(c, 3, s, 1, batchnorm=i > 0) for i, (c, s) in enumerate(d)),
        head_kernel=4,
        latent_dim=256,
        latent_distribution="uniform",
        generator_input="dense",
        generator_base_channels=512,
        generator=tuple(ConvSpec(c, 3, s, 1, batchnorm=i < len(g) - 1) for i, (c, s) in enumerate(g)),
        description="the paper's 32x32 ImageNet DCGAN (Table 1): six 3x3 convs, 28672-d features",
    )


def _radford_svhn32() -> Architecture:
    return Architecture(
        name="radford-svhn32",
        image_size=32,
        discriminator=tuple(ConvSpec(c, 5, 2, 2, batchnorm=i > 0) for i, c in enumerate([64, 128, 256])),
        head_kernel=4,
        latent_dim=100,
        latent_distribution="gaussian",
        generator_input="dense",
        generator_base_channels=256,
        generator=tuple(ConvSpec(c, 5, 2, 2, batchnorm=c != 3) for c in [128, 64, 3]),
        description="the paper's SVHN DCGAN (Table 2): three 5x5 stride-2 convs, 7168-d features",
    )


def _examples64() -> Architecture:
    return Architecture(
        name="examples64",
        image_size=64,
        discriminator=tuple(ConvSpec(c, 4, 2, 1, batchnorm=i > 0) for i, c in enumerate([64, 128, 256, 512])),
        head_kernel=4,
        latent_dim=100,
        latent_distribution="gaussian",
        generator_input="conv",
        generator_base_channels=512,
        generator=tuple(ConvSpec(c, 4, 2, 1, batchnorm=c != 3) for c in [256, 128, 64, 3]),
        description="pytorch/examples DCGAN (64x64, 4x4 kernels, ndf=ngf=64), 15360-d features",
    )


def _radford_imagenet32_resize() -> Architecture:
    return dataclasses.replace(
        _radford_imagenet32(), name="radford-imagenet32-resize", generator_upsample="resize",
        description="radford-imagenet32 (the same discriminator and 28672-d features) with a resize-conv "
                    "generator: nearest-neighbour upsampling then 3x3 convs, no checkerboard artefacts")


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a for a in (_radford_imagenet32(), _radford_imagenet32_resize(), _radford_svhn32(), _examples64())
}
DEFAULT_ARCHITECTURE = "radford-imagenet32"


def discriminator_architecture(arch: Architecture | str) -> Architecture:
    """The first registered architecture with ``arch``'s discriminator (itself, unless only its generator is
    new): a random discriminator baseline is one per discriminator, and create_models initialises D before G,
    so both architectures' random discriminators are the same weights."""
    def discriminator_fields(a: Architecture) -> tuple:
        return a.image_size, a.discriminator, a.head_kernel, a.image_channels, a.bn_eps

    arch = _as_architecture(arch)
    return next((a for a in ARCHITECTURES.values() if discriminator_fields(a) == discriminator_fields(arch)), arch)


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise GanFeaturesError(
            f"unknown architecture {name!r}: choose one of {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def _as_architecture(arch: Architecture | str) -> Architecture:
    return get_architecture(arch) if isinstance(arch, str) else arch


class Discriminator(nn.Module):
    def __init__(self, arch: Architecture | str = DEFAULT_ARCHITECTURE):
        super().__init__()
        self.arch = _as_architecture(arch)
        layers: list[nn.Module] = []
        taps: list[int] = []
        channels = self.arch.image_channels
        for spec in self.arch.discriminator:
            layers.append(nn.Conv2d(channels, spec.out_channels, spec.kernel, spec.stride, spec.padding, bias=False))
            if spec.batchnorm:
                layers.append(nn.BatchNorm2d(spec.out_channels, eps=self.arch.bn_eps))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
            taps.append(len(layers) - 1)
            channels = spec.out_channels
        layers.append(nn.Conv2d(channels, 1, self.arch.head_kernel, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        self.feature_taps = tuple(taps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Real/fake logits, shape (N,)."""
        self.arch.check_image_size(images.shape[-1])
        return self.main(images).flatten()

    def block_activations(self, images: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """The output of conv blocks 0..upto (after each LeakyReLU; default all), in layer order.

        Layers past block ``upto``, and the head, are not run.
        """
        self.arch.check_image_size(images.shape[-1])
        last = self.feature_taps[-1 if upto is None else upto]
        outputs = []
        h = images
        for index, layer in enumerate(self.main[: last + 1]):
            h = layer(h)
            if index in self.feature_taps:
                outputs.append(h)
        return outputs

    def batchnorm_layers(self, upto: int | None = None) -> list[nn.BatchNorm2d]:
        """The batch-norm layers of conv blocks 0..upto (default: all), in layer order."""
        last = self.feature_taps[-1 if upto is None else upto]
        return [m for m in self.main[:last + 1] if isinstance(m, nn.BatchNorm2d)]


class Generator(nn.Module):
    """Maps latent vectors to images in [-1, 1].

    Batch-norm here always uses the statistics of the batch being generated (as both the paper's
    code and pytorch/examples do), so it keeps no running statistics.
    """

    def __init__(self, arch: Architecture | str = DEFAULT_ARCHITECTURE):
        super().__init__()
        self.arch = _as_architecture(arch)
        a = self.arch
        base = a.generator_base_channels
        if a.generator_input == "dense":
            layers: list[nn.Module] = [
                nn.Linear(a.latent_dim, base * 16, bias=False),
                nn.BatchNorm1d(base * 16, eps=a.bn_eps, track_running_stats=False),
                nn.ReLU(),
                nn.Unflatten(1, (base, 4, 4)),
            ]
        elif a.generator_input == "conv":
            layers = [
                nn.Unflatten(1, (a.latent_dim, 1, 1)),
                nn.ConvTranspose2d(a.latent_dim, base, 4, 1, 0, bias=False),
                nn.BatchNorm2d(base, eps=a.bn_eps, track_running_stats=False),
                nn.ReLU(),
            ]
        else:
            raise GanFeaturesError(f"unknown generator_input {a.generator_input!r}: use 'dense' or 'conv'")
        if a.generator_upsample not in GENERATOR_UPSAMPLING:
            raise GanFeaturesError(f"unknown generator_upsample {a.generator_upsample!r}: use one of "
                                   f"{', '.join(GENERATOR_UPSAMPLING)}")
        channels = base
        for i, spec in enumerate(a.generator):
            if a.generator_upsample == "resize" and spec.stride > 1:
                if spec.kernel != 2 * spec.padding + 1:
                    raise GanFeaturesError(f"generator_upsample='resize' needs 'same' convs (kernel = 2 * padding + 1), "
                                           f"got kernel {spec.kernel} with padding {spec.padding}")
                layers += [nn.Upsample(scale_factor=spec.stride, mode="nearest"),
                           nn.Conv2d(channels, spec.out_channels, spec.kernel, 1, spec.padding, bias=False)]
            else:
                # output_padding makes every layer exactly `stride` times larger, as Theano's deconv did
                output_padding = spec.stride + 2 * spec.padding - spec.kernel
                layers.append(nn.ConvTranspose2d(channels, spec.out_channels, spec.kernel, spec.stride,
                                                 spec.padding, output_padding=output_padding, bias=False))
            if i == len(a.generator) - 1:
                layers.append(nn.Tanh())
            else:
                if spec.batchnorm:
                    layers.append(nn.BatchNorm2d(spec.out_channels, eps=a.bn_eps, track_running_stats=False))
                layers.append(nn.ReLU())
            channels = spec.out_channels
        self.main = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.main(latents)

    def sample_latents(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        shape = (n, self.arch.latent_dim)
        if self.arch.latent_distribution == "uniform":
            return torch.rand(shape, generator=generator, device=device) * 2 - 1
        return torch.randn(shape, generator=generator, device=device)


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """The paper's initialisation: conv/linear weights N(0, 0.02); batch-norm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                m.weight.normal_(0.0, INIT_STD, generator=generator)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            with torch.no_grad():
                m.weight.normal_(1.0, INIT_STD, generator=generator)
                m.bias.zero_()
    return module


def create_models(arch: Architecture | str = DEFAULT_ARCHITECTURE, seed: int | None = 0
                  ) -> tuple[Discriminator, Generator]:
    """A freshly initialised (discriminator, generator) pair; same seed, same weights."""
    arch = _as_architecture(arch)
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    return init_weights(Discriminator(arch), rng), init_weights(Generator(arch), rng)
