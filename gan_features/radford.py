"""Import the DCGAN paper authors' released Theano weights (Newmu/dcgan_code) into our models.

The original code saved each network's parameters as a joblib list; unpacked, they are numpy
files ``<epoch>_discrim_params.jl_NN.npy`` / ``<epoch>_gen_params.jl_NN.npy`` (NN from 01) in the
order of the arguments of the original ``discrim(X, w, w2, g2, b2, ...)`` and ``gen(Z, w, g, b, ...)``.
One table per model maps every file to a tensor of our state_dicts. Only four conversions occur:

* ``flip``: Theano's ``dnn_conv`` in its default 'conv' mode is a true convolution, PyTorch's
  ``Conv2d`` a cross-correlation, so kernels are mirrored spatially. The original's ``deconv`` is
  the gradient (w.r.t. the input) of that true convolution, with the kernel laid out (in, out, k, k)
  exactly like ``ConvTranspose2d.weight`` (itself the gradient of a cross-correlation): the same flip.
* ``dense``: ``T.dot(Z, w)`` stores w as (in, out); ``nn.Linear`` stores (out, in).
* ``head``: ``T.dot(flatten(h), wy)`` on the NCHW-flattened last map equals our head conv whose
  kernel covers the whole map with weight wy reshaped to (1, C, 4, 4): a dot product, so no flip.
* ``copy``: batch-norm scales ``g`` and shifts ``b``. The original used eps 1e-8 and kept no
  running statistics, so imported models use ``bn_eps=1e-8`` and carry ``has_running_stats=False``.

Tensors whose files are missing (``allow_missing``) keep the paper's seeded N(0, 0.02) init.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoints
from .errors import GanFeaturesError
from .models import create_models, get_architecture

ORIGINAL_REPOSITORY = "https://github.com/Newmu/dcgan_code"
ORIGINAL_COMMIT = "ee12b2d"
LICENCE = "MIT, Copyright (c) 2015 Alec Radford (LICENSE of Newmu/dcgan_code)"
ORIGINAL_BN_EPS = 1e-8
MISSING_INIT_SEED = 0
_FILE = re.compile(r"^(\d+)_(discrim|gen)_params\.jl_(\d+)\.npy$")
SOURCE = "radford-dcgan"  # the provenance "source" of every imported checkpoint


@dataclass(frozen=True)
class Param:
    """One file of the original: its variable name and Theano-layout shape, and where it goes."""

    name: str  # the original code's argument name (w2, g2, ...)
    shape: tuple[int, ...]  # as the original stored it
    key: str  # our state_dict key
    convert: str  # "flip" | "dense" | "head" | "copy" (see the module docstring)
    what: str  # for messages, e.g. "conv5 weight"
    block: int | None = None  # the discriminator conv block it belongs to (1-based)


@dataclass(frozen=True)
class RadfordModel:
    architecture: str
    directory: str  # the original's models/ folder name
    epoch: int  # the snapshot the authors released
    discrim: tuple[Param, ...]
    gen: tuple[Param, ...]

    def table(self, kind: str) -> tuple[Param, ...]:
        return self.discrim if kind == "discrim" else self.gen


def _weight(name, shape, index, what, block=None):
    return Param(name, shape, f"main.{index}.weight", "flip", what, block)


def _bn_block(n, shape, index, label, transposed=False):
    """w{n} (a conv at main.index) and g{n}, b{n} of the batch-norm right after it in our layout."""
    channels = shape[1] if transposed else shape[0]  # deconv kernels are (in, out, k, k)
    block = None if transposed else n
    return (_weight(f"w{n}", shape, index, f"{label} weight", block),
            Param(f"g{n}", (channels,), f"main.{index + 1}.weight", "copy", f"{label} batch-norm scale", block),
            Param(f"b{n}", (channels,), f"main.{index + 1}.bias", "copy", f"{label} batch-norm shift", block))


def _dense(shape):
    return (Param("w", shape, "main.0.weight", "dense", "dense weight"),
            Param("g", shape[1:], "main.1.weight", "copy", "dense batch-norm scale"),
            Param("b", shape[1:], "main.1.bias", "copy", "dense batch-norm shift"))


def _head(shape, index):
    return Param("wy", shape, f"main.{index}.weight", "head", "dense head weight")


# Indices are positions in our Discriminator/Generator ``main`` (conv, [BN], LeakyReLU per D block;
# Linear, BN1d, ReLU, Unflatten, then ConvTranspose, BN, ReLU per G layer); shapes are the files'.
# Labels follow the original's numbering (w2 makes h2), so G's first deconv is "deconv2".
SVHN = RadfordModel(
    "radford-svhn32", "svhn_unsup_all_conv_dcgan_100z_gaussian_lr_0.0005_64mb", 200,
    discrim=(_weight("w", (64, 3, 5, 5), 0, "conv1 weight", 1),
             *_bn_block(2, (128, 64, 5, 5), 2, "conv2"),
             *_bn_block(3, (256, 128, 5, 5), 5, "conv3"),
             _head((4096, 1), 8)),
    gen=(*_dense((100, 4096)),
         *_bn_block(2, (256, 128, 5, 5), 4, "deconv2", transposed=True),
         *_bn_block(3, (128, 64, 5, 5), 7, "deconv3", transposed=True),
         _weight("wx", (64, 3, 5, 5), 10, "output deconv weight")),
)

IMAGENET = RadfordModel(
    "radford-imagenet32", "imagenet_gan_pretrain_128f_relu_lrelu_7l_3x3_256z", 30,
    discrim=(_weight("w", (128, 3, 3, 3), 0, "conv1 weight", 1),
             *_bn_block(2, (128, 128, 3, 3), 2, "conv2"),
             *_bn_block(3, (256, 128, 3, 3), 5, "conv3"),
             *_bn_block(4, (256, 256, 3, 3), 8, "conv4"),
             *_bn_block(5, (512, 256, 3, 3), 11, "conv5"),
             *_bn_block(6, (512, 512, 3, 3), 14, "conv6"),
             _head((8192, 1), 17)),
    gen=(*_dense((256, 8192)),
         *_bn_block(2, (512, 512, 3, 3), 4, "deconv2", transposed=True),
         *_bn_block(3, (512, 256, 3, 3), 7, "deconv3", transposed=True),
         *_bn_block(4, (256, 256, 3, 3), 10, "deconv4", transposed=True),
         *_bn_block(5, (256, 128, 3, 3), 13, "deconv5", transposed=True),
         *_bn_block(6, (128, 128, 3, 3), 16, "deconv6", transposed=True),
         _weight("wx", (128, 3, 3, 3), 19, "output deconv weight")),
)

MODELS = (SVHN, IMAGENET)


def _convert(param: Param, array: np.ndarray, target_shape: torch.Size) -> torch.Tensor:
    if param.convert == "flip":
        array = array[..., ::-1, ::-1]
    elif param.convert == "dense":
        array = array.T
    elif param.convert == "head":
        array = array.reshape(target_shape)  # C-order reshape = NCHW flatten order: no flip
    return torch.from_numpy(np.ascontiguousarray(array))


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def _describe(param: Param, kind: str) -> str:
    return f"{'D' if kind == 'discrim' else 'G'} {param.what} {_fmt(param.shape)}"


def _scan(directory: Path) -> tuple[int, dict[tuple[str, int], Path]]:
    """The weight files in ``directory``, keyed by (kind, 1-based index), and their common epoch."""
    if not directory.is_dir():
        raise GanFeaturesError(f"{directory} is not a directory: pass the folder holding the "
                               f"*_params.jl_NN.npy files")
    files, epochs = {}, set()
    for path in directory.iterdir():
        if match := _FILE.match(path.name):
            epochs.add(int(match[1]))
            files[(match[2], int(match[3]))] = path
    if not files:
        raise GanFeaturesError(f"{directory} holds no <epoch>_discrim_params.jl_NN.npy / _gen_params.jl_NN.npy "
                               f"files: point at one model folder of the original dcgan_code models/")
    if len(epochs) > 1:
        raise GanFeaturesError(f"{directory} mixes the files of epochs {sorted(epochs)}: "
                               f"keep one snapshot per folder")
    return epochs.pop(), files


def _shape(path: Path) -> tuple[int, ...]:
    try:
        array = np.load(path, mmap_mode="r")  # reads the header only; never unpickles
    except Exception as error:
        raise GanFeaturesError(f"{path} is not a readable .npy file ({type(error).__name__}: {error})") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise GanFeaturesError(f"{path} holds {array.dtype} values, not floating-point weights")
    return tuple(array.shape)


def _detect(directory: Path, files: dict) -> RadfordModel:
    """The model whose table fits most files by position and shape (one bad file cannot hide it)."""
    shapes = {key: _shape(path) for key, path in files.items()}

    def fits(model):
        return sum(1 <= i <= len(model.table(kind)) and model.table(kind)[i - 1].shape == shape
                   for (kind, i), shape in shapes.items())

    model = max(MODELS, key=fits)
    if fits(model) == 0:
        raise GanFeaturesError(f"{directory}: no file fits a known released model "
                               f"({', '.join(m.directory for m in MODELS)}): wrong folder?")
    for (kind, i), shape in sorted(shapes.items()):
        table = model.table(kind)
        if not 1 <= i <= len(table):
            raise GanFeaturesError(f"{files[kind, i]}: unexpected file: the {model.directory} model has only "
                                   f"{len(table)} {kind} files")
        if shape != table[i - 1].shape:
            raise GanFeaturesError(f"{files[kind, i]}: expected shape {table[i - 1].shape} for the "
                                   f"{_describe(table[i - 1], kind)} ({table[i - 1].name}), found {shape}")
    return model


def _intact_blocks(model: RadfordModel, missing: set[tuple[str, int]]) -> int:
    """How many leading discriminator conv blocks have every tensor present."""
    broken = {p.block for i, p in enumerate(model.discrim, 1) if ("discrim", i) in missing}
    blocks = sorted({p.block for p in model.discrim if p.block is not None})
    return next((b - 1 for b in blocks if b in broken), len(blocks))


def import_radford(directory: str | Path, allow_missing: bool = False) -> checkpoints.Checkpoint:
    """Load a released model folder into our (Discriminator, Generator) pair, with provenance."""
    directory = Path(directory)
    epoch, files = _scan(directory)
    model = _detect(directory, files)
    expected = [(kind, i, p) for kind in ("discrim", "gen") for i, p in enumerate(model.table(kind), 1)]
    missing = [(kind, i, p) for kind, i, p in expected if (kind, i) not in files]
    names = [f"{epoch}_{kind}_params.jl_{i:02d}.npy ({_describe(p, kind)})" for kind, i, p in missing]
    intact = _intact_blocks(model, {(kind, i) for kind, i, _ in missing})
    n_blocks = len({p.block for p in model.discrim} - {None})
    if missing and not allow_missing:
        raise GanFeaturesError(
            f"{directory}: {len(missing)} weight file(s) of the {model.directory} model are missing: "
            f"{', '.join(names)}; users with the full original repository have them ({ORIGINAL_REPOSITORY} at "
            f"{ORIGINAL_COMMIT}, models/{model.directory}/): copy them here, or pass --allow-missing "
            f"(allow_missing=True) to leave those tensors at the paper's N(0, 0.02) init (the discriminator's "
            f"first {intact} of {n_blocks} conv blocks are intact)")

    arch = dataclasses.replace(get_architecture(model.architecture), bn_eps=ORIGINAL_BN_EPS)
    # Missing tensors keep this seeded init; present ones overwrite it below.
    discriminator, generator = create_models(arch, seed=MISSING_INIT_SEED)
    for kind, module in (("discrim", discriminator), ("gen", generator)):
        state = module.state_dict()
        for i, param in enumerate(model.table(kind), 1):
            if (kind, i) in files:
                state[param.key] = _convert(param, np.load(files[kind, i]), state[param.key].shape)
        module.load_state_dict(state)  # strict: a table/architecture disagreement fails loudly here

    provenance = {
        "source": SOURCE,
        "source_directory": str(directory.resolve()),
        "model": model.directory,
        "epoch": epoch,
        "files": {path.name: checkpoints.file_sha256(path) for _, path in sorted(files.items())},
        "original_code": f"{ORIGINAL_REPOSITORY} (commit {ORIGINAL_COMMIT})",
        "licence": LICENCE,
        "conversion": "conv and deconv kernels flipped spatially (Theano 'conv' mode is a true convolution); "
                      "dense weight transposed; head wy reshaped to (1, C, 4, 4) unflipped; batch-norm eps 1e-8",
        "batchnorm_statistics": "none in the original: recompute them over training images for features",
        "complete": not missing,
        "missing": [f"{epoch}_{kind}_params.jl_{i:02d}.npy" for kind, i, _ in missing],
        "missing_tensors": names,
        "missing_init": f"N(0, 0.02) weights, batch-norm scale N(1, 0.02), shift 0 (seed {MISSING_INIT_SEED})",
        "intact_discriminator_blocks": intact,
        "discriminator_head_intact": not any(kind == "discrim" for kind, _, _ in missing),
        "generator_intact": not any(kind == "gen" for kind, _, _ in missing),
    }
    if missing:
        warnings.warn(f"{directory}: {len(missing)} weight file(s) missing, left at the paper's random init: "
                      f"{', '.join(names)}; only the discriminator's first {intact} of {n_blocks} conv blocks are "
                      f"intact{'' if provenance['generator_intact'] else ' and the generator is unusable'}",
                      stacklevel=2)
    return checkpoints.Checkpoint(arch, discriminator, generator, provenance, has_running_stats=False)


def save_radford_checkpoint(directory: str | Path, out: str | Path, allow_missing: bool = False,
                            overwrite: bool = False) -> Path:
    """Import a released model folder and save it as a gan-features checkpoint at ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise GanFeaturesError(f"{out} already exists: choose another --out or pass --overwrite")
    checkpoint = import_radford(directory, allow_missing=allow_missing)
    out.parent.mkdir(parents=True, exist_ok=True)
    return checkpoints.save_checkpoint(out, checkpoint.architecture, checkpoint.discriminator,
                                       checkpoint.generator, provenance=checkpoint.provenance,
                                       has_running_stats=False)
