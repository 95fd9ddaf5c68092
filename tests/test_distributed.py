"""Training under torchrun: 2 ranks on CPU (gloo), as a user with GPUs runs N (NCCL)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_features.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow  # each launch starts two interpreters that import torch


def torchrun(out_dir: Path, *options: str, ranks: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node RANKS -m gan_features.cli train`` on the digits, 32 px, fp32."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
               str(29500 + os.getpid() % 1000), "-m", "gan_features.cli", "train", "--quiet", "--dataset", "digits",
               "--arch", "radford-svhn32", "--device", "cpu", "--precision", "fp32", "--out-dir", str(out_dir),
               *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def weights(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(path)
    return {**{f"D.{k}": v for k, v in checkpoint.discriminator.state_dict().items()},
            **{f"G.{k}": v for k, v in checkpoint.generator.state_dict().items()}}


def test_two_ranks_train_one_model_of_the_global_batch_and_only_rank_0_writes(tmp_path):
    done = torchrun(tmp_path / "run", "--steps", "4", "--batch-size", "64")
    assert done.returncode == 0, done.stderr
    provenance = load_checkpoint(tmp_path / "run" / "final.pt").provenance
    digests = provenance["weights_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # both replicas hold the same weights
    assert provenance["world_size"] == 2 and provenance["images_seen"] == 4 * 64  # 64 is the global batch
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["final.pt", "latest.pt", "log.jsonl"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [4]  # one writer: each record once


def test_a_stopped_two_rank_run_resumes_exactly(tmp_path):
    """Stopped after 2 steps (the state a kill after the checkpoint leaves) and resumed to 4: the same weights,
    bit for bit, as 4 steps in one go; each rank gets its own random state back."""
    straight = torchrun(tmp_path / "straight", "--steps", "4", "--batch-size", "64")
    assert straight.returncode == 0, straight.stderr
    first = torchrun(tmp_path / "resumed", "--steps", "2", "--batch-size", "64")
    assert first.returncode == 0, first.stderr
    rng = load_checkpoint(tmp_path / "resumed" / "latest.pt").training["rng_by_rank"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # each rank its own noise
    second = torchrun(tmp_path / "resumed", "--steps", "4", "--batch-size", "64", "--resume")
    assert second.returncode == 0, second.stderr
    a, b = weights(tmp_path / "straight" / "final.pt"), weights(tmp_path / "resumed" / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_batch_that_does_not_split_or_another_rank_count_on_resume_is_refused(tmp_path):
    odd = torchrun(tmp_path / "odd", "--steps", "1", "--batch-size", "63")
    assert odd.returncode != 0 and "must split evenly over 2 ranks" in odd.stderr
    assert torchrun(tmp_path / "run", "--steps", "1", "--batch-size", "64").returncode == 0
    other = torchrun(tmp_path / "run", "--steps", "2", "--batch-size", "64", "--resume", ranks=1)
    assert other.returncode != 0 and "resume it with as many (torchrun --nproc-per-node 2)" in other.stderr


def test_extraction_over_two_ranks_writes_the_one_process_store_bit_for_bit(tmp_path):
    """Ranks split the rows (cut at batch boundaries) and the batch-norm statistics pass (every other batch,
    sums added over the ranks); one store results, equal to one process's in fp32, and no shard is left."""
    from gan_features.store import FeatureStore
    from gan_features.train import random_checkpoint

    random_checkpoint("radford-svhn32", tmp_path / "d.pt", seed=0)
    common = ["extract", "--quiet", "--ckpt", str(tmp_path / "d.pt"), "--dataset", "digits", "--split", "train,test",
              "--device", "cpu", "--precision", "fp32", "--batch-size", "100"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(29500 + os.getpid() % 1000), "-m", "gan_features.cli", *common, "--out",
                           str(tmp_path / "ranks-{split}.h5")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "ranks-train.h5"), str(tmp_path / "ranks-test.h5")]  # rank 0's
    one = subprocess.run([sys.executable, "-m", "gan_features.cli", *common, "--out", str(tmp_path / "one-{split}.h5")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr  # one thread, as each rank: the same kernels, so the same bits
    for split in ("train", "test"):
        with FeatureStore(tmp_path / f"ranks-{split}.h5") as ranks, FeatureStore(tmp_path / f"one-{split}.h5") as one:
            assert np.array_equal(ranks.load()[0], one.load()[0]) and np.array_equal(ranks.labels, one.labels)
            assert ranks.attrs["batchnorm_statistics_source"] == one.attrs["batchnorm_statistics_source"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt", "one-test.h5", "one-train.h5", "ranks-test.h5",
                                                          "ranks-train.h5"]
