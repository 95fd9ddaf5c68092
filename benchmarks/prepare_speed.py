"""Images/s of ``gan-features prepare`` on real photos, at 1 and 2 (or more) worker processes.

The photos are Imagenette's (real ImageNet-1k training photos, shipped here at 64 px on the short
side), unpacked from the shared tarball into a scratch ImageNet layout, and the same photos
re-encoded at ImageNet's typical size (``--full-size``, default 500x375 px, JPEG quality 90): decoding
cost grows with the pixels, so the second set estimates the rate on ImageNet-1k itself (upscaled
photos hold less detail than real ones and decode somewhat faster: an upper bound).

Each run prepares the same images from scratch in a fresh process (``prepare(..., workers=N)``: scan,
decode in worker processes, write the HDF5 file), runs alternating over worker counts; beside it the
same decoding in N independent processes with nothing else, the machine's own ceiling.

Run alone on a quiet machine::

    GAN_FEATURES_SHARED=../shared python benchmarks/prepare_speed.py --out-dir results

Writes ``<out-dir>/prepare_speed.md`` and ``.csv``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import speed_common as common

TARBALL = Path("data") / "imagenette" / "imagenette2-train-64px.tar.gz"


def unpack_photos(tarball: Path, folder: Path, count: int) -> int:
    """The first ``count`` photos of the tarball, spread over its classes, as ``folder/train/<wnid>/``."""
    per_class: dict[str, int] = {}
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.lower().endswith(".jpeg")]
        classes = sorted({Path(m.name).parent.name for m in members})
        quota = -(-count // len(classes))
        for member in members:
            wnid = Path(member.name).parent.name
            if per_class.get(wnid, 0) >= quota:
                continue
            target = folder / "train" / wnid / Path(member.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
            per_class[wnid] = per_class.get(wnid, 0) + 1
    return sum(per_class.values())


def enlarge_photos(source: Path, target: Path, width: int, height: int) -> None:
    """Every photo of ``source`` resized to ``width`` x ``height`` and saved as JPEG quality 90 under ``target``."""
    from PIL import Image

    for path in source.rglob("*.JPEG"):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").resize((width, height), Image.BICUBIC).save(out, quality=90)


def _decode(paths: list[str]) -> int:
    from gan_features.data.folders import load_image

    return len([load_image(path, 32) for path in paths])


def measure(payload: dict) -> dict:
    """``prepare`` of the photos at ``workers``, or (``decode_only``) the same decoding in as many independent
    processes with nothing else: the machine's own ceiling for that many workers."""
    from multiprocessing import Pool

    from gan_features.data.prepared import prepare

    root, workers = payload["root"], payload["workers"]
    start = time.perf_counter()
    if payload.get("decode_only"):
        paths = sorted(str(path) for path in Path(root).rglob("*.JPEG"))
        with Pool(workers) as pool:
            pool.map(_decode, [paths[i:i + 64] for i in range(0, len(paths), 64)])
    else:
        with tempfile.TemporaryDirectory() as scratch:
            prepare("imagenet", "train", root, 32, Path(scratch) / "prepared.h5", workers=workers, progress=False)
    return {"seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("GAN_FEATURES_SHARED"),
                        help="the shared data folder (default: $GAN_FEATURES_SHARED)")
    parser.add_argument("--images", type=int, default=4096, help="photos to prepare (default: 4096)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--full-size", default="500x375", help="WxH of the re-encoded set (default: 500x375)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    if not args.shared or not (Path(args.shared) / TARBALL).is_file():
        parser.error(f"needs {TARBALL} under --shared or $GAN_FEATURES_SHARED (the shared data folder)")
    width, height = (int(v) for v in args.full_size.lower().split("x"))
    import pandas as pd

    from gan_features.report import write_benchmark

    load_before = common.load_average()
    with tempfile.TemporaryDirectory() as scratch:
        photos = Path(scratch) / "photos"
        count = unpack_photos(Path(args.shared) / TARBALL, photos, args.images)
        enlarge_photos(photos, Path(scratch) / "full", width, height)
        sets = {"Imagenette as shipped (64 px short side)": photos,
                f"the same photos at {width}x{height}, JPEG q90 (ImageNet-like)": Path(scratch) / "full"}
        samples: dict[tuple[str, str, int], list[float]] = {}
        for repeat in range(args.repeats):
            for label, root in sets.items():
                for what in ("prepare", "decoding alone"):
                    for workers in args.workers:
                        payload = {"root": str(root), "workers": workers, "decode_only": what != "prepare"}
                        seconds = common.run_worker(__file__, payload)["seconds"]
                        samples.setdefault((label, what, workers), []).append(seconds)
                        print(f"repeat {repeat + 1}: {label}, {what}, {workers} workers: {count / seconds:.0f} img/s",
                              flush=True)
    rows = []
    for (label, what, workers), seconds in samples.items():
        rate = count / statistics.median(seconds)
        one = count / statistics.median(samples[(label, what, min(args.workers))])
        rows.append({"photos": label, "what": what, "workers": workers, "images/s (median)": round(rate, 1),
                     "runs (images/s)": ", ".join(f"{count / s:.0f}" for s in seconds),
                     "images/s per worker": round(rate / workers, 1),
                     f"speed-up over {min(args.workers)}": round(rate / one, 2)})
    notes = [f"`python benchmarks/prepare_speed.py --images {args.images} --workers "
             f"{' '.join(map(str, args.workers))} --full-size {args.full_size} --repeats {args.repeats}`: "
             f"{count} photos, prepared at 32 px from scratch in a fresh process each run (scan, decode in worker "
             "processes, write the HDF5 file)",
             "the main process writes while the workers decode, so on 2 cores 2 workers share a core with it",
             "'decoding alone': the same photos decoded (load_image) in as many independent processes, nothing "
             "written: how far this machine itself scales (on a shared virtual machine, not always 2x)"]
    print(write_benchmark(args.out_dir, "prepare_speed", "Prepare: images/s decoding real photos", pd.DataFrame(rows),
                          notes, (load_before, common.load_average())))
    return 0


if __name__ == "__main__":
    if not common.worker_main(measure):
        sys.exit(main())
