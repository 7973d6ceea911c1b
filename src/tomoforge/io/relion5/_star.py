"""STAR files through the ``starfile`` package: errors become :class:`FormatError`, writes are atomic and lossless.

Floats are written with their shortest round-trip representation (``repr``), so that read → write → read gives
back exactly the same numbers (``starfile`` alone writes ``%.6f``, which loses small values).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from tomoforge.io._atomic import atomic_output
from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError

__all__ = [
    "StarBlock",
    "block_as_table",
    "read_star_blocks",
    "require_columns",
    "write_star_blocks",
]

StarBlock: TypeAlias = pd.DataFrame | dict[str, Any]
"""A STAR data block: a loop (table) or a key-value block."""

_HEADER = "# version 50001\n# written by tomoforge\n\n"


def read_star_blocks(path: str | os.PathLike[str]) -> dict[str, StarBlock]:
    """Read every data block of a STAR file.

    Parameters
    ----------
    path
        The STAR file.

    Returns
    -------
    dict
        Block name (without ``data_``; ``""`` for an anonymous block) → DataFrame (loop) or dict (key-value block).

    Raises
    ------
    FormatError
        If the file is missing, unreadable or not a STAR file, or has no data block.
    """
    import starfile

    p = Path(path)
    if not p.is_file():
        raise FormatError(p, "no such file")
    try:
        blocks = starfile.read(p, always_dict=True)
    except Exception as exc:  # starfile/pandas raise many kinds of errors on bad text
        raise FormatError(
            p, f"not a readable STAR file ({type(exc).__name__}: {one_line(exc)[:200]})"
        ) from None
    if not isinstance(blocks, dict) or not blocks:
        raise FormatError(p, "no data_ block found; is this a STAR file?")
    out: dict[str, StarBlock] = {}
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            out[str(name)] = block.reset_index(drop=True)
        elif isinstance(block, dict):
            out[str(name)] = dict(block)
        else:
            raise FormatError(p, f"data block {name!r} is neither a loop nor a list of key-value pairs")
    return out


def block_as_table(path: Path, blocks: Mapping[str, StarBlock], names: Sequence[str]) -> pd.DataFrame:
    """Return the first block among ``names`` as a table (a key-value block becomes a one-row table).

    Raises
    ------
    FormatError
        If none of the blocks exists.
    """
    for name in names:
        if name in blocks:
            block = blocks[name]
            return block if isinstance(block, pd.DataFrame) else pd.DataFrame([block])
    wanted = " or ".join(f"data_{n}" for n in names)
    found = ", ".join(f"data_{n}" for n in blocks) or "none"
    raise FormatError(path, f"no {wanted} block (found {found})")


def require_columns(path: Path, table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise a one-sentence :class:`FormatError` naming the required columns missing from ``table``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise FormatError(path, f"{what} lacks the required column(s) {', '.join(missing)}")


def numeric_column(path: Path, table: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """Return a column as float64, raising :class:`FormatError` when it holds non-numbers or non-finite values."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise FormatError(
            path,
            f"{what} column {column} has a non-numeric value {table[column].iloc[bad[0]]!r} in row {bad[0] + 1}",
        )
    return values


def _format_value(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return value


def _prepare(block: StarBlock) -> StarBlock:
    if isinstance(block, dict):
        return {k: _format_value(v) for k, v in block.items()}
    out = block.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column].dtype):
            out[column] = [_format_value(v) for v in out[column]]
    return out


def write_star_blocks(blocks: Mapping[str, StarBlock], path: str | os.PathLike[str]) -> Path:
    """Write data blocks to a STAR file atomically, floats in shortest round-trip form.

    Parameters
    ----------
    blocks
        Block name (without ``data_``) → DataFrame (loop) or dict (key-value block), in file order.
    path
        Destination file; its folder must exist.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    import starfile

    target = Path(path)
    prepared = {name: _prepare(block) for name, block in blocks.items()}
    with atomic_output(target) as tmp:
        starfile.write(prepared, tmp, sep="\t")
        text = tmp.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        if lines and lines[0].startswith("# Created by the starfile"):
            lines = lines[1:]
        tmp.write_text(_HEADER + "".join(lines).lstrip("\n"), encoding="utf-8")
    return target
