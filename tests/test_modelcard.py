"""Exporting a tiny real run: fp16 round trip, model card contents, PNGs, atomic and refusing writes."""
import re
import shlex
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gan_features.checkpoints import file_sha256, load_checkpoint
from gan_features.cli import build_parser, main
from gan_features.errors import GanFeaturesError
from gan_features.representations import FeatureSpec, iter_features, prepare_discriminator
from gan_features.modelcard import export_model, training_command
from gan_features.data.base import rows_of
from gan_features.selection import SelectionSettings, select_checkpoint
from gan_features.training_log import plot_training_curves, read_training_log
from tiny_runs import TINY_IMAGES, digits_train, train_tiny_run

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("modelcard") / "run")


@pytest.fixture(scope="module")
def selection_dir(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("selection")
    select_checkpoint(run_dir, out, digits_train(),
                      SelectionSettings(fit_size=200, validation_size=100, diversity_samples=32), progress=False)
    return out


@pytest.fixture(scope="module")
def exported(run_dir, selection_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "dcgan"
    return out, export_model(out, run_dir / "epoch0002.pt", selection=selection_dir)


def _features(discriminator_checkpoint, data):
    spec = FeatureSpec()
    prepared = prepare_discriminator(discriminator_checkpoint, spec, data, progress=False)
    return np.concatenate([f for f, _ in iter_features(prepared, data, spec, progress=False)])


def test_fp16_checkpoint_is_compact_safe_and_close_to_the_original(run_dir, exported):
    out, paths = exported
    source = run_dir / "epoch0002.pt"
    payload = torch.load(paths["checkpoint-fp16.pt"], weights_only=True)
    assert payload["training"] is None
    floats = [t for part in ("discriminator", "generator") for t in payload[part].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert paths["checkpoint-fp16.pt"].stat().st_size < 0.2 * source.stat().st_size  # no Adam state, half width
    original, compact = load_checkpoint(source), load_checkpoint(paths["checkpoint-fp16.pt"])
    assert compact.provenance["export"]["source_sha256"] == original.sha256
    assert compact.provenance["step"] == original.provenance["step"] == 6
    data = rows_of(digits_train(), np.arange(128))  # enough images to compare features
    a, b = _features(original, data), _features(compact, data)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-2
    z = original.generator.sample_latents(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(compact.generator(z), original.generator(z), rtol=0, atol=2e-2)


def test_model_card_says_what_the_model_is_and_how_it_was_made(run_dir, exported, selection_dir):
    out, paths = exported
    card = (out / "MODEL_CARD.md").read_text()
    source = run_dir / "epoch0002.pt"
    checkpoint = load_checkpoint(source)
    for text in ("radford-svhn32", "digits `train`", f"{TINY_IMAGES:,} images", "| epochs completed | 2 |",
                 "| optimiser steps | 6 |", "| images seen | 384 |", "| seed | 3 |", checkpoint.sha256,
                 file_sha256(paths["checkpoint-fp16.pt"]), file_sha256(paths["samples.png"]),
                 file_sha256(paths["losses.png"]), torch.__version__, "epoch0001.pt", "no test split was read",
                 "weights_only", "wall time"):
        assert text in card, text
    assert re.search(r"\| median wall time per step \| \d+\.\d\d s ", card)  # from the log's times
    best = "It is the table's best" in card
    assert best != ("is not the table's best" in card)
    command = card.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert command == training_command(checkpoint.provenance["config"])
    assert (out / "selection.csv").read_bytes() == (selection_dir / "selection.csv").read_bytes()


def test_training_command_parses_back_to_the_recorded_config():
    config = {"arch": "radford-imagenet32", "dataset": "imagenet", "data_root": "/data/image nette", "split": "train",
              "out_dir": "runs/x", "steps": None, "epochs": 100, "batch_size": 64, "lr": 1e-4, "beta1": 0.4,
              "beta2": 0.999, "seed": 7, "device": "cpu", "precision": "bf16", "num_workers": 2,
              "checkpoint_every": 100, "log_every": 10, "samples_every_epoch": True, "resume": True}
    argv = shlex.split(training_command(config))
    assert argv[:2] == ["gan-features", "train"] and "--resume" not in argv
    args = build_parser().parse_args(argv[1:])
    for key in ("arch", "dataset", "data_root", "split", "out_dir", "steps", "epochs", "batch_size", "lr", "beta1",
                "seed", "device", "precision", "num_workers", "checkpoint_every"):
        assert getattr(args, key) == config[key], key
    assert training_command({**config, "steps": 500}).count("--steps 500") == 1
    assert training_command(config, world_size=4).startswith("torchrun --nproc-per-node 4 -m gan_features.cli train")


def test_pngs_are_valid_images(exported):
    out, paths = exported
    with Image.open(paths["samples.png"]) as image:
        image.verify()
    with Image.open(paths["samples.png"]) as image:
        assert image.format == "PNG" and image.size == (8 * 34 + 2, 9 * 34 + 2)  # 8x8 plus the interpolation row
        pixels = np.asarray(image.convert("RGB"))
        assert pixels.std() > 0  # not a blank image
    with Image.open(paths["losses.png"]) as image:
        image.verify()
    with Image.open(paths["losses.png"]) as image:
        assert image.format == "PNG" and image.size == (800, 600)
    assert not list(out.glob("*.partial"))


def test_export_refuses_to_overwrite_and_defaults_to_the_best(run_dir, exported, selection_dir, capsys):
    out, _ = exported
    before = (out / "MODEL_CARD.md").read_text()
    with pytest.raises(GanFeaturesError, match="--overwrite"):
        export_model(out, run_dir / "epoch0001.pt", selection=selection_dir)
    assert (out / "MODEL_CARD.md").read_text() == before
    code = main(["export", "--selection", str(selection_dir), "--out", str(out), "--overwrite", "--quiet"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    table = pd.read_csv(selection_dir / "selection.csv")
    (best_path,) = table.loc[table["is_best"], "checkpoint"]
    assert load_checkpoint(out / "checkpoint-fp16.pt").provenance["export"]["source"] == best_path
    assert "MODEL_CARD.md" in printed and "It is the table's best" in (out / "MODEL_CARD.md").read_text()


def test_training_log_follows_resumes_and_skips_a_half_written_line(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [(1, 1.0), (2, 2.0), (3, 3.0), (2, 20.0), (3, 30.0), (4, 40.0)]  # resumed from step 1
    log.write_text("".join(f'{{"step": {s}, "loss_d": {v}, "loss_g": 1, "d_real": 0.9, "d_fake": 0.1}}\n'
                           for s, v in records) + '{"step": 5, "loss')
    table = read_training_log(log)
    assert list(table["step"]) == [1, 2, 3, 4] and list(table["loss_d"]) == [1.0, 20.0, 30.0, 40.0]
    assert list(read_training_log(log, upto_step=3)["step"]) == [1, 2, 3]
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(GanFeaturesError, match="log.jsonl:2"):
        read_training_log(log)


def test_missing_matplotlib_is_a_one_line_error(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss_d": 1, "loss_g": 1, "d_real": 0.5, "d_fake": 0.5}\n')
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(GanFeaturesError, match=r"pip install 'gan-features\[plots\]'"):
        plot_training_curves(read_training_log(log), tmp_path / "losses.png")
    assert not (tmp_path / "losses.png").exists()


def test_the_log_has_a_record_at_every_epoch_end_whatever_log_every_says(tmp_path):
    """Export needs losses up to its checkpoint: a run of fewer steps per epoch than ``log_every`` too."""
    import json

    import numpy as np

    from gan_features.data.base import ArrayImageDataset
    from gan_features.train import TrainConfig, train

    images = np.random.default_rng(0).integers(0, 256, (96, 3, 32, 32), dtype=np.uint8)
    data = ArrayImageDataset(images, np.zeros(96, dtype=int), ["x"], name="random", split="train", source="random",
                             image_size=32)
    train(TrainConfig(arch="radford-svhn32", out_dir=str(tmp_path / "run"), epochs=2, batch_size=32, device="cpu",
                      log_every=10, samples_every_epoch=False), data, progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").open()]
    assert steps == [3, 6]  # 3 steps an epoch: one record at each epoch's end, none at step 10


def test_a_run_started_from_an_exported_checkpoint_begins_at_its_weights_with_fresh_optimisers(exported, tmp_path):
    """``init_from`` (``train --init-from``): the fp16 export, which has no optimiser state, starts a new
    run. At lr 0 the weights stay the export's; one step at lr 1e-3 moves every parameter by at most lr,
    most by lr itself (Adam's first step from zero moments is lr * g / |g|): the moments are fresh.
    The run records where it started, keeps that record through --resume, and its command says so."""
    from gan_features.train import TrainConfig, initial_weights, train
    from gan_features.models import get_architecture
    from gan_features.checkpoints import save_checkpoint
    from tiny_runs import TINY_BATCH, tiny_dataset

    _, paths = exported
    start_path = paths["checkpoint-fp16.pt"]
    start, data = load_checkpoint(start_path), tiny_dataset()

    def run(folder, lr, steps, resume=False):
        train(TrainConfig(arch="radford-svhn32", dataset="digits", out_dir=str(tmp_path / folder), steps=steps,
                          batch_size=TINY_BATCH, seed=3, device="cpu", precision="fp32", lr=lr,
                          init_from=str(start_path), resume=resume), data, progress=False)
        return load_checkpoint(tmp_path / folder / "final.pt")

    def parameters(checkpoint):
        return torch.cat([p.detach().flatten() for net in (checkpoint.discriminator, checkpoint.generator)
                          for p in net.parameters()])

    assert torch.equal(parameters(run("still", 0.0, 1)), parameters(start))
    moved = run("moved", 1e-3, 1)
    change = (parameters(moved) - parameters(start)).abs()
    assert change.max() <= 1e-3 * 1.001 and change.median() > 0.9e-3
    assert moved.provenance["init"] == {"checkpoint": str(start_path), "sha256": file_sha256(start_path),
                                        "images_seen": start.provenance["images_seen"],
                                        "step": start.provenance["step"]}
    assert "--init-from " + shlex.quote(str(start_path)) in training_command(moved.provenance["config"])
    continued = run("moved", 1e-3, 2, resume=True)
    assert continued.provenance["step"] == 2 and continued.provenance["init"] == moved.provenance["init"]
    card = (export_model(tmp_path / "card", tmp_path / "moved" / "final.pt")["MODEL_CARD.md"]).read_text()
    seen = f"| images seen | {2 * TINY_BATCH:,}, after the {start.provenance['images_seen']:,} of the checkpoint"
    assert seen in card and "--init-from" in card

    with pytest.raises(GanFeaturesError, match="pass --arch radford-svhn32"):
        initial_weights(start_path, get_architecture("radford-imagenet32"))
    d_only = save_checkpoint(tmp_path / "d.pt", start.architecture, start.discriminator, None, {"source": "test"})
    with pytest.raises(GanFeaturesError, match="has no generator"):
        initial_weights(d_only, start.architecture)


def test_train_with_a_wrong_init_checkpoint_fails_before_reading_data(exported, tmp_path, capsys):
    _, paths = exported
    code = main(["train", "--arch", "radford-imagenet32", "--dataset", "digits", "--out-dir", str(tmp_path / "run"),
                 "--steps", "1", "--init-from", str(paths["checkpoint-fp16.pt"]), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in error and "pass --arch radford-svhn32" in error, error
    assert not (tmp_path / "run" / "latest.pt").exists()
