"""File formats: thin, symmetric read/write pairs per format behind one registry keyed by extension.

Readers return tomoforge models (``tomoforge.models``) or lazily-read arrays; writers take them. Conventions of
other tools are converted here, once, with the functions of :mod:`tomoforge.geometry` (CONVENTIONS.md).
Every bad file raises :class:`FormatError` with one sentence naming the file and the problem.
"""

from tomoforge.io.errors import FormatError
from tomoforge.io.registry import FormatSpec, format_for, formats, read, register, write

__all__ = ["FormatError", "FormatSpec", "format_for", "formats", "read", "register", "write"]
