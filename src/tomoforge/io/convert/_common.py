"""Shared pieces of the converters: format choice by extension, one-sentence errors, the summary line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from tomoforge.io.errors import FormatError
from tomoforge.models._base import TsId

__all__ = [
    "ConversionSummary",
    "check_ts_id",
    "first_error",
    "format_of",
    "one_line",
    "reading",
    "require_file",
]

_TS_ID = TypeAdapter(TsId)


@dataclass(frozen=True)
class ConversionSummary:
    """What one conversion did, for the one-line report of ``tomoforge convert``.

    Attributes
    ----------
    noun
        What was counted (``"tilts"``, ``"CTF estimates"``, ``"particles"``).
    count, excluded
        How many there were in the input, and how many of them are marked excluded.
    source_format, target_format
        Human names of the formats (``"IMOD .xf"``, ``"RELION 5 tilt-series STAR"``).
    written
        The files written, main file first.
    detail
        An optional phrase after the count (e.g. ``"in 2 tomograms"``).
    note
        An optional clause after the file names, starting with ``"; "``.
    """

    noun: str
    count: int
    excluded: int
    source_format: str
    target_format: str
    written: tuple[Path, ...]
    detail: str = ""
    note: str = ""

    def sentence(self) -> str:
        """The summary as one sentence, e.g. ``"Converted 41 tilts (1 excluded) from IMOD .xf to …: out.star."``."""
        excluded = f" ({self.excluded} excluded)" if self.excluded else ""
        detail = f" {self.detail}" if self.detail else ""
        files = str(self.written[0]) if self.written else "nothing written"
        if len(self.written) > 1:
            files += " (with " + ", ".join(p.name for p in self.written[1:]) + ")"
        return (
            f"Converted {self.count} {self.noun}{excluded}{detail} from {self.source_format} "
            f"to {self.target_format}: {files}{self.note}."
        )


def one_line(text: object) -> str:
    """Collapse a message onto one line."""
    return " ".join(str(text).split())


def first_error(exc: ValidationError) -> str:
    """The first problem of a pydantic validation error, as one line."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return one_line(f"{where}: {error['msg']}" if where else error["msg"])


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn the ValueErrors of conversion functions (and pydantic's) into one-sentence FormatErrors on ``path``."""
    try:
        yield
    except FormatError:
        raise
    except ValidationError as exc:
        raise FormatError(path, f"does not convert ({first_error(exc)})") from None
    except ValueError as exc:
        raise FormatError(path, one_line(exc)) from None


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise a FormatError when no such file exists."""
    p = Path(path)
    if not p.exists():
        raise FormatError(p, f"no such {what} file")
    if not p.is_file():
        raise FormatError(p, f"is a folder, not a {what} file")
    return p


def format_of(path: str | Path, formats: Mapping[str, str], what: str, direction: str) -> str:
    """The extension of ``path`` when it names one of ``formats`` (extension → format name).

    Raises
    ------
    FormatError
        For any other extension, listing the ones that work.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in formats:
        return suffix
    known = ", ".join(f"{ext} ({name})" for ext, name in formats.items())
    found = f"extension {suffix!r}" if suffix else "no extension"
    raise FormatError(p, f"has {found}, but {what} can be {direction} only as {known}")


def check_ts_id(path: str | Path, ts_id: str) -> str:
    """Return ``ts_id`` when it is a valid tilt-series id, else raise a FormatError asking for ``--ts-id``."""
    try:
        return str(_TS_ID.validate_python(ts_id))
    except ValidationError:
        raise FormatError(
            path,
            f"gives the tilt-series id {ts_id!r}, which is not usable (letters, digits, '.', '_', '-' only); "
            "pass --ts-id",
        ) from None
