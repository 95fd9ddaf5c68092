"""What each ``gan-features`` command does with its parsed arguments: checks that need no work
first, then one call into the Python API, then the paths or text it made, printed."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .errors import GanFeaturesError
from .output import check_output, check_output_folder


def _image_size(args, arch) -> int:
    return args.image_size or arch.image_size


def cmd_demo(args) -> None:
    from .demo import run_demo

    check_output_folder(args.out_dir, "--out-dir")
    run_demo(args.out_dir, arch=args.arch, steps=args.steps, seed=args.seed, overwrite=args.overwrite,
             progress=not args.quiet)


def cmd_prepare(args) -> None:
    from .data.prepared import prepare

    print(prepare(args.dataset, args.split, args.data_root, args.size, args.out, workers=args.workers,
                  overwrite=args.overwrite, progress=not args.quiet))


def cmd_train(args) -> None:
    from .data import load_dataset
    from .models import get_architecture
    from .train import TrainConfig, initial_weights, train

    out_dir = check_output_folder(args.out_dir, "--out-dir")
    if (out_dir / "latest.pt").exists() and not args.resume:  # before the data is read, not after
        raise GanFeaturesError(f"{out_dir} already holds a run: pass --resume to continue it or choose "
                               f"another --out-dir")
    arch = get_architecture(args.arch)
    arch.check_image_size(_image_size(args, arch))
    if args.init_from and not (out_dir / "latest.pt").exists():
        initial_weights(args.init_from, arch)  # a wrong file fails now, before the data is read
    dataset = load_dataset(args.dataset, args.split, args.data_root, _image_size(args, arch), args.download)
    if args.in_memory and hasattr(dataset, "materialize"):
        dataset = dataset.materialize(progress=not args.quiet)
    config = TrainConfig(arch=args.arch, dataset=args.dataset, data_root=args.data_root, split=args.split,
                         out_dir=args.out_dir, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, beta1=args.beta1, seed=args.seed, device=args.device,
                         precision=args.precision, num_workers=args.num_workers,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, init_from=args.init_from)
    final = train(config, dataset, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns here; one line is the answer
        print(final)


def cmd_extract(args) -> None:
    from .checkpoints import load_checkpoint
    from .data import load_dataset
    from .device import pick_device
    from .distributed import Ranks
    from .representations import DiscriminatorFeatures, FeatureSpec, extract_to_store

    splits = list(dict.fromkeys(s.strip() for s in args.split.split(",") if s.strip()))
    if not splits:
        raise GanFeaturesError(f"--split {args.split!r} names no split: pass e.g. --split train or --split train,test")
    if len(splits) > 1 and "{split}" not in args.out:
        raise GanFeaturesError("several splits need one file each: put {split} in --out, e.g. "
                               "--out features-{split}.h5")
    outs = {split: args.out.replace("{split}", split) for split in splits}
    for out in outs.values():  # fail before any work, not after the first split
        check_output(out, args.overwrite, example="features.h5")
    checkpoint = load_checkpoint(args.ckpt, architecture=args.arch)
    if checkpoint.discriminator is None:
        raise GanFeaturesError(f"{args.ckpt} holds no discriminator")
    size = _image_size(args, checkpoint.architecture)
    checkpoint.architecture.check_image_size(size)
    spec = FeatureSpec(grid=args.grid, pooling=args.pooling, layers=args.layers, batchnorm=args.batchnorm)
    ranks = Ranks(pick_device(args.device))  # under torchrun: the rows and the statistics pass split over ranks
    representation = DiscriminatorFeatures(checkpoint, spec, precision=args.precision, device=ranks.device,
                                           batch_size=args.batch_size, num_workers=args.num_workers)
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
    try:
        representation.fit(statistics, progress=not args.quiet)  # once, shared by every split
        for split, dataset in datasets.items():
            path = extract_to_store(representation, dataset, outs[split], overwrite=args.overwrite,
                                    progress=not args.quiet)
            if ranks.main:
                print(path)
    finally:
        ranks.close()


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
        saved_only=args.saved_only, layers=args.layers, update=args.update, progress=not args.quiet)


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
    paths = run_checkpoints(args.run_dir, args.pattern, also=args.also, epochs=args.epochs)
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


COMMANDS = {"demo": cmd_demo, "prepare": cmd_prepare, "train": cmd_train, "extract": cmd_extract, "svm": cmd_svm, "knn": cmd_knn,
            "bench": cmd_bench, "init": cmd_init, "import-radford": cmd_import_radford, "sample": cmd_sample,
            "select": cmd_select, "export": cmd_export, "info": cmd_info, "archs": cmd_archs}
