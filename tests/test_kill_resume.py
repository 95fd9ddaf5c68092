"""Kill the real command line with SIGKILL part-way, run it again, and get exactly what an uninterrupted
run gives (issue 16: nothing lost, nothing silently wrong).

- ``extract``: rows go to ``<out>.partial``; a killed run leaves nothing under the final name, and the
  same command run again writes a store equal (features and labels, bit for bit) to an uninterrupted
  run's, leaving no ``.partial`` or ``.lock`` behind.
- ``train``: a killed run continues with ``--resume`` from ``latest.pt`` and ends with a ``final.pt``
  whose every tensor equals the uninterrupted run's (same steps and seed), bit for bit.

Each command runs in its own process (``python -m gan_features.cli``), one torch thread, on the CPU.
Progress is watched from outside (files appearing, the progress bar on stderr) and the process is
killed as soon as a point is reached: where exactly it dies varies from run to run, and the results
must not.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from gan_features.store import FeatureStore

pytestmark = pytest.mark.slow

TIMEOUT = 120  # seconds any one process may take (a busy machine), far above the ~5-10 s they need
CLI = [sys.executable, "-m", "gan_features.cli"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".lock"))


def _run(argv: list[str], log: Path) -> None:
    """Run to completion; exit status 0 or fail with the process's stderr."""
    with open(log, "wb") as err:
        done = subprocess.run(CLI + argv, stdout=subprocess.DEVNULL, stderr=err, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, log.read_text(errors="replace")[-3000:]


def _run_and_kill(argv: list[str], log: Path, reached: Callable[[], bool], point: str) -> None:
    """Start the command, SIGKILL it as soon as ``reached()``; fail if it ends (or times out) first."""
    with open(log, "wb") as err:
        process = subprocess.Popen(CLI + argv, stdout=subprocess.DEVNULL, stderr=err, env=_env())
        try:
            deadline = time.monotonic() + TIMEOUT
            while not reached():
                if process.poll() is not None:
                    pytest.fail(f"the command ended (status {process.returncode}) before {point}: "
                                f"{log.read_text(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{point} not reached in {TIMEOUT} s")
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, f"not killed at {point}: status {process.returncode}"


# ------------------------------------------------------------------------------------------ extract
def _rows_done(log: Path, desc: str) -> tuple[int, int]:
    """(rows-batches done, total) from the last progress-bar update ``desc`` wrote to ``log``."""
    found = re.findall(rf"{re.escape(desc)}:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", log.read_text(errors="replace"))
    return (int(found[-1][0]), int(found[-1][1])) if found else (0, 1)


def test_killed_extract_leaves_no_store_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    ckpt = tmp_path / "d.pt"
    _run(["init", "--arch", "radford-svhn32", "--out", str(ckpt)], tmp_path / "init.log")

    def extract(out: Path) -> list[str]:
        # all 1,797 digits one image per batch: ~2-3 s of rows; --grid 1 keeps the store at 3 MB
        return ["extract", "--threads", "1", "--device", "cpu", "--ckpt", str(ckpt), "--dataset", "digits",
                "--split", "all", "--stats-split", "test", "--batch-size", "1", "--grid", "1", "--out", str(out)]

    reference = tmp_path / "reference" / "f.h5"
    reference.parent.mkdir()
    _run(extract(reference), tmp_path / "reference.log")

    out = tmp_path / "killed" / "f.h5"
    out.parent.mkdir()
    partial = out.with_name(out.name + ".partial")
    log = tmp_path / "killed.log"
    progress = []
    # 1: as soon as the .partial exists (the statistics pass is over, rows are starting to be written)
    _run_and_kill(extract(out), log, partial.exists, "the .partial file appeared")
    progress.append(_rows_done(log, "features digits/all"))
    assert not out.exists() and partial.exists()
    # 2: the same command again, killed once half of the rows are written
    _run_and_kill(extract(out), log, lambda: _rows_done(log, "features digits/all")[0] >= 900, "half of the rows")
    progress.append(_rows_done(log, "features digits/all"))
    assert not out.exists() and partial.exists()
    assert progress[1][0] < progress[1][1], progress  # killed before the last row
    print(f"extract killed after {progress[0][0]} and {progress[1][0]} of {progress[1][1]} batches")
    # 3: the same command again, to the end
    _run(extract(out), log)
    assert _leftovers(out.parent) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.h5"]
    with FeatureStore(reference) as expected, FeatureStore(out) as got:
        assert got.features.shape == expected.features.shape == (1797, 448)
        assert np.array_equal(got.features[:], expected.features[:])
        assert np.array_equal(got.labels[:], expected.labels[:])
        assert got.attrs["count"] == 1797 and got.attrs["class_names"] == [str(d) for d in range(10)]


# -------------------------------------------------------------------------------------------- train
STEPS, BATCH, CHECKPOINT_EVERY = 28, 32, 4  # 540 test digits: 16 steps per epoch, so 28 cross an epoch


def _train(out_dir: Path, *extra: str) -> list[str]:
    return ["train", "--threads", "1", "--device", "cpu", "--arch", "radford-svhn32", "--dataset", "digits",
            "--split", "test", "--steps", str(STEPS), "--batch-size", str(BATCH), "--checkpoint-every",
            str(CHECKPOINT_EVERY), "--seed", "3", "--out-dir", str(out_dir), *extra]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(got: Path, expected: Path) -> None:
    a, b = _load(got), _load(expected)
    for part in ("discriminator", "generator"):
        assert a[part].keys() == b[part].keys()
        different = [k for k in a[part] if not (a[part][k].dtype == b[part][k].dtype and torch.equal(a[part][k],
                                                                                                      b[part][k]))]
        assert not different, f"{part} tensors differ from the uninterrupted run's: {different}"
    assert a["provenance"]["step"] == b["provenance"]["step"] == STEPS


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    _run(_train(run), run.parent / "train.log")
    return run


def _step_of(latest: Path) -> int:
    return int(_load(latest)["training"]["step"])


def test_killed_train_resumes_to_the_same_final_weights(uninterrupted, tmp_path):
    from gan_features.training_log import read_training_log

    run = tmp_path / "run"
    log = tmp_path / "train.log"
    latest = run / "latest.pt"
    # 1: just after the first mid-epoch checkpoint (step 4) is in place
    _run_and_kill(_train(run), log, latest.exists, "the first checkpoint")
    assert not (run / "final.pt").exists()
    first = _step_of(latest)
    # 2: resumed, killed again just after the end of the first epoch (step 16) is fully written
    _run_and_kill(_train(run, "--resume"), log, (run / "samples_epoch0001.png").exists, "the end of epoch 1")
    assert not (run / "final.pt").exists()
    second = _step_of(latest)
    assert first < STEPS and second < STEPS
    print(f"train killed with latest.pt at steps {first} and {second} of {STEPS}")
    # 3: resumed to the end
    _run(_train(run, "--resume"), log)
    _assert_same_weights(run / "final.pt", uninterrupted / "final.pt")
    _assert_same_weights(run / "latest.pt", uninterrupted / "latest.pt")
    assert _leftovers(run) == []
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())
    # the logged losses along the history of the final weights are the uninterrupted run's
    columns = ["step", "epoch", "loss_d", "loss_g", "d_real", "d_fake"]
    got, expected = read_training_log(run / "log.jsonl"), read_training_log(uninterrupted / "log.jsonl")
    assert got[columns].equals(expected[columns])


# A kill between the end-of-epoch writes. train.py writes latest.pt first, then epoch0001.pt, then the
# sample grid; a run killed after latest.pt (epoch 1 done) but before the other two resumes past the
# epoch and never writes them again: epoch0001.pt or samples_epoch0001.png is missing for good and the
# killed writer's .partial/.lock stay. The kill is placed deterministically: the training process
# SIGKILLs itself inside the write named here.
SELF_KILL = """
import os, signal, sys
import torch, torchvision.utils
target = sys.argv.pop(1)
def killer(original):
    def wrapped(obj, path, *args, **kwargs):
        if os.path.basename(str(path)) == target:  # half of the file written, then killed
            with open(path, "wb") as handle:
                handle.write(b"half-written")
            os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, path, *args, **kwargs)
    return wrapped
torch.save = killer(torch.save)  # checkpoints: torch.save(payload, "<name>.pt.partial")
torchvision.utils.save_image = killer(torchvision.utils.save_image)  # sample grids: "<stem>.partial.png"
from gan_features.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("target", ["epoch0001.pt.partial", "samples_epoch0001.partial.png"])
def test_kill_between_the_end_of_epoch_writes_loses_nothing(uninterrupted, tmp_path, target):
    run = tmp_path / "run"
    with open(tmp_path / "killed.log", "wb") as err:
        done = subprocess.run([sys.executable, "-c", SELF_KILL, target, *_train(run)], stdout=subprocess.DEVNULL,
                              stderr=err, env=_env(), timeout=TIMEOUT)
    assert done.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text(errors="replace")[-3000:]
    # latest.pt is written after the epoch's own files: it still holds the last mid-epoch save (step 12)
    assert _step_of(run / "latest.pt") == 12 and not (run / "final.pt").exists()
    _run(_train(run, "--resume"), tmp_path / "resumed.log")
    _assert_same_weights(run / "final.pt", uninterrupted / "final.pt")
    assert _leftovers(run) == []
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())
