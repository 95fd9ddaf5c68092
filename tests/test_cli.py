"""The command line end to end on the embedded digits: train a few steps, extract, svm; and its errors."""
import subprocess
import sys

import pytest

from gan_features.cli import main
from gan_features.store import FeatureStore


def run(capsys, *argv):
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A radford-svhn32 DCGAN trained for 3 steps of 32 digits."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--quiet", "--arch", "radford-svhn32", "--dataset", "digits", "--out-dir", str(run_dir),
                 "--steps", "3", "--batch-size", "32", "--device", "cpu"]) == 0
    return run_dir


def test_train_writes_checkpoints_log_and_resumes(trained, capsys):
    assert (trained / "final.pt").exists() and (trained / "latest.pt").exists()
    assert len((trained / "log.jsonl").read_text().splitlines()) == 1  # logged at the last step
    code, _, err = run(capsys, "train", "--quiet", "--arch", "radford-svhn32", "--out-dir", str(trained),
                       "--steps", "3", "--batch-size", "32")
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1


def test_extract_then_svm(trained, tmp_path, capsys):
    ckpt = str(trained / "final.pt")
    code, out, err = run(capsys, "extract", "--quiet", "--ckpt", ckpt, "--dataset", "digits", "--split",
                         "train,test", "--out", str(tmp_path / "{split}.h5"), "--batch-size", "128")
    assert code == 0, err
    assert out.split() == [str(tmp_path / "train.h5"), str(tmp_path / "test.h5")]
    with FeatureStore(tmp_path / "train.h5") as store:
        assert store.features.shape == (1257, 7168)
        assert store.attrs["architecture"] == "radford-svhn32" and store.attrs["batchnorm"] == "recompute"
        assert store.attrs["command"].startswith("gan-features extract --quiet --ckpt ")  # as typed, recorded
    code, out, err = run(capsys, "svm", "--quiet", "--train", str(tmp_path / "train.h5"), "--test",
                         str(tmp_path / "test.h5"), "--C", "1e-3,1e-2", "--results", str(tmp_path / "results"),
                         "--name", "digits")
    assert code == 0, err
    assert "test accuracy" in out
    assert (tmp_path / "results" / "digits.md").exists() and (tmp_path / "results" / "digits.csv").exists()
    assert "gan-features svm --quiet --train" in (tmp_path / "results" / "digits.csv").read_text()
    accuracy = float(out.split("test accuracy:")[1].split("%")[0])
    assert accuracy > 80  # features of a barely trained D still separate digits far above chance (10%)


def test_extract_refuses_to_overwrite(trained, tmp_path, capsys):
    out_file = tmp_path / "f.h5"
    out_file.write_text("keep me")
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", str(trained / "final.pt"), "--out", str(out_file))
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out_file.read_text() == "keep me"


@pytest.mark.parametrize("argv, message", [
    (["extract", "--ckpt", "missing.pt", "--split", "train,test", "--out", "OUT"], "{split}"),
    (["extract", "--ckpt", "missing.pt", "--out", "OUT"], "does not exist"),
    (["svm", "--train", "missing.h5", "--test", "missing2.h5"], "does not exist"),
    (["svm", "--train", "a.h5", "--test", "b.h5", "--protocol", "magic"], "unknown protocol"),
    (["import-radford", "no-such-dir", "--out", "OUT"], "no-such-dir"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    if "a.h5" in argv:
        from gan_features.store import write_features
        import numpy as np
        for name in ("a.h5", "b.h5"):
            write_features(name, np.zeros((4, 2), np.float32), np.arange(4) % 2, {"split": "test" if name == "b.h5"
                                                                                     else "train"})
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_console_script_and_help():
    done = subprocess.run([sys.executable, "-m", "gan_features.cli", "extract", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--batchnorm" in done.stdout
    done = subprocess.run([sys.executable, "-m", "gan_features.cli", "archs"], capture_output=True, text=True,
                          timeout=120)
    assert "radford-imagenet32" in done.stdout and "28672" in done.stdout


def test_extract_from_a_pytorch_examples_netD(tmp_path, capsys):
    import torch

    from gan_features.models import create_models

    d, _ = create_models("examples64", seed=0)
    torch.save({"module." + k: v for k, v in d.state_dict().items()}, tmp_path / "netD_epoch_24.pth")
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", str(tmp_path / "netD_epoch_24.pth"), "--arch",
                       "examples64", "--dataset", "digits", "--split", "test", "--batchnorm", "running",
                       "--out", str(tmp_path / "f.h5"))
    assert code == 0, err
    with FeatureStore(tmp_path / "f.h5") as store:
        assert store.features.shape == (540, 15360)
        assert store.attrs["image_size"] == 64 and store.attrs["batchnorm"] == "running"
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", str(tmp_path / "netD_epoch_24.pth"), "--arch",
                       "examples64", "--image-size", "32", "--out", str(tmp_path / "g.h5"))
    assert code == 2 and "64x64" in err and not (tmp_path / "g.h5").exists()


def test_import_radford_then_extract(tmp_path, capsys):
    from test_radford_import import write_release

    write_release(tmp_path / "release", "svhn")  # random weights in the released SVHN model's layout
    ckpt = str(tmp_path / "svhn.pt")
    code, out, err = run(capsys, "import-radford", str(tmp_path / "release"), "--out", ckpt)
    assert code == 0, err
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", ckpt, "--dataset", "digits", "--split", "test",
                       "--batchnorm", "running", "--out", str(tmp_path / "f.h5"))
    assert code == 2 and "--batchnorm recompute" in err
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", ckpt, "--dataset", "digits", "--split", "test",
                       "--out", str(tmp_path / "f.h5"))
    assert code == 0, err
    with FeatureStore(tmp_path / "f.h5") as store:
        assert store.features.shape == (540, 7168)
        assert store.attrs["batchnorm_statistics_source"]["split"] == "train"
    code, _, err = run(capsys, "sample", "--ckpt", ckpt, "--out", str(tmp_path / "grid.png"))
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 1000


def _svhn_mat(path, n, seed):
    """Official SVHN layout (X (32,32,3,N) uint8, y (N,1) with 10 for digit 0); class-tinted noise images."""
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(seed)
    digits = np.arange(n) % 10
    x = rng.integers(0, 96, (32, 32, 3, n)).astype(np.uint8)
    x[:, :, digits % 3, np.arange(n)] += (16 * digits).astype(np.uint8)  # a class-dependent tint to find
    scipy.io.savemat(path, {"X": x, "y": np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)})


def test_svhn_protocol_from_the_cli_on_extracted_stores(tmp_path, capsys):
    _svhn_mat(tmp_path / "train_32x32.mat", 400, seed=0)
    _svhn_mat(tmp_path / "test_32x32.mat", 100, seed=1)
    ckpt = str(tmp_path / "d.pt")
    assert main(["init", "--arch", "radford-svhn32", "--out", ckpt]) == 0
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", ckpt, "--dataset", "svhn", "--data-root", str(tmp_path),
                       "--split", "train,test", "--out", str(tmp_path / "svhn-{split}.h5"))
    assert code == 0, err
    code, out, err = run(capsys, "svm", "--quiet", "--protocol", "svhn-1000", "--train", str(tmp_path / "svhn-train.h5"),
                         "--test", str(tmp_path / "svhn-test.h5"), "--C", "1e-3,1e-1", "--set", "validation_size=100",
                         "--set", "n_per_class=10", "--set", "selection_draws=2", "--set", "test_draws=3")
    assert code == 0, err
    assert "test error" in out and "over 3 fits" in out
    error = float(out.split("test error:")[1].split("+-")[0])
    assert error < 60  # the tint is learnable from 10 labels per class; chance is 90%
    code, _, err = run(capsys, "svm", "--quiet", "--protocol", "svhn-1000", "--train", str(tmp_path / "svhn-train.h5"),
                       "--test", str(tmp_path / "svhn-test.h5"), "--set", "draws=3")
    assert code == 2 and "no parameter draws" in err


def test_cifar10_protocols_from_the_cli_on_extracted_stores(tmp_path, capsys):
    from test_bench import write_cifar10

    write_cifar10(tmp_path, train_per_class=20, test_per_class=10)  # class-coloured images, official pickles
    ckpt = str(tmp_path / "d.pt")
    assert main(["init", "--arch", "radford-imagenet32", "--out", ckpt]) == 0
    code, _, err = run(capsys, "extract", "--quiet", "--ckpt", ckpt, "--dataset", "cifar10", "--data-root",
                       str(tmp_path), "--split", "train,test", "--out", str(tmp_path / "cifar-{split}.h5"))
    assert code == 0, err
    train, test = str(tmp_path / "cifar-train.h5"), str(tmp_path / "cifar-test.h5")
    code, out, err = run(capsys, "svm", "--quiet", "--protocol", "cifar10", "--train", train, "--test", test,
                         "--C", "1e-3,1e-2", "--results", str(tmp_path / "results"), "--name", "all-labels",
                         "--no-gram-cache")
    assert code == 0, err
    assert not (tmp_path / "cifar-train.h5.gram").exists()  # the shared Gram matrix was not kept
    assert "chosen C = " in out and "(one fit)" in out  # chosen on the held-out 10%, refit on all 200 rows
    assert float(out.split("test accuracy:")[1].split("%")[0]) > 50  # colours are easy; chance is 10%
    assert (tmp_path / "results" / "all-labels.csv").exists()
    code, out, err = run(capsys, "svm", "--quiet", "--protocol", "cifar10-400", "--train", train, "--test", test,
                         "--C", "1e-3,1e-2", "--set", "n_per_class=5", "--set", "validation_size=50",
                         "--set", "selection_draws=1", "--set", "test_draws=3")
    assert code == 0, err
    assert "over 3 fits" in out
    assert float(out.split("test accuracy:")[1].split("+-")[0]) > 30
    code, _, err = run(capsys, "svm", "--quiet", "--protocol", "cifar10", "--train", test, "--test", train)
    assert code == 2 and "holds the 'test' split" in err  # the protocol's splits are checked, not assumed


def test_knn_prints_writes_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    import numpy as np
    import pandas as pd

    import gan_features.knn
    from gan_features.store import write_features

    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("test", 40)):
        labels = np.arange(n) % 3
        write_features(tmp_path / f"{split}.h5", (rng.normal(size=(n, 8)) + 3 * np.eye(8)[labels]).astype(np.float32),
                       labels, {"split": split, "checkpoint_sha256": "ab" * 32})
    stores = ["--train", str(tmp_path / "train.h5"), "--test", str(tmp_path / "test.h5")]
    results = tmp_path / "results"
    code, out, err = run(capsys, "knn", "--quiet", *stores, "--k", "1,5", "--temperature", "0.1", "--device", "cpu",
                         "--results", str(results))
    assert code == 0, err
    assert "k=1: test accuracy" in out and "k=5: test accuracy" in out
    assert out.splitlines()[-2:] == [str(results / "knn.md"), str(results / "knn.csv")]
    table = pd.read_csv(results / "knn.csv")
    assert table["k"].tolist() == [1, 5] and (table["temperature"] == 0.1).all() and (table["n_test"] == 40).all()
    assert table["train_store"].iloc[0] == str((tmp_path / "train.h5").resolve()) and "git_commit" in table
    assert float(out.split("k=5: test accuracy")[1].split("%")[0]) == table["accuracy"].iloc[1] > 60  # chance: 33
    written = (results / "knn.md").read_text()
    assert "k-NN probe: test accuracy" in written and "exp(similarity / 0.1)" in written

    monkeypatch.setattr(gan_features.knn, "knn_probe", lambda *a, **k: pytest.fail("measured before refusing"))
    code, _, err = run(capsys, "knn", "--quiet", *stores, "--results", str(results))
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (results / "knn.md").read_text() == written
    monkeypatch.undo()
    code, out, err = run(capsys, "knn", "--quiet", *stores, "--k", "3", "--results", str(results), "--overwrite")
    assert code == 0, err
    assert pd.read_csv(results / "knn.csv")["k"].tolist() == [3]
    code, _, err = run(capsys, "knn", "--quiet", "--train", stores[3], "--test", stores[1])
    assert code == 2 and "holds the 'test' split but the k-NN probe's training store" in err
    code, _, err = run(capsys, "knn", "--quiet", *stores, "--k", "121")
    assert code == 2 and "k=121 is more than the 120 training rows" in err


@pytest.mark.parametrize("option, value", [("--k", "0,20"), ("--k", "twenty"), ("--k", ""), ("--temperature", "0"),
                                           ("--temperature", "nan"), ("--temperature", "-1"),
                                           ("--batch-size", "0"), ("--batch-size", "1.5")])
def test_knn_numeric_options_are_checked_at_parse_time_in_one_line(capsys, option, value):
    with pytest.raises(SystemExit) as exited:  # before any store is opened: these do not exist
        main(["knn", "--train", "missing.h5", "--test", "missing2.h5", option, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"gan-features knn: error: argument {option}: expected ")


def test_top_level_help_imports_nothing_heavy():
    """`gan-features --help` builds only the command list: no torch, scikit-learn or pandas import (each takes
    a second or more), so the help appears at once."""
    code = ("import sys; from gan_features import cli; cli.build_parser('').format_help(); "
            "heavy = sorted({'torch', 'sklearn', 'pandas', 'h5py'} & set(sys.modules)); print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
