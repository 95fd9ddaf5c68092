import json
import math
import pickle

import pytest
import torch

from gan_features.checkpoints import load_checkpoint, save_checkpoint
from gan_features.errors import GanFeaturesError
from gan_features.modelcard import _architecture_section
from gan_features.models import create_models, get_architecture


def _outputs(d, g, seed=0):
    torch.manual_seed(seed)
    z = g.sample_latents(4)
    d.eval()
    return g(z), d(torch.randn(4, 3, 32, 32))


@pytest.mark.parametrize("name", ["radford-svhn32", "radford-imagenet32-resize"])
def test_round_trip_restores_both_networks_and_provenance(tmp_path, name):
    arch = get_architecture(name)
    d, g = create_models(arch, seed=1)
    path = save_checkpoint(tmp_path / "c.pt", arch, d, g, {"seed": 1, "note": "test"})
    c = load_checkpoint(path)
    assert c.architecture == arch
    assert c.provenance == {"seed": 1, "note": "test"}
    assert len(c.sha256) == 64
    for a, b in zip(_outputs(d, g), _outputs(c.discriminator, c.generator)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not (tmp_path / "c.pt.partial").exists()


def test_half_precision_copy_loads_close_to_the_original(tmp_path):
    arch = get_architecture("radford-svhn32")
    d, g = create_models(arch, seed=1)
    c = load_checkpoint(save_checkpoint(tmp_path / "c.pt", arch, d, g, half=True))
    assert c.discriminator.main[0].weight.dtype == torch.float32
    torch.testing.assert_close(c.discriminator.main[0].weight, d.main[0].weight, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_raw_state_dict_needs_and_uses_the_architecture(tmp_path, prefix):
    d, _ = create_models("examples64", seed=0)
    path = tmp_path / "netD_epoch_3.pth"
    torch.save({prefix + k: v for k, v in d.state_dict().items()}, path)
    with pytest.raises(GanFeaturesError, match="--arch"):
        load_checkpoint(path)
    c = load_checkpoint(path, architecture="examples64")
    assert c.generator is None and c.has_running_stats
    torch.testing.assert_close(c.discriminator.state_dict()["main.3.running_var"], d.state_dict()["main.3.running_var"])


def test_wrong_architecture_is_a_clear_error(tmp_path):
    d, _ = create_models("examples64", seed=0)
    path = tmp_path / "netD.pth"
    torch.save(d.state_dict(), path)
    with pytest.raises(GanFeaturesError, match="do not fit architecture 'radford-svhn32'"):
        load_checkpoint(path, architecture="radford-svhn32")


class Evil:
    def __reduce__(self):
        return (print, ("executed!",))


def test_loading_never_executes_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(GanFeaturesError, match="not a loadable checkpoint"):
        load_checkpoint(path)
    assert "executed!" not in capsys.readouterr().out


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(GanFeaturesError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(GanFeaturesError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_provenance_with_non_plain_values_still_loads_safely(tmp_path):
    arch = get_architecture("radford-svhn32")
    d, g = create_models(arch)
    path = save_checkpoint(tmp_path / "c.pt", arch, d, g, {"torch": torch.__version__, "path": tmp_path})
    assert load_checkpoint(path).provenance == {"torch": str(torch.__version__), "path": str(tmp_path)}


def test_a_resize_generator_run_trains_and_its_checkpoint_loads(tmp_path):
    from gan_features.train import TrainConfig, train
    from tiny_runs import tiny_dataset

    config = TrainConfig(arch="radford-imagenet32-resize", dataset="digits", out_dir=str(tmp_path), steps=2,
                         batch_size=16, seed=0, device="cpu", precision="fp32", log_every=1)
    train(config, tiny_dataset(), progress=False)
    final = load_checkpoint(tmp_path / "final.pt")
    assert final.architecture == get_architecture("radford-imagenet32-resize")
    assert any(isinstance(m, torch.nn.Upsample) for m in final.generator.modules())
    steps = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(math.isfinite(s["loss_d"]) and math.isfinite(s["loss_g"]) for s in steps)
    card = "\n".join(_architecture_section(final))
    assert "G: nearest-neighbour upsampling by the stride then a stride-1 conv" in card
