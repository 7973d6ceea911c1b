"""Crash-safe file writing helpers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text", "fsync_dir", "remove_path"]


@contextlib.contextmanager
def atomic_write(
    path: Path | str, mode: Literal["w", "wb"] = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Write a file so that readers see either the old or the complete new content.

    The content goes to a temporary file in the same folder, which is flushed, fsynced and then
    renamed over ``path`` with :func:`os.replace`. If the block raises, the temporary file is
    removed and ``path`` is left untouched.

    Parameters
    ----------
    path : Path or str
        The destination file.
    mode : {"w", "wb"}, optional
        Text or binary mode.
    encoding : str or None, optional
        Text encoding (text mode only).

    Yields
    ------
    file object
        The open temporary file.

    Examples
    --------
    >>> with atomic_write(folder / "table.csv") as f:  # doctest: +SKIP
    ...     f.write("a,b\\n1,2\\n")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}.")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    handle = open(tmp, mode, encoding=encoding if mode == "w" else None)  # closed by the with-block below
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Atomically replace the content of text file ``path`` with ``text``."""
    with atomic_write(path) as handle:
        handle.write(text)


def atomic_write_json(path: Path | str, data: Any) -> None:
    """Atomically write ``data`` as indented JSON to ``path``."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def fsync_dir(folder: Path | str) -> None:
    """Flush a folder entry to disk so that renames inside it survive a crash (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Remove a file or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
