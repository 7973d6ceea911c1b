"""Reading and writing the text of an mdoc file, losslessly, into and from :class:`~._model.Mdoc`."""

from __future__ import annotations

import re
from pathlib import Path

from tomoforge.io._atomic import write_text_atomic
from tomoforge.io.errors import FormatError
from tomoforge.io.mdoc._model import Mdoc, MdocSection

__all__ = ["format_mdoc_text", "parse_mdoc_text", "read_mdoc", "write_mdoc"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NEWLINES = ("\r\n", "\n", "\r")


def _without_separator(text: str) -> str:
    """The text after ``=``, less the one space SerialEM writes after it (further spaces are kept)."""
    return text[1:] if text.startswith(" ") else text


def parse_mdoc_text(text: str, path: str | Path) -> Mdoc:
    """Parse the text of an mdoc into the raw model.

    Blank lines and comment lines (first non-blank character ``#``) are skipped; every other line is either
    ``key = value`` or a section header ``[Kind = name]``. Values keep their spacing except the one space
    after ``=``.

    Parameters
    ----------
    text
        The whole file as text.
    path
        The file, named in error messages.

    Returns
    -------
    Mdoc

    Raises
    ------
    FormatError
        For an empty file, a line that is neither form, a key given twice in one section, the same section
        twice, or a file without any ``[ZValue]``, ``[FrameSet]`` or other non-title section.
    """
    source = Path(path)
    if "\x00" in text:
        raise FormatError(source, "contains NUL bytes, so it is not a text mdoc file")
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise FormatError(
            source, "is empty; an mdoc needs at least one [ZValue = 0] or [FrameSet = 0] section"
        )
    first_break = _LINE_BREAK.search(text)
    newline = first_break.group(0) if first_break else "\n"
    mdoc = Mdoc(newline=newline, source=source)
    current = mdoc.header
    seen_sections: set[tuple[str, str]] = set()
    for line_number, line in enumerate(_LINE_BREAK.split(text), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]") or "=" not in stripped:
                raise FormatError(
                    source, f"line {line_number} starts a section but is not of the form [Kind = name]"
                )
            kind, rest = stripped[1:-1].split("=", 1)
            kind = kind.strip()
            if not kind:
                raise FormatError(source, f"line {line_number} has a section header without a kind")
            section = MdocSection(kind, _without_separator(rest), source=source)
            if kind != "T":
                identity = (kind, section.name.strip())
                if identity in seen_sections:
                    raise FormatError(source, f"line {line_number} repeats the section {section.label}")
                seen_sections.add(identity)
            mdoc.sections.append(section)
            current = section.values
            continue
        if "=" not in line:
            raise FormatError(source, f"line {line_number} is neither 'key = value' nor a [section] header")
        key, value = line.split("=", 1)
        key = key.strip()
        if not key:
            raise FormatError(source, f"line {line_number} has a value without a key")
        if key in current:
            where = mdoc.sections[-1].label if mdoc.sections else "the header"
            raise FormatError(source, f"line {line_number} repeats the key {key} in {where}")
        current[key] = _without_separator(value)
    if not any(s.kind != "T" for s in mdoc.sections):
        raise FormatError(
            source, "has no [ZValue = …], [FrameSet = …] or other sections; is this a SerialEM mdoc?"
        )
    return mdoc


def read_mdoc(path: str | Path) -> Mdoc:
    """Read an mdoc file (tilt series, frame set or montage) into the raw, lossless model.

    Parameters
    ----------
    path
        The ``.mdoc`` file. UTF-8 is tried first, then Latin-1 (Windows-written files).

    Returns
    -------
    Mdoc

    Raises
    ------
    FormatError
        If the file cannot be read or is not an mdoc (see :func:`parse_mdoc_text`).
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise FormatError(source, f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse_mdoc_text(text, source)


def _check_writable(mdoc: Mdoc, target: Path) -> None:
    """Refuse keys, kinds, names and values that would not read back as the same model."""
    if mdoc.newline not in _NEWLINES:
        raise FormatError(target, f"cannot be written with the line ending {mdoc.newline!r}")
    if not any(s.kind != "T" for s in mdoc.sections):
        raise FormatError(target, "cannot be written: an mdoc needs at least one section other than titles")
    blocks: list[tuple[str, dict[str, str]]] = [("the header", mdoc.header)]
    seen: set[tuple[str, str]] = set()
    for section in mdoc.sections:
        where = f"section {section.kind!r} = {section.name!r}"
        kind = section.kind
        if not kind or kind != kind.strip() or "=" in kind or _LINE_BREAK.search(kind):
            raise FormatError(target, f"cannot be written: {where} has an invalid kind")
        if _LINE_BREAK.search(section.name):
            raise FormatError(target, f"cannot be written: {where} has a line break in its name")
        if kind != "T":
            if (kind, section.name.strip()) in seen:
                raise FormatError(target, f"cannot be written: {where} occurs twice")
            seen.add((kind, section.name.strip()))
        blocks.append((where, section.values))
    for where, values in blocks:
        for key, value in values.items():
            if (
                not key
                or key != key.strip()
                or "=" in key
                or key[0] in "[#"
                or _LINE_BREAK.search(key)
                or _LINE_BREAK.search(value)
            ):
                raise FormatError(target, f"cannot be written: {where} has an invalid key or value {key!r}")


def format_mdoc_text(mdoc: Mdoc) -> str:
    """The text of an mdoc as SerialEM lays it out.

    Global lines first, then each section after a blank line: ``[Kind = name]`` followed by its
    ``key = value`` lines; every line ends with ``mdoc.newline``.

    Parameters
    ----------
    mdoc
        The model to write.

    Returns
    -------
    str
    """
    lines = [f"{key} = {value}" for key, value in mdoc.header.items()]
    for section in mdoc.sections:
        if lines:
            lines.append("")
        lines.append(f"[{section.kind} = {section.name}]")
        lines.extend(f"{key} = {value}" for key, value in section.values.items())
    return "".join(line + mdoc.newline for line in lines)


def write_mdoc(mdoc: Mdoc, path: str | Path) -> Path:
    """Write the raw model as an mdoc file, atomically.

    Reading the file back with :func:`read_mdoc` gives a model equal to ``mdoc``; a file read from SerialEM
    comes back byte for byte when it used SerialEM's layout.

    Parameters
    ----------
    mdoc
        The model.
    path
        The destination; its folder must exist. An existing file is replaced only once the new one is
        complete.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    FormatError
        If a key, kind, name or value could not be read back unchanged (a line break in a value, ``=`` in a
        key, ...), or the file cannot be written.
    """
    target = Path(path)
    _check_writable(mdoc, target)
    return write_text_atomic(target, format_mdoc_text(mdoc))
