"""The recipe of docs/reproduce.md: the toy bench scale, benchmarks/reproduce.py and its toy run end to end.

The slow test runs ``benchmarks/reproduce.py --toy`` (prepare, 2-rank training, selection, export and
the toy-scale bench on real Imagenette photos and CIFAR-10 from $GAN_FEATURES_SHARED): CI runs it, so
the documented recipe keeps working. The fast ones check the toy scale's subset and protocols, and that
the script's commands for a real run are the ones the doc shows.
"""
from __future__ import annotations

import csv
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gan_features import bench, cli
from gan_features.bench import BenchConfig, make_protocol, stratified_subset
from gan_features.bench.config import protocol_overrides
from gan_features.bench.splits import ci_subset
from gan_features.data import ArrayImageDataset
from gan_features.errors import GanFeaturesError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "reproduce.py"
DOC = REPO / "docs" / "reproduce.md"
TOY_STEPS = ("images", "cifar10", "prepare", "train", "select", "export", "bench")
# SVHN's training split by class (digits 0..9): the toy subset must leave svhn-1000 enough of the smallest.
SVHN_TRAIN_COUNTS = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ the toy scale
def test_toy_subset_is_1000_and_500_stratified_and_part_of_the_ci_subset():
    assert bench.TOY_SIZES == {"train": 1_000, "test": 500} and bench.subset_sizes("toy") == bench.TOY_SIZES
    assert bench.subset_sizes("ci") == bench.CI_SIZES and bench.subset_sizes("full") is None
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 5_000), ("test", 1_000)):  # CIFAR-10's shapes
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = np.zeros((len(labels), 3, 1, 1), dtype=np.uint8)
        dataset = ArrayImageDataset(images, labels, [str(c) for c in range(10)], name="cifar10", split=split,
                                    source="test", image_size=1)
        toy, info = ci_subset(dataset, bench.TOY_SIZES[split], scale="toy")
        assert np.bincount(toy.labels).tolist() == [bench.TOY_SIZES[split] // 10] * 10
        assert "toy subset" in toy.source
        salt = f"cifar10/{split}"  # drawn as the CI subset is: its rows are among the CI subset's
        toy_rows = stratified_subset(labels, bench.TOY_SIZES[split], bench.CI_SUBSET_SEED, salt=salt)
        ci_rows = stratified_subset(labels, bench.CI_SIZES[split], bench.CI_SUBSET_SEED, salt=salt)
        assert info["subset_seed"] == bench.CI_SUBSET_SEED and set(toy_rows) < set(ci_rows)
    with pytest.raises(GanFeaturesError, match="the toy scale takes 1000 cifar10 train images but 10 are there"):
        ci_subset(ArrayImageDataset(np.zeros((10, 3, 1, 1), np.uint8), np.arange(10), [str(c) for c in range(10)],
                                    name="cifar10", split="train", source="test", image_size=1), 1_000, scale="toy")


def test_toy_protocols_fit_the_toy_subset_and_ci_ones_are_unchanged(tmp_path):
    toy = BenchConfig(scale="toy", results_dir=str(tmp_path / "toy"), cache_dir=str(tmp_path))
    few = make_protocol("cifar10-400", toy)
    assert (few.n_per_class, few.validation_size, few.selection_draws, few.test_draws) == (40, 200, 2, 3)
    full = BenchConfig(scale="full", cache_dir=str(tmp_path))
    assert make_protocol("cifar10", toy).params == make_protocol("cifar10", full).params  # all labels: full scale's
    assert all(make_protocol(name, scale).patience == 2 for name in ("cifar10", "cifar10-400", "svhn-1000")
               for scale in (toy, full, BenchConfig(cache_dir=str(tmp_path))))
    # at full scale patience is the only change: every other parameter is the paper protocol's default
    assert all(protocol_overrides(make_protocol(name, full)) == {"patience": 2}
               for name in ("cifar10", "cifar10-400", "svhn-1000"))
    svhn = make_protocol("svhn-1000", toy)
    assert (svhn.n_per_class, svhn.validation_size, svhn.selection_draws, svhn.test_draws) == (20, 200, 2, 3)
    ci = make_protocol("cifar10-400", BenchConfig(cache_dir=str(tmp_path)))
    assert (ci.n_per_class, ci.validation_size, ci.selection_draws, ci.test_draws) == (400, 2_000, 2, 4)
    # The plans are drawn from the toy subsets without running short of any class, whatever the seed.
    cifar = np.repeat(np.arange(10), 5_000)
    svhn_labels = np.repeat(np.arange(10), SVHN_TRAIN_COUNTS)
    for labels, name, draw in ((cifar, "cifar10-400", 400), (svhn_labels, "svhn-1000", 200)):
        subset = labels[stratified_subset(labels, bench.TOY_SIZES["train"], bench.CI_SUBSET_SEED, salt="x")]
        for seed in range(20):
            config = BenchConfig(scale="toy", results_dir=str(tmp_path / "toy"), cache_dir=str(tmp_path), seed=seed)
            plan = make_protocol(name, config).plan(subset)
            assert len(plan.validation) == 200 and all(len(rows) == draw for rows in plan.final)
        if name == "cifar10-400":  # the CI scale's protocol would not fit the toy subset
            with pytest.raises(GanFeaturesError, match="leaves no labelled pool in 1000 training rows"):
                make_protocol(name, BenchConfig(cache_dir=str(tmp_path))).plan(subset)


def test_toy_scale_has_no_default_results_folder_and_never_writes_beside_the_committed_tables(tmp_path, capsys):
    for results, expected in ((None, "the toy scale has no default results folder: pass --results DIR"),
                              ("results", "--results results is where the full-scale tables go"),
                              ("results/ci", "--results results/ci is where the ci-scale tables go")):
        with pytest.raises(GanFeaturesError, match=re.escape(expected)):
            BenchConfig(scale="toy", results_dir=results, cache_dir=str(tmp_path))
    assert cli.main(["bench", "--scale", "toy", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no default results folder" in err
    assert BenchConfig(scale="toy", results_dir=str(tmp_path / "t"), cache_dir=str(tmp_path)).results_dir == str(
        tmp_path / "t")


def test_toy_command_line_parses_back_into_the_same_config(tmp_path, monkeypatch):
    config = BenchConfig(scale="toy", checkpoints=[("toy run (ours)", "export/d.pt")], cifar_root="/data/cifar10",
                         results_dir="tables", cache_dir=str(tmp_path), kmeans_centroids=0)
    argv = shlex.split(bench.command_line(config))
    assert argv[2:4] == ["--scale", "toy"] and "--results" in argv
    seen = []
    monkeypatch.setattr(bench, "run_bench", lambda c: seen.append(c) or {})
    assert cli.main(argv[1:]) == 0 and seen == [config]


def test_toy_tables_say_so_in_title_and_note(tmp_path):
    config = BenchConfig(scale="toy", results_dir=str(tmp_path), cache_dir=str(tmp_path))
    context = {"scale": "toy", "dataset": "cifar10", "train_rows": 1_000, "test_rows": 500,
               "subset_seed": bench.CI_SUBSET_SEED, "train_subset_sha256": "ab" * 32, "test_subset_sha256": "cd" * 32}
    note = bench.wording.scale_text(context, per_class=True)
    assert note.startswith("Scale: toy, a fixed subset of cifar10 (1,000 training / 500 test images = 100 / 50 per "
                           "class;") and "not comparable with the paper's, nor with the CI or full scale's" in note
    assert bench.wording.scale_title(config) == "toy scale: a smoke test, not comparable"
    ci = bench.wording.scale_text({**context, "scale": "ci"}, per_class=True)
    assert ci.startswith("Scale: CI, a fixed subset") and ci.endswith("not comparable with the paper's.")


# ------------------------------------------------------------------------------------------ the script
def doc_commands() -> list[list[str]]:
    """Every command in the doc's bash blocks, split as the shell would."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_script_runs_the_commands_the_doc_shows(tmp_path, capsys):
    """The real run's commands, fresh and resumed, each appear in docs/reproduce.md word for word."""
    script, commands = load_script(), doc_commands()
    argv = ["--imagenet-root", "/data/imagenet", "--cifar-root", "/data/cifar10", "--gpus", "8", "--work-dir",
            str(tmp_path / "work"), "--workers", "32", "--dry-run"]
    as_in_doc = [arg if arg != str(tmp_path / "work") else "/scratch/dcgan" for arg in argv[:-1]]
    assert ["python", "benchmarks/reproduce.py", *as_in_doc] in commands  # the doc shows the script's line too
    work, steps = script.plan(script.build_parser().parse_args(argv))
    assert [step.name for step in steps] == ["prepare", "train", "select", "export", "bench"]
    for step in steps:
        assert step.command() in commands, shlex.join(step.command())
    # an earlier attempt: train and bench continue with --resume, export replaces with --overwrite
    for folder in ("run", "export", "bench-cache"):
        (work / folder).mkdir(parents=True)
    (work / "run" / "latest.pt").touch()
    (work / "export" / "checkpoint-fp16.pt").touch()
    (work / "imagenet32-train.h5").touch()
    _, again = script.plan(script.build_parser().parse_args(argv))
    assert again[0].skip and not again[3].skip
    assert [step.command()[-1] for step in again[1:]] == ["--resume", "train", "--overwrite", "--resume"]
    for step in again[1:]:
        assert step.command() in commands, shlex.join(step.command())
    assert script.main(argv) == 0  # a dry run prints every step and runs none
    out = capsys.readouterr().out
    assert all(f"/5 {name}]" in out for name in ("prepare", "train", "select", "export", "bench"))
    assert sorted(p.name for p in work.iterdir()) == ["bench-cache", "export", "imagenet32-train.h5", "run"]


def usage_error(script, argv: list[str], capsys) -> str:
    """The one stderr line of a refused invocation (exit status 2), from argparse or from the checks."""
    try:
        code = script.main(argv)
    except SystemExit as stop:  # argparse's
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("reproduce: error: "), (code, err)
    return err


def test_bad_input_is_one_line_with_exit_status_2(tmp_path, monkeypatch, capsys):
    script = load_script()
    monkeypatch.delenv("GAN_FEATURES_SHARED", raising=False)
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "imagenet" / "file").touch()
    real = ["--imagenet-root", str(tmp_path / "imagenet"), "--cifar-root", str(tmp_path / "cifar"), "--gpus", "2"]
    for argv, expected in (
            ([], "the recipe needs --imagenet-root, --cifar-root, --gpus, --work-dir (or --toy"),
            ([*real], "the recipe needs --work-dir"),
            ([*real, "--work-dir", str(REPO / "scratch")], "is inside the repository"),
            ([*real, "--work-dir", str(tmp_path / "imagenet" / "file")], "exists but is not a folder"),
            (["--imagenet-root", str(tmp_path), "--cifar-root", str(tmp_path / "cifar"), "--gpus", "2", "--work-dir",
              str(tmp_path / "w")], "has no train/ folder"),
            (["--imagenet-root", str(tmp_path / "imagenet"), "--cifar-root", str(tmp_path), "--gpus", "2",
              "--work-dir", str(tmp_path / "w")], "holds no cifar-10-batches-py/"),
            (["--gpus", "0"], "argument --gpus: 0 is not at least 1"),
            (["--toy", "--gpus", "2", "--workers", "4"], "--toy sets --gpus, --workers itself"),
            (["--toy"], "pass --shared DIR or set $GAN_FEATURES_SHARED"),
            (["--toy", "--shared", str(tmp_path)], "imagenette2-train-64px.tar.gz not found"),
            ([*real, "--work-dir", str(tmp_path / "w"), "--shared", str(tmp_path)], "--shared is for --toy"),
            ([*real, "--work-dir", str(tmp_path / "w"), "--label", "a=b"], "--label 'a=b' must be non-empty text")):
        assert expected in usage_error(script, argv, capsys), argv
    assert not (REPO / "scratch").exists() and not (tmp_path / "w").exists()


def test_a_failing_step_stops_the_run_with_its_name(tmp_path, monkeypatch, capsys):
    script = load_script()
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    ran = []

    def run(argv, cwd, env):  # the training command fails; every other one succeeds
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3 if "--nproc-per-node" in argv else 0)

    monkeypatch.setattr(script.subprocess, "run", run)
    code = script.main(["--imagenet-root", str(tmp_path / "imagenet"), "--cifar-root", str(tmp_path / "cifar"),
                        "--gpus", "2", "--work-dir", str(tmp_path / "work")])
    out, err = capsys.readouterr()
    assert code == 1 and len(ran) == 2  # prepare, then train; nothing after it
    assert err.startswith("reproduce: step 'train' failed (exit status 3; ") and err.count("\n") == 1
    assert "[1/5 prepare] done in" in out and "[2/5 train] done" not in out and "[3/5 select]" not in out


# ------------------------------------------------------------------------------------------ the toy run
@pytest.mark.slow
@pytest.mark.shared_data
def test_the_toy_recipe_runs_every_step_and_measures_our_row(shared_dir, tmp_path):
    """benchmarks/reproduce.py --toy end to end (about 2 minutes on 2 CPU cores): every step runs, Table 1
    holds our discriminator's measured row at the toy scale, and a rerun would continue rather than redo."""
    work = tmp_path / "work"
    command = [sys.executable, str(SCRIPT), "--toy", "--shared", str(shared_dir), "--work-dir", str(work), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for number, name in enumerate(TOY_STEPS, 1):
        assert re.search(rf"^\[{number}/7 {name}\] done in \d+ s$", done.stdout, flags=re.M), (name, done.stdout)
    assert "skipped" not in done.stdout
    assert sorted(p.name for p in (work / "run").glob("epoch*.pt")) == ["epoch0001.pt", "epoch0002.pt"]
    assert (work / "export" / "checkpoint-fp16.pt").is_file() and (work / "selection" / "selection.csv").is_file()
    with open(work / "tables" / "table1_cifar10.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ours = {row["protocol"]: row for row in rows if row["model"].startswith("DCGAN radford-imagenet32, toy run")}
    assert set(ours) == {"cifar10", "cifar10-400", "knn-k20", "knn-k200"}
    for row in ours.values():
        assert row["source"] == "measured" and row["scale"] == "toy" and 0 < float(row["test_mean"]) <= 100
        assert (row["train_rows"], row["test_rows"]) == ("1000", "500")
        assert Path(row["checkpoint"]).resolve() == (work / "export" / "checkpoint-fp16.pt").resolve()
    table = (work / "tables" / "table1_cifar10.md").read_text()
    assert table.startswith("# Table 1: CIFAR-10, linear L2-SVM and k-NN on features (toy scale: a smoke test, not "
                            "comparable)") and (work / "tables" / "table2_svhn.md").is_file()
    # The same command again continues: nothing complete is made again, training and bench resume.
    again = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    for name in ("images", "cifar10", "prepare", "export"):
        assert re.search(rf"^\[\d/7 {name}\] skipped: ", again.stdout, flags=re.M), (name, again.stdout)
    lines = again.stdout.splitlines()
    assert any(line.startswith("[4/7 train]") and line.endswith("--resume --quiet") for line in lines)
    assert any(line.startswith("[7/7 bench]") and line.endswith("--resume --quiet") for line in lines)
    for name in ("run", "tables", "bench-cache", "imagenet32-train.h5", "selection", "export"):
        assert not (REPO / name).exists()  # every step wrote into the work folder
