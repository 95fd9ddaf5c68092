"""Getting datasets onto disk: the data root, and fetching official archives safely.

Every failure is a one-line :class:`GanFeaturesError` that says what is missing, where it was looked
for and how to fix it, so the CLI can print it without a traceback. Downloads stream to a temporary
name beside the target, are checked against the official md5 and only then renamed into place, so an
interrupted or corrupted fetch never leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import GanFeaturesError
from . import DATA_ROOT_ENV

ROOT_HINT = f"pass --data-root DIR or set ${DATA_ROOT_ENV}"
TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20


def one_line(error: BaseException | str) -> str:
    """An exception's message with all whitespace collapsed, fit for a one-line error."""
    return " ".join(str(error).split())


def require_root(root: str | os.PathLike | None, dataset: str) -> Path:
    """The data root as a Path, or a one-line error when none was given at all."""
    if root is None:
        raise GanFeaturesError(f"no data root for {dataset}: {ROOT_HINT} to the folder that holds it")
    return Path(root).expanduser()


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: Path, md5: str) -> Path:
    """Fetch ``url`` to ``dest`` and check its md5; a file already there with that md5 is kept."""
    if dest.is_file() and file_md5(dest) == md5:
        return dest
    manual = f"download it by hand into {dest.parent} (this machine may be offline)"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise GanFeaturesError(f"cannot write the download of {url} into {dest.parent}: {one_line(e)}") from None
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise GanFeaturesError(f"the download of {url} has md5 {digest.hexdigest()}, expected {md5}: "
                                   f"retry, or {manual}")
        os.replace(tmp, dest)
    except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors; a malformed URL is a ValueError
        reason = getattr(e, "reason", e)
        raise GanFeaturesError(f"could not download {url} ({one_line(reason)}): {manual}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def extract_tar(archive: Path, root: Path) -> None:
    """Unpack ``archive`` into ``root``; each top-level entry appears only once fully extracted."""
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=root) as staging:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")  # refuses absolute paths, '..', devices
        except (OSError, tarfile.TarError) as e:
            raise GanFeaturesError(f"cannot extract {archive}: {one_line(e)}; delete it and retry") from None
        for entry in sorted(Path(staging).iterdir()):
            target = root / entry.name
            if target.exists():
                # never delete what the user has: an existing folder is theirs to remove
                raise GanFeaturesError(f"{target} already exists but is incomplete: remove it and retry")
            shutil.move(entry, target)  # a rename: the staging folder is on the same filesystem


def download_and_extract(url: str, root: Path, md5: str) -> None:
    """Fetch the archive at ``url`` into ``root`` (kept, so a re-extract needs no re-download) and unpack it."""
    archive = download_url(url, root / url.rsplit("/", 1)[-1], md5)
    extract_tar(archive, root)
