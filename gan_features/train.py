"""Adversarial training of a DCGAN pair (the paper's recipe), on one device or many via torchrun.

Defaults are the paper's: Adam(lr 2e-4, betas (0.5, 0.999)), batch 128, N(0, 0.02) init,
LeakyReLU 0.2 in D, ReLU in G, the non-saturating generator loss. Checkpoints carry everything
needed to resume (optimisers, step, RNG state, config), are written atomically every epoch and
every ``checkpoint_every`` steps, and resuming refuses a different architecture. ``init_from``
starts a new run from another run's weights (an exported fp16 checkpoint has no optimiser state,
so Adam starts afresh): how a finished reference is trained for longer.

Multi-GPU: run under ``torchrun --nproc-per-node N -m gan_features.cli train ...``. Each rank
draws its own slice of every epoch (DistributedSampler) and normalises with its own batch
statistics (no SyncBatchNorm, as in single-device DCGAN); only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .checkpoints import load_checkpoint, save_checkpoint
from .data.base import batch_collate
from .device import autocast, pick_device
from .distributed import Ranks
from .errors import GanFeaturesError
from .models import Architecture, Discriminator, Generator, create_models, get_architecture
from .output import writing
from .provenance import command_line


def epoch_checkpoint_name(epoch: int) -> str:
    """The file a run folder keeps for the end of ``epoch`` (1-based): epoch0001.pt, epoch0002.pt, ..."""
    return f"epoch{epoch:04d}.pt"


@dataclass
class TrainConfig:
    arch: str = "radford-imagenet32"
    dataset: str = "digits"
    data_root: str | None = None
    split: str = "train"
    out_dir: str = "runs/dcgan"
    steps: int | None = None  # total optimiser steps; None = epochs * steps per epoch
    epochs: int = 1
    batch_size: int = 128  # the global batch: split evenly over the ranks under torchrun
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "bf16": autocast; on CPU ~1.7x faster per step here
    num_workers: int = 0
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end
    log_every: int = 10
    samples_every_epoch: bool = True
    resume: bool = False
    init_from: str | None = None  # a checkpoint whose D and G weights start the run (fresh optimisers)


class _AdversarialPair(nn.Module):
    """D on a real and a fake batch in one forward call, so DDP sees one forward per backward.

    The two batches stay separate forward passes inside, so each is normalised by its own
    batch statistics, as in the paper's code.
    """

    def __init__(self, discriminator: Discriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        return self.discriminator(real), self.discriminator(fake)


def _weights_sha256(*models: nn.Module) -> str:
    """A digest of every parameter, to compare replicas across ranks. Batch-norm buffers are left out:
    D's forward on the fakes in the G step updates them on each rank alone, and DDP sends rank 0's to
    every rank at the next step (rank 0's are the ones saved)."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in model.named_parameters():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def initial_weights(path: str | os.PathLike, arch: Architecture, map_location: str | torch.device = "cpu"):
    """The checkpoint at ``path`` if it can start a run of ``arch`` (same architecture, both networks),
    else a one-line GanFeaturesError saying what to pass instead."""
    checkpoint = load_checkpoint(path, map_location=map_location)
    if checkpoint.architecture.name != arch.name:
        raise GanFeaturesError(f"--init-from {path} holds a {checkpoint.architecture.name!r} pair, not {arch.name!r}: "
                               f"pass --arch {checkpoint.architecture.name} or a checkpoint of {arch.name}")
    if checkpoint.generator is None:
        raise GanFeaturesError(f"--init-from {path} has no generator (a discriminator alone cannot continue "
                               f"adversarial training): pass a checkpoint written by `gan-features train` or `export`")
    return checkpoint


def train(config: TrainConfig, dataset: Dataset, progress: bool = True) -> Path:
    """Train (or resume) and return the path of the final checkpoint ``<out_dir>/final.pt``."""
    device = pick_device(config.device)
    ddp = Ranks(device)
    device = ddp.device
    try:
        return _train(config, dataset, ddp, device, progress)
    finally:
        ddp.close()


def _train(config: TrainConfig, dataset: Dataset, ddp: Ranks, device: torch.device, progress: bool) -> Path:
    out_dir = Path(config.out_dir)
    latest = out_dir / "latest.pt"
    arch = get_architecture(config.arch)
    arch.check_image_size(dataset.image_size)
    if config.batch_size % ddp.world:
        raise GanFeaturesError(f"--batch-size {config.batch_size} is the global batch and must split evenly over "
                               f"{ddp.world} ranks: pass a multiple of {ddp.world}")
    rank_batch = config.batch_size // ddp.world  # DDP averages the ranks' gradients: one global batch's
    if len(dataset) < config.batch_size:
        raise GanFeaturesError(f"{len(dataset)} images is fewer than one batch of {config.batch_size}: "
                               f"lower --batch-size")
    if ddp.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if latest.exists() and not config.resume:
            raise GanFeaturesError(f"{out_dir} already holds a run: pass --resume to continue it or choose "
                                   f"another --out-dir")

    torch.manual_seed(config.seed + ddp.rank)
    discriminator, generator = create_models(arch, seed=config.seed)
    # channels_last: measured on 2 CPU cores, a radford-imagenet32 step 1.8x faster in bf16 (1.3x fp32)
    discriminator.to(device, memory_format=torch.channels_last)
    generator.to(device, memory_format=torch.channels_last)
    betas = (config.beta1, config.beta2)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    step, epoch, resumed_seconds = 0, 0, 0.0
    if config.resume and latest.exists():
        checkpoint = load_checkpoint(latest, map_location=device)
        if checkpoint.architecture.name != arch.name:
            raise GanFeaturesError(f"{latest} was trained as {checkpoint.architecture.name!r}, not {arch.name!r}: "
                                   f"resume with --arch {checkpoint.architecture.name}")
        discriminator.load_state_dict(checkpoint.discriminator.state_dict())
        generator.load_state_dict(checkpoint.generator.state_dict())
        state = checkpoint.training
        opt_d.load_state_dict(state["opt_d"])
        opt_g.load_state_dict(state["opt_g"])
        step, epoch = int(state["step"]), int(state["epoch"])
        rng_by_rank = state.get("rng_by_rank", [state["rng"]])  # one state per rank, in rank order
        if len(rng_by_rank) != ddp.world:
            raise GanFeaturesError(f"{latest} was saved by a run of {len(rng_by_rank)} rank(s): resume it with as "
                                   f"many (torchrun --nproc-per-node {len(rng_by_rank)}), not {ddp.world}")
        torch.set_rng_state(rng_by_rank[ddp.rank]["torch"])
        resumed_seconds = float(checkpoint.provenance.get("wall_seconds", 0.0))
        init = checkpoint.provenance.get("init")
    elif config.init_from:
        start = initial_weights(config.init_from, arch, map_location=device)
        discriminator.load_state_dict(start.discriminator.state_dict())
        generator.load_state_dict(start.generator.state_dict())
        init = {"checkpoint": str(config.init_from), "sha256": start.sha256,
                "images_seen": start.provenance.get("images_seen"), "step": start.provenance.get("step")}
    else:
        init = None

    pair = _AdversarialPair(discriminator)
    pair_ddp = DistributedDataParallel(pair) if ddp.enabled else pair
    generator_ddp = DistributedDataParallel(generator) if ddp.enabled else generator

    sampler = DistributedSampler(dataset, ddp.world, ddp.rank, shuffle=True, seed=config.seed,
                                 drop_last=True) if ddp.enabled else None
    loader_rng = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=rank_batch, shuffle=sampler is None, sampler=sampler,
                        drop_last=True, num_workers=config.num_workers, generator=loader_rng,
                        collate_fn=batch_collate(dataset),
                        pin_memory=device.type == "cuda", persistent_workers=config.num_workers > 0)
    steps_per_epoch = len(loader)
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    fixed_latents = generator.sample_latents(64, torch.Generator().manual_seed(config.seed)).to(device)
    log_path = out_dir / "log.jsonl"
    provenance = {"config": dataclasses.asdict(config), "dataset": getattr(dataset, "describe", dict)(),
                  "world_size": ddp.world, "device": str(device), "torch_version": torch.__version__,
                  "command": command_line(), **({"init": init} if init else {})}

    def save(path: Path, final: bool = False) -> None:
        """Every rank calls it (it gathers each rank's RNG state and, under torchrun, weights' digest);
        rank 0 writes."""
        rng_by_rank = ddp.gather(_rng_state())
        digests = ddp.gather(_weights_sha256(discriminator, generator)) if ddp.enabled else None
        if digests and len(set(digests)) > 1:  # DDP keeps the replicas equal; if not, the run is not one model
            raise GanFeaturesError(f"the ranks' weights differ at step {step} (sha256 {', '.join(d[:12] for d in digests)}):"
                                   f" a rank saw other data or settings; rerun from the last checkpoint")
        if not ddp.main:
            return
        training = {"opt_d": opt_d.state_dict(), "opt_g": opt_g.state_dict(), "step": step, "epoch": epoch,
                    "rng": rng_by_rank[0], "rng_by_rank": rng_by_rank, "config": dataclasses.asdict(config)}
        save_checkpoint(path, arch, discriminator, generator,
                        {**provenance, "step": step, "epoch": epoch, "images_seen": step * config.batch_size,
                         **({"weights_sha256_by_rank": digests} if digests else {}),
                         "wall_seconds": round(time.time() - started + resumed_seconds, 1)},
                        training=None if final else training)

    started = time.time()
    bar = tqdm(total=total_steps, initial=step, desc=f"train {arch.name}", unit="step",
               disable=not (progress and ddp.main))
    discriminator.train()
    generator.train()
    log_file = open(log_path, "a") if ddp.main else None
    try:
        while step < total_steps:
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader_rng.manual_seed(config.seed + epoch)  # the same epoch order after a resume
            done_this_epoch = step - epoch * steps_per_epoch
            for batch_index, (real, _) in enumerate(loader):
                if batch_index < done_this_epoch:
                    continue  # resumed mid-epoch: skip the batches already trained on
                real = real.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                losses = _adversarial_step(real, generator, generator_ddp,
                                           discriminator, pair_ddp, opt_d, opt_g, config.precision)
                step += 1
                bar.update(1)
                if not all(math.isfinite(v) for v in losses.values()):
                    raise GanFeaturesError(f"training diverged at step {step} ({losses}): lower --lr or use "
                                           f"--precision fp32")
                # every epoch's end too: its checkpoint then has losses up to its step (export needs them)
                if log_file and (step % config.log_every == 0 or step % steps_per_epoch == 0 or step == total_steps):
                    record = {"step": step, "epoch": epoch, **{k: round(v, 5) for k, v in losses.items()},
                              "seconds": round(time.time() - started + resumed_seconds, 3)}
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    bar.set_postfix(loss_d=f"{losses['loss_d']:.3f}", loss_g=f"{losses['loss_g']:.3f}")
                if step % config.checkpoint_every == 0 and step % steps_per_epoch:
                    save(latest)  # at an epoch's end: below, after that epoch's own files
                if step >= total_steps:
                    break
            if step == (epoch + 1) * steps_per_epoch:
                epoch += 1
                # latest.pt last: a run killed before it redoes this epoch's files on --resume
                save(out_dir / epoch_checkpoint_name(epoch))
                if ddp.main and config.samples_every_epoch:
                    _write_samples(generator, fixed_latents, out_dir / f"samples_epoch{epoch:04d}.png")
                save(latest)
        save(latest)
        save(out_dir / "final.pt", final=True)
    finally:
        bar.close()
        if log_file:
            log_file.close()
    return out_dir / "final.pt"


def _adversarial_step(real, generator, generator_ddp, discriminator, pair_ddp, opt_d, opt_g,
                      precision: str) -> dict[str, float]:
    """One D step then one G step (non-saturating loss), as in the paper's code."""
    device = real.device
    bce = nn.BCEWithLogitsLoss()
    latents = generator.sample_latents(real.shape[0], device=device)
    with autocast(device, precision):
        fake = generator_ddp(latents)
        logits_real, logits_fake = pair_ddp(real, fake.detach())
        ones, zeros = torch.ones_like(logits_real), torch.zeros_like(logits_fake)
        loss_d = bce(logits_real, ones) + bce(logits_fake, zeros)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # G step: gradients flow through D to G, but D's own weights are frozen (and not DDP-synced)
    discriminator.requires_grad_(False)
    with autocast(device, precision):
        loss_g = bce(discriminator(fake), ones)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    discriminator.requires_grad_(True)
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
            "d_real": torch.sigmoid(logits_real.float()).mean().item(),
            "d_fake": torch.sigmoid(logits_fake.float()).mean().item()}


@torch.no_grad()
def _write_samples(generator: Generator, latents: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image

    images = generator(latents).float().add(1).div(2).clamp(0, 1)
    with writing(path, keep_suffix=True) as partial:  # save_image picks the format from the suffix
        save_image(images, partial, nrow=8)


def random_checkpoint(arch: str | Architecture, out: str | os.PathLike, seed: int = 0) -> Path:
    """A freshly initialised pair saved as a checkpoint: the 'random discriminator' baseline."""
    arch = get_architecture(arch) if isinstance(arch, str) else arch
    discriminator, generator = create_models(arch, seed=seed)
    return save_checkpoint(out, arch, discriminator, generator,
                           {"source": "random initialisation N(0, 0.02)", "seed": seed},
                           has_running_stats=False)
