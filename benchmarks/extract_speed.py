"""Our feature extraction beside a plain PyTorch loop of the same discriminator, in one run.

* ``plain``: what a user would write: the discriminator in eval mode, channels_last, batches of 256
  sliced from a uint8 tensor and scaled to [-1, 1], every conv block max-pooled to 4x4 and
  concatenated, the result as a float32 numpy array. Beside it, the same loop in training mode at
  batch 128 down to the last block: the work of the batch-norm statistics pass.
* ``ours``: :class:`~gan_features.representations.DiscriminatorFeatures` as ``gan-features extract``
  runs it on an in-memory dataset: ``fit`` (batch-norm statistics recomputed over the images, batches
  of 128, the paper's way), the feature pass (``blocks``), and ``extract_to_store`` (the feature pass
  written into an HDF5 store: what the command does once the statistics are known).

fp32 and bf16 autocast, random images (dense convolutions cost the same whatever the pixels), each run
a fresh process, ours and plain alternating. FLOPs per image of the feature pass are counted by torch's
FlopCounterMode and set against this machine's peak (speed_common.peak_gflops, measured in the same run).

Run alone on a quiet machine::

    python benchmarks/extract_speed.py --out-dir results

Writes ``<out-dir>/extract_speed.md`` and ``.csv``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import speed_common as common

PRECISIONS = ("fp32", "bf16")
BATCH = 256  # extraction's default batch
STATISTICS_BATCH = 128  # the batch-norm statistics pass: the paper's batches


def plain_features(discriminator, images, precision: str):
    """The plain loop: every block max-pooled to 4x4, concatenated, as float32 numpy, batch by batch."""
    import torch
    import torch.nn.functional as F

    taps = set(discriminator.feature_taps)
    last = max(taps)
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            h = images[start:start + BATCH].float().div(127.5).sub(1).contiguous(memory_format=torch.channels_last)
            pooled = []
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                for index, layer in enumerate(discriminator.main[:last + 1]):
                    h = layer(h)
                    if index in taps:
                        pooled.append(F.adaptive_max_pool2d(h, 4).flatten(1))
                features = torch.cat(pooled, dim=1)
            features.float().numpy()


def _plain_train_mode(discriminator, images, precision: str) -> None:
    """The plain loop in training mode (each batch normalised by its own statistics) down to the last
    block, in batches of 128: what the statistics pass computes, without keeping the statistics."""
    import torch

    last = max(discriminator.feature_taps)
    discriminator.train()
    with torch.no_grad():
        for start in range(0, len(images), STATISTICS_BATCH):
            h = images[start:start + STATISTICS_BATCH].float().div(127.5).sub(1)
            h = h.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                for layer in discriminator.main[:last + 1]:
                    h = layer(h)
    discriminator.eval()


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(payload: dict) -> dict:
    import torch

    threads = common.set_threads(payload.get("threads"))
    if payload["what"] == "peak":
        return {"gflops": {dtype: common.peak_gflops(dtype) for dtype in ("float32", "bfloat16")},
                "threads": threads}
    from gan_features.models import create_models

    discriminator = create_models(payload["arch"], seed=0)[0].to(memory_format=torch.channels_last).eval()
    images = torch.from_numpy(common.random_images(payload["images"]))
    precision = payload["precision"]
    if payload["what"] == "flops":
        return {"flops_per_image": common.flops(lambda: plain_features(discriminator, images[:BATCH], "fp32")) / BATCH}
    if payload["what"] == "plain":
        plain_features(discriminator, images[:BATCH], precision)  # warm-up: kernel choice, page faults
        _plain_train_mode(discriminator, images[:BATCH], precision)
        # statistics first, as ours: the first pass of a process pays for the allocator's growth
        statistics = _seconds(lambda: _plain_train_mode(discriminator, images, precision))
        features = _seconds(lambda: plain_features(discriminator, images, precision))
        return {"statistics": statistics, "features": features}
    return _ours(payload, images.numpy())


def _ours(payload: dict, images) -> dict:
    from gan_features.checkpoints import load_checkpoint
    from gan_features.representations import DiscriminatorFeatures, extract_to_store
    from gan_features.representations.discriminator import FeatureSpec
    from gan_features.train import random_checkpoint

    dataset = common.random_dataset(images)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = load_checkpoint(random_checkpoint(payload["arch"], Path(scratch) / "random.pt"))
        representation = DiscriminatorFeatures(checkpoint, FeatureSpec(batchnorm_batch_size=STATISTICS_BATCH),
                                               precision=payload["precision"], batch_size=BATCH)
        warm = common.random_dataset(images[:BATCH])
        representation.fit(warm, progress=False)
        for _ in representation.blocks(warm, progress=False):  # warm-up, as the plain loop's
            pass
        result = {"statistics": _seconds(lambda: representation.fit(dataset, progress=False)),
                  "features": _seconds(lambda: [None for _ in representation.blocks(dataset, progress=False)]),
                  "store": _seconds(lambda: extract_to_store(representation, dataset, Path(scratch) / "f.h5",
                                                             progress=False))}
    return result


ROWS = {  # (loop, what): what the row measures
    ("plain", "features"): "plain loop: eval forward, blocks max-pooled, float32 numpy",
    ("ours", "features"): "ours: feature pass (DiscriminatorFeatures.blocks)",
    ("ours", "store"): "ours: feature pass into an HDF5 store (extract_to_store)",
    ("plain", "statistics"): "plain loop: training-mode forward, batches of 128",
    ("ours", "statistics"): "ours: batch-norm statistics pass (DiscriminatorFeatures.fit)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="radford-imagenet32")
    parser.add_argument("--images", type=int, default=4096, help="images per pass (default: 4096)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row, alternating ours and plain")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    import pandas as pd

    from gan_features.report import write_benchmark

    script = __file__
    load_before = common.load_average()
    base = {"arch": args.arch, "images": args.images}
    peak = common.run_worker(script, {"what": "peak"})["gflops"]
    per_image = common.run_worker(script, {**base, "what": "flops", "precision": "fp32"})["flops_per_image"]
    print(f"peak: {common.describe_peaks(peak)}; {per_image / 1e9:.3f} GFLOP per image", flush=True)
    samples: dict[tuple[str, str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for precision in PRECISIONS:
            for loop in ("plain", "ours"):
                result = common.run_worker(script, {**base, "what": loop, "precision": precision})
                for what, seconds in result.items():
                    samples.setdefault((precision, loop, what), []).append(seconds)
                print(f"repeat {repeat + 1}: {precision} {loop} " +
                      ", ".join(f"{what} {args.images / s:.0f} img/s" for what, s in result.items()), flush=True)
    rows = []
    for precision in PRECISIONS:
        dtype_peak = max(peak["bfloat16" if precision == "bf16" else "float32"].values())
        for (loop, what), label in ROWS.items():
            seconds = samples[(precision, loop, what)]
            rate = args.images / statistics.median(seconds)
            reference = "features" if what == "store" else what
            plain_rate = args.images / statistics.median(samples[(precision, "plain", reference)])
            achieved = per_image * rate / 1e9
            rows.append({"precision": precision, "what": label, "images/s (median)": round(rate, 1),
                         "runs (images/s)": ", ".join(f"{args.images / s:.0f}" for s in seconds),
                         "ours / plain": f"{rate / plain_rate:.3f}" if loop == "ours" else "",
                         "GFLOP/s": round(achieved, 1) if reference == "features" else "",
                         "% of peak": round(100 * achieved / dtype_peak, 1) if reference == "features" else ""})
    notes = [f"`python benchmarks/extract_speed.py --arch {args.arch} --images {args.images} --repeats "
             f"{args.repeats}`; each run a fresh process, ours and plain alternating; batches of {BATCH} "
             f"(features) and {STATISTICS_BATCH} (statistics)",
             f"peak (median of 5): {common.describe_peaks(peak)}",
             f"{per_image / 1e9:.3f} GFLOP per image for the features (FlopCounterMode, every conv block); the "
             "statistics pass does the same convolutions at batch 128 in training mode",
             "`gan-features extract` of a test split = the statistics pass over the training split + the feature "
             "pass into a store over the test split; `--split train,test` shares one statistics pass"]
    print(write_benchmark(args.out_dir, "extract_speed", "Feature extraction: ours against a plain PyTorch loop",
                          pd.DataFrame(rows), notes, (load_before, common.load_average())))
    return 0


if __name__ == "__main__":
    if not common.worker_main(measure):
        sys.exit(main())
