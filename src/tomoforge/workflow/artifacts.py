"""Artifacts (the files and folders runs produce) and the hashes that identify them.

Tokens
------
Every artifact carries a *token*, a hex sha256 string that changes whenever its content may have
changed. Downstream cache keys are computed from the tokens of their inputs, never from file
contents, so large files are never read for hashing:

* the token of a step output is ``sha256(cache_key + "\\0" + output_name)`` of the run that
  produced it: the same step, code, parameters and inputs give the same token;
* the token of an external input (a user file or folder, registered by the ``import``
  pseudo-step) is the sha256 of its absolute path, size and modification time in nanoseconds;
  for a folder, of the path and of the relative path, size and mtime of every file below it,
  walked in sorted order. Touching or rewriting an external file therefore invalidates
  everything computed from it, while moving the project folder does not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "IMPORT_STEP",
    "Artifact",
    "Inputs",
    "canonical_json",
    "external_token",
    "output_token",
    "sha256_hex",
]

IMPORT_STEP = "import"
"""Name of the built-in pseudo-step whose runs register external files as artifacts."""


def canonical_json(value: Any) -> str:
    """Serialize ``value`` to a canonical JSON string (sorted keys, no whitespace).

    Parameters
    ----------
    value : object
        JSON-serializable data (dicts, lists, strings, numbers, booleans, None).

    Returns
    -------
    str
        The canonical text; equal data always give equal text.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def sha256_hex(text: str) -> str:
    """Return the hex sha256 of the UTF-8 encoding of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def output_token(cache_key: str, output_name: str) -> str:
    """Return the token of output ``output_name`` of the run with cache key ``cache_key``."""
    return sha256_hex(f"{cache_key}\0{output_name}")


def _walk_files(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def external_token(path: Path) -> str:
    """Return the token of an external file or folder from its path, sizes and mtimes.

    Parameters
    ----------
    path : Path
        An existing file or folder; it is made absolute first.

    Returns
    -------
    str
        Hex sha256 of ``(absolute path, size, mtime_ns)`` for a file, or of the folder's
        absolute path followed by ``(relative path, size, mtime_ns)`` of every file below it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(os.path.abspath(path))
    digest = hashlib.sha256()
    if path.is_dir():
        digest.update(canonical_json(["folder", str(path)]).encode())
        for file in _walk_files(path):
            st = file.stat()
            digest.update(canonical_json([str(file.relative_to(path)), st.st_size, st.st_mtime_ns]).encode())
    else:
        st = path.stat()
        digest.update(canonical_json(["file", str(path), st.st_size, st.st_mtime_ns]).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A file or folder produced by a run (or imported from outside the project).

    Attributes
    ----------
    run_id : int
        The run that produced (or imported) it.
    name : str
        The output name declared by the step.
    kind : str
        A free-form type tag ("table", "image", ...) used to check that pipelines connect
        outputs to inputs of the same kind.
    path : Path
        Absolute path of the file or folder.
    token : str
        Identity hash used in downstream cache keys (see the module documentation).
    meta : dict
        Small JSON-serializable metadata.
    id : int or None
        Database id, None for an artifact not yet stored.
    """

    run_id: int
    name: str
    kind: str
    path: Path
    token: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def exists(self) -> bool:
        """Return True if the file or folder is still on disk."""
        return self.path.exists()


class Inputs(Mapping[str, Artifact]):
    """The input artifacts handed to a step function, by input name.

    Optional inputs that were not connected are absent (test with ``"name" in inputs``).

    Parameters
    ----------
    artifacts : mapping of str to Artifact
        The connected inputs.
    """

    def __init__(self, artifacts: Mapping[str, Artifact]) -> None:
        self._artifacts = dict(artifacts)

    def __getitem__(self, name: str) -> Artifact:
        try:
            return self._artifacts[name]
        except KeyError:
            known = ", ".join(sorted(self._artifacts)) or "none"
            raise KeyError(f"Input '{name}' is not connected (connected inputs: {known}).") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._artifacts)

    def __len__(self) -> int:
        return len(self._artifacts)

    def path(self, name: str) -> Path:
        """Return the absolute path of input ``name``."""
        return self[name].path

    def __repr__(self) -> str:
        return f"Inputs({self._artifacts!r})"
