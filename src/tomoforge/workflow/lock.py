"""The exclusive write lock of a project (``fcntl.flock`` on ``project.lock``).

The operating system releases the lock when the holder exits, however it exits (SIGKILL
included), so a stale lock file never blocks a project: only a live process can hold it. The
holder writes its pid, host, start time and command line into the file so that a refused process
can say who holds the project.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .errors import ProjectLockedError

__all__ = ["ProjectLock", "now_iso"]


def now_iso() -> str:
    """Return the current UTC time as an ISO 8601 string with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ProjectLock:
    """An exclusive, non-blocking lock on a file.

    Parameters
    ----------
    path : Path
        The lock file (created if missing).
    project : Path
        The project folder, named in the error message.
    """

    def __init__(self, path: Path, project: Path) -> None:
        self.path = path
        self.project = project
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock or fail at once.

        Raises
        ------
        ProjectLockedError
            If another process (or another open project in this process) holds it.
        """
        if self._handle is not None:
            return
        handle = open(self.path, "a+", encoding="utf-8")  # kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _parse(handle.read())
            handle.close()
            raise ProjectLockedError(self._message(holder)) from None
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso(), "command": sys.argv}
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Release the lock (no-op if not held)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()

    def _message(self, holder: dict[str, Any]) -> str:
        pid = holder.get("pid", "unknown")
        host = holder.get("host", "an unknown host")
        since = holder.get("since", "an unknown time")
        return (
            f"Project {self.project} is in use by process {pid} on host {host} since {since}; "
            "wait for it to finish or stop that process, then try again."
        )


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
