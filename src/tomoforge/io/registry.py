"""One registry of file formats, keyed by extension.

Each format is a thin module with symmetric ``read_*(path) -> model`` / ``write_*(model, path)`` functions. The
registry names them by import path, so importing :mod:`tomoforge.io` loads no format module (and no heavy
dependency) until a file of that format is actually read or written.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomoforge.io.errors import FormatError


@dataclass(frozen=True)
class FormatSpec:
    """A file format known to tomoforge.

    Attributes
    ----------
    name
        Short unique name (``"imod-xf"``, ``"relion5-particles"``).
    extensions
        Lower-case file-name endings including the dot, longest first when they overlap (``".mrc.mdoc"``).
    kind
        What the file holds: ``"image"``, ``"movie"``, ``"acquisition"``, ``"alignment"``, ``"tilt_angles"``,
        ``"ctf"``, ``"landmarks"``, ``"particles"``, ``"tomograms"``, ``"volume"``.
    module
        Import path of the module that implements it.
    reader, writer
        Names of the read and write functions in ``module`` (``None`` when the direction is not supported).
    description
        One line for ``tomoforge formats`` and help texts.
    """

    name: str
    extensions: tuple[str, ...]
    kind: str
    module: str
    reader: str | None
    writer: str | None
    description: str

    def _function(self, attr: str | None, direction: str) -> Callable[..., Any]:
        if attr is None:
            raise NotImplementedError(f"format {self.name} cannot be {direction}")
        return getattr(importlib.import_module(self.module), attr)

    def read(self, path: str | Path, **kwargs: Any) -> Any:
        """Read ``path`` with this format's reader."""
        return self._function(self.reader, "read")(path, **kwargs)

    def write(self, obj: Any, path: str | Path, **kwargs: Any) -> Any:
        """Write ``obj`` to ``path`` with this format's writer."""
        return self._function(self.writer, "written")(obj, path, **kwargs)


_FORMATS: dict[str, FormatSpec] = {}


def register(spec: FormatSpec) -> FormatSpec:
    """Add a format to the registry; a second format with the same name is an error."""
    if spec.name in _FORMATS and _FORMATS[spec.name] != spec:
        raise ValueError(f"a file format named {spec.name!r} is already registered")
    _FORMATS[spec.name] = spec
    return spec


_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from tomoforge.io._catalog import BUILTIN_FORMATS

        for spec in BUILTIN_FORMATS:
            register(spec)


def formats(kind: str | None = None) -> list[FormatSpec]:
    """All registered formats (of one kind when given), sorted by name."""
    _load_builtins()
    return sorted((f for f in _FORMATS.values() if kind is None or f.kind == kind), key=lambda f: f.name)


def format_for(path: str | Path, kind: str | None = None) -> FormatSpec:
    """The format of ``path`` by its extension (the longest matching ending wins).

    Raises
    ------
    FormatError
        When no registered format (of ``kind``) matches, naming the extensions that would.
    """
    name = Path(path).name.lower()
    best: tuple[int, FormatSpec] | None = None
    for spec in formats(kind):
        for ext in spec.extensions:
            if name.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), spec)
    if best is None:
        known = sorted({e for f in formats(kind) for e in f.extensions})
        what = f"{kind} " if kind else ""
        raise FormatError(path, f"unknown {what}file type; known endings: {', '.join(known) or 'none'}")
    return best[1]


def read(path: str | Path, kind: str | None = None, **kwargs: Any) -> Any:
    """Read a file with the format its extension names."""
    return format_for(path, kind).read(path, **kwargs)


def write(obj: Any, path: str | Path, kind: str | None = None, **kwargs: Any) -> Any:
    """Write ``obj`` in the format the extension of ``path`` names."""
    return format_for(path, kind).write(obj, path, **kwargs)
