"""IMOD command files (``tilt.com``, ``newst.com``, ``align.com`` …): which programs run with which options.

A ``$program -StandardInput`` line starts a command; the ``Option value`` lines after it (up to the next ``$``
line) are its options. ``#`` lines are comments. Useful values for tomoforge are e.g. ``tilt`` ``FULLIMAGE``
(raw image size ``nx ny``), ``IMAGEBINNED``, ``EXCLUDELIST`` (1-based views) and ``newstack``
``SizeToOutputInXandY`` / ``BinByFactor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tomoforge.io._text import quote, read_text
from tomoforge.io.errors import FormatError

__all__ = ["ImodCommand", "read_imod_com"]


@dataclass(frozen=True)
class ImodCommand:
    """One ``$program`` line of a command file and the option lines that follow it."""

    program: str
    arguments: tuple[str, ...]
    options: tuple[tuple[str, str], ...]

    def option(self, name: str) -> str | None:
        """The value of option ``name`` (matched without regard to case; last one wins), or None if absent."""
        found = None
        for key, value in self.options:
            if key.lower() == name.lower():
                found = value
        return found


def read_imod_com(path: str | Path) -> list[ImodCommand]:
    """Read an IMOD command file.

    Parameters
    ----------
    path
        The ``.com`` file.

    Returns
    -------
    list of ImodCommand
        The commands in file order (shell lines such as ``$setenv`` included, with their arguments).

    Raises
    ------
    FormatError
        When an option line comes before any ``$program`` line, or no command is present.
    """
    commands: list[tuple[str, tuple[str, ...], list[tuple[str, str]]]] = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("$"):
            words = stripped[1:].split()
            if not words:
                raise FormatError(path, f"line {lineno}: '$' without a program name")
            commands.append((words[0], tuple(words[1:]), []))
            continue
        if not commands:
            raise FormatError(path, f"line {lineno}: option {quote(stripped)} comes before any $program line")
        key, *value = stripped.split(None, 1)
        commands[-1][2].append((key, value[0].strip() if value else ""))
    if not commands:
        raise FormatError(path, "holds no $program line; is this an IMOD command file?")
    return [ImodCommand(program, args, tuple(opts)) for program, args, opts in commands]
