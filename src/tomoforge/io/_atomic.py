"""Atomic file output shared by every writer of :mod:`tomoforge.io`.

A file is written under a temporary name in its destination folder, flushed to disk and moved over the
destination with :func:`os.replace`, so readers see either the old file or the complete new one; a failure at any
point removes the temporary file and leaves a previous file untouched. The new file gets the permissions of the
file it replaces, else ``0o666`` less the umask (not the private mode of the temporary file).

A folder that is missing or not writable, or a failing flush or move, is a :class:`~tomoforge.io.FormatError`
naming the destination.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tomoforge.io.errors import FormatError

__all__ = [
    "atomic_output",
    "commit_temp_file",
    "discard_temp_file",
    "new_temp_file",
    "write_bytes_atomic",
    "write_text_atomic",
]


def _cannot_write(target: Path, exc: OSError) -> FormatError:
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return FormatError(target, f"cannot be written ({reason})")


def new_temp_file(target: Path) -> Path:
    """Create an empty temporary file next to ``target`` and return its path.

    Raises
    ------
    FormatError
        If the folder of ``target`` is missing or not writable.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    os.close(fd)
    return Path(tmp_name)


def commit_temp_file(tmp: Path, target: Path) -> None:
    """Flush ``tmp`` to disk, give it the mode a new ``target`` should have and move it over ``target``.

    Raises
    ------
    FormatError
        If any of these steps fails (``tmp`` is then left for the caller to discard).
    """
    try:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode(target))
        os.replace(tmp, target)
    except OSError as exc:
        raise _cannot_write(target, exc) from None


def discard_temp_file(tmp: Path) -> None:
    """Remove a temporary file if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _new_file_mode(target: Path) -> int:
    """The mode the written file should get: that of the file it replaces, else ``0o666`` less the umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and move it over ``path`` only when the block succeeds.

    The block writes the temporary file (by name, e.g. for libraries that take a path); an exception in it
    propagates unchanged after the temporary file is removed.
    """
    target = Path(path)
    tmp = new_temp_file(target)
    try:
        yield tmp
        commit_temp_file(tmp, target)
    except BaseException:
        discard_temp_file(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    FormatError
        If the file cannot be written.
    """
    target = Path(path)
    with atomic_output(target) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise _cannot_write(target, exc) from None
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))
