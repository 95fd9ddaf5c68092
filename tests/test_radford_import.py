"""The import of the paper authors' Theano weights, proved against the NumPy/SciPy reference.

Agreement is measured per tensor as max |ours - reference| / max |reference| (relative to the
tensor's scale, so near-zero entries cannot inflate it). The float32 models (what users run) must
agree to 1e-5 (block activations, logits, images; measured <= 1.1e-6 on the released weights);
the same models cast to float64 must agree to 1e-10 on everything, probabilities included
(measured <= 8e-15), which leaves no room for a semantic slip: a missing kernel flip, a wrong
transposition or batch-norm eps 1e-5 instead of 1e-8 fails it.

Synthetic folders of random weights in the original layout test the importer everywhere; the
released weights (``GAN_FEATURES_SHARED``) are tested where the shared folder exists.
"""
from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import theano_reference as ref
from gan_features import checkpoints
from gan_features.errors import GanFeaturesError
from gan_features.models import create_models
from gan_features.radford import IMAGENET, SVHN, import_radford, save_radford_checkpoint
from gan_features.samples import grid_latents, sample_grid

MODELS = {  # name: (reference layout, D semantics, G semantics, epoch, released folder)
    "svhn": (ref.SVHN_FILES, ref.SVHN_D, ref.SVHN_G, 200, SVHN.directory),
    "imagenet": (ref.IMAGENET_FILES, ref.IMAGENET_D, ref.IMAGENET_G, 30, IMAGENET.directory),
}
IMAGENET_MISSING = ["30_discrim_params.jl_11.npy", "30_discrim_params.jl_14.npy", "30_gen_params.jl_01.npy",
                    "30_gen_params.jl_04.npy", "30_gen_params.jl_07.npy"]
BATCH = 8


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def rel_err(ours: torch.Tensor, reference: np.ndarray) -> float:
    ours = ours.detach().double().numpy()
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def write_release(directory, name, seed=0, skip=()):
    """A folder of random weights named and shaped like a released model's; returns the arrays."""
    layout, _, _, epoch, _ = MODELS[name]
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    params = {}
    for kind in ("discrim", "gen"):
        params[kind] = ref.random_params(layout[kind], rng)
        for i, array in enumerate(params[kind], 1):
            if (file := f"{epoch}_{kind}_params.jl_{i:02d}.npy") not in skip:
                np.save(directory / file, array)
    return params


def inputs(name, seed=0):
    """Seeded images in [-1, 1] and latents (the model's own distribution) for a model's tests."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (BATCH, 3, 32, 32))
    if name == "svhn":  # 100-d Gaussian z; the ImageNet model's is 256-d uniform
        return images, rng.standard_normal((BATCH, 100))
    return images, rng.uniform(-1, 1, (BATCH, 256))


def compare(checkpoint, images, latents, d_params, g_params, d_semantics, g_semantics, blocks=None):
    """Relative errors of (float32, float64) runs of D's blocks, logits, probabilities and G's images."""
    ref_blocks, ref_logits = ref.discriminator(images, d_params, **d_semantics, blocks=blocks)
    expected = {f"block{i + 1}": h for i, h in enumerate(ref_blocks)}
    if ref_logits is not None:
        expected |= {"logits": ref_logits, "probabilities": ref.sigmoid(ref_logits)}
    if g_params is not None:
        expected["images"] = ref.generator(latents, g_params, **g_semantics)
    errors = {}
    for dtype in (torch.float32, torch.float64):
        # train mode: batch statistics, like the original's batchnorm(X, g, b) without u, s
        d = copy.deepcopy(checkpoint.discriminator).to(dtype).train()
        g = copy.deepcopy(checkpoint.generator).to(dtype)
        x = torch.as_tensor(images, dtype=dtype)
        with torch.no_grad():
            ours = {f"block{i + 1}": h for i, h in enumerate(d.block_activations(x)[:len(ref_blocks)])}
            if "logits" in expected:
                logits = d(x)
                ours |= {"logits": logits, "probabilities": torch.sigmoid(logits)}
            if "images" in expected:
                ours["images"] = g(torch.as_tensor(latents, dtype=dtype))
        errors[dtype] = {key: rel_err(ours[key], value) for key, value in expected.items()}
    return errors


def assert_agree(errors, float32=1e-5):
    # Probabilities only in float64: on non-digits D's logits are about -20, where sigmoid turns the
    # float32 rounding of a logit (~4e-7 relative) into ~|logit| times that in p (8e-6 measured).
    assert max(v for k, v in errors[torch.float32].items() if k != "probabilities") < float32, errors
    assert max(errors[torch.float64].values()) < 1e-10, errors


# ---- the reference itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("k, stride, pad", [(5, 2, 2), (3, 1, 1), (3, 2, 1), (4, 2, 1)])
def test_reference_conv_is_scipys_textbook_convolution(k, stride, pad):
    rng = np.random.default_rng(k * 10 + stride)
    x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, k, k))
    np.testing.assert_allclose(ref.true_conv(x, w, stride, pad), ref.true_conv_scipy(x, w, stride, pad),
                               rtol=0, atol=1e-12)


def test_reference_conv_is_a_true_convolution():
    """A unit impulse convolved with a kernel reproduces the kernel; cross-correlation would mirror it."""
    w = np.arange(9.0).reshape(1, 1, 3, 3)
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1
    np.testing.assert_array_equal(ref.true_conv(x, w, 1, 1)[0, 0, 1:4, 1:4], w[0, 0])


@pytest.mark.parametrize("k, stride, pad", [(5, 2, 2), (3, 2, 1), (3, 1, 1)])
def test_reference_deconv_is_the_gradient_of_the_conv(k, stride, pad):
    """<conv(x), g> = <x, deconv(g)> for all x, g: deconv is the conv's adjoint, i.e. its input gradient."""
    rng = np.random.default_rng(k + stride)
    g, w = rng.standard_normal((2, 4, 4, 4)), rng.standard_normal((4, 3, k, k))
    x = rng.standard_normal((2, 3, 4 * stride, 4 * stride))
    y, dx = ref.true_conv(x, w, stride, pad), ref.true_conv_grad_input(g, w, stride, pad)
    assert y.shape == g.shape and dx.shape == x.shape
    assert np.isclose((y * g).sum(), (x * dx).sum(), rtol=1e-12)


def test_reference_batchnorm_uses_batch_statistics():
    x = np.random.default_rng(0).normal(3, 2, (8, 4, 5, 5))
    g, b = np.array([1.0, 2, 3, 4]), np.array([0.0, -1, 1, 2])
    y = ref.batchnorm(x, g, b)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), b, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), g, rtol=1e-6)  # biased variance, eps 1e-8


# ---- synthetic folders (no shared data needed) ------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """name -> (folder, arrays) for complete synthetic copies of both released models."""
    root = tmp_path_factory.mktemp("radford")
    return {name: (root / name, write_release(root / name, name, seed=i)) for i, name in enumerate(MODELS)}


@pytest.mark.parametrize("name", MODELS)
def test_synthetic_import_matches_reference(synthetic, name):
    directory, params = synthetic[name]
    _, d_sem, g_sem, epoch, _ = MODELS[name]
    checkpoint = import_radford(directory)
    assert checkpoint.architecture.name == {"svhn": SVHN, "imagenet": IMAGENET}[name].architecture
    assert checkpoint.architecture.bn_eps == 1e-8 and not checkpoint.has_running_stats
    assert checkpoint.provenance["complete"] and checkpoint.provenance["epoch"] == epoch
    images, latents = inputs(name)
    errors = compare(checkpoint, images, latents, params["discrim"], params["gen"], d_sem, g_sem)
    assert set(errors[torch.float64]) >= {"block1", "logits", "images"}
    # random untrained weights condition float32 worse than trained ones (G images: 4e-6 measured)
    assert_agree(errors, float32=5e-5)


def test_wrong_shape_is_refused(tmp_path):
    write_release(tmp_path, "svhn")
    np.save(tmp_path / "200_gen_params.jl_04.npy", np.zeros((256, 128, 3, 3), np.float32))
    with pytest.raises(GanFeaturesError) as error:
        import_radford(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "200_gen_params.jl_04.npy" in message
    assert "(256, 128, 5, 5)" in message and "(256, 128, 3, 3)" in message


def test_stray_files_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(GanFeaturesError, match="no <epoch>_discrim_params"):
        import_radford(tmp_path)
    write_release(tmp_path, "svhn")
    np.save(tmp_path / "200_discrim_params.jl_09.npy", np.zeros(3, np.float32))
    with pytest.raises(GanFeaturesError, match="jl_09.npy: unexpected file"):
        import_radford(tmp_path)
    np.save(tmp_path / "150_discrim_params.jl_01.npy", np.zeros(3, np.float32))
    with pytest.raises(GanFeaturesError, match=r"epochs \[150, 200\]"):
        import_radford(tmp_path)


def missing_names(message):
    return re.findall(r"(\d+_\w+_params\.jl_\d+\.npy) \(", message)


def test_missing_files_are_named_with_their_role(tmp_path):
    write_release(tmp_path, "imagenet", skip=IMAGENET_MISSING)
    with pytest.raises(GanFeaturesError) as error:
        import_radford(tmp_path)
    message = str(error.value)
    assert "\n" not in message and missing_names(message) == IMAGENET_MISSING
    assert "30_discrim_params.jl_11.npy (D conv5 weight 512x256x3x3)" in message
    assert "30_gen_params.jl_01.npy (G dense weight 256x8192)" in message
    assert "full original repository" in message and "--allow-missing" in message


def test_allow_missing_keeps_the_seeded_init_and_records_it(synthetic, tmp_path):
    complete, params = synthetic["imagenet"]
    for path in complete.iterdir():
        if path.name not in IMAGENET_MISSING:
            (tmp_path / path.name).symlink_to(path)
    with pytest.warns(UserWarning, match="first 4 of 6 conv blocks are intact"):
        checkpoint = import_radford(tmp_path, allow_missing=True)
    provenance = checkpoint.provenance
    assert provenance["missing"] == IMAGENET_MISSING and not provenance["complete"]
    assert provenance["intact_discriminator_blocks"] == 4
    assert not provenance["generator_intact"] and not provenance["discriminator_head_intact"]
    assert len(provenance["files"]) == 17 + 19 - 5
    # the missing tensors are exactly the seeded paper init (create_models is the init everywhere)
    fresh_d, fresh_g = create_models(checkpoint.architecture, seed=0)
    for module, fresh, key in [(checkpoint.discriminator, fresh_d, "main.11.weight"),
                               (checkpoint.discriminator, fresh_d, "main.14.weight"),
                               (checkpoint.generator, fresh_g, "main.0.weight"),
                               (checkpoint.generator, fresh_g, "main.4.weight")]:
        assert torch.equal(module.state_dict()[key], fresh.state_dict()[key])
    # ... and the four intact blocks still match the reference
    images, latents = inputs("imagenet")
    errors = compare(checkpoint, images, latents, params["discrim"], None, ref.IMAGENET_D, None, blocks=4)
    assert sorted(errors[torch.float64]) == ["block1", "block2", "block3", "block4"]
    assert_agree(errors)


def test_save_and_load_round_trip(synthetic, tmp_path):
    directory, _ = synthetic["svhn"]
    out = save_radford_checkpoint(directory, tmp_path / "sub" / "d.pt")
    with pytest.raises(GanFeaturesError, match="already exists"):
        save_radford_checkpoint(directory, out)
    assert save_radford_checkpoint(directory, out, overwrite=True) == out
    imported, loaded = import_radford(directory), checkpoints.load_checkpoint(out)
    assert loaded.architecture == imported.architecture and loaded.architecture.bn_eps == 1e-8
    assert loaded.provenance == imported.provenance and not loaded.has_running_stats
    images, latents = (torch.as_tensor(a, dtype=torch.float32) for a in inputs("svhn"))
    with torch.no_grad():
        d_imported, d_loaded = imported.discriminator.train(), loaded.discriminator.train()
        assert torch.equal(d_imported(images), d_loaded(images))
        for x, y in zip(d_imported.block_activations(images), d_loaded.block_activations(images), strict=True):
            assert torch.equal(x, y)
        assert torch.equal(imported.generator(latents), loaded.generator(latents))


def test_sample_grid_is_one_batch_with_an_interpolation_row(synthetic, tmp_path):
    generator = import_radford(synthetic["svhn"][0]).generator
    latents = grid_latents(generator, rows=2, cols=3, seed=5)
    assert latents.shape == (2 * 3 + 3, 100)
    start, end = latents[-3], latents[-1]
    torch.testing.assert_close(latents[-2], (start + end) / 2)
    assert not torch.equal(start, end)

    path = sample_grid(generator, tmp_path / "grid.png", rows=2, cols=3, seed=5)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (3 * 34 + 2, 3 * 34 + 2, 3)  # (rows + 1) x cols tiles of 32 px, 2 px padding
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    # the PNG holds G(all latents) computed in one batch (batch statistics), mapped from [-1, 1]
    with torch.no_grad():
        tiles = (generator(latents) + 1) / 2
    tile = image[36:68, 70:102] / 255.0  # row 1, column 2: sample 1 * 3 + 2 = 5
    assert np.abs(tile - tiles[5].permute(1, 2, 0).clamp(0, 1).numpy()).max() <= 0.5 / 255 + 1e-6
    again = sample_grid(generator, tmp_path / "again.png", rows=2, cols=3, seed=5)
    assert again.read_bytes() == path.read_bytes()


# ---- the released weights (needs GAN_FEATURES_SHARED) -------------------------------------------------

@pytest.fixture(scope="module")
def release(shared_dir):
    def folder(name):
        path = shared_dir / "data" / "radford-dcgan" / MODELS[name][4]
        if not path.is_dir():
            pytest.skip(f"{path} is absent")
        return path
    return folder


@pytest.mark.shared_data
def test_released_svhn_model_matches_reference(release):
    directory = release("svhn")
    checkpoint = import_radford(directory)
    assert checkpoint.provenance["files"]["200_discrim_params.jl_01.npy"] == \
        checkpoints.file_sha256(directory / "200_discrim_params.jl_01.npy")
    d_params, g_params = ref.load_params(directory, "discrim"), ref.load_params(directory, "gen")
    noise, latents = inputs("svhn")
    samples = ref.generator(latents, g_params, **ref.SVHN_G)  # D also on images like its training data
    errors = compare(checkpoint, noise, latents, d_params, g_params, ref.SVHN_D, ref.SVHN_G)
    assert set(errors[torch.float32]) == {"block1", "block2", "block3", "logits", "probabilities", "images"}
    assert_agree(errors)
    assert_agree(compare(checkpoint, samples, None, d_params, None, ref.SVHN_D, None))


@pytest.mark.shared_data
def test_released_imagenet_model_names_its_missing_files(release):
    with pytest.raises(GanFeaturesError) as error:
        import_radford(release("imagenet"))
    assert missing_names(str(error.value)) == IMAGENET_MISSING


@pytest.mark.shared_data
def test_released_imagenet_model_first_four_blocks_match_reference(release):
    directory = release("imagenet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = import_radford(directory, allow_missing=True)
    assert checkpoint.provenance["intact_discriminator_blocks"] == 4
    images, latents = inputs("imagenet")
    errors = compare(checkpoint, images, latents, ref.load_params(directory, "discrim"), None,
                     ref.IMAGENET_D, None, blocks=4)
    assert sorted(errors[torch.float64]) == ["block1", "block2", "block3", "block4"]
    assert_agree(errors)
