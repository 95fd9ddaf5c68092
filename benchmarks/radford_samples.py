"""Import the paper authors' SVHN DCGAN and render a sample grid: results/radford-svhn-samples.png.

    python benchmarks/radford_samples.py [DIR] [--out PNG] [--seed N]

DIR defaults to $GAN_FEATURES_SHARED/data/radford-dcgan/<the SVHN model>. The grid must show
house-number digits; noise means the import (kernel flips, layouts, batch-norm) is wrong.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gan_features.errors import GanFeaturesError
from gan_features.radford import SVHN, import_radford
from gan_features.samples import sample_grid

REPO = Path(__file__).resolve().parents[1]


def default_directory() -> Path | None:
    shared = os.environ.get("GAN_FEATURES_SHARED")
    return Path(shared) / "data" / "radford-dcgan" / SVHN.directory if shared else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=default_directory(),
                        help="the released SVHN model folder (default: under $GAN_FEATURES_SHARED)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "radford-svhn-samples.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.directory is None:
        parser.error("pass the model folder, or set $GAN_FEATURES_SHARED")
    try:
        start = time.perf_counter()
        checkpoint = import_radford(args.directory)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        path = sample_grid(checkpoint.generator, args.out, seed=args.seed)
    except GanFeaturesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{checkpoint.provenance['model']} epoch {checkpoint.provenance['epoch']}: "
          f"8x8 samples + 1 interpolation row (seed {args.seed}) -> {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
