"""The command line's contract on bad input, as a catalogue of cases (issue 16).

Every case runs ``gan_features.cli.main(argv)`` in-process, in a fresh folder its ``setup`` fills,
and must give: exit status 2 (returned, or ``SystemExit(2)`` from argparse), exactly one non-empty
line on stderr (``gan-features CMD: error: ...``), no traceback, every file that was there before
byte-identical after, and no new file or folder (no ``.partial`` left behind, no output folder made).

``benchmarks/reliability.py`` runs the same catalogue and writes ``results/reliability.md``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from gan_features.cli import build_parser, main
from gan_features.commands import COMMANDS

pytestmark = pytest.mark.usefixtures("single_torch_thread")

EXIT_USAGE = 2
ARCH = "radford-svhn32"  # the smallest registered pair: a 10 MB checkpoint


# ------------------------------------------------------------------------------------ the inputs
@functools.cache
def _checkpoint_bytes() -> bytes:
    """A `gan-features init --arch radford-svhn32` checkpoint (made once per process)."""
    from gan_features.train import random_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        return random_checkpoint(ARCH, Path(folder) / "d.pt", seed=0).read_bytes()


@functools.cache
def _state_dict_bytes() -> bytes:
    """A bare discriminator state_dict, as pytorch/examples' netD_epoch_N.pth files are."""
    import torch

    from gan_features.models import create_models

    discriminator, _ = create_models(ARCH, seed=0)
    buffer = io.BytesIO()
    torch.save(discriminator.state_dict(), buffer)
    return buffer.getvalue()


def checkpoint(name: str = "d.pt") -> Callable[[Path], None]:
    return lambda tmp: _write(tmp / name, _checkpoint_bytes())


def state_dict(name: str = "netD.pth") -> Callable[[Path], None]:
    return lambda tmp: _write(tmp / name, _state_dict_bytes())


def text(name: str, content: str = "keep me\n") -> Callable[[Path], None]:
    return lambda tmp: _write(tmp / name, content.encode())


def folder(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir(parents=True, exist_ok=True)


def stores(train: str = "train.h5", test: str = "test.h5", rows: int = 40) -> Callable[[Path], None]:
    """Two tiny feature stores (8-d, two classes) holding the 'train' and 'test' splits."""
    def make(tmp: Path) -> None:
        import numpy as np

        from gan_features.store import write_features

        rng = np.random.default_rng(0)
        for name, split, n in ((train, "train", rows), (test, "test", rows // 2)):
            labels = np.arange(n) % 2
            features = (rng.normal(size=(n, 8)) + 3 * np.eye(8)[labels]).astype(np.float32)
            write_features(tmp / name, features, labels, {"split": split, "checkpoint_sha256": "ab" * 32,
                                                          "dataset": "toy"})
    return make


def image_folder(name: str, splits: tuple[str, ...]) -> Callable[[Path], None]:
    """An ImageFolder tree NAME/SPLIT/CLASS/*.png of 8x8 images."""
    def make(tmp: Path) -> None:
        from PIL import Image

        for split in splits:
            for label in ("a", "b"):
                (tmp / name / split / label).mkdir(parents=True)
                for i in range(2):
                    Image.new("RGB", (8, 8), (40 * i, 200 if label == "a" else 0, 0)).save(
                        tmp / name / split / label / f"{i}.png")
    return make


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def prepared(images: str, name: str) -> Callable[[Path], None]:
    """NAME: the train split of the image folder IMAGES prepared at 32 px (``gan-features prepare``)."""
    def make(tmp: Path) -> None:
        from gan_features.data.prepared import prepare

        prepare("folder", "train", tmp / images, 32, tmp / name, workers=1, progress=False)
    return make


def prepared_partial(name: str) -> Callable[[Path], None]:
    """NAME.partial: a stopped preparation of other images (another size)."""
    def make(tmp: Path) -> None:
        from gan_features.data.prepared import prepare

        image_folder("other", ("train",))(tmp)
        prepare("folder", "train", tmp / "other", 16, tmp / "scratch.h5", workers=1, progress=False)
        (tmp / "scratch.h5").rename(tmp / f"{name}.partial")
        shutil.rmtree(tmp / "other")
    return make


def _all(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for step in steps:
            step(tmp)
    return setup


def _nothing(tmp: Path) -> None:
    pass


@contextlib.contextmanager
def _chdir(path: Path):  # contextlib.chdir is Python >= 3.11; the package supports 3.10
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


# ------------------------------------------------------------------------------------ the catalogue
@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # paths relative to the case's folder, the working directory of the run
    expected: str  # a substring of the one stderr line
    setup: Callable[[Path], None] = _nothing
    unwritable: str | None = None  # a folder (made by setup) that is read-only during the run

    @property
    def command(self) -> str:
        return "gan-features " + " ".join(self.argv)


def case(id: str, argv: str, expected: str, *setup: Callable[[Path], None], unwritable: str | None = None) -> Case:
    return Case(id, tuple(argv.split()), expected, _all(*setup) if setup else _nothing, unwritable)


TRAIN = "train --quiet --arch radford-svhn32 --dataset digits --device cpu"
EXTRACT = "extract --quiet --ckpt d.pt --dataset digits --device cpu"
SVM = "svm --quiet --train train.h5 --test test.h5"

CASES: list[Case] = [
    # -- argparse, every parser: one line, no usage block
    case("no-command", "", "the following arguments are required: COMMAND"),
    case("unknown-command", "frobnicate", "invalid choice: 'frobnicate'"),
    case("unknown-option", "archs --bogus", "unrecognized arguments: --bogus"),
    case("train-steps-0", f"{TRAIN} --out-dir run --steps 0", "argument --steps: expected a whole number of at least 1"),
    case("train-epochs-0", f"{TRAIN} --out-dir run --epochs 0", "argument --epochs: expected a whole number"),
    case("train-steps-and-epochs", f"{TRAIN} --out-dir run --steps 3 --epochs 2", "not allowed with argument"),
    case("train-batch-size-0", f"{TRAIN} --out-dir run --batch-size 0", "argument --batch-size: expected"),
    case("train-lr-0", f"{TRAIN} --out-dir run --lr 0", "argument --lr: expected a positive number"),
    case("train-lr-nan", f"{TRAIN} --out-dir run --lr nan", "argument --lr: expected a positive number"),
    case("train-beta1-1", f"{TRAIN} --out-dir run --beta1 1", "argument --beta1: expected a number from 0"),
    case("train-seed-negative", f"{TRAIN} --out-dir run --seed -1", "argument --seed: expected a whole number from 0"),
    case("train-threads-0", f"{TRAIN} --out-dir run --threads 0", "argument --threads: expected"),
    case("train-num-workers-negative", f"{TRAIN} --out-dir run --num-workers -1", "argument --num-workers: expected"),
    case("train-checkpoint-every-0", f"{TRAIN} --out-dir run --checkpoint-every 0", "argument --checkpoint-every"),
    case("train-image-size-0", f"{TRAIN} --out-dir run --image-size 0", "argument --image-size: expected"),
    case("train-precision-bogus", f"{TRAIN} --out-dir run --precision fp64", "argument --precision: invalid choice"),
    case("train-no-out-dir", TRAIN, "the following arguments are required: --out-dir"),
    case("extract-grid-0", f"{EXTRACT} --out f.h5 --grid 0", "argument --grid: expected"),
    case("extract-batch-size-0", f"{EXTRACT} --out f.h5 --batch-size 0", "argument --batch-size: expected"),
    case("extract-layers-negative", f"{EXTRACT} --out f.h5 --layers 0,-1", "argument --layers: expected"),
    case("extract-layers-text", f"{EXTRACT} --out f.h5 --layers a,b", "argument --layers: expected"),
    case("extract-dataset-bogus", "extract --ckpt d.pt --out f.h5 --dataset mnist", "argument --dataset: invalid choice"),
    case("extract-pooling-bogus", f"{EXTRACT} --out f.h5 --pooling median", "argument --pooling: invalid choice"),
    case("svm-C-0", f"{SVM} --C 0,1e-3", "argument --C: expected comma-separated distinct positive numbers"),
    case("svm-C-text", f"{SVM} --C small", "argument --C: expected"),
    case("svm-C-repeated", f"{SVM} --C 1e-3,1e-3", "argument --C: expected"),
    case("svm-seed-negative", f"{SVM} --seed -2", "argument --seed: expected"),
    case("svm-backend-bogus", f"{SVM} --backend bogus", "argument --backend: invalid choice: 'bogus'"),
    case("svm-set-no-value", f"{SVM} --set n_per_class", "argument --set: expected KEY=VALUE"),
    case("knn-k-0", "knn --train train.h5 --test test.h5 --k 0,20", "argument --k: expected"),
    case("knn-temperature-0", "knn --train train.h5 --test test.h5 --temperature 0", "argument --temperature"),
    case("bench-kmeans-negative", "bench --kmeans-centroids -1", "argument --kmeans-centroids: expected"),
    case("bench-batch-size-0", "bench --batch-size 0", "argument --batch-size: expected"),
    case("bench-scale-bogus", "bench --scale huge", "argument --scale: invalid choice"),
    case("bench-results-is-file", "bench --quiet --cifar-root cifar --results tables", "tables is a file, not a "
                                                                                      "folder", text("tables")),
    case("init-arch-bogus", "init --arch resnet --out d.pt", "argument --arch: invalid choice"),
    case("init-seed-too-large", "init --out d.pt --seed 4294967296", "argument --seed: expected a whole number"),
    case("sample-seed-negative", "sample --ckpt d.pt --out s.png --seed -1", "argument --seed: expected"),
    case("select-fit-size-1", "select run --out sel --fit-size 1", "argument --fit-size: expected a whole number "
                                                                     "of at least 2"),
    case("select-epochs-0", "select run --out sel --epochs 0", "argument --epochs: expected comma-separated whole "
         "numbers of at least 1, got '0'"),
    case("select-svm-tol-0", "select run --out sel --svm-tol 0", "argument --svm-tol: expected a positive number"),
    case("select-min-diversity-negative", "select run --out sel --min-diversity -0.5", "argument --min-diversity"),
    case("demo-steps-0", "demo --steps 0", "argument --steps: expected"),
    case("export-seed-text", "export --ckpt d.pt --out exported --seed one", "argument --seed: expected"),
    case("info-no-path", "info", "the following arguments are required: path"),

    # -- train: refused before the data is read
    case("train-existing-run", f"{TRAIN} --out-dir run --steps 1", "pass --resume", text("run/latest.pt")),
    case("train-out-dir-is-file", f"{TRAIN} --out-dir run --steps 1", "run is a file, not a folder", text("run")),
    case("train-out-dir-unwritable", f"{TRAIN} --out-dir ro/run --steps 1", "folder ro is not writable",
         folder("ro"), unwritable="ro"),
    case("train-image-size-mismatch", f"{TRAIN} --out-dir run --steps 1 --image-size 64", "--image-size 32"),
    case("train-batch-larger-than-data", f"{TRAIN} --out-dir run --steps 1 --batch-size 5000",
         "lower --batch-size"),

    # -- extract: every refusal before the statistics pass
    case("extract-out-exists", f"{EXTRACT} --out f.h5", "pass --overwrite", checkpoint(), text("f.h5")),
    case("extract-out-is-folder", f"{EXTRACT} --out stores --overwrite", "--out stores is a folder",
         checkpoint(), text("stores/keep.txt")),
    case("extract-out-folder-missing", f"{EXTRACT} --out nowhere/f.h5", "folder nowhere does not exist",
         checkpoint()),
    case("extract-out-folder-unwritable", f"{EXTRACT} --out ro/f.h5", "folder ro is not writable",
         checkpoint(), folder("ro"), unwritable="ro"),
    case("extract-split-out-exists", f"{EXTRACT} --split train,test --out f-{{split}}.h5", "f-test.h5 already exists",
         checkpoint(), text("f-test.h5")),
    case("extract-several-splits-one-file", f"{EXTRACT} --split train,test --out f.h5", "put {split} in --out",
         checkpoint()),
    case("extract-no-split", f"{EXTRACT} --split , --out f.h5", "names no split", checkpoint()),
    case("extract-ckpt-missing", "extract --quiet --ckpt missing.pt --out f.h5", "checkpoint missing.pt does not exist"),
    case("extract-ckpt-not-a-checkpoint", f"{EXTRACT} --out f.h5", "is not a loadable checkpoint",
         text("d.pt", "not a checkpoint")),
    case("extract-bare-state-dict", "extract --quiet --ckpt netD.pth --out f.h5", "pass --arch", state_dict()),
    case("extract-arch-mismatch", f"{EXTRACT} --arch examples64 --out f.h5", "drop --arch or fix it", checkpoint()),
    case("extract-unknown-split", f"{EXTRACT} --split val --out f.h5", "digits has splits train, test and all",
         checkpoint()),
    case("extract-stats-split-missing", "extract --quiet --ckpt d.pt --dataset folder --data-root imgs --split val "
                                        "--image-size 32 --device cpu --out f.h5", "--stats-split val",
         checkpoint(), image_folder("imgs", ("val",))),
    case("extract-data-root-missing", "extract --quiet --ckpt d.pt --dataset cifar10 --data-root nowhere "
                                      "--device cpu --out f.h5", "nowhere", checkpoint()),
    case("extract-layers-out-of-range", f"{EXTRACT} --layers 0,9 --out f.h5", "layers [9] do not exist", checkpoint()),
    case("extract-running-stats-missing", f"{EXTRACT} --batchnorm running --out f.h5", "use --batchnorm recompute",
         checkpoint()),
    case("extract-image-size-mismatch", f"{EXTRACT} --image-size 64 --out f.h5", "--image-size 32", checkpoint()),
    case("extract-device-bogus", "extract --quiet --ckpt d.pt --device tpu --out f.h5", "unknown device 'tpu'",
         checkpoint()),

    # -- prepare: refused before any image is decoded
    case("prepare-imagenet-val-flat", "prepare --quiet --dataset imagenet --data-root net --split val --out p.h5",
         "torchvision.datasets.ImageNet('net', split='val')", text("net/val/ILSVRC2012_val_00000001.JPEG")),
    case("prepare-size-0", "prepare --data-root imgs --out p.h5 --size 0", "argument --size: expected"),
    case("prepare-workers-0", "prepare --data-root imgs --out p.h5 --workers 0", "argument --workers: expected"),
    case("prepare-out-exists", "prepare --quiet --dataset folder --data-root imgs --out p.h5", "pass --overwrite",
         image_folder("imgs", ("train",)), text("p.h5")),
    case("prepare-root-missing", "prepare --quiet --dataset imagenet --data-root nowhere --out p.h5", "nowhere"),
    case("prepare-partial-of-other-images", "prepare --quiet --dataset folder --data-root imgs --out p.h5",
         "partial preparation of other images", image_folder("imgs", ("train",)), prepared_partial("p.h5")),
    case("extract-prepared-wrong-split", f"{EXTRACT.replace('digits', 'prepared --data-root p.h5')} --split test "
                                         f"--out f.h5", "holds the 'train' split, not 'test'", checkpoint(),
         image_folder("imgs", ("train",)), prepared("imgs", "p.h5")),

    # -- svm: every refusal before any fit
    case("svm-store-missing", "svm --quiet --train missing.h5 --test missing2.h5", "missing.h5 does not exist"),
    case("svm-not-a-store", SVM, "is not a readable HDF5 feature store", text("train.h5"), text("test.h5")),
    case("svm-unknown-protocol", f"{SVM} --protocol magic", "unknown protocol 'magic'", stores()),
    case("svm-splits-swapped", "svm --quiet --train test.h5 --test train.h5", "holds the 'test' split", stores()),
    case("svm-same-store-twice", "svm --quiet --train train.h5 --test train.h5", "both the training and the test",
         stores()),
    case("svm-set-fraction-text", f"{SVM} --set validation_fraction=abc", "validation_fraction takes a number",
         stores()),
    case("svm-set-fraction-out-of-range", f"{SVM} --set validation_fraction=1.5", "must be in (0, 1)", stores()),
    case("svm-set-whole-number", f"{SVM} --protocol few-labels --set n_per_class=2.5", "n_per_class takes a whole "
                                                                                      "number", stores()),
    case("svm-set-Cs-text", f"{SVM} --set Cs=abc", "Cs takes a JSON list", stores()),
    case("svm-set-unknown-key", f"{SVM} --set draws=3", "has no parameter draws", stores()),
    case("svm-results-exist", f"{SVM} --C 1e-2 --results res", "pass --overwrite", stores(),
         text("res/svm_holdout_train_seed0.md")),
    case("svm-results-validation-exist", f"{SVM} --C 1e-2 --results res --name toy", "toy_validation.csv already "
                                                                                     "exists",
         stores(), text("res/toy_validation.csv")),
    case("svm-results-is-file", f"{SVM} --C 1e-2 --results res", "res is a file, not a folder", stores(), text("res")),
    case("svm-results-unwritable", f"{SVM} --C 1e-2 --results ro/res", "folder ro is not writable", stores(),
         folder("ro"), unwritable="ro"),
    case("svm-name-with-folder", f"{SVM} --C 1e-2 --results res --name a/b", "plain file name", stores()),

    # -- knn
    case("knn-store-missing", "knn --quiet --train missing.h5 --test test.h5", "missing.h5 does not exist"),
    case("knn-results-exist", "knn --quiet --train train.h5 --test test.h5 --results res", "pass --overwrite",
         stores(), text("res/knn.csv")),
    case("knn-k-too-large", "knn --quiet --train train.h5 --test test.h5 --k 41 --device cpu", "k=41 is more than",
         stores()),

    # -- init, import-radford
    case("init-out-exists", "init --arch radford-svhn32 --out d.pt", "d.pt already exists: pass --overwrite",
         text("d.pt")),
    case("init-out-is-folder", "init --arch radford-svhn32 --out ckpts --overwrite", "--out ckpts is a folder",
         folder("ckpts")),
    case("init-out-folder-missing", "init --arch radford-svhn32 --out nowhere/d.pt", "folder nowhere does not exist"),
    case("init-out-folder-unwritable", "init --arch radford-svhn32 --out ro/d.pt", "folder ro is not writable",
         folder("ro"), unwritable="ro"),
    case("import-radford-missing-folder", "import-radford no-such-dir --out r.pt", "no-such-dir"),
    case("import-radford-out-exists", "import-radford release --out r.pt", "r.pt already exists", folder("release"),
         text("r.pt")),

    # -- sample
    case("sample-out-exists", "sample --ckpt d.pt --out s.png", "s.png already exists: pass --overwrite",
         checkpoint(), text("s.png")),
    case("sample-out-is-folder", "sample --ckpt d.pt --out grids --overwrite", "--out grids is a folder",
         checkpoint(), folder("grids")),
    case("sample-out-folder-missing", "sample --ckpt d.pt --out nowhere/s.png", "folder nowhere does not exist",
         checkpoint()),
    case("sample-out-folder-unwritable", "sample --ckpt d.pt --out ro/s.png", "folder ro is not writable",
         checkpoint(), folder("ro"), unwritable="ro"),
    case("sample-bare-state-dict", "sample --ckpt netD.pth --out s.png", "pass --arch", state_dict()),
    case("sample-discriminator-only", "sample --ckpt netD.pth --arch radford-svhn32 --out s.png",
         "holds no generator", state_dict()),

    # -- info
    case("info-missing", "info missing.pt", "checkpoint missing.pt does not exist"),
    case("info-bare-state-dict", "info netD.pth", "pass --arch", state_dict()),
    case("info-not-a-store", "info f.h5", "is not a readable HDF5 feature store", text("f.h5")),

    # -- select, export, demo
    case("select-test-split", "select run --out sel --dataset digits --split test", "pass --split train",
         folder("run")),
    case("select-run-missing", "select run --out sel --dataset digits", "run folder run does not exist"),
    case("select-also-missing", "select run --out sel --dataset digits --also gone.pt",
         "--also gone.pt: no such checkpoint file", text("run/epoch0001.pt")),
    case("select-epochs-missing", "select run --out sel --dataset digits --epochs 1,3",
         "--epochs: run has no epoch0003.pt (it has only epoch0001.pt): choose epochs the run has finished",
         text("run/epoch0001.pt")),
    case("select-epochs-and-pattern", "select run --out sel --epochs 1 --pattern x",
         "argument --pattern: not allowed with argument --epochs"),
    case("select-out-is-file", "select run --out sel --dataset digits", "sel is a file, not a folder", folder("run"),
         text("sel")),
    case("export-nothing", "export --out exported", "nothing to export"),
    case("demo-out-dir-is-file", "demo --quiet --out-dir demo-output", "demo-output is a file, not a folder",
         text("demo-output")),
    case("demo-out-dir-not-empty", "demo --quiet --out-dir demo-output", "pass --overwrite",
         text("demo-output/demo.md")),
]


# ------------------------------------------------------------------------------------ running a case
@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    changed: list[str] = field(default_factory=list)  # files whose bytes changed, or that vanished
    added: list[str] = field(default_factory=list)  # paths that were not there before
    seconds: float = 0.0

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def unchanged(self) -> bool:
        return not self.changed and not self.added

    def problems(self, case: Case) -> list[str]:
        """What breaks the contract (empty: the case holds)."""
        found = []
        if self.code != EXIT_USAGE:
            found.append(f"exit status {self.code}, not {EXIT_USAGE}")
        if len(self.lines) != 1 or not self.lines[0].strip():
            found.append(f"{len(self.lines)} stderr lines, not one")
        if "Traceback" in self.stderr:
            found.append("a traceback")
        if self.lines and not (self.lines[0].startswith("gan-features") and ": error: " in self.lines[0]):
            found.append("not 'gan-features[ CMD]: error: ...'")
        if case.expected not in self.stderr:
            found.append(f"{case.expected!r} not in stderr")
        if self.changed:
            found.append(f"changed: {', '.join(self.changed)}")
        if self.added:
            found.append(f"new: {', '.join(self.added)}")
        return found


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (``<dir>`` for folders) under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        state[key] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@contextlib.contextmanager
def _read_only(folder: Path | None):
    """``folder`` read-only for the run. Root writes anywhere regardless of mode bits, so there
    os.access is also made to answer as it would for anyone else."""
    if folder is None:
        yield
        return
    mode = folder.stat().st_mode
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        with pytest.MonkeyPatch.context() as patch:
            if os.geteuid() == 0:
                real_access, target = os.access, folder.resolve()

                def access(path, mode, *args, **kwargs):
                    if mode & os.W_OK and Path(path).resolve() == target:
                        return False
                    return real_access(path, mode, *args, **kwargs)

                patch.setattr(os, "access", access)
            yield
    finally:
        folder.chmod(mode)


def run_case(case: Case, folder: Path, capsys=None) -> Outcome:
    """Set the case up in ``folder`` (empty), run it there in-process, and compare the files."""
    case.setup(folder)
    before = snapshot(folder)
    capture = contextlib.ExitStack()
    out, err = io.StringIO(), io.StringIO()
    if capsys is None:
        capture.enter_context(contextlib.redirect_stdout(out))
        capture.enter_context(contextlib.redirect_stderr(err))
    else:
        capsys.readouterr()
    started = time.perf_counter()
    with capture, _chdir(folder), _read_only(folder / case.unwritable if case.unwritable else None):
        try:
            code = main(list(case.argv))
        except SystemExit as exited:  # argparse
            code = exited.code
    seconds = time.perf_counter() - started
    stdout, stderr = (out.getvalue(), err.getvalue()) if capsys is None else capsys.readouterr()
    after = snapshot(folder)
    return Outcome(code, stdout, stderr, changed=sorted(k for k, v in before.items() if after.get(k) != v),
                   added=sorted(set(after) - set(before)), seconds=seconds)


# ------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    outcome = run_case(case, tmp_path, capsys)
    assert outcome.code == EXIT_USAGE, outcome.stderr
    assert len(outcome.lines) == 1 and outcome.lines[0].strip(), outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert case.expected in outcome.stderr
    assert outcome.problems(case) == []


def test_the_catalogue_covers_every_command():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)
    covered = {c.argv[0] for c in CASES if c.argv}
    assert set(COMMANDS) - {"archs"} <= covered  # archs takes no input but the unknown option case


def test_no_numeric_option_is_a_bare_int_or_float():
    """Every numeric option is checked at parse time: none converts with plain int() or float()."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    bare = [f"{name} {option.option_strings[0]}" for name, sub in subparsers.items() for option in sub._actions
            if option.type in (int, float)]
    assert bare == []


def test_overwrite_replaces_a_sample_grid_and_svm_tables(tmp_path, capsys):
    """The positive side: with --overwrite the same commands do replace the files; info takes --arch."""
    with _chdir(tmp_path):
        state_dict()(tmp_path)
        assert main(["info", "netD.pth", "--arch", ARCH]) == 0, capsys.readouterr().err
        assert '"has_generator": false' in capsys.readouterr().out
        checkpoint()(tmp_path)
        text("s.png")(tmp_path)
        assert main(["sample", "--ckpt", "d.pt", "--out", "s.png", "--overwrite"]) == 0, capsys.readouterr().err
        assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
        stores()(tmp_path)
        text("res/toy.md")(tmp_path)
        argv = ["svm", "--quiet", "--train", "train.h5", "--test", "test.h5", "--C", "1e-2", "--results", "res",
                "--name", "toy", "--no-gram-cache"]
        assert main(argv) == EXIT_USAGE
        assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
        assert "test accuracy" in (tmp_path / "res" / "toy.md").read_text()
    assert not list(tmp_path.rglob("*.partial"))


def test_argparse_errors_from_the_console_entry_point(tmp_path):
    """The one subprocess: the real entry point, no usage block, the same line as in-process."""
    done = subprocess.run([sys.executable, "-m", "gan_features.cli", "train", "--out-dir", "run", "--steps", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["gan-features train: error: argument --steps: expected a whole number of at "
                                        "least 1, got '0' (see gan-features train --help)"]
    assert list(tmp_path.iterdir()) == []
