"""Device and numeric-precision choices shared by training and extraction."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import GanFeaturesError

PRECISIONS = ("fp32", "bf16")


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GanFeaturesError(f"device {name!r} asked for but CUDA is not available: use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GanFeaturesError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None


def autocast(device: torch.device, precision: str):
    """bf16 autocast (2-4x faster than fp32 on a CPU with AVX512-BF16 or AMX; ~2x slower where
    emulated), or nothing for fp32."""
    if precision not in PRECISIONS:
        raise GanFeaturesError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
