"""Provenance: where, when, with what code and by which command a result was made.

Every stored artifact (feature store, checkpoint, table row, benchmark) records :func:`provenance`,
so a number can be traced to the commit, the machine and the command line that produced it. This
module sits below every stage that writes results and imports nothing of the package but its version.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import shlex
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

_command: list[str] | None = None  # the gan-features command line running now (see recorded_command)


@contextmanager
def recorded_command(argv: Sequence[str]) -> Iterator[None]:
    """Within the block, :func:`provenance` names ``gan-features ARGV`` as the command: the CLI runs
    each command inside it, so every result it writes names the exact command line instead of one
    rebuilt from settings; calls from Python outside it record none."""
    global _command
    previous, _command = _command, ["gan-features", *argv]
    try:
        yield
    finally:
        _command = previous


def command_line() -> str | None:
    """The recorded command, shell-quoted; None when the package is used from Python."""
    return None if _command is None else " ".join(shlex.quote(arg) for arg in _command)


def provenance(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where and with what code a result was made.

    ``repo``: the directory whose git commit is recorded; by default this package's own source,
    which is the code that produced the numbers, wherever the command was run from, as this process
    first saw it (:func:`package_source_state`). ``command``: the recorded command line, or None
    for a call from Python.
    """
    from . import __version__

    commit, dirty = _source_state(Path(repo)) if repo is not None else package_source_state()
    return {"git_commit": commit, "git_dirty": dirty,
            "package_version": __version__, "python": platform.python_version(),
            "torch_version": distribution_version("torch"),
            "hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu_model(),
            "command": command_line(),
            "created": now()}


def now() -> str:
    """The current UTC time as recorded in provenance (ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@functools.cache
def cpu_model() -> str:
    """The processor's model name: numbers from the same seeds differ in their last bits between CPUs
    (BLAS kernels, bfloat16 support), and timings far more."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(directory: str | os.PathLike | None = None) -> str | None:
    """The commit of ``directory`` (default: this package's source, :func:`package_source_state`), None
    outside a git checkout."""
    return _source_state(Path(directory))[0] if directory is not None else package_source_state()[0]


@functools.cache
def package_source_state() -> tuple[str | None, bool | None]:
    """This package's source commit and whether it had uncommitted changes, read once per process.

    Once, because a run lasts hours: commits made while it runs are not the code it loaded, and a
    result must name the code that made it. The CLI reads it before a command starts.
    """
    return _source_state(Path(__file__).resolve().parent)


def _source_state(directory: Path) -> tuple[str | None, bool | None]:
    commit = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, None if status is None else bool(status)


def _git(directory: Path, *args: str) -> str | None:
    """git's output in ``directory``, or None when there is no git or no repository."""
    try:
        done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def distribution_version(name: str) -> str | None:
    """An installed distribution's version from its metadata: importing torch to ask takes seconds."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
