"""The ``gan-features`` command: argument parsing only; :mod:`.commands` calls the Python API.

Every subcommand parses its arguments, calls the API, and prints what it made. A
:class:`GanFeaturesError` becomes one line on stderr and exit status 2. Each command's arguments
are built only when that command runs (see :func:`build_parser`), with the imports they need.
"""
from __future__ import annotations

import argparse
import errno
import math
import sys

from . import __version__
from .cli_types import (
    float_list,
    index_list,
    key_value,
    non_negative_whole,
    number_in,
    positive,
    positive_float_list,
    positive_int_list,
    positive_number,
    positive_whole,
    seed_value,
    whole,
)
from .errors import GanFeaturesError

EXIT_USAGE = 2


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Parse errors as one line (argparse prints its usage first), like the command's other errors."""
    def error(message: str):
        message = " ".join(str(message).split())  # never more than one line
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def _common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--threads", type=positive_whole, default=None,
                   help="torch CPU threads (default: torch's choice, lowered to the cores other processes leave free "
                        "when the command starts; OMP_NUM_THREADS also decides)")
    return p


def _data_parser() -> argparse.ArgumentParser:
    from .data import DATA_ROOT_ENV, READERS

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", choices=sorted(READERS),
                   help="which dataset (default: digits, shipped inside scikit-learn)")
    g.add_argument("--data-root", default=None,
                   help=f"folder holding the dataset's official files (default: ${DATA_ROOT_ENV})")
    g.add_argument("--split", default="train",
                   help="train, test, ... (default: train); extract takes several, e.g. train,test")
    g.add_argument("--image-size", type=positive_whole, default=None,
                   help="resize images to this size (default: the architecture's)")
    g.add_argument("--download", action="store_true", help="fetch the official files first (needs internet)")
    g.add_argument("--num-workers", type=non_negative_whole, default=0, help="DataLoader worker processes (default: 0)")
    return p


def _device_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default: auto)")
    g.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                   help="bf16 autocast: faster than fp32 where bfloat16 is native (CUDA, AVX512-BF16, AMX), ~2x slower "
                        "where the CPU emulates it (default: bf16, the precision of the committed tables)")
    return p


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES

    p.add_argument("--out-dir", default="demo-output", help="where checkpoints, stores and the table go")
    p.add_argument("--arch", default="radford-svhn32", choices=sorted(ARCHITECTURES))
    p.add_argument("--steps", type=positive_whole, default=300, help="training steps of 128 images (default: 300)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out-dir")


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    from .data import READERS

    p.add_argument("--dataset", default="imagenet", choices=sorted(set(READERS) - {"prepared"}),
                   help="which dataset (default: imagenet)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset (default: $GAN_FEATURES_DATA)")
    p.add_argument("--split", default="train", help="the split to prepare (default: train)")
    p.add_argument("--size", type=positive_whole, default=32, help="image size in pixels (default: 32, the paper's)")
    p.add_argument("--out", required=True, help="the HDF5 file to write, e.g. imagenet32-train.h5")
    p.add_argument("--workers", type=positive_whole, default=None, help="decoding processes (default: every core)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES, DEFAULT_ARCHITECTURE

    p.add_argument("--arch", default=DEFAULT_ARCHITECTURE, choices=sorted(ARCHITECTURES))
    p.add_argument("--out-dir", required=True, help="run folder: checkpoints, log.jsonl, sample grids")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_whole, default=1)
    length.add_argument("--steps", type=positive_whole, default=None, help="total optimiser steps (overrides --epochs)")
    p.add_argument("--batch-size", type=positive_whole, default=128,
                   help="the global batch, split evenly over the ranks under torchrun (default: 128, the paper's)")
    p.add_argument("--lr", type=positive_number, default=2e-4)
    p.add_argument("--beta1", type=number_in(0.0, 1.0, "a number from 0 up to (not including) 1"), default=0.5,
                   help="Adam's beta1 (default: 0.5)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--checkpoint-every", type=positive_whole, default=500, help="steps between checkpoints (and every epoch)")
    p.add_argument("--in-memory", action="store_true", help="decode a folder dataset into memory once first")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from this checkpoint's D and G weights (same --arch; optimiser state is not used, "
                        "Adam starts afresh): trains a finished or exported run for longer in a new --out-dir")


def _extract_arguments(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES
    from .representations import BATCHNORM_MODES, POOLINGS

    p.add_argument("--ckpt", required=True, help="checkpoint (gan-features, or a raw netD state_dict with --arch)")
    p.add_argument("--arch", default=None, choices=sorted(ARCHITECTURES), help="architecture of a raw state_dict")
    p.add_argument("--out", required=True, help="the HDF5 file to write; with several splits, a name holding "
                                                "{split}, e.g. cifar-{split}.h5")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--batchnorm", default="recompute", choices=BATCHNORM_MODES,
                   help="recompute: statistics over the training split (default, as the paper's code); "
                        "running: the checkpoint's running statistics")
    p.add_argument("--stats-split", default="train", help="split whose images give recomputed statistics")
    p.add_argument("--grid", type=positive_whole, default=4, help="pool each block to GRID x GRID (default: 4)")
    p.add_argument("--pooling", default="max", choices=POOLINGS)
    p.add_argument("--layers", type=index_list, default=None, help="conv blocks to use, e.g. 0,1,2,3 (default: all)")
    p.add_argument("--batch-size", type=positive_whole, default=256)


def _svm_arguments(p: argparse.ArgumentParser) -> None:
    from .svm import BACKENDS

    p.add_argument("--train", required=True, help="training feature store (.h5)")
    p.add_argument("--test", required=True, help="test feature store (.h5)")
    p.add_argument("--protocol", default="holdout",
                   help="holdout (default: C on a seeded 10%% of the training rows, refit on all), cifar10 "
                        "(the same, Table 1), cifar10-400 (400 labels per class, repeated draws), "
                        "svhn-1000 (the paper's SVHN analysis), few-labels")
    p.add_argument("--C", dest="Cs", type=positive_float_list, default=None, help="C grid, e.g. 1e-4,1e-3,1e-2")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--set", dest="overrides", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="change a protocol parameter, e.g. --set n_per_class=10 --set test_draws=5 "
                        "(an unknown key lists the protocol's parameters)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="torch or liblinear (scikit-learn's LinearSVC); default: the estimator's")
    p.add_argument("--no-gram-cache", dest="gram_cache", action="store_false",
                   help="neither read nor keep the Gram matrix of the training rows that the fits share "
                        "(default: kept beside the training store, in TRAIN.gram/, 4 n^2 bytes for n rows)")
    p.add_argument("--results", default=None, help="also write the table as NAME.md/.csv (and the per-C "
                                                   "validation table as NAME_validation.md/.csv) into this folder")
    p.add_argument("--name", default=None, help="table name (default: svm_PROTOCOL_TRAINSTEM_seedSEED)")
    p.add_argument("--overwrite", action="store_true", help="replace NAME.md/.csv in --results")


def _knn_arguments(p: argparse.ArgumentParser) -> None:
    from .knn import BATCH_SIZE, DTYPES, KS, TEMPERATURE

    p.add_argument("--train", required=True, help="training feature store (.h5)")
    p.add_argument("--test", required=True, help="test feature store (.h5)")
    p.add_argument("--k", dest="ks", type=positive_int_list, default=KS, metavar="K,K,...",
                   help=f"neighbours that vote, one search for all (default: {','.join(map(str, KS))})")
    p.add_argument("--temperature", type=positive(float, "a positive number"), default=TEMPERATURE,
                   help=f"T of the vote weights exp(similarity / T) (default: {TEMPERATURE:g})")
    p.add_argument("--results", default=None, help="also write knn.md/.csv (with provenance) into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace knn.md/.csv in --results")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default: auto)")
    p.add_argument("--precision", default="fp32", choices=sorted(DTYPES),
                   help="how the normalised training matrix is held; bf16 halves its memory (default: fp32)")
    p.add_argument("--batch-size", type=positive(int, "a whole number of at least 1"), default=BATCH_SIZE,
                   help=f"test rows per similarity block of batch x training rows (default: {BATCH_SIZE})")


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from .bench.config import DEFAULT_KMEANS_CENTROIDS, SCALES

    p.add_argument("--scale", default="ci", choices=SCALES,
                   help="ci: a fixed stratified subset of 10,000 training / 2,000 test images, for regression "
                        "checks (default); full: every image, the numbers to set beside the paper's; toy: 1,000 / "
                        "500 images of the CI subset and fewer label draws, the smoke test of docs/reproduce.md, "
                        "comparable with nothing (needs --results)")
    p.add_argument("--cifar-root", default=None,
                   help="folder holding cifar-10-batches-py/ (default: $GAN_FEATURES_DATA)")
    p.add_argument("--ckpt", dest="checkpoints", action="append", default=[], metavar="LABEL=PATH",
                   help="a discriminator and its row label; repeatable. PATH@layers=0,1,2,3 uses those conv blocks "
                        "only (the paper authors' ImageNet model: its blocks 5-6 were not released in full); a "
                        "checkpoint made by import-radford is marked as the authors' weights")
    p.add_argument("--cifar-ckpt", dest="cifar_checkpoints", action="append", default=[], metavar="LABEL=PATH",
                   help="a discriminator trained on CIFAR-10's training images (labels unused); repeatable")
    p.add_argument("--svhn-root", default=None,
                   help="folder holding train_32x32.mat and test_32x32.mat: Table 2 is measured when given")
    p.add_argument("--svhn-ckpt", default=None,
                   help="the paper authors' SVHN discriminator (made by gan-features import-radford)")
    p.add_argument("--results", default=None, help="where the tables go (default: results for --scale full, "
                                                   "results/ci for --scale ci; --scale toy has none)")
    p.add_argument("--cache-dir", default=None,
                   help="feature stores (default: $GAN_FEATURES_CACHE/bench, else ~/.cache/gan-features/bench)")
    p.add_argument("--seed", type=seed_value, default=0, help="protocols' splits and draws, and the random discriminator")
    p.add_argument("--batch-size", type=positive_whole, default=256, help="extraction batch size (default: 256)")
    p.add_argument("--kmeans-centroids", type=non_negative_whole, default=DEFAULT_KMEANS_CENTROIDS,
                   help=f"K of the k-means baseline (default: {DEFAULT_KMEANS_CENTROIDS}; 0: no k-means row)")
    p.add_argument("--C", dest="Cs", type=float_list, default=None, metavar="C,C,...",
                   help="C grid of every protocol, e.g. 1e-4,1e-3 (default: each protocol's, the paper's "
                        "1e-4 ... 1e-2 unless the scale changes it)")
    p.add_argument("--no-random", action="store_true", help="leave out the random-discriminator rows")
    p.add_argument("--no-pixels", action="store_true", help="leave out the raw-pixel rows")
    p.add_argument("--no-knn", action="store_true", help="leave out Table 1's k-NN columns")
    p.add_argument("--resume", action="store_true",
                   help="reuse rows an earlier run measured on the same feature stores, protocol and settings, "
                        "and the saved C-path fits of a row it was measuring (all kept in the cache directory), "
                        "so a stopped full-scale run continues where it was")
    p.add_argument("--layers", action="store_true",
                   help="instead of Tables 1 and 2, the per-block table layers_cifar10.md/.csv/.png: each "
                        "discriminator's conv blocks alone and blocks 1..k, under cifar10-400 and the k-NN (with "
                        "--resume, the all-blocks rows a Table 1 run kept in the same cache are reused)")
    p.add_argument("--update", action="store_true",
                   help="measure only the representations this command names and keep every other row of the "
                        "tables already in --results as it was measured (refused unless their settings are this "
                        "run's): a new checkpoint or a lost cache costs its own rows, not the baselines'")
    p.add_argument("--saved-only", action="store_true",
                   help="measure nothing: write the tables from the rows measured so far (as --resume finds "
                        "them), the others marked 'not measured yet' with how far they got; safe to run beside "
                        "the run that is measuring them")


def _init_arguments(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES, DEFAULT_ARCHITECTURE

    p.add_argument("--arch", default=DEFAULT_ARCHITECTURE, choices=sorted(ARCHITECTURES))
    p.add_argument("--out", required=True, help="the checkpoint file to write, e.g. random.pt")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _import_radford_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory")
    p.add_argument("--out", required=True, help="the checkpoint file to write")
    p.add_argument("--allow-missing", action="store_true",
                   help="keep missing tensors at random init (the public ImageNet model lacks 5 files)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES

    p.add_argument("--ckpt", required=True, help="checkpoint holding a generator")
    p.add_argument("--arch", default=None, choices=sorted(ARCHITECTURES), help="architecture of a raw state_dict")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--no-interpolation", action="store_true", help="leave out the interpolation row")


def _select_arguments(p: argparse.ArgumentParser) -> None:
    from .data import READERS

    p.add_argument("run_dir", help="training run folder (gan-features train --out-dir)")
    p.add_argument("--out", required=True, help="folder for the selection table (keep it out of the run folder)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--pattern", default="epoch*.pt", help="checkpoints to score, a glob in the run folder "
                                                              "(default: epoch*.pt)")
    which.add_argument("--epochs", type=positive_int_list, default=None, metavar="LIST",
                       help="score these epochs' checkpoints, e.g. 13,19,25 (instead of --pattern)")
    p.add_argument("--also", action="append", default=[], metavar="CKPT",
                   help="a checkpoint outside the run folder to score in the same table, e.g. the one the run "
                        "started from with --init-from (repeatable)")
    p.add_argument("--dataset", default="cifar10", choices=sorted(READERS), help="labelled data (default: cifar10)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset's official files")
    p.add_argument("--split", default="train", help="a training split (default: train); test splits are refused")
    p.add_argument("--fit-size", type=whole(2), default=5000,
                   help="rows the SVM is fitted on (default: 5000; on 2 CPU cores 1000 takes ~1 min per "
                        "radford-imagenet32 checkpoint, 5000 over 20)")
    p.add_argument("--validation-size", type=whole(2), default=2000, help="disjoint rows it is scored on (default: 2000)")
    p.add_argument("--subset-seed", type=seed_value, default=0, help="which rows (default: 0)")
    p.add_argument("--C", dest="Cs", type=positive_float_list, default=None, help="C grid (default: 1e-4,1e-3,1e-2)")
    p.add_argument("--svm-tol", type=positive_number, default=1e-3,
                   help="SVM stopping tolerance (default: 1e-3; 1e-4 is ~7x slower on 28,672-d features)")
    p.add_argument("--diversity-samples", type=whole(2), default=256,
                   help="generated (and real) images of the collapse indicator (default: 256)")
    p.add_argument("--min-diversity", type=number_in(0.0, math.inf, "a number of at least 0"), default=None,
                   help="checkpoints whose sample diversity is below this are not eligible as best (default: all are)")
    p.add_argument("--batch-size", type=positive_whole, default=256)
    p.add_argument("--num-workers", type=non_negative_whole, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="discard a table in --out made with other settings")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default=None, help="checkpoint to export (default: the best one of --selection)")
    p.add_argument("--selection", default=None, help="the --out folder (or selection.csv) of gan-features select")
    p.add_argument("--run-dir", default=None, help="run folder holding log.jsonl (default: the checkpoint's folder)")
    p.add_argument("--out", required=True, help="folder to write into, e.g. results/dcgan-imagenette32")
    p.add_argument("--seed", type=seed_value, default=0, help="latents of the sample grid (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace files an earlier export left in --out")


def _info_arguments(p: argparse.ArgumentParser) -> None:
    from .models import ARCHITECTURES

    p.add_argument("path")
    p.add_argument("--arch", default=None, choices=sorted(ARCHITECTURES), help="architecture of a raw state_dict")


# command: (parent argument groups, the function adding its own arguments, add_parser's texts)
COMMAND_ARGUMENTS = {
    "demo": (('common',), _demo_arguments,
        dict(help="the whole pipeline on the embedded digits, in minutes",
             description="Train a small DCGAN on scikit-learn's digits, extract features of the trained and of a "
                         "random discriminator, fit L2-SVMs, print and write the table.")),
    "prepare": (('common',), _prepare_arguments,
        dict(help="decode a dataset split once into one uint8 HDF5 file (fast training and extraction)",
             description="Decode every image of a split once (RGB, short side resized, centre crop, as the "
                         "folder readers do), in parallel processes, into one uint8 HDF5 array with labels, class "
                         "names and provenance. Resumable: rerun the same command after a stop. Read it back with "
                         "--dataset prepared --data-root FILE.")),
    "train": (('common', 'data', 'device'), _train_arguments,
        dict(help="train a DCGAN (paper defaults)",
             description="Adversarial training with the paper's defaults; a checkpoint every epoch. Multi-GPU: "
                         "torchrun --nproc-per-node N -m gan_features.cli train ...")),
    "extract": (('common', 'data', 'device'), _extract_arguments,
        dict(help="discriminator features -> HDF5",
             description="Max-pool every conv block of a discriminator to a grid, concatenate, and write one HDF5 "
                         "store for one dataset split.")),
    "svm": (('common',), _svm_arguments,
        dict(help="fit L2-SVMs on feature stores, under a protocol",
             description="Fit one-vs-rest squared-hinge L2-SVMs. C is always chosen on validation data carved from "
                         "the training store, never on the test store.")),
    "knn": (('common',), _knn_arguments,
        dict(help="weighted k-NN accuracy on feature stores (DINO's probe)",
             description="Weighted k-nearest-neighbour classification as DINO's eval_knn.py: features L2-normalised, "
                         "the k training rows of highest cosine similarity vote with weight exp(similarity / T). "
                         "Nothing is chosen, so the test store is only scored.")),
    "bench": (('common', 'device'), _bench_arguments,
        dict(help="the paper's Tables 1 and 2 beside our measurements",
             description="Measure Table 1 (CIFAR-10: cifar10 and cifar10-400) and Table 2 (SVHN: svhn-1000) for the "
                         "given discriminators, a random one of each architecture, raw pixels and k-means, beside the"
                         " paper's quoted rows; write table1_cifar10.md/.csv and table2_svhn.md/.csv. Features are "
                         "cached outside the repository. See results/README.md.")),
    "init": (('common',), _init_arguments,
        dict(help="save a randomly initialised DCGAN (a baseline)")),
    "import-radford": (('common',), _import_radford_arguments,
        dict(help="import the DCGAN paper authors' Theano weights",
             description="Convert a model folder of the paper's released weights (*_params.jl_NN.npy) into a "
                         "gan-features checkpoint.")),
    "sample": (('common',), _sample_arguments,
        dict(help="a PNG grid of generator samples")),
    "select": (('common', 'device'), _select_arguments,
        dict(help="score a run's checkpoints without any test split",
             description="Score every epoch checkpoint of a training run by a linear L2-SVM's validation accuracy on "
                         "a fixed, seeded, stratified subset of a labelled TRAINING split (fit and disjoint "
                         "validation rows), plus a sample-diversity collapse indicator; write selection.csv/.md/.json"
                         " into --out and name the best. Checkpoints already scored there with the same settings are "
                         "reused.")),
    "export": (('common',), _export_arguments,
        dict(help="a checkpoint as compact fp16 weights with a model card",
             description="Write the checkpoint as float16 weights without optimiser state (loads with weights_only), "
                         "MODEL_CARD.md, samples.png, losses.png (from the run's log.jsonl) and a copy of the "
                         "selection table into --out.")),
    "info": ((), _info_arguments,
        dict(help="print the provenance of a checkpoint or a feature store")),
    "archs": ((), None, dict(help="list the registered architectures")),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``gan-features`` parser. With ``command``, only that command gets its arguments; the others
    are listed by name and help, so ``gan-features --help`` imports nothing heavy (torch alone takes
    over a second to import)."""
    parser = argparse.ArgumentParser(
        prog="gan-features",
        description="DCGAN discriminators as image features: train, extract to HDF5, evaluate with L2-SVMs.",
        epilog="Run `gan-features COMMAND --help` for each command's options.")
    _one_line_errors(parser)
    parser.add_argument("--version", action="version", version=f"gan-features {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {"common": _common_parser, "data": _data_parser, "device": _device_parser}
    for name, (parents, add_arguments, texts) in COMMAND_ARGUMENTS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=texts["help"])
            continue
        p = _one_line_errors(sub.add_parser(name, parents=[groups[group]() for group in parents], **texts))
        if add_arguments is not None:
            add_arguments(p)
    return parser


def _configure(args) -> None:
    from .provenance import package_source_state

    package_source_state()  # the code this run loaded, before a commit made while it runs can move HEAD
    if hasattr(args, "threads"):  # the commands that compute: as many threads as cores are free, freed memory reused
        from .allocator import keep_freed_memory
        from .threads import configure_threads

        keep_freed_memory()
        configure_threads(args.threads)


FILE_SYSTEM_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                      errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


def _error_line(command: str, error: Exception) -> None:
    """``gan-features COMMAND: error: MESSAGE`` on stderr, the message folded onto one line."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"gan-features {command}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = next((arg for arg in argv if not arg.startswith("-")), None)  # no top-level option takes a value
    args = build_parser(named if named in COMMAND_ARGUMENTS else "").parse_args(argv)
    from . import commands
    from .provenance import recorded_command

    try:
        with recorded_command(argv):  # every result this command writes names it
            _configure(args)
            commands.COMMANDS[args.command](args)
    except GanFeaturesError as error:
        _error_line(args.command, error)
        return EXIT_USAGE
    except OSError as error:  # a file system refusal the checks did not foresee: still one line, no traceback
        if error.errno not in FILE_SYSTEM_ERRORS:
            raise
        _error_line(args.command, error)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"gan-features {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
