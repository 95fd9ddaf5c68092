"""The ``gan-features`` command: a thin argparse layer over the Python API.

Every subcommand parses its arguments, calls one API function, and prints what it made.
A :class:`GanFeaturesError` becomes one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from pathlib import Path

from . import __version__
from .errors import GanFeaturesError
from .output import check_output, check_output_folder

EXIT_USAGE = 2


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_int_list(text: str) -> tuple[int, ...]:
    values = _int_list(text)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of at least 1, got {text!r}")
    return values


def _index_list(text: str) -> tuple[int, ...]:
    """``--layers``: conv block indices, 0 or more, at least one."""
    try:
        values = _int_list(text)
    except argparse.ArgumentTypeError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices (whole numbers from 0), e.g. "
                                         f"0,1,2,3, got {text!r}")
    return values


def _positive_float_list(text: str) -> tuple[float, ...]:
    """``--C``: a grid of distinct, finite, positive numbers."""
    try:
        values = _float_list(text)
    except argparse.ArgumentTypeError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected comma-separated distinct positive numbers, e.g. 1e-4,1e-3,1e-2, "
                                         f"got {text!r}")
    return values


def _positive(convert, what: str):
    """An argparse type: ``convert(text)`` when that is a finite number above 0, else an error saying ``what``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _whole(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number from ``minimum`` (to ``maximum``), else a one-line error saying so."""
    what = (f"a whole number from {minimum} to {maximum}" if maximum is not None
            else f"a whole number of at least {minimum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _number_in(low: float, high: float, what: str):
    """An argparse type: a finite float with ``low <= value < high``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value < high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


SEED_MAX = 2**32 - 1  # torch and numpy both take these; train adds the rank and the epoch to it
_count = _whole(1)  # batch sizes, steps, epochs, threads, sizes
_non_negative = _whole(0)  # worker processes, centroids (0: none)
_seed = _whole(0, SEED_MAX)
_positive_number = _positive(float, "a positive number")


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Parse errors as one line (argparse prints its usage first), like the command's other errors."""
    def error(message: str):
        message = " ".join(str(message).split())  # never more than one line
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers and lists as such; anything else stays text
    except json.JSONDecodeError:
        return key, value


def _common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("general")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--threads", type=_count, default=None, help="torch CPU threads (default: torch's choice)")
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
    g.add_argument("--image-size", type=_count, default=None,
                   help="resize images to this size (default: the architecture's)")
    g.add_argument("--download", action="store_true", help="fetch the official files first (needs internet)")
    g.add_argument("--num-workers", type=_non_negative, default=0, help="DataLoader worker processes (default: 0)")
    return p


def _device_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default: auto)")
    g.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                   help="bf16 autocast is 2-4x faster on CPU here (default: bf16)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from .bench import DEFAULT_KMEANS_CENTROIDS, SCALES
    from .data import READERS
    from .features import BATCHNORM_MODES, POOLINGS
    from .knn import BATCH_SIZE, DTYPES, KS, TEMPERATURE
    from .models import ARCHITECTURES, DEFAULT_ARCHITECTURE
    from .svm import BACKENDS

    common, data, device = _common_parser(), _data_parser(), _device_parser()
    parser = argparse.ArgumentParser(
        prog="gan-features",
        description="DCGAN discriminators as image features: train, extract to HDF5, evaluate with L2-SVMs.",
        epilog="Run `gan-features COMMAND --help` for each command's options.")
    _one_line_errors(parser)
    parser.add_argument("--version", action="version", version=f"gan-features {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="the whole pipeline on the embedded digits, in minutes",
                       description="Train a small DCGAN on scikit-learn's digits, extract features of the trained "
                                   "and of a random discriminator, fit L2-SVMs, print and write the table.")
    p.add_argument("--out-dir", default="demo-output", help="where checkpoints, stores and the table go")
    p.add_argument("--arch", default="radford-svhn32", choices=sorted(ARCHITECTURES))
    p.add_argument("--steps", type=_count, default=300, help="training steps of 128 images (default: 300)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out-dir")

    p = sub.add_parser("train", parents=[common, data, device], help="train a DCGAN (paper defaults)",
                       description="Adversarial training with the paper's defaults; a checkpoint every epoch. "
                                   "Multi-GPU: torchrun --nproc-per-node N -m gan_features.cli train ...")
    p.add_argument("--arch", default=DEFAULT_ARCHITECTURE, choices=sorted(ARCHITECTURES))
    p.add_argument("--out-dir", required=True, help="run folder: checkpoints, log.jsonl, sample grids")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_count, default=1)
    length.add_argument("--steps", type=_count, default=None, help="total optimiser steps (overrides --epochs)")
    p.add_argument("--batch-size", type=_count, default=128)
    p.add_argument("--lr", type=_positive_number, default=2e-4)
    p.add_argument("--beta1", type=_number_in(0.0, 1.0, "a number from 0 up to (not including) 1"), default=0.5,
                   help="Adam's beta1 (default: 0.5)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--checkpoint-every", type=_count, default=500, help="steps between checkpoints (and every epoch)")
    p.add_argument("--in-memory", action="store_true", help="decode a folder dataset into memory once first")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir")

    p = sub.add_parser("extract", parents=[common, data, device], help="discriminator features -> HDF5",
                       description="Max-pool every conv block of a discriminator to a grid, concatenate, and "
                                   "write one HDF5 store for one dataset split.")
    p.add_argument("--ckpt", required=True, help="checkpoint (gan-features, or a raw netD state_dict with --arch)")
    p.add_argument("--arch", default=None, choices=sorted(ARCHITECTURES), help="architecture of a raw state_dict")
    p.add_argument("--out", required=True, help="the HDF5 file to write; with several splits, a name holding "
                                                "{split}, e.g. cifar-{split}.h5")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--batchnorm", default="recompute", choices=BATCHNORM_MODES,
                   help="recompute: statistics over the training split (default, as the paper's code); "
                        "running: the checkpoint's running statistics")
    p.add_argument("--stats-split", default="train", help="split whose images give recomputed statistics")
    p.add_argument("--grid", type=_count, default=4, help="pool each block to GRID x GRID (default: 4)")
    p.add_argument("--pooling", default="max", choices=POOLINGS)
    p.add_argument("--layers", type=_index_list, default=None, help="conv blocks to use, e.g. 0,1,2,3 (default: all)")
    p.add_argument("--batch-size", type=_count, default=256)

    p = sub.add_parser("svm", parents=[common], help="fit L2-SVMs on feature stores, under a protocol",
                       description="Fit one-vs-rest squared-hinge L2-SVMs. C is always chosen on validation "
                                   "data carved from the training store, never on the test store.")
    p.add_argument("--train", required=True, help="training feature store (.h5)")
    p.add_argument("--test", required=True, help="test feature store (.h5)")
    p.add_argument("--protocol", default="holdout",
                   help="holdout (default: C on a seeded 10%% of the training rows, refit on all), cifar10 "
                        "(the same, Table 1), cifar10-400 (400 labels per class, repeated draws), "
                        "svhn-1000 (the paper's SVHN analysis), few-labels")
    p.add_argument("--C", dest="Cs", type=_positive_float_list, default=None, help="C grid, e.g. 1e-4,1e-3,1e-2")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--set", dest="overrides", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
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

    p = _one_line_errors(sub.add_parser(
        "knn", parents=[common], help="weighted k-NN accuracy on feature stores (DINO's probe)",
        description="Weighted k-nearest-neighbour classification as DINO's eval_knn.py: features L2-normalised, "
                    "the k training rows of highest cosine similarity vote with weight exp(similarity / T). "
                    "Nothing is chosen, so the test store is only scored."))
    p.add_argument("--train", required=True, help="training feature store (.h5)")
    p.add_argument("--test", required=True, help="test feature store (.h5)")
    p.add_argument("--k", dest="ks", type=_positive_int_list, default=KS, metavar="K,K,...",
                   help=f"neighbours that vote, one search for all (default: {','.join(map(str, KS))})")
    p.add_argument("--temperature", type=_positive(float, "a positive number"), default=TEMPERATURE,
                   help=f"T of the vote weights exp(similarity / T) (default: {TEMPERATURE:g})")
    p.add_argument("--results", default=None, help="also write knn.md/.csv (with provenance) into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace knn.md/.csv in --results")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default: auto)")
    p.add_argument("--precision", default="fp32", choices=sorted(DTYPES),
                   help="how the normalised training matrix is held; bf16 halves its memory (default: fp32)")
    p.add_argument("--batch-size", type=_positive(int, "a whole number of at least 1"), default=BATCH_SIZE,
                   help=f"test rows per similarity block of batch x training rows (default: {BATCH_SIZE})")

    p = sub.add_parser("bench", parents=[common, device], help="the paper's Tables 1 and 2 beside our measurements",
                       description="Measure Table 1 (CIFAR-10: cifar10 and cifar10-400) and Table 2 (SVHN: svhn-1000) "
                                   "for the given discriminators, a random one of each architecture, raw pixels and "
                                   "k-means, beside the paper's quoted rows; write table1_cifar10.md/.csv and "
                                   "table2_svhn.md/.csv. Features are cached outside the repository. See "
                                   "results/README.md.")
    p.add_argument("--scale", default="ci", choices=SCALES,
                   help="ci: a fixed stratified subset of 10,000 training / 2,000 test images, for regression "
                        "checks (default); full: every image, the numbers to set beside the paper's")
    p.add_argument("--cifar-root", default=None,
                   help="folder holding cifar-10-batches-py/ (default: $GAN_FEATURES_DATA)")
    p.add_argument("--ckpt", dest="checkpoints", action="append", default=[], metavar="LABEL=PATH",
                   help="a trained discriminator and its row label; repeatable")
    p.add_argument("--cifar-ckpt", dest="cifar_checkpoints", action="append", default=[], metavar="LABEL=PATH",
                   help="a discriminator trained on CIFAR-10's training images (labels unused); repeatable")
    p.add_argument("--svhn-root", default=None,
                   help="folder holding train_32x32.mat and test_32x32.mat: Table 2 is measured when given")
    p.add_argument("--svhn-ckpt", default=None,
                   help="the paper authors' SVHN discriminator (made by gan-features import-radford)")
    p.add_argument("--results", default=None, help="where the tables go (default: results for --scale full, "
                                                   "results/ci for --scale ci)")
    p.add_argument("--cache-dir", default=None,
                   help="feature stores (default: $GAN_FEATURES_CACHE/bench, else ~/.cache/gan-features/bench)")
    p.add_argument("--seed", type=_seed, default=0, help="protocols' splits and draws, and the random discriminator")
    p.add_argument("--batch-size", type=_count, default=256, help="extraction batch size (default: 256)")
    p.add_argument("--kmeans-centroids", type=_non_negative, default=DEFAULT_KMEANS_CENTROIDS,
                   help=f"K of the k-means baseline (default: {DEFAULT_KMEANS_CENTROIDS}; 0: no k-means row)")
    p.add_argument("--C", dest="Cs", type=_float_list, default=None, metavar="C,C,...",
                   help="C grid of every protocol, e.g. 1e-4,1e-3 (default: each protocol's, the paper's "
                        "1e-4 ... 1e-2 unless the scale changes it)")
    p.add_argument("--no-random", action="store_true", help="leave out the random-discriminator rows")
    p.add_argument("--no-pixels", action="store_true", help="leave out the raw-pixel rows")
    p.add_argument("--no-knn", action="store_true", help="leave out Table 1's k-NN columns")
    p.add_argument("--resume", action="store_true",
                   help="reuse rows an earlier run measured on the same feature stores, protocol and settings, "
                        "and the saved C-path fits of a row it was measuring (all kept in the cache directory), "
                        "so a stopped full-scale run continues where it was")
    p.add_argument("--saved-only", action="store_true",
                   help="measure nothing: write the tables from the rows measured so far (as --resume finds "
                        "them), the others marked 'not measured yet' with how far they got; safe to run beside "
                        "the run that is measuring them")

    p = sub.add_parser("init", parents=[common], help="save a randomly initialised DCGAN (a baseline)")
    p.add_argument("--arch", default=DEFAULT_ARCHITECTURE, choices=sorted(ARCHITECTURES))
    p.add_argument("--out", required=True, help="the checkpoint file to write, e.g. random.pt")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("import-radford", parents=[common], help="import the DCGAN paper authors' Theano weights",
                       description="Convert a model folder of the paper's released weights (*_params.jl_NN.npy) "
                                   "into a gan-features checkpoint.")
    p.add_argument("directory")
    p.add_argument("--out", required=True, help="the checkpoint file to write")
    p.add_argument("--allow-missing", action="store_true",
                   help="keep missing tensors at random init (the public ImageNet model lacks 5 files)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("sample", parents=[common], help="a PNG grid of generator samples")
    p.add_argument("--ckpt", required=True, help="checkpoint holding a generator")
    p.add_argument("--arch", default=None, choices=sorted(ARCHITECTURES), help="architecture of a raw state_dict")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--no-interpolation", action="store_true", help="leave out the interpolation row")

    p = sub.add_parser("select", parents=[common, device], help="score a run's checkpoints without any test split",
                       description="Score every epoch checkpoint of a training run by a linear L2-SVM's validation "
                                   "accuracy on a fixed, seeded, stratified subset of a labelled TRAINING split (fit "
                                   "and disjoint validation rows), plus a sample-diversity collapse indicator; write "
                                   "selection.csv/.md/.json into --out and name the best. Checkpoints already scored "
                                   "there with the same settings are reused.")
    p.add_argument("run_dir", help="training run folder (gan-features train --out-dir)")
    p.add_argument("--out", required=True, help="folder for the selection table (keep it out of the run folder)")
    p.add_argument("--pattern", default="epoch*.pt", help="checkpoints to score, a glob in the run folder "
                                                          "(default: epoch*.pt)")
    p.add_argument("--dataset", default="cifar10", choices=sorted(READERS), help="labelled data (default: cifar10)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset's official files")
    p.add_argument("--split", default="train", help="a training split (default: train); test splits are refused")
    p.add_argument("--fit-size", type=_whole(2), default=5000,
                   help="rows the SVM is fitted on (default: 5000; on 2 CPU cores 1000 takes ~1 min per "
                        "radford-imagenet32 checkpoint, 5000 over 20)")
    p.add_argument("--validation-size", type=_whole(2), default=2000, help="disjoint rows it is scored on (default: 2000)")
    p.add_argument("--subset-seed", type=_seed, default=0, help="which rows (default: 0)")
    p.add_argument("--C", dest="Cs", type=_positive_float_list, default=None, help="C grid (default: 1e-4,1e-3,1e-2)")
    p.add_argument("--svm-tol", type=_positive_number, default=1e-3,
                   help="SVM stopping tolerance (default: 1e-3; 1e-4 is ~7x slower on 28,672-d features)")
    p.add_argument("--diversity-samples", type=_whole(2), default=256,
                   help="generated (and real) images of the collapse indicator (default: 256)")
    p.add_argument("--min-diversity", type=_number_in(0.0, math.inf, "a number of at least 0"), default=None,
                   help="checkpoints whose sample diversity is below this are not eligible as best (default: all are)")
    p.add_argument("--batch-size", type=_count, default=256)
    p.add_argument("--num-workers", type=_non_negative, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="discard a table in --out made with other settings")

    p = sub.add_parser("export", parents=[common], help="a checkpoint as compact fp16 weights with a model card",
                       description="Write the checkpoint as float16 weights without optimiser state (loads with "
                                   "weights_only), MODEL_CARD.md, samples.png, losses.png (from the run's log.jsonl) "
                                   "and a copy of the selection table into --out.")
    p.add_argument("--ckpt", default=None, help="checkpoint to export (default: the best one of --selection)")
    p.add_argument("--selection", default=None, help="the --out folder (or selection.csv) of gan-features select")
    p.add_argument("--run-dir", default=None, help="run folder holding log.jsonl (default: the checkpoint's folder)")
    p.add_argument("--out", required=True, help="folder to write into, e.g. results/dcgan-imagenette32")
    p.add_argument("--seed", type=_seed, default=0, help="latents of the sample grid (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace files an earlier export left in --out")

    p = sub.add_parser("info", help="print the provenance of a checkpoint or a feature store")
    p.add_argument("path")
    p.add_argument("--arch", default=None, choices=sorted(ARCHITECTURES), help="architecture of a raw state_dict")
    sub.add_parser("archs", help="list the registered architectures")
    for name, subparser in sub.choices.items():  # every command's parse errors: one line, as its other errors
        _one_line_errors(subparser)
    return parser


def _configure(args) -> None:
    from .report import package_source_state

    package_source_state()  # the code this run loaded, before a commit made while it runs can move HEAD
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _image_size(args, arch) -> int:
    return args.image_size or arch.image_size


def cmd_demo(args) -> None:
    from .demo import run_demo

    check_output_folder(args.out_dir, "--out-dir")
    run_demo(args.out_dir, arch=args.arch, steps=args.steps, seed=args.seed, overwrite=args.overwrite,
             progress=not args.quiet)


def cmd_train(args) -> None:
    from .data import load_dataset
    from .models import get_architecture
    from .train import TrainConfig, train

    out_dir = check_output_folder(args.out_dir, "--out-dir")
    if (out_dir / "latest.pt").exists() and not args.resume:  # before the data is read, not after
        raise GanFeaturesError(f"{out_dir} already holds a run: pass --resume to continue it or choose "
                               f"another --out-dir")
    arch = get_architecture(args.arch)
    arch.check_image_size(_image_size(args, arch))
    dataset = load_dataset(args.dataset, args.split, args.data_root, _image_size(args, arch), args.download)
    if args.in_memory and hasattr(dataset, "materialize"):
        dataset = dataset.materialize(progress=not args.quiet)
    config = TrainConfig(arch=args.arch, dataset=args.dataset, data_root=args.data_root, split=args.split,
                         out_dir=args.out_dir, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, beta1=args.beta1, seed=args.seed, device=args.device,
                         precision=args.precision, num_workers=args.num_workers,
                         checkpoint_every=args.checkpoint_every, resume=args.resume)
    print(train(config, dataset, progress=not args.quiet))


def cmd_extract(args) -> None:
    from .checkpoints import load_checkpoint
    from .data import load_dataset
    from .device import pick_device
    from .features import FeatureSpec, extract_to_store, prepare_discriminator

    splits = list(dict.fromkeys(s.strip() for s in args.split.split(",") if s.strip()))
    if not splits:
        raise GanFeaturesError(f"--split {args.split!r} names no split: pass e.g. --split train or --split train,test")
    if len(splits) > 1 and "{split}" not in args.out:
        raise GanFeaturesError("several splits need one file each: put {split} in --out, e.g. "
                               "--out features-{split}.h5")
    outs = {split: args.out.replace("{split}", split) for split in splits}
    for out in outs.values():  # fail before any work, not after the first split
        check_output(out, args.overwrite, example="features.h5")
    device = pick_device(args.device)
    checkpoint = load_checkpoint(args.ckpt, architecture=args.arch)
    if checkpoint.discriminator is None:
        raise GanFeaturesError(f"{args.ckpt} holds no discriminator")
    size = _image_size(args, checkpoint.architecture)
    checkpoint.architecture.check_image_size(size)
    spec = FeatureSpec(grid=args.grid, pooling=args.pooling, layers=args.layers, batchnorm=args.batchnorm)
    spec.block_indices(checkpoint.discriminator)  # layers that exist
    if spec.batchnorm == "running" and not checkpoint.has_running_stats:
        raise GanFeaturesError(f"{args.ckpt} has no batch-norm running statistics (imported or raw weights): "
                               f"use --batchnorm recompute")
    datasets = {split: load_dataset(args.dataset, split, args.data_root, size, args.download) for split in splits}
    statistics = None
    if spec.batchnorm == "recompute":
        statistics = datasets.get(args.stats_split)
        if statistics is None:
            try:
                statistics = load_dataset(args.dataset, args.stats_split, args.data_root, size)
            except GanFeaturesError as error:
                raise GanFeaturesError(
                    f"{error} (batch-norm statistics are recomputed on --stats-split {args.stats_split}: pass "
                    f"--stats-split with a split that exists, e.g. --stats-split {splits[0]}, or --batchnorm "
                    f"running)") from None
    # statistics are recomputed once and shared by every split
    discriminator = prepare_discriminator(checkpoint, spec, statistics, device, args.num_workers, not args.quiet,
                                          args.precision)
    for split, dataset in datasets.items():
        print(extract_to_store(checkpoint, dataset, outs[split], spec, statistics_dataset=statistics,
                               batch_size=args.batch_size, device=device, precision=args.precision,
                               num_workers=args.num_workers, overwrite=args.overwrite, progress=not args.quiet,
                               discriminator=discriminator))


def _protocol_overrides(protocol: str, overrides: list[tuple[str, object]]) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs, each checked against the type of the protocol's parameter KEY."""
    import dataclasses

    from .protocols import PROTOCOLS

    cls = PROTOCOLS.get(protocol)
    defaults = {} if cls is None else {f.name: f.default for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in overrides:
        default = defaults.get(key, dataclasses.MISSING)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool) or default is dataclasses.MISSING:
            pass  # unknown keys: the protocol lists its parameters
        elif isinstance(default, int) and not (number and (isinstance(value, int) or value.is_integer())):
            raise GanFeaturesError(f"--set {key}={value}: {key} takes a whole number, e.g. --set {key}={default}")
        elif isinstance(default, float) and not (number and math.isfinite(value)):
            raise GanFeaturesError(f"--set {key}={value}: {key} takes a number, e.g. --set {key}={default}")
        elif isinstance(default, str) and not isinstance(value, str):
            value = json.dumps(value)  # e.g. a split named "1"
        elif isinstance(default, tuple) and not (isinstance(value, list) and value):
            example = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default[:2])
            raise GanFeaturesError(f"--set {key}={value}: {key} takes a JSON list, e.g. --set {key}=[{example}]")
        if isinstance(default, int) and not isinstance(default, bool) and number:
            value = int(value)
        checked[key] = value
    return checked


def cmd_svm(args) -> None:
    from .protocols import get_protocol
    from .report import check_table_writable, result_table_name, write_result

    overrides = _protocol_overrides(args.protocol, args.overrides)
    protocol = get_protocol(args.protocol, **{"seed": args.seed, "Cs": args.Cs, **overrides})
    name = None
    if args.results:  # every check before minutes of fitting, not after
        name = args.name or result_table_name(protocol.name, args.train, protocol.seed)
        check_output_folder(args.results, "--results")
        for table in (name, f"{name}_validation"):
            check_table_writable(args.results, table, args.overwrite)
    svm_params = {"backend": args.backend} if args.backend else None
    result = protocol.run(args.train, args.test, svm_params=svm_params, progress=not args.quiet,
                          gram_cache=args.gram_cache)
    print(result.describe())
    if args.results:
        for path in write_result(result, args.results, name=name):
            print(path)


def cmd_knn(args) -> None:
    from .knn import knn_probe
    from .report import check_table_writable, write_knn_result

    if args.results:  # before minutes of work, not after
        check_output_folder(args.results, "--results")
        check_table_writable(args.results, "knn", args.overwrite)
    result = knn_probe(args.train, args.test, ks=args.ks, temperature=args.temperature, device=args.device,
                       batch_size=args.batch_size, precision=args.precision, progress=not args.quiet)
    print(result.describe())
    if args.results:
        for path in write_knn_result(result, args.results, overwrite=args.overwrite):
            print(path)


def bench_config(args):
    """The :class:`~gan_features.bench.BenchConfig` that ``gan-features bench`` arguments describe."""
    from .bench import BenchConfig

    return BenchConfig(
        checkpoints=args.checkpoints, cifar_checkpoints=args.cifar_checkpoints, cifar_root=args.cifar_root,
        svhn_root=args.svhn_root, svhn_checkpoint=args.svhn_ckpt, scale=args.scale, results_dir=args.results,
        cache_dir=args.cache_dir, seed=args.seed, precision=args.precision, device=args.device,
        batch_size=args.batch_size, kmeans_centroids=args.kmeans_centroids, random_baseline=not args.no_random,
        pixel_baseline=not args.no_pixels, knn=not args.no_knn, Cs=args.Cs, resume=args.resume,
        saved_only=args.saved_only, progress=not args.quiet)


def cmd_bench(args) -> None:
    from . import bench

    for option, folder in (("--results", args.results), ("--cache-dir", args.cache_dir)):
        if folder is not None:
            check_output_folder(folder, option)
    for path in bench.run_bench(bench_config(args)).values():
        print(path)


def cmd_init(args) -> None:
    from .train import random_checkpoint

    check_output(args.out, args.overwrite, example="random.pt")
    print(random_checkpoint(args.arch, args.out, seed=args.seed))


def cmd_import_radford(args) -> None:
    from .radford import save_radford_checkpoint

    check_output(args.out, args.overwrite, example="radford.pt", create_folder=True)
    print(save_radford_checkpoint(args.directory, args.out, allow_missing=args.allow_missing,
                                  overwrite=args.overwrite))


def cmd_sample(args) -> None:
    from .checkpoints import load_checkpoint
    from .samples import sample_grid

    check_output(args.out, args.overwrite, example="samples.png")
    checkpoint = load_checkpoint(args.ckpt, architecture=args.arch)
    if checkpoint.generator is None:
        raise GanFeaturesError(f"{args.ckpt} holds no generator (a discriminator's weights only): sample from a "
                               f"gan-features checkpoint of the pair (gan-features train, init or import-radford)")
    print(sample_grid(checkpoint.generator, args.out, seed=args.seed, interpolate_row=not args.no_interpolation,
                      overwrite=args.overwrite))


def cmd_select(args) -> None:
    from .checkpoints import load_checkpoint
    from .data import load_dataset
    from .device import pick_device
    from .selection import SelectionSettings, check_training_split, run_checkpoints, select_checkpoint

    check_training_split(args.split)  # before any data is read
    check_output_folder(args.out, "--out")
    paths = run_checkpoints(args.run_dir, args.pattern)
    settings = SelectionSettings(fit_size=args.fit_size, validation_size=args.validation_size,
                                 subset_seed=args.subset_seed, precision=args.precision,
                                 diversity_samples=args.diversity_samples, svm_tol=args.svm_tol,
                                 **({"Cs": args.Cs} if args.Cs is not None else {}))
    image_size = load_checkpoint(paths[0]).architecture.image_size
    dataset = load_dataset(args.dataset, args.split, args.data_root, image_size)
    result = select_checkpoint(args.run_dir, args.out, dataset, settings, checkpoints=paths,
                               device=pick_device(args.device), batch_size=args.batch_size,
                               num_workers=args.num_workers, min_diversity=args.min_diversity,
                               overwrite=args.overwrite, progress=not args.quiet)
    best = result.best
    print(f"scored {result.scored}, reused {result.reused}; best: {best['checkpoint']} "
          f"({best['validation_accuracy_pct']:.2f}% validation accuracy, C={best['C']:g}, "
          f"sample diversity {best['sample_diversity']:.3f})")
    for path in result.paths:
        print(path)


def cmd_export(args) -> None:
    from .modelcard import export_model

    check_output_folder(args.out, "--out")
    for path in export_model(args.out, args.ckpt, run_dir=args.run_dir, selection=args.selection,
                             sample_seed=args.seed, overwrite=args.overwrite).values():
        print(path)


def cmd_info(args) -> None:
    path = Path(args.path)
    if path.suffix in (".h5", ".hdf5"):
        from .store import FeatureStore

        with FeatureStore(path) as store:
            info = {"rows": len(store), "dimension": store.dimension, **store.attrs}
    else:
        from .checkpoints import load_checkpoint

        c = load_checkpoint(path, architecture=args.arch)
        info = {"architecture": c.architecture.name, "sha256": c.sha256, "has_discriminator": c.discriminator
                is not None, "has_generator": c.generator is not None, "has_running_stats": c.has_running_stats,
                "resumable": c.training is not None, "provenance": c.provenance}
    print(json.dumps(info, indent=2, default=str))


def cmd_archs(args) -> None:
    from .models import ARCHITECTURES

    for name, arch in ARCHITECTURES.items():
        print(f"{name:20s} {arch.image_size}x{arch.image_size}  {arch.feature_dim():6d}-d features  {arch.description}")


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "extract": cmd_extract, "svm": cmd_svm, "knn": cmd_knn,
            "bench": cmd_bench, "init": cmd_init, "import-radford": cmd_import_radford, "sample": cmd_sample,
            "select": cmd_select, "export": cmd_export, "info": cmd_info, "archs": cmd_archs}


FILE_SYSTEM_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                      errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


def _error_line(command: str, error: Exception) -> None:
    """``gan-features COMMAND: error: MESSAGE`` on stderr, the message folded onto one line."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"gan-features {command}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _configure(args)
        COMMANDS[args.command](args)
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
