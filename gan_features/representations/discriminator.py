"""Discriminator features: every conv block's activation max-pooled to a grid, concatenated.

For the paper's 32x32 ImageNet discriminator the six blocks (32, 16, 16, 8, 8, 4 px; 128, 128,
256, 256, 512, 512 channels) each pool to 4x4, giving 16 x 1792 = 28672 features per image.
Each block is flattened channel-major, (C, 4, 4) -> C*16, as Theano's ``flatten`` of NCHW did.

Batch-norm at extraction is part of the spec, because it changes the features:
- ``running``: eval mode, the running statistics kept during training. In GAN training they
  average real *and* generated batches, so they describe neither exactly.
- ``recompute``: statistics recomputed over real training images: the mean of per-batch means
  and of per-batch (biased) variances over batches of 128, as the paper's SVHN analysis did.
  The only choice for imported Theano weights, which carry no running statistics.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..checkpoints import Checkpoint
from ..data.base import batch_collate, rows_of
from ..distributed import current_ranks
from ..device import autocast
from ..errors import GanFeaturesError
from ..models import Discriminator
from .base import Representation, describe_dataset

BATCHNORM_MODES = ("recompute", "running")
POOLINGS = ("max", "avg")


@dataclass(frozen=True)
class FeatureSpec:
    """How activations become a feature vector; recorded with every store."""

    grid: int = 4
    pooling: str = "max"
    layers: tuple[int, ...] | None = None  # conv block indices; None = every block
    batchnorm: str = "recompute"
    batchnorm_batch_size: int = 128

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise GanFeaturesError(f"unknown pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise GanFeaturesError(f"unknown batch-norm mode {self.batchnorm!r}: use one of "
                                   f"{', '.join(BATCHNORM_MODES)}")
        if self.grid < 1:
            raise GanFeaturesError(f"grid must be at least 1, got {self.grid}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted(set(int(i) for i in self.layers))))

    def block_indices(self, discriminator: Discriminator) -> tuple[int, ...]:
        count = len(discriminator.feature_taps)
        if self.layers is None:
            return tuple(range(count))
        bad = [i for i in self.layers if not 0 <= i < count]
        if bad:
            raise GanFeaturesError(f"layers {bad} do not exist: {discriminator.arch.name!r} has conv blocks "
                                   f"0..{count - 1}")
        return self.layers

    def dimension(self, discriminator: Discriminator) -> int:
        channels = discriminator.arch.feature_channels
        return sum(channels[i] for i in self.block_indices(discriminator)) * self.grid ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pool_blocks(activations: list[torch.Tensor], spec: FeatureSpec) -> torch.Tensor:
    """Pool each (N, C, H, W) map to (N, C, grid, grid), flatten, concatenate: (N, sum C * grid^2)."""
    pool = F.adaptive_max_pool2d if spec.pooling == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(a, spec.grid).flatten(1) for a in activations], dim=1)


def pooled_features(discriminator: Discriminator, images: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Feature vectors of a batch of images (the model's mode decides how batch-norm normalises)."""
    wanted = spec.block_indices(discriminator)
    activations = discriminator.block_activations(images, upto=max(wanted))
    return pool_blocks([activations[i] for i in wanted], spec)


def _loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=batch_collate(dataset),
                      pin_memory=device.type == "cuda", persistent_workers=False)


@torch.no_grad()
def recompute_batchnorm(discriminator: Discriminator, dataset: Dataset, batch_size: int = 128,
                        device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = True,
                        precision: str = "fp32", upto: int | None = None) -> Discriminator:
    """A copy of the discriminator whose batch-norm statistics come from ``dataset``.

    Each batch runs in training mode (every layer normalised by that batch's own statistics, as
    during training); the statistics each batch-norm layer saw are averaged over batches: the
    mean of the per-batch means and of the per-batch biased variances, accumulated in float64
    (with ``precision="bf16"`` the convolutions feeding them run in bfloat16). Under torchrun each
    rank runs every world-th batch of the same sequence and the sums are added over the ranks: the
    same batches as one process, summed in another order (float64: the float32 statistics agree).

    ``upto``: the last conv block whose statistics are recomputed (default: every block); the layers
    past it are not run and keep the checkpoint's statistics (features that stop at block ``upto``
    never use them: an imported model whose last blocks were not released has no weights there).
    """
    device = torch.device(device)
    ranks = current_ranks(device)
    if ranks.enabled:  # this rank's batches: r, r + world, ... of the one-process sequence
        rows = np.arange(len(dataset))
        mine = [rows[b * batch_size:(b + 1) * batch_size]
                for b in range(ranks.rank, -(-len(dataset) // batch_size), ranks.world)]
        dataset = rows_of(dataset, np.concatenate(mine) if mine else rows[:0])
    model = copy.deepcopy(discriminator).to(device, memory_format=torch.channels_last).train()
    last_block = len(model.feature_taps) - 1 if upto is None else upto
    layers = model.batchnorm_layers(upto=last_block)
    if not layers:
        return model.eval()
    sums = [[torch.zeros(m.num_features, dtype=torch.float64, device=device) for _ in range(2)] for m in layers]
    for m in layers:
        m.momentum = 1.0  # after each batch, a layer's running statistics are that batch's own

    def hook(index):
        # Batch-norm computes each batch's statistics anyway: reading them from its running buffers
        # costs nothing, where a var_mean of our own over the activations took a third of the pass
        # (measured, bf16 on 2 cores). It keeps the unbiased variance; the paper's is the biased one.
        def capture(module, inputs, output):
            count = inputs[0].numel() // module.num_features
            sums[index][0] += module.running_mean.double()
            sums[index][1] += module.running_var.double() * ((count - 1) / count)
        return capture

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    batches = 0
    try:
        for images, _ in tqdm(_loader(dataset, batch_size, num_workers, device), desc="batch-norm statistics",
                              disable=not (progress and ranks.main), leave=False):
            with autocast(device, precision):
                model.block_activations(images.to(device).contiguous(memory_format=torch.channels_last),
                                        upto=last_block)
            batches += 1
    finally:
        for h in handles:
            h.remove()
    if ranks.enabled:  # one all-reduce: the batch count, then each layer's mean and variance sums
        totals = ranks.sum(torch.cat([torch.tensor([float(batches)], dtype=torch.float64, device=device),
                                      *(torch.cat(pair) for pair in sums)]))
        batches = int(totals[0])
        sums = [list(part.chunk(2)) for part in totals[1:].split([2 * m.num_features for m in layers])]
    if batches == 0:
        raise GanFeaturesError("cannot recompute batch-norm statistics from an empty dataset")
    for m, (mean_sum, var_sum) in zip(layers, sums):
        m.running_mean.copy_((mean_sum / batches).to(m.running_mean.dtype))
        m.running_var.copy_((var_sum / batches).to(m.running_var.dtype))
    return model.eval()


def prepare_discriminator(checkpoint: Checkpoint, spec: FeatureSpec, statistics_dataset: Dataset | None,
                          device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = True,
                          precision: str = "fp32") -> Discriminator:
    """The discriminator in eval mode with the batch-norm statistics the spec asks for."""
    if checkpoint.discriminator is None:
        raise GanFeaturesError(f"{checkpoint.path} holds no discriminator")
    if spec.batchnorm == "running":
        if not checkpoint.has_running_stats:
            raise GanFeaturesError(f"{checkpoint.path} has no batch-norm running statistics (imported or raw "
                                   f"weights): use --batchnorm recompute")
        return checkpoint.discriminator.to(device).eval()
    if statistics_dataset is None:
        raise GanFeaturesError("batch-norm mode 'recompute' needs the training images to compute statistics on")
    return recompute_batchnorm(checkpoint.discriminator, statistics_dataset, spec.batchnorm_batch_size, device,
                               num_workers, progress, precision,
                               upto=max(spec.block_indices(checkpoint.discriminator)))


@torch.no_grad()
def iter_features(discriminator: Discriminator, dataset: Dataset, spec: FeatureSpec, batch_size: int = 256,
                  device: str | torch.device = "cpu", precision: str = "fp32", num_workers: int = 0,
                  progress: bool = True, desc: str = "features"):
    """Yield (features float32 (n, D) numpy, labels (n,)) batch by batch, in dataset order."""
    device = torch.device(device)
    # channels_last: measured on a CPU with AVX512-BF16, bf16 autocast with it ran ~2.5x faster than fp32 NCHW
    discriminator = discriminator.to(device, memory_format=torch.channels_last).eval()
    for images, labels in tqdm(_loader(dataset, batch_size, num_workers, device), desc=desc,
                               disable=not progress, unit="batch"):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            features = pooled_features(discriminator, images, spec)
        yield features.float().cpu().numpy(), np.asarray(labels)


class DiscriminatorFeatures(Representation):
    """A checkpoint's discriminator as a representation: :meth:`fit` recomputes the batch-norm
    statistics over the training images (``spec.batchnorm == "recompute"``, the paper's way) or
    takes the checkpoint's running ones; the features are every chosen block pooled to the spec's grid.

    ``precision``: "bf16" autocast (faster where the device multiplies bfloat16 natively) or "fp32";
    ``batch_size``, ``num_workers``: the feature pass's DataLoader (they do not change the features).
    """

    kind = "discriminator"

    def __init__(self, checkpoint: Checkpoint, spec: FeatureSpec = FeatureSpec(), *, precision: str = "fp32",
                 device: str | torch.device = "cpu", batch_size: int = 256, num_workers: int = 0):
        if checkpoint.discriminator is None:
            raise GanFeaturesError(f"{checkpoint.path} holds no discriminator")
        spec.block_indices(checkpoint.discriminator)  # the layers exist
        self.checkpoint, self.spec, self.precision = checkpoint, spec, precision
        self._device = torch.device(device)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.discriminator: Discriminator | None = None  # the prepared one, once fitted
        self.statistics_source: dict | None = None  # the images its batch-norm statistics come from

    def fit(self, train=None, progress: bool = True) -> "DiscriminatorFeatures":
        """Prepare the discriminator: batch-norm statistics over ``train`` (mode ``recompute``; required
        then) or the checkpoint's running statistics (``train`` unused)."""
        self.discriminator = prepare_discriminator(self.checkpoint, self.spec, train, self._device, self.num_workers,
                                                   progress, self.precision)
        recomputed = self.spec.batchnorm == "recompute" and train is not None
        self.statistics_source = describe_dataset(train) if recomputed else None
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dimension(self) -> int:
        return self.spec.dimension(self.checkpoint.discriminator)

    @property
    def feature_units(self) -> int:
        channels = self.checkpoint.architecture.feature_channels
        return max(channels[i] for i in self.spec.block_indices(self.checkpoint.discriminator))

    def blocks(self, dataset, progress: bool = True):
        self.checkpoint.architecture.check_image_size(dataset.image_size)
        if self.discriminator is None:
            if self.spec.batchnorm == "recompute":
                raise GanFeaturesError("batch-norm mode 'recompute' needs the training images to compute statistics "
                                       "on: call fit(training images) first")
            self.fit(None, progress)
        name = f"{getattr(dataset, 'name', 'images')}/{getattr(dataset, 'split', '?')}"
        return iter_features(self.discriminator, dataset, self.spec, self.batch_size, self._device, self.precision,
                             self.num_workers, progress, desc=f"features {name}")

    def store_attrs(self) -> dict:
        checkpoint = self.checkpoint
        return {"checkpoint_sha256": checkpoint.sha256 or "none",
                "checkpoint_path": str(checkpoint.path) if checkpoint.path else "none",
                "architecture": checkpoint.architecture.name,
                "architecture_config": checkpoint.architecture.to_dict(),
                "feature_spec": self.spec.to_dict(), "batchnorm": self.spec.batchnorm,
                "batchnorm_statistics_source": self.statistics_source}
