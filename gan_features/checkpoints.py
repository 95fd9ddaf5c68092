"""Self-describing checkpoints, saved with ``torch.save`` and loaded with ``weights_only=True``.

A checkpoint is a dict of plain values and tensors only (so loading never executes code):

    format        "gan-features/1"
    architecture  Architecture.to_dict(): enough to rebuild both networks
    discriminator state_dict (or None)
    generator     state_dict (or None)
    provenance    dict: how it was made (command, data, seed, steps, source files...)
    training      optional dict for resuming: optimiser states, step, epoch, RNG state, config

Raw state_dicts (pytorch/examples ``netD_epoch_N.pth``, with or without DataParallel's
``module.`` prefix) load too when the architecture is named.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import GanFeaturesError
from .models import Architecture, Discriminator, Generator, get_architecture

FORMAT = "gan-features/1"


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Checkpoint:
    architecture: Architecture
    discriminator: Discriminator | None
    generator: Generator | None
    provenance: dict = field(default_factory=dict)
    training: dict | None = None
    path: Path | None = None
    sha256: str | None = None
    # True when the discriminator's batch-norm running statistics are real (trained in PyTorch);
    # False for imported or raw weights without them, where only recomputed statistics make sense.
    has_running_stats: bool = True


def save_checkpoint(path: str | os.PathLike, architecture: Architecture, discriminator: Discriminator | None,
                    generator: Generator | None, provenance: dict | None = None, training: dict | None = None,
                    half: bool = False, has_running_stats: bool = True) -> Path:
    """Write atomically (temp file, then rename), so a crash never leaves a truncated checkpoint."""
    def state(module):
        if module is None:
            return None
        sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if half:  # compact copies for the repository; integer buffers stay as they are
            sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        return sd

    path = Path(path)
    payload = {
        "format": FORMAT,
        "architecture": architecture.to_dict(),
        "discriminator": state(discriminator),
        "generator": state(generator),
        # plain JSON types only: anything else (e.g. torch.__version__'s class) would make
        # weights_only loading refuse the whole file
        "provenance": json.loads(json.dumps(provenance or {}, default=str)),
        "training": training,
        "has_running_stats": has_running_stats,
    }
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove DataParallel/DistributedDataParallel's key prefix, if every key has it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _load_module(module: torch.nn.Module, state_dict: dict, what: str, path: Path) -> None:
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in strip_prefix(state_dict).items()}
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise GanFeaturesError(
            f"{path}: the {what} weights do not fit architecture {module.arch.name!r} ({detail[:300]}): "
            f"pass the architecture that made them (--arch)"
        ) from None


def load_checkpoint(path: str | os.PathLike, architecture: str | Architecture | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a gan-features checkpoint, or a raw discriminator state_dict when ``architecture`` is given."""
    path = Path(path)
    if not path.exists():
        raise GanFeaturesError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle errors, truncated files, disallowed globals
        raise GanFeaturesError(f"{path} is not a loadable checkpoint ({type(error).__name__}: "
                               f"{str(error).splitlines()[0][:200]})") from None
    sha = file_sha256(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        arch = Architecture.from_dict(payload["architecture"])
        if architecture is not None:
            wanted = architecture if isinstance(architecture, str) else architecture.name
            if wanted != arch.name:
                raise GanFeaturesError(f"{path} holds a {arch.name!r} model, not {wanted!r}: drop --arch or fix it")
        d = g = None
        if payload.get("discriminator") is not None:
            d = Discriminator(arch)
            _load_module(d, payload["discriminator"], "discriminator", path)
        if payload.get("generator") is not None:
            g = Generator(arch)
            _load_module(g, payload["generator"], "generator", path)
        return Checkpoint(arch, d, g, payload.get("provenance") or {}, payload.get("training"), path, sha,
                          bool(payload.get("has_running_stats", True)))
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if architecture is None:
            raise GanFeaturesError(f"{path} is a bare state_dict with no architecture recorded: "
                                   f"pass --arch (e.g. --arch examples64 for pytorch/examples netD files)")
        arch = get_architecture(architecture) if isinstance(architecture, str) else architecture
        d = Discriminator(arch)
        state = strip_prefix(payload)
        _load_module(d, state, "discriminator", path)
        has_stats = any(k.endswith("running_mean") for k in state)
        return Checkpoint(arch, d, None, {"source": "raw state_dict", "file": str(path)}, None, path, sha,
                          has_stats)
    raise GanFeaturesError(f"{path} is neither a gan-features checkpoint nor a state_dict of tensors")
