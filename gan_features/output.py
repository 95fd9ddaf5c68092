"""Every file the toolkit writes: refused before any work when it cannot be written, locked against
a second writer, and never left half-written under its name.

- :func:`check_output` (and :func:`check_output_folder`): the checks that need no work done first
  (the file exists and may not be replaced, the path is a folder, the folder is missing or not
  writable, too little free space for a size known in advance), each one line naming the option.
- :func:`output_lock`: an exclusive OS-level lock, ``<name>.lock`` beside the file, taken before any
  work and held until the file is in place: a second writer of the same file (another process)
  refuses at once. HDF5's own file locking is not enough: users turn it off
  (``HDF5_USE_FILE_LOCKING=FALSE`` on network file systems), and it is only taken when the file is
  opened, after minutes of work. Re-entrant within a process.
- :func:`writing` (one file) and :func:`writing_together` (files that appear together or not at
  all): both, around a temporary ``<name>.partial`` that is renamed over the file only when
  complete and removed after any failure; disk errors (no space, quota, read-only file system,
  permission) become one line. :func:`write_texts` and :func:`write_json` write text through them.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import GanFeaturesError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks; the other checks still hold
    fcntl = None

FREE_SPACE_MARGIN = 1.05  # headroom over a known size (HDF5 metadata, chunk padding)
_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EISDIR: "it is a folder", errno.ENOTDIR: "a parent is not a folder"}
_HELD: dict[Path, int] = {}  # locks this process holds, with their nesting depth


def check_output(path: str | os.PathLike, overwrite: bool, expected_bytes: int | None = None, *,
                 option: str = "--out", example: str = "out", create_folder: bool = False) -> Path:
    """``path`` as a Path if a file can be written there, else GanFeaturesError in one line naming
    ``option`` (the command-line option the path came from; ``example``: a file name to suggest).

    ``create_folder``: the writer makes a missing folder (then its nearest existing ancestor must
    be a writable folder); otherwise the folder must exist. ``expected_bytes``: the file's size,
    when known before the work, checked against the free space."""
    path = Path(path)
    if path.is_dir():
        raise GanFeaturesError(f"{option} {path} is a folder: give a file name, e.g. {option} {path / example}")
    if path.exists() and not overwrite:
        raise GanFeaturesError(f"{path} already exists: pass --overwrite to replace it, or choose another {option}")
    folder = path.parent
    if create_folder:
        check_output_folder(folder, option)
    elif not folder.exists():
        raise GanFeaturesError(f"folder {folder} does not exist: create it first (mkdir -p {folder}) or choose "
                               f"another {option}")
    elif not folder.is_dir():
        raise GanFeaturesError(f"{folder} is not a folder, so {path} cannot be written: choose another {option}")
    elif not _writable(folder):
        raise GanFeaturesError(f"folder {folder} is not writable: choose another {option}")
    if expected_bytes:
        existing = _nearest_existing(folder)
        free = shutil.disk_usage(existing).free
        needed = int(expected_bytes * FREE_SPACE_MARGIN)
        if needed > free:
            raise GanFeaturesError(f"{path} needs ~{_size(needed)} but only {_size(free)} are free in {existing}: "
                                   f"free some space or choose another {option}")
    return path


def check_output_folder(folder: str | os.PathLike, option: str = "--out-dir") -> Path:
    """``folder`` as a Path if it is a writable folder or can be made as one (its nearest existing
    ancestor is), else GanFeaturesError in one line naming ``option``."""
    folder = Path(folder)
    existing = _nearest_existing(folder)
    if existing.exists() and not existing.is_dir():
        raise GanFeaturesError(f"{existing} is a file, not a folder, so {option} {folder} cannot be used: choose "
                               f"another {option}")
    if not _writable(existing):
        what = "folder" if existing == folder else f"{folder} cannot be created: folder"
        raise GanFeaturesError(f"{what} {existing} is not writable: choose another {option}")
    return folder


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold ``<path>.lock`` exclusively (see the module docstring); GanFeaturesError at once if
    another process holds it. The lock file is removed on release."""
    key = Path(os.path.abspath(path))
    if fcntl is None or key in _HELD:
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _release_nested(key)
        return
    lock_path = key.with_name(key.name + ".lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise disk_error(error, lock_path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GanFeaturesError(f"another process is writing {key} (it holds {lock_path}): wait for it to "
                                   "finish, or choose another output") from None
        # The holder before us removes the file before it unlocks: if we locked a removed file, retry.
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _release_nested(key: Path) -> None:
    _HELD[key] -= 1
    if not _HELD[key]:
        del _HELD[key]


def partial_path(path: Path, keep_suffix: bool = False) -> Path:
    """Where ``path`` is written before it is complete: ``<name>.partial`` (``<stem>.partial<suffix>``
    with ``keep_suffix``, for writers that pick the format from the suffix)."""
    return path.with_name(f"{path.stem}.partial{path.suffix}" if keep_suffix else f"{path.name}.partial")


@contextmanager
def writing(path: str | os.PathLike, *, overwrite: bool = True, expected_bytes: int | None = None,
            keep_suffix: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s content to; when the block ends without an
    error it is renamed over ``path``, otherwise removed. Checked and locked first; disk errors
    become one line. ``overwrite`` defaults to True: commands check their ``--overwrite`` first."""
    with writing_together([path], overwrite=overwrite, expected_bytes=expected_bytes,
                          keep_suffix=keep_suffix) as (partial,):
        yield partial


@contextmanager
def writing_together(paths: Sequence[str | os.PathLike], *, overwrite: bool = True,
                     expected_bytes: int | None = None, keep_suffix: bool = False) -> Iterator[list[Path]]:
    """:func:`writing` for files that appear together or not at all (a table's .md and .csv, an
    exported model's files): each is checked and locked, the block writes every temporary path
    yielded, and only then are they all renamed; after any failure every old file stands."""
    targets = [check_output(path, overwrite, expected_bytes) for path in paths]
    partials = [partial_path(target, keep_suffix) for target in targets]
    with ExitStack() as locks:
        for target in targets:
            locks.enter_context(output_lock(target))
        try:
            yield partials
            for partial, target in zip(partials, targets):
                os.replace(partial, target)
        except BaseException as error:
            for partial in partials:
                partial.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise disk_error(error, targets[0]) from None
            raise


def write_texts(texts: dict[Path, str]) -> None:
    """Write each text to its path, all or none (:func:`writing_together`), synced to disk before
    the renames: a failure never leaves one file of a pair new and the other old or missing."""
    with writing_together(list(texts)) as partials:
        for text, partial in zip(texts.values(), partials):
            with open(partial, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())


def figure_classes() -> tuple[type, type]:
    """matplotlib's (Figure, FigureCanvasAgg), or a one-line error: matplotlib is optional (the 'plots'
    extra), and its object API with the Agg canvas needs no display and keeps no pyplot state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise GanFeaturesError("plotting needs matplotlib: pip install 'gan-features[plots]'") from None
    return Figure, FigureCanvasAgg


def write_json(path: Path, value: Any, indent: int = 1) -> Path:
    """``value`` as a JSON file (keys sorted; numpy scalars as the numbers they hold), written whole."""
    write_texts({path: json.dumps(value, indent=indent, sort_keys=True, default=_plain) + "\n"})
    return path


def _plain(value: Any) -> Any:
    """numpy scalars as the Python numbers they hold (what is written reads back the same), else text."""
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else str(value)


def disk_error(error: Exception, path: str | os.PathLike) -> Exception:
    """``error`` as one line when it is a disk or permission error (h5py's are OSErrors or
    RuntimeErrors that carry the errno only in their message), else ``error`` itself."""
    code = getattr(error, "errno", None)
    if code is None:
        match = re.search(r"errno = (\d+)", str(error))
        code = int(match.group(1)) if match else None
        if code is None and "No space left" in str(error):
            code = errno.ENOSPC
    if code not in _DISK_ERRORS:
        return error
    return GanFeaturesError(f"cannot write {path}: {_DISK_ERRORS[code]}; nothing was written there "
                            "(free space, or choose another output folder)")


def reserve(path: Path, size: int) -> None:
    """Allocate ``size`` bytes of ``path`` on disk now, so that a disk that fills up later fails
    here, before any data is written, and not inside a library's buffered writes (h5py cannot close
    a file whose flush failed, and crashed at exit). Linux's fallocate(2) itself, not
    ``os.posix_fallocate``: where the file system cannot preallocate, glibc's emulation writes
    every block (minutes for a store on NFS); here that is a no-op instead."""
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # not Linux/glibc
        return
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    with open(path, "r+b") as handle:
        if fallocate(handle.fileno(), 0, 0, size) != 0:
            code = ctypes.get_errno()
            if code in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(code, os.strerror(code), str(path))


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
