"""Helpers shared by the text-format readers and writers: safe reading, strict number parsing, one-line error
excerpts, and fixed-width formatting that never loses a digit the input had.

Every problem becomes a :class:`~tomoforge.io.FormatError` whose message is one line naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tomoforge.io.errors import FormatError

__all__ = [
    "format_fixed",
    "join_fixed",
    "one_line",
    "parse_float",
    "parse_int",
    "quote",
    "read_bytes",
    "read_text",
    "token_lines",
]

_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")


def quote(text: str, limit: int = 40) -> str:
    """Return ``text`` as a short, single-line, quoted excerpt for an error message."""
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(short)


def one_line(text: object) -> str:
    """Collapse a message onto one line (for error sentences quoting other libraries)."""
    return " ".join(str(text).split())


def read_bytes(path: str | Path) -> bytes:
    """Read a whole file, turning every OS problem into a one-line :class:`FormatError`."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise FormatError(p, "file not found") from None
    except IsADirectoryError:
        raise FormatError(p, "is a folder, not a file") from None
    except OSError as exc:
        raise FormatError(p, f"cannot be read ({exc.strerror or type(exc).__name__})") from None


def read_text(path: str | Path) -> str:
    """Read a text file (UTF-8, optional byte-order mark); binary or undecodable content is a FormatError."""
    data = read_bytes(path)
    if b"\x00" in data:
        raise FormatError(path, "contains binary data where a text file was expected")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormatError(path, "is not a UTF-8 text file") from None


def token_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """The whitespace-separated tokens of every non-blank line, with its 1-based line number."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens:
            yield lineno, tokens


def parse_float(token: str, path: str | Path, where: str) -> float:
    """Parse a plain decimal number (no ``nan``, ``inf`` or ``_``); ``where`` says where it sits (``"line 3"``)."""
    if not _FLOAT.fullmatch(token):
        raise FormatError(path, f"{where}: {quote(token)} is not a number")
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise FormatError(path, f"{where}: {quote(token)} is too large")
    return value


def parse_int(token: str, path: str | Path, where: str) -> int:
    """Parse a whole number; ``where`` says where it sits (``"line 3"``)."""
    if not _INT.fullmatch(token):
        raise FormatError(path, f"{where}: {quote(token)} is not a whole number")
    return int(token)


def format_fixed(value: float, width: int, decimals: int, extra_decimals: int = 3) -> str:
    """Format like C's ``%{width}.{decimals}f`` when that is exact, otherwise keep every digit the value has.

    Up to ``extra_decimals`` more decimals are tried first; beyond that the shortest exact positional form is used
    (``numpy.format_float_positional``), right-aligned in ``width``. Numbers read from a file written with the
    same format therefore come out byte-identical, and every number survives a write and a read unchanged.
    """
    for d in range(decimals, decimals + extra_decimals + 1):
        text = f"{value:{width}.{d}f}"
        if float(text) == value:
            return text
    return np.format_float_positional(value, unique=True, trim="-").rjust(width)


def join_fixed(tokens: list[str]) -> str:
    """Concatenate fixed-width fields, adding a space where a field has no leading blank (no fused numbers)."""
    return "".join(t if t.startswith(" ") else " " + t for t in tokens)
