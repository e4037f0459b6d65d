"""Atomic file writes: a file appears whole or not at all.

Every writer of the package (checkpoints, shards, manifests, caches) goes
through :func:`atomic_path`: write to a temporary file beside the target,
``fsync`` it, ``os.replace`` it onto the target, then ``fsync`` the directory
so the rename itself survives a crash.  A killed writer leaves at most a
``.NAME.tmpPID`` file, which the next writer of the same target removes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text"]


def _fsync_path(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    On an exception inside the block the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        if not _pid_alive(stale):
            stale.unlink(missing_ok=True)  # left by a killed writer
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _pid_alive(tmp: Path) -> bool:
    """Is the process that owns ``.NAME.tmpPID`` still running (then keep its file)?"""
    suffix = tmp.name.rsplit(".tmp", 1)[-1]
    if not suffix.isdigit():
        return False
    if int(suffix) == os.getpid():
        return False
    try:
        os.kill(int(suffix), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
