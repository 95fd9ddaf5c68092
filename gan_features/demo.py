"""``gan-features demo``: the whole pipeline on scikit-learn's digits, in about three minutes on CPU.

1. train a small DCGAN (default ``radford-svhn32``, bf16) on the digits training split, labels unused;
2. extract features of the trained discriminator and of the same network before training
   (the same seed: the control that isolates what adversarial training added), batch-norm
   statistics recomputed over the training images for both;
3. fit L2-SVMs under two protocols: all training labels (``holdout``) and 10 labels per class
   (``few-labels``, mean +- std over draws), C always chosen on validation rows of the
   training split; raw pixels as the floor;
4. print the table and write it (markdown + CSV, with provenance) into the output folder.

Digits are easy: with all 1,257 training labels every representation is near 99%, so the
few-labels column is where representations differ.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd

from .checkpoints import load_checkpoint
from .data import load_dataset
from .errors import GanFeaturesError
from .models import get_architecture
from .protocols import get_protocol
from .report import write_table
from .representations import DiscriminatorFeatures, PixelFeatures, extract_to_store
from .train import TrainConfig, random_checkpoint, train

DEMO_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # wider than the paper's grid: raw pixels need larger C
FEW_LABELS = {"n_per_class": 10, "validation_size": 300, "selection_draws": 5, "test_draws": 20}


def run_demo(out_dir: str | Path = "demo-output", arch: str = "radford-svhn32", steps: int = 300, seed: int = 0,
             overwrite: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run the demo; returns the results table (also written to ``out_dir/demo.md`` and ``.csv``)."""
    started = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GanFeaturesError(f"{out} is not empty: pass --overwrite to replace the earlier demo, or another --out-dir")
    if overwrite and (out / "run").exists():
        shutil.rmtree(out / "run")  # training refuses to start over an old run, by design
    out.mkdir(parents=True, exist_ok=True)
    architecture = get_architecture(arch)
    train_set = load_dataset("digits", "train", image_size=architecture.image_size)
    test_set = load_dataset("digits", "test", image_size=architecture.image_size)

    t = time.perf_counter()
    trained_path = train(TrainConfig(arch=arch, dataset="digits", out_dir=str(out / "run"), steps=steps, seed=seed,
                                     precision="bf16", checkpoint_every=steps, samples_every_epoch=False),
                         train_set, progress=progress)
    train_seconds = time.perf_counter() - t
    random_path = random_checkpoint(arch, out / "random-init.pt", seed=seed)  # training started from these weights

    models = {f"trained D ({steps} steps)": ("trained", DiscriminatorFeatures(load_checkpoint(trained_path))),
              "random D (same init)": ("random", DiscriminatorFeatures(load_checkpoint(random_path))),
              "raw pixels": ("pixels", PixelFeatures())}
    representations = {}
    for label, (tag, representation) in models.items():
        representation.fit(train_set, progress=progress)  # batch-norm statistics over the training images
        representations[label] = tuple(extract_to_store(representation, data, out / f"{tag}-{data.split}.h5",
                                                        overwrite=overwrite, progress=progress)
                                       for data in (train_set, test_set))

    rows = []
    for label, (train_store, test_store) in representations.items():
        full = get_protocol("holdout", seed=seed, Cs=DEMO_CS).run(train_store, test_store, progress=progress)
        few = get_protocol("few-labels", seed=seed, Cs=DEMO_CS, **FEW_LABELS).run(train_store, test_store,
                                                                                  progress=progress)
        rows.append({"representation": label, "dimension": full.provenance.get("dimension"),
                     "test acc, all labels (%)": round(full.test.mean, 2), "C (all)": full.chosen_C,
                     f"test acc, {FEW_LABELS['n_per_class']}/class (%)": round(few.test.mean, 2),
                     f"std over {FEW_LABELS['test_draws']} draws": round(few.test.std, 2), "C (few)": few.chosen_C,
                     "train store": str(train_store), "test store": str(test_store),
                     "checkpoint_sha256": full.provenance.get("checkpoint_sha256"),
                     "git_commit": full.provenance.get("git_commit")})
    table = pd.DataFrame(rows)
    wall = time.perf_counter() - started
    note = (f"scikit-learn digits, {len(train_set)} train / {len(test_set)} test (stratified split, seed 0), "
            f"{architecture.image_size}x{architecture.image_size}; {arch} trained {steps} steps of 128 "
            f"({train_seconds:.0f} s); C chosen on validation rows of the training split, never on test; "
            f"seed {seed}; total wall time {wall:.0f} s.")
    write_table(table, out, "demo", title="gan-features demo: discriminator features on digits", note=note)
    shown = table.drop(columns=["train store", "test store", "checkpoint_sha256", "git_commit"])
    print(shown.to_markdown(index=False))
    print(note)
    print(f"table: {out / 'demo.md'} and {out / 'demo.csv'}")
    return table
