"""Sample grids from a generator: the quickest visual check that a model (or an import) works."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from .output import check_output, writing
from .models import Generator


def grid_latents(generator: Generator, rows: int = 8, cols: int = 8, seed: int = 0,
                 interpolate_row: bool = True) -> torch.Tensor:
    """``rows * cols`` seeded latents, plus a row walking linearly from one latent to another."""
    rng = torch.Generator().manual_seed(seed)
    latents = generator.sample_latents(rows * cols + 2 * interpolate_row, generator=rng)
    if not interpolate_row:
        return latents
    samples, (start, end) = latents[:-2], latents[-2:]
    weights = torch.linspace(0, 1, cols).unsqueeze(1)
    return torch.cat([samples, (1 - weights) * start + weights * end])


@torch.no_grad()
def sample_grid(generator: Generator, path: str | os.PathLike, rows: int = 8, cols: int = 8, seed: int = 0,
                interpolate_row: bool = True, overwrite: bool = True) -> Path:
    """Save a ``rows`` x ``cols`` grid of samples (plus an interpolation row) as a PNG; return its path.

    An existing file at ``path`` is replaced only with ``overwrite`` (the command line passes its
    ``--overwrite``; the default, True, lets scripts regenerate a grid in place). The PNG is
    written aside and renamed into place, so ``path`` is never half-written.

    Our generators normalise with the statistics of the batch being generated (as the paper's did),
    so every image of the grid comes from ONE batch: split it and the images would change.
    """
    path = check_output(path, overwrite, example="samples.png")  # before any work
    parameter = next(generator.parameters())
    latents = grid_latents(generator, rows, cols, seed, interpolate_row)
    images = generator(latents.to(parameter.device, parameter.dtype)).float().cpu()
    grid = make_grid((images + 1) / 2, nrow=cols, padding=2).clamp_(0, 1)  # tanh range [-1, 1] -> [0, 1]
    with writing(path, overwrite=overwrite) as partial:  # locked, renamed when complete: never half a PNG
        save_image(grid, partial, format="PNG")
    return path
