"""Writing files: refused up front where it cannot succeed, one writer at a time, never half a file."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from gan_features import output
from gan_features.errors import GanFeaturesError
from gan_features.output import check_output, disk_error, output_lock, writing
from gan_features.report import write_table
from gan_features.store import FeatureStore, FeatureWriter, write_features


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# ------------------------------------------------------------------------------------ up-front checks
def test_check_output_refuses_in_one_line_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "old.h5").write_text("keep")
    cases = [(tmp_path / "old.h5", "already exists: pass --overwrite"),
             (tmp_path, "is a folder: give a file name"),
             (tmp_path / "missing" / "f.h5", "does not exist: create it first")]
    for path, message in cases:
        with pytest.raises(GanFeaturesError, match=message):
            check_output(path, overwrite=False)
    assert check_output(tmp_path / "old.h5", overwrite=True) == tmp_path / "old.h5"
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # root passes real permission checks
    with pytest.raises(GanFeaturesError, match="is not writable"):
        check_output(tmp_path / "new.h5", overwrite=False)


def test_a_store_that_cannot_fit_is_refused_before_a_byte_is_written(tmp_path, monkeypatch):
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(output.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(free, free, 10**6))
    with pytest.raises(GanFeaturesError, match=r"needs ~.* but only 1\.0 MB are free"):
        FeatureWriter(tmp_path / "big.h5", count=10_000, dimension=1_000, attrs={})
    assert listing(tmp_path) == []


# ------------------------------------------------------------------------------------------ the lock
LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from gan_features.output import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_second_writer_refuses_at_once_while_the_first_holds_the_file(tmp_path):
    target = tmp_path / "features.h5"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(GanFeaturesError, match="another process is writing .*features.h5"):
            write_features(target, np.zeros((4, 3), np.float32), np.arange(4), {})
        with pytest.raises(GanFeaturesError, match="another process is writing"):
            with writing(target):
                pass
        assert listing(tmp_path) == ["features.h5.lock"]  # the holder's; nothing of ours
    finally:
        holder.kill()
        holder.wait()
    write_features(target, np.zeros((4, 3), np.float32), np.arange(4), {})  # the lock died with its holder
    assert listing(tmp_path) == ["features.h5"]


def test_a_second_extract_of_the_same_out_refuses_before_any_work(tmp_path, capsys):
    """Two `extract` runs writing one --out (HDF5_USE_FILE_LOCKING=FALSE, as on network file systems,
    does not matter: the lock is the toolkit's own)."""
    from gan_features.cli import main

    checkpoint, out = tmp_path / "d.pt", tmp_path / "f.h5"
    assert main(["init", "--arch", "radford-svhn32", "--out", str(checkpoint)]) == 0
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        code = main(["extract", "--quiet", "--ckpt", str(checkpoint), "--dataset", "digits", "--split", "test",
                     "--device", "cpu", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and "another process is writing" in err and len(err.strip().splitlines()) == 1
        assert not out.exists() and not (tmp_path / "f.h5.partial").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_reentrant_in_one_process_and_removed_after(tmp_path):
    target = tmp_path / "f.h5"
    with output_lock(target):
        with output_lock(target):  # extract_to_store holds it while FeatureWriter takes it again
            assert (tmp_path / "f.h5.lock").exists()
        assert (tmp_path / "f.h5.lock").exists()
    assert listing(tmp_path) == []


# ------------------------------------------------------------------------------------ failing writes
def test_writing_renames_when_complete_and_removes_the_partial_after_an_error(tmp_path):
    target = tmp_path / "model.npz"
    with writing(target) as partial:
        assert partial == tmp_path / "model.npz.partial"
        partial.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with writing(target) as partial:
            partial.write_bytes(b"half")
            raise RuntimeError("failed mid-write")
    assert target.read_bytes() == b"new" and listing(tmp_path) == ["model.npz"]
    with writing(tmp_path / "grid.png", keep_suffix=True) as partial:
        assert partial.name == "grid.partial.png"  # writers that pick the format from the suffix
        partial.write_bytes(b"png")


def test_disk_errors_become_one_line():
    for code, words in ((errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"), (errno.EDQUOT, "quota")):
        error = disk_error(OSError(code, os.strerror(code)), "/x/f.h5")
        assert isinstance(error, GanFeaturesError) and words in str(error) and "\n" not in str(error)
    h5py_style = OSError("Can't write data (file write failed: time = now, filename = 'f.h5.partial', "
                         "errno = 28, error message = 'No space left on device')")
    assert "no space left" in str(disk_error(h5py_style, "f.h5"))
    other = OSError("something else")
    assert disk_error(other, "f.h5") is other


def test_a_store_write_that_fails_mid_way_leaves_nothing(tmp_path):
    writer = FeatureWriter(tmp_path / "f.h5", count=8, dimension=3, attrs={})
    with pytest.raises(GanFeaturesError, match="no space left"):
        with writer:
            writer.append(np.zeros((4, 3), np.float32), np.arange(4))

            class Full:
                def __setitem__(self, key, value):
                    raise OSError(errno.ENOSPC, "No space left on device")

            writer._features = Full()
            writer.append(np.zeros((4, 3), np.float32), np.arange(4))
    assert listing(tmp_path) == []


def test_tables_on_a_failing_disk_keep_the_old_pair(tmp_path, monkeypatch):
    import pandas as pd

    write_table(pd.DataFrame({"a": [1]}), tmp_path, "t")
    before = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path)}

    def read_only(*args):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(GanFeaturesError, match="read-only"):
        write_table(pd.DataFrame({"a": [2]}), tmp_path, "t")
    assert {name: (tmp_path / name).read_bytes() for name in listing(tmp_path)} == before


FILL_THE_DISK = textwrap.dedent("""
    import sys, numpy as np
    from gan_features.errors import GanFeaturesError
    from gan_features.store import FeatureWriter
    folder = sys.argv[1]
    writer = FeatureWriter(folder + "/f.h5", count=4096, dimension=256, attrs={})  # 4 MB: fits when checked
    open(folder + "/filler", "wb").write(b"x" * (3 << 20))  # then another program takes most of the room
    try:
        with writer:
            for start in range(0, 4096, 256):
                writer.append(np.ones((256, 256), np.float32), np.zeros(256, np.int64))
    except GanFeaturesError as error:
        print(error)
""")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 5 MB tmpfs (needs root and a kernel that lets the container mount; skipped otherwise)."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root, or not allowed in this container)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_mid_extraction_is_one_line_and_leaves_no_partial(small_tmpfs):
    result = subprocess.run([sys.executable, "-c", FILL_THE_DISK, str(small_tmpfs)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]  # no segfault, no traceback
    assert "no space left" in result.stdout and "Traceback" not in result.stderr
    assert listing(small_tmpfs) == ["filler"]
    with pytest.raises(GanFeaturesError):
        FeatureStore(small_tmpfs / "f.h5")
