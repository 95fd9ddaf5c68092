"""The recipe of docs/reproduce.md, from ImageNet-1k to the paper's Table 1, run step by step.

    python benchmarks/reproduce.py --imagenet-root DIR --cifar-root DIR --gpus G --work-dir DIR
                                   [--workers N] [--epochs N] [--label TEXT] [--dry-run] [--quiet]
    python benchmarks/reproduce.py --toy [--work-dir DIR] [--shared DIR] [--cifar-root DIR] [--quiet]

Each step is one command of the doc, run as a subprocess in the work folder (so the paths it writes
are the doc's, relative to that folder) after its command line is printed:

1. ``prepare``: ImageNet's training split decoded once at 32 px into ``imagenet32-train.h5``;
2. ``train``: ``torchrun --standalone --nproc-per-node G -m gan_features.cli train`` with the paper's
   settings into ``run/`` (a checkpoint every epoch);
3. ``select``: every epoch checkpoint scored on CIFAR-10 TRAINING images only, into ``selection/``;
4. ``export``: the best one as fp16 weights with a model card, into ``export/``;
5. ``bench``: Table 1 at full scale with that checkpoint, into ``tables/`` (features in ``bench-cache/``).

A failing step stops the script at once with the step's name and exit status 1; bad arguments exit 2
with one line. Rerunning the same command continues: a complete prepared file is not made again,
``train`` gets ``--resume`` once ``run/latest.pt`` exists, ``select`` reuses the checkpoints it has
scored, ``export`` is skipped while ``export/`` holds the checkpoint ``selection/`` names best, and
``bench`` gets ``--resume`` once its cache exists. ``--dry-run`` prints the commands and runs none.

``--toy`` runs the same commands on a few hundred images, in a few minutes on 2 CPU cores, so that
CI (``tests/test_reproduce.py``) keeps the recipe working: 30 photos per class extracted from the
Imagenette tarball in $GAN_FEATURES_SHARED (``--shared``) stand in for ImageNet, CIFAR-10 is built from
the shared JPEG copy unless ``--cifar-root`` is given, training is 2 epochs (18 steps each of a global
batch of 16, fp32) on 2 gloo ranks on the CPU, selection scores 200 fit / 100 validation rows, and the bench runs at
``--scale toy`` without the k-means row. The work folder is a new temporary one unless ``--work-dir``
names one; it is kept, for its tables. Nothing is written into the repository.
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "GAN_FEATURES_SHARED"
IMAGENETTE_TARBALL = Path("data", "imagenette", "imagenette2-train-64px.tar.gz")
BUILD_CIFAR10 = Path("tools", "build-cifar10-batches")
# What each step writes, relative to the work folder.
PREPARED, RUN, SELECTION, EXPORT, TABLES, CACHE = ("imagenet32-train.h5", "run", "selection", "export", "tables",
                                                   "bench-cache")
TOY_IMAGES, TOY_CIFAR10 = "imagenette", "cifar10"
EXPORTED = "checkpoint-fp16.pt"  # gan_features.modelcard.CHECKPOINT_NAME (this script imports no torch)
SELECTION_CSV = "selection.csv"  # gan_features.selection.TABLE_NAME + ".csv", also copied into export/
LABEL = "DCGAN radford-imagenet32, trained on ImageNet-1k (ours)"
TOY_LABEL = "DCGAN radford-imagenet32, toy run: {epochs} epochs on {images} Imagenette photos (ours)"
EPOCHS, BATCH_SIZE = 30, 128
TOY_PER_CLASS, TOY_EPOCHS, TOY_RANKS = 30, 2, 2
# 18 steps an epoch on 300 photos over 2 ranks (the paper's 128 would give 2): a toy run that still
# takes enough steps for its checkpoints to differ.
TOY_BATCH_SIZE = 16
# The toy trains on the CPU: fp32 runs at full speed on every CPU, where bf16 autocast is ~2x slower on
# those that emulate bfloat16 (the recipe's bf16 is for GPUs).
TOY_PRECISION = "fp32"
# Selection on a few hundred CIFAR-10 training rows: seconds per checkpoint instead of minutes.
TOY_SELECT = ("--fit-size", "200", "--validation-size", "100", "--diversity-samples", "64")
# The doc's program names, and the modules they run where the script is not beside the interpreter.
MODULES = {"gan-features": "gan_features.cli", "torchrun": "torch.distributed.run"}
EXIT_FAILED, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """Bad arguments or inputs: one line, exit status 2."""


@dataclass
class Step:
    """One step of the recipe: a command (``program`` + ``args``) or, for the toy's data, a Python call."""

    name: str
    what: str  # what it writes, for the printed plan
    program: str = ""  # "gan-features", "torchrun" or "python"
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    call: Callable[[], None] | None = None
    skip: str = ""  # why it need not run (what it makes is complete), or ""

    def command(self) -> list[str]:
        """The command as the doc writes it."""
        return [self.program, *self.args]

    def argv(self) -> list[str]:
        return [*executable(self.program), *self.args]

    def text(self) -> str:
        """The command line as run (its environment first), or what the Python call does."""
        if self.call is not None:
            return self.what
        return " ".join([*(f"{key}={shlex.quote(value)}" for key, value in self.env.items()), shlex.join(self.argv())])


def executable(program: str) -> list[str]:
    """A program of the doc as this interpreter's environment runs it: the script beside the interpreter
    (a venv's or tox's bin/, on PATH or not), else its module through the interpreter."""
    if program == "python":
        return [sys.executable]
    beside = Path(sys.executable).parent / program  # not resolved: a venv's python is a symlink out of it
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", MODULES[program]]


# ------------------------------------------------------------------------------------------ the recipe
def recipe(imagenet_root: str, cifar_root: str, work: Path, *, ranks: int, workers: int, epochs: int, label: str,
           batch_size: int = BATCH_SIZE, scale: str = "full", precision: str = "bf16",
           train_options: tuple[str, ...] = (),
           select_options: tuple[str, ...] = (), bench_options: tuple[str, ...] = (), quiet: bool = False
           ) -> list[Step]:
    """The doc's five steps, paths relative to ``work`` (where they run), each with the flag that
    continues it when ``work`` holds an earlier attempt."""
    q = ["--quiet"] if quiet else []
    latest = work / RUN / "latest.pt"
    return [
        Step("prepare", f"{PREPARED}: every training image, 32 px, uint8",
             "gan-features", ["prepare", "--dataset", "imagenet", "--data-root", imagenet_root, "--split", "train",
                              "--size", "32", "--out", PREPARED, "--workers", str(workers), *q],
             skip=f"{PREPARED} is complete" if (work / PREPARED).is_file() else ""),
        Step("train", f"{RUN}/: epochNNNN.pt every epoch, latest.pt, final.pt, log.jsonl, sample grids",
             "torchrun", ["--standalone", "--nproc-per-node", str(ranks), "-m", "gan_features.cli", "train",
                          "--dataset", "prepared", "--data-root", PREPARED, "--arch", "radford-imagenet32",
                          "--epochs", str(epochs), "--batch-size", str(batch_size), "--precision", precision,
                          "--out-dir", RUN, *train_options, *(["--resume"] if latest.is_file() else []), *q]),
        Step("select", f"{SELECTION}/: selection.csv/.md/.json, the best checkpoint named",
             "gan-features", ["select", RUN, "--out", SELECTION, "--dataset", "cifar10", "--data-root", cifar_root,
                              "--split", "train", *select_options, *q]),
        Step("export", f"{EXPORT}/: {EXPORTED}, MODEL_CARD.md, samples.png, losses.png, selection.csv",
             "gan-features", ["export", "--selection", SELECTION, "--out", EXPORT,
                              *(["--overwrite"] if (work / EXPORT / EXPORTED).is_file() else []), *q],
             skip=_export_done(work)),
        Step("bench", f"{TABLES}/: table1_cifar10.md/.csv, table2_svhn.md/.csv; features in {CACHE}/",
             "gan-features", ["bench", "--scale", scale, "--cifar-root", cifar_root,
                              "--ckpt", f"{label}={EXPORT}/{EXPORTED}", "--results", TABLES, "--cache-dir", CACHE,
                              *bench_options, *(["--resume"] if (work / CACHE).is_dir() else []), *q]),
    ]


def _best_sha256(path: Path) -> str | None:
    """The checkpoint sha256 of a selection table's best row (None: no such table, or no best row)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            best = [row["checkpoint_sha256"] for row in csv.DictReader(handle) if row.get("is_best") == "True"]
    except (OSError, KeyError, csv.Error):
        return None
    return best[0] if len(best) == 1 else None


def _export_done(work: Path) -> str:
    """Why the export need not run: export/ already holds the checkpoint that selection/ names best."""
    chosen = _best_sha256(work / SELECTION / SELECTION_CSV)
    if chosen and (work / EXPORT / EXPORTED).is_file() and _best_sha256(work / EXPORT / SELECTION_CSV) == chosen:
        return f"{EXPORT}/ holds the checkpoint {SELECTION}/ names best"
    return ""


def real_plan(args: argparse.Namespace) -> tuple[Path, list[Step]]:
    missing = [flag for flag, value in (("--imagenet-root", args.imagenet_root), ("--cifar-root", args.cifar_root),
                                        ("--gpus", args.gpus), ("--work-dir", args.work_dir)) if value is None]
    if missing:
        raise UsageError(f"the recipe needs {', '.join(missing)} (or --toy for the CPU smoke test)")
    if args.shared is not None:
        raise UsageError("--shared is for --toy (its images); the recipe reads --imagenet-root")
    imagenet, cifar = absolute(args.imagenet_root), absolute(args.cifar_root)
    if not args.dry_run:
        if not Path(imagenet, "train").is_dir():
            raise UsageError(f"--imagenet-root {imagenet} has no train/ folder: pass the folder holding "
                             f"ImageNet's train/<wnid>/*.JPEG")
        check_cifar10(cifar)
    work = work_folder(args.work_dir)
    workers = args.workers or os.cpu_count() or 1
    return work, recipe(imagenet, cifar, work, ranks=args.gpus, workers=workers, epochs=args.epochs or EPOCHS,
                        label=args.label or LABEL, quiet=args.quiet)


def toy_plan(args: argparse.Namespace) -> tuple[Path, list[Step]]:
    given = [flag for flag, value in (("--imagenet-root", args.imagenet_root), ("--gpus", args.gpus),
                                      ("--workers", args.workers)) if value is not None]
    if given:
        raise UsageError(f"--toy sets {', '.join(given)} itself (300 Imagenette photos, 2 CPU ranks, 2 workers): "
                         f"leave {'it' if len(given) == 1 else 'them'} out")
    shared_value = args.shared or os.environ.get(SHARED_ENV)
    if not shared_value:
        raise UsageError(f"--toy reads Imagenette from the shared data folder: pass --shared DIR or set ${SHARED_ENV}")
    shared = Path(absolute(shared_value))
    tarball = shared / IMAGENETTE_TARBALL
    if not tarball.is_file():
        raise UsageError(f"{tarball} not found: --shared (or ${SHARED_ENV}) must be the shared data folder")
    work = work_folder(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gan-features-toy-"))
    if args.cifar_root:
        cifar = absolute(args.cifar_root)
        check_cifar10(cifar)
        build = Step("cifar10", "CIFAR-10 (given)", skip=f"--cifar-root {cifar} given")
    else:
        tool = shared / BUILD_CIFAR10
        if not tool.is_file():
            raise UsageError(f"{tool} not found: pass --cifar-root DIR (the folder holding cifar-10-batches-py/)")
        cifar = str(work / TOY_CIFAR10)
        done = (work / TOY_CIFAR10 / "cifar-10-batches-py").is_dir()
        # Built under another name, renamed when complete: a stopped build is never taken for a dataset.
        build = Step("cifar10", f"{TOY_CIFAR10}/cifar-10-batches-py from the shared JPEG copy", "python",
                     [str(tool), f"{TOY_CIFAR10}.partial"], skip=f"{TOY_CIFAR10}/ is complete" if done else "")
    images = Step("images", f"extract the first {TOY_PER_CLASS} photos of each class of {tarball} into "
                            f"{TOY_IMAGES}/train/<wnid>/ (Python's tarfile)",
                  call=lambda: extract_toy_images(tarball, work), skip=(f"{TOY_IMAGES}/ is complete" if
                                                                      (work / TOY_IMAGES).is_dir() else ""))
    epochs = args.epochs or TOY_EPOCHS
    label = args.label or TOY_LABEL.format(epochs=epochs, images=10 * TOY_PER_CLASS)
    steps = recipe(str(work / TOY_IMAGES), cifar, work, ranks=TOY_RANKS, workers=2, epochs=epochs,
                   label=label, batch_size=TOY_BATCH_SIZE, scale="toy", precision=TOY_PRECISION,
                   train_options=("--device", "cpu"),
                   select_options=TOY_SELECT, bench_options=("--kmeans-centroids", "0"), quiet=args.quiet)
    # Two ranks on 2 cores: one thread each, or they fight over the cores.
    next(step for step in steps if step.name == "train").env["OMP_NUM_THREADS"] = "1"
    return work, [images, build, *steps]


def extract_toy_images(tarball: Path, work: Path) -> None:
    """The first TOY_PER_CLASS photos of each class, in the archive's order, as ImageNet's train/<wnid>/ tree."""
    partial = work / f"{TOY_IMAGES}.partial"
    with tarfile.open(tarball) as tar:
        taken: dict[str, int] = {}
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[0] == "train" and taken.get(parts[1], 0) < TOY_PER_CLASS:
                taken[parts[1]] = taken.get(parts[1], 0) + 1
                members.append(member)
        tar.extractall(partial, members=members, filter="data")
    os.replace(partial, work / TOY_IMAGES)


def after_build(step: Step, work: Path) -> None:
    """The toy CIFAR-10 build lands under its final name only when complete."""
    if step.name == "cifar10" and step.program == "python":
        (work / TOY_CIFAR10).mkdir(exist_ok=True)
        os.replace(work / f"{TOY_CIFAR10}.partial" / "cifar-10-batches-py", work / TOY_CIFAR10 / "cifar-10-batches-py")
        (work / f"{TOY_CIFAR10}.partial").rmdir()


# ------------------------------------------------------------------------------------------ checks
def absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def work_folder(value: str) -> Path:
    work = Path(absolute(value))
    if work.resolve() == REPO or REPO in work.resolve().parents:
        raise UsageError(f"--work-dir {work} is inside the repository {REPO}: choose a folder outside it")
    if work.exists() and not work.is_dir():
        raise UsageError(f"--work-dir {work} exists but is not a folder")
    return work


def check_cifar10(root: str) -> None:
    if not any(Path(root, name).is_dir() for name in ("cifar-10-batches-py", "cifar-10-batches-bin")):
        raise UsageError(f"--cifar-root {root} holds no cifar-10-batches-py/ (or -bin/): pass the folder holding the "
                         f"extracted official archive")


# ------------------------------------------------------------------------------------------ running
def run(work: Path, steps: list[Step], dry_run: bool = False) -> int:
    """Each step in turn, its command printed first; the first failure stops the run."""
    started = time.perf_counter()
    print(f"reproduce: work folder {work} (every command runs there)", flush=True)
    if not dry_run:
        work.mkdir(parents=True, exist_ok=True)
    for number, step in enumerate(steps, 1):
        tag = f"[{number}/{len(steps)} {step.name}]"
        print(f"{tag} {step.text()}", flush=True)
        if step.skip:
            print(f"{tag} skipped: {step.skip}", flush=True)
            continue
        if dry_run:
            continue
        began = time.perf_counter()
        try:
            if step.call is not None:
                step.call()
            else:
                status = subprocess.run(step.argv(), cwd=work, env={**os.environ, **step.env}).returncode
                if status != 0:
                    print(f"reproduce: step {step.name!r} failed (exit status {status}; its error is above): rerun "
                          f"the same command to continue from it", file=sys.stderr)
                    return EXIT_FAILED
                after_build(step, work)
        except (OSError, tarfile.TarError) as error:
            print(f"reproduce: step {step.name!r} failed: {' '.join(str(error).split())}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:  # the step's process got the signal too; what it finished is kept
            print(f"reproduce: interrupted in step {step.name!r}: rerun the same command to continue from it",
                  file=sys.stderr)
            return 130
        print(f"{tag} done in {time.perf_counter() - began:.0f} s", flush=True)
    if not dry_run:
        print(f"reproduce: all {len(steps)} steps done in {time.perf_counter() - started:.0f} s; Table 1: "
              f"{work / TABLES / 'table1_cifar10.md'}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See docs/reproduce.md.")

    def error(message: str):  # one line, as the gan-features command's errors
        parser.exit(EXIT_USAGE, f"reproduce: error: {' '.join(message.split())} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]
    parser.add_argument("--toy", action="store_true",
                        help="the CPU smoke test: 300 Imagenette photos, 2 gloo ranks, tiny selection, --scale toy")
    parser.add_argument("--imagenet-root", help="folder holding ImageNet's train/<wnid>/*.JPEG (the recipe)")
    parser.add_argument("--cifar-root", help="folder holding cifar-10-batches-py/ (the recipe; with --toy, default: "
                                             "built from the shared JPEG copy)")
    parser.add_argument("--gpus", type=_positive, help="ranks of torchrun, one per GPU (the recipe)")
    parser.add_argument("--work-dir", help="where every step writes (outside the repository; with --toy, default: a "
                                           "new temporary folder)")
    parser.add_argument("--workers", type=_positive, help="prepare's decoding processes (default: every core)")
    parser.add_argument("--epochs", type=_positive, help=f"training epochs (default: {EPOCHS}; --toy: {TOY_EPOCHS})")
    parser.add_argument("--label", help="the row label of the trained discriminator in Table 1")
    parser.add_argument("--shared", help=f"with --toy: the shared data folder (default: ${SHARED_ENV})")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    parser.add_argument("--quiet", action="store_true", help="pass --quiet to every command (no progress bars)")
    return parser


def plan(args: argparse.Namespace) -> tuple[Path, list[Step]]:
    """The work folder and the steps that ``args`` ask for (UsageError: they cannot run)."""
    if args.label is not None and ("=" in args.label or not args.label.strip()):
        # bench splits --ckpt LABEL=PATH at the first "=": such a label would fail only at the last step
        raise UsageError(f"--label {args.label!r} must be non-empty text without '='")
    return toy_plan(args) if args.toy else real_plan(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        work, steps = plan(args)
    except UsageError as error:
        print(f"reproduce: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return run(work, steps, dry_run=args.dry_run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
