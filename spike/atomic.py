"""Atomic file writes: a temporary file beside the target, fsynced, then renamed onto it.

An interrupted or failing write leaves either the old file or the new one, never a partial one,
and no temporary file behind (design brief §9); a writer killed outright leaves its temporary
file, which the next write of the same path removes.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import socket
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

PathLike = str | os.PathLike


def _file_mode() -> int:
    """Permissions a normally created file would get (0o666 minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort; not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _writer_tag() -> str:
    """Who writes a temporary file: ``<pid>@<host>``, so a later writer can tell a dead one's."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete the temporary files of writers of ``target`` that died before renaming them (a
    killed process cannot clean up): ``.<name>.<pid>@<this host>.<random>.tmp`` whose pid is not
    running. Returns the paths removed."""
    prefix, host = f".{target.name}.", socket.gethostname()
    removed = []
    for tmp in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        tag = tmp.name[len(prefix):-len(".tmp")].rsplit(".", 1)[0]
        pid, _, tmp_host = tag.partition("@")
        if pid.isdigit() and tmp_host == host and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is untouched; temporaries left by
    killed writers of the same path are removed first (:func:`remove_stale_temporaries`).
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # a failed write() (a full disk, a size limit): name the file
            raise type(exc)(exc.errno, exc.strerror, str(target)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Run ``write(fileobj)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def atomic_write_bytes(path: PathLike, data: bytes | memoryview) -> Path:
    return atomic_write(path, lambda f: f.write(data))
