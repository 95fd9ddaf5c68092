"""A real training run small enough for unit tests: radford-svhn32 on 192 digits, 2 epochs of 3 steps."""
from pathlib import Path

import numpy as np

from gan_features.data import load_dataset
from gan_features.data.base import ArrayImageDataset
from gan_features.train import TrainConfig, train

TINY_IMAGES = 192
TINY_BATCH = 64


def digits_train():
    return load_dataset("digits", "train", image_size=32)


def tiny_dataset() -> ArrayImageDataset:
    """The first TINY_IMAGES digits, in memory."""
    full = digits_train()
    rows = np.arange(TINY_IMAGES)
    return ArrayImageDataset(full.images[rows].numpy(), full.labels[rows], full.classes, name="digits", split="train",
                             source=f"first {TINY_IMAGES} rows of {full.source}", image_size=32)


def train_tiny_run(out_dir: Path) -> Path:
    """Train and return the run folder (epoch0001.pt, epoch0002.pt, final.pt, log.jsonl every step)."""
    subset = tiny_dataset()
    config = TrainConfig(arch="radford-svhn32", dataset="digits", out_dir=str(out_dir), epochs=2,
                         batch_size=TINY_BATCH, seed=3, device="cpu", precision="bf16", log_every=1)
    train(config, subset, progress=False)
    return Path(out_dir)
