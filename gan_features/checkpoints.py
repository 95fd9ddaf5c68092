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

from .errors import GanFeaturesError, one_line, shortened
from .models import GENERATOR_UPSAMPLING, Architecture, Discriminator, Generator, get_architecture
from .output import writing

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
    with writing(path) as partial:  # locked, renamed when complete; a full disk is one line
        torch.save(payload, partial)
    return path


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove DataParallel/DistributedDataParallel's key prefix, if every key has it."""
    if state_dict and all(isinstance(k, str) and k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


REMAKE = ("make it again (`gan-features train`, `gan-features init` or `gan-features import-radford`) "
          "or copy it again from where it came from")


def _short_repr(value: object, limit: int = 80) -> str:
    return shortened(repr(value), limit)


def _bad_checkpoint(path: Path, problem: str, fix: str = REMAKE) -> GanFeaturesError:
    """The one-line refusal of a malformed checkpoint: which file, what is wrong, how to fix it."""
    return GanFeaturesError(one_line(f"checkpoint {path}: {problem}: {fix}"))


def _load_error(path: Path, error: Exception) -> GanFeaturesError:
    """One line for whatever ``torch.load`` raised: the global a weights_only refusal names, else
    the specific part of torch's (often multi-paragraph) message."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    refused = re.search(r"GLOBAL ([^\s]+)", text)
    if refused:
        name = refused.group(1).rstrip(".,;:")
        if "." not in name:  # torch prints builtins.exec as "exec"
            name = "builtins." + name
        module, _, attribute = name.rpartition(".")
        if module in ("posix", "nt"):  # os.system pickles as posix.system
            name = f"{name} (os.{attribute})"
        return GanFeaturesError(one_line(
            f"{path} is not a loadable checkpoint: it asks to run or build the Python object {name[:300]}, "
            f"which safe loading (torch.load with weights_only=True) refuses, so nothing in it was run: "
            f"use checkpoints from sources you trust, saved as plain tensors (`gan-features train`/`init`)"))
    text = text.split("Check the documentation of torch.load", 1)[0]
    if "WeightsUnpickler error:" in text:
        text = text.rsplit("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed."):
        text = text[len("Weights only load failed."):]
        for boilerplate in (getattr(torch.serialization, "UNSAFE_MESSAGE", None),
                            "Please file an issue with the following so that we can make "
                            "`weights_only=True` compatible with your use case:"):
            if boilerplate:
                text = text.replace(boilerplate, "")
    detail = one_line(text)
    if len(detail) > 120 and ". " in detail:  # torch's first sentence says it; the rest is advice
        detail = detail.split(". ", 1)[0]
    if len(detail) > 300:
        detail = detail[:297] + "..."
    what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return GanFeaturesError(one_line(f"{path} is not a loadable checkpoint: the file is empty (0 bytes): "
                                          f"{REMAKE}"))
    return GanFeaturesError(one_line(f"{path} is not a loadable checkpoint ({what}): it is truncated, damaged "
                                      f"or not a PyTorch checkpoint: {REMAKE}"))


def _check_architecture(arch: Architecture, path: Path) -> None:
    """Refuse architecture records no registered architecture could have written (wrong types,
    absurd sizes), before anything is built from them."""
    def bad(field_name: str, value: object, wanted: str) -> GanFeaturesError:
        return _bad_checkpoint(path, f"architecture field {field_name}={_short_repr(value)} is not {wanted}")

    def integer(field_name: str, value: object, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(field_name, value, f"an integer in [{low}, {high}]")

    if not isinstance(arch.name, str) or not arch.name:
        raise bad("name", arch.name, "a name")
    integer("image_size", arch.image_size, 1, 4096)
    integer("head_kernel", arch.head_kernel, 1, 4096)
    integer("latent_dim", arch.latent_dim, 1, 1 << 16)
    integer("generator_base_channels", arch.generator_base_channels, 1, 1 << 16)
    integer("image_channels", arch.image_channels, 1, 64)
    if arch.latent_distribution not in ("uniform", "gaussian"):
        raise bad("latent_distribution", arch.latent_distribution, "'uniform' or 'gaussian'")
    if arch.generator_input not in ("dense", "conv"):
        raise bad("generator_input", arch.generator_input, "'dense' or 'conv'")
    if arch.generator_upsample not in GENERATOR_UPSAMPLING:
        raise bad("generator_upsample", arch.generator_upsample, " or ".join(map(repr, GENERATOR_UPSAMPLING)))
    eps = arch.bn_eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise bad("bn_eps", eps, "a number in (0, 1)")
    if not isinstance(arch.description, str):
        raise bad("description", arch.description, "text")
    for role in ("discriminator", "generator"):
        layers = getattr(arch, role)
        if not 1 <= len(layers) <= 64:
            raise bad(role, layers, "a list of 1 to 64 layers")
        for i, spec in enumerate(layers):
            integer(f"{role}[{i}].out_channels", spec.out_channels, 1, 1 << 16)
            integer(f"{role}[{i}].kernel", spec.kernel, 1, 64)
            integer(f"{role}[{i}].stride", spec.stride, 1, 64)
            integer(f"{role}[{i}].padding", spec.padding, 0, 64)
            if not isinstance(spec.batchnorm, bool):
                raise bad(f"{role}[{i}].batchnorm", spec.batchnorm, "true or false")


def _check_buildable(arch: Architecture, path: Path, networks: list[type[torch.nn.Module]]) -> None:
    """Build ``networks`` on the meta device (no memory) and run them on one meta input: refuse an
    architecture whose layers do not fit together, or whose weights could not all be in the file
    (a crafted record declaring a huge network would otherwise allocate it before any check)."""
    try:
        with torch.device("meta"):
            modules = [cls(arch).eval() for cls in networks]
            for module in modules:
                if isinstance(module, Discriminator):
                    out = module(torch.empty(2, arch.image_channels, arch.image_size, arch.image_size))
                    wanted: tuple[int, ...] = (2,)
                else:  # two latents: the generator's batch-norm always uses batch statistics
                    out = module(torch.empty(2, arch.latent_dim))
                    wanted = (2, arch.image_channels, arch.image_size, arch.image_size)
                if tuple(out.shape) != wanted:
                    raise ValueError(f"the {type(module).__name__.lower()} outputs shape {tuple(out.shape)} "
                                     f"instead of {wanted}")
    except Exception as error:  # noqa: BLE001 - layer sizes that do not fit: one line
        raise _bad_checkpoint(path, f"its architecture {_short_repr(arch.name)} cannot be built "
                                    f"({type(error).__name__}: {one_line(error)[:200]})") from None
    weights = sum(t.numel() for module in modules for t in module.state_dict().values())
    size = path.stat().st_size
    if weights > size:  # a generous bound: every stored weight takes at least 2 bytes (float16)
        raise _bad_checkpoint(path, f"its architecture {_short_repr(arch.name)} has {weights:,} weights but the "
                                    f"file is only {size:,} bytes (truncated or crafted)")


def _load_module(module: torch.nn.Module, state_dict: dict, what: str, path: Path) -> None:
    """Load ``state_dict`` into ``module``, refusing in one line anything that is not exactly the
    module's tensors: other keys, shapes or kinds of tensor, NaN or infinite weights."""
    def misfit(detail: str) -> GanFeaturesError:
        return GanFeaturesError(one_line(
            f"{path}: the {what} weights do not fit architecture {module.arch.name!r} ({detail}): "
            f"pass the architecture that made them (--arch)"))

    if not isinstance(state_dict, dict):
        raise _bad_checkpoint(path, f"the {what} weights are a {type(state_dict).__name__}, not a dict of tensors")
    if not all(isinstance(key, str) for key in state_dict):
        key = next(key for key in state_dict if not isinstance(key, str))
        raise _bad_checkpoint(path, f"the {what} weights have a key {_short_repr(key)} that is not a name")
    state_dict = strip_prefix(state_dict)
    expected = module.state_dict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise _bad_checkpoint(path, f"the {what} weight {_short_repr(key)} is a {type(value).__name__}, "
                                        f"not a tensor")
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        parts = [f"{label} {', '.join(_short_repr(k, 40) for k in keys[:3])}{', ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise misfit("; ".join(parts))
    loaded = {}
    for key, target in expected.items():
        value = state_dict[key]
        if tuple(value.shape) != tuple(target.shape):
            raise misfit(f"{key} has shape {tuple(value.shape)}, the architecture needs {tuple(target.shape)}")
        if (value.layout != torch.strided or value.is_meta or value.is_quantized or value.is_complex()
                or value.is_floating_point() != target.is_floating_point() or value.dtype == torch.bool):
            raise _bad_checkpoint(path, f"the {what} weight {key} is a {value.dtype} {value.layout} tensor, "
                                        f"not the {target.dtype} tensor the architecture needs")
        if value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise _bad_checkpoint(path, f"the {what} weight {key} has NaN or infinite values",
                                      "the run diverged: use an earlier checkpoint of it")
            value = value.float()
        loaded[key] = value
    try:
        module.load_state_dict(loaded)
    except RuntimeError as error:
        raise misfit(one_line(error)[:300]) from None


def _training_state(training: object, path: Path, both_networks: bool) -> dict | None:
    """The resumable training state, checked for what resuming reads (see gan_features.train)."""
    if training is None:
        return None
    if not isinstance(training, dict):
        raise _bad_checkpoint(path, f"its 'training' record is a {type(training).__name__}, not a dict")
    for key in ("opt_d", "opt_g", "rng"):
        if not isinstance(training.get(key), dict):
            raise _bad_checkpoint(path, f"its 'training' record has no {key!r} dict")
    for key in ("step", "epoch"):
        value = training.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad_checkpoint(path, f"its 'training' record has {key}={_short_repr(value)}, not a count")
    rng = training["rng"].get("torch")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise _bad_checkpoint(path, "its 'training' record has no torch RNG state (a uint8 tensor)")
    if not both_networks:
        raise _bad_checkpoint(path, "it has a 'training' record for resuming but not both networks")
    return training


def load_checkpoint(path: str | os.PathLike, architecture: str | Architecture | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a gan-features checkpoint, or a raw discriminator state_dict when ``architecture`` is given.

    Anything but a well-formed checkpoint (empty, truncated, pickled code, other records, weights
    that do not fit) is refused with a one-line GanFeaturesError; nothing in the file is executed.
    """
    path = Path(path)
    if not path.exists():
        raise GanFeaturesError(one_line(f"checkpoint {path} does not exist"))
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle errors, truncated files, disallowed globals
        raise _load_error(path, error) from None
    sha = file_sha256(path)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(fmt, str) and fmt == FORMAT:
        return _gan_features_checkpoint(payload, path, sha, architecture)
    if isinstance(fmt, str) and fmt.startswith("gan-features/"):
        raise _bad_checkpoint(path, f"it is in checkpoint format {_short_repr(fmt)}; this gan-features reads "
                                    f"{FORMAT!r}", "use the gan-features version that wrote it")
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if architecture is None:
            raise GanFeaturesError(one_line(f"{path} is a bare state_dict with no architecture recorded: "
                                             f"pass --arch (e.g. --arch examples64 for pytorch/examples netD files)"))
        arch = get_architecture(architecture) if isinstance(architecture, str) else architecture
        d = Discriminator(arch)
        _load_module(d, payload, "discriminator", path)
        has_stats = any(k.endswith("running_mean") for k in strip_prefix(payload))
        return Checkpoint(arch, d, None, {"source": "raw state_dict", "file": str(path)}, None, path, sha,
                          has_stats)
    held = f"a dict with keys {_short_repr(sorted(map(str, payload))[:5])}" if isinstance(payload, dict) \
        else f"a {type(payload).__name__}"
    raise GanFeaturesError(one_line(
        f"{path} is neither a gan-features checkpoint nor a state_dict of tensors (it holds {held}): "
        f"pass a file written by `gan-features train`, `init` or `import-radford`, or a discriminator "
        f"state_dict with --arch"))


def _gan_features_checkpoint(payload: dict, path: Path, sha: str,
                             architecture: str | Architecture | None) -> Checkpoint:
    """A ``gan-features/1`` payload, every record checked before anything is built from it."""
    record = payload.get("architecture")
    if not isinstance(record, dict):
        raise _bad_checkpoint(path, f"its 'architecture' record is {_short_repr(record)}, not a dict")
    try:
        arch = Architecture.from_dict(record)
    except Exception as error:  # noqa: BLE001 - missing or unknown fields, layers that are not dicts
        raise _bad_checkpoint(path, f"its 'architecture' record is malformed ({type(error).__name__}: "
                                    f"{one_line(error)[:200]})") from None
    _check_architecture(arch, path)
    if architecture is not None:
        wanted = architecture if isinstance(architecture, str) else architecture.name
        if wanted != arch.name:
            raise GanFeaturesError(one_line(f"{path} holds a {arch.name!r} model, not {wanted!r}: "
                                             f"drop --arch or fix it"))
    states = {}
    for key, cls in (("discriminator", Discriminator), ("generator", Generator)):
        state = payload.get(key)
        if state is not None and not isinstance(state, dict):
            raise _bad_checkpoint(path, f"its {key!r} record is a {type(state).__name__}, not a dict of tensors")
        if state is not None:
            states[key] = (cls, state)
    provenance = payload.get("provenance")
    if provenance is not None and not isinstance(provenance, dict):
        raise _bad_checkpoint(path, f"its 'provenance' record is a {type(provenance).__name__}, not a dict")
    has_running_stats = payload.get("has_running_stats", True)
    if not isinstance(has_running_stats, bool):
        raise _bad_checkpoint(path, f"its 'has_running_stats' record is {_short_repr(has_running_stats)}, "
                                    f"not true or false")
    training = _training_state(payload.get("training"), path, len(states) == 2)
    _check_buildable(arch, path, [cls for cls, _ in states.values()])
    modules = {}
    for key, (cls, state) in states.items():
        modules[key] = cls(arch)
        _load_module(modules[key], state, key, path)
    return Checkpoint(arch, modules.get("discriminator"), modules.get("generator"), provenance or {}, training,
                      path, sha, has_running_stats)
