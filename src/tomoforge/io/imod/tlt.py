"""IMOD angle files: ``.tlt`` / ``.rawtlt`` (tilt angles) and ``.xtilt`` (x-axis tilts), one view per line.

Angles are in degrees, in stack order, with IMOD's sign (which tomoforge uses unchanged, CONVENTIONS.md §7).
IMOD reads only the first number of a line; some tools append columns (Scipion writes the accumulated dose after
the angle), which :func:`read_tlt_columns` keeps so that such files round-trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomoforge.io._atomic import write_text_atomic
from tomoforge.io._text import format_fixed, parse_float, read_text, token_lines
from tomoforge.io.errors import FormatError

__all__ = ["read_tlt", "read_tlt_columns", "write_tlt"]

_ANGLE_WIDTH = 7  # tiltalign writes %7.2f
_ANGLE_DECIMALS = 2


def read_tlt_columns(path: str | Path) -> np.ndarray:
    """Read an angle file with all its columns.

    Parameters
    ----------
    path
        ``.tlt``, ``.rawtlt`` or ``.xtilt`` file; blank lines are skipped.

    Returns
    -------
    numpy.ndarray
        float64 array ``(n_views, n_columns)``; column 0 holds the angles in degrees.

    Raises
    ------
    FormatError
        When a line holds something that is not a number, lines have different numbers of columns, or the file
        holds no angle.
    """
    rows: list[list[float]] = []
    for lineno, tokens in token_lines(read_text(path)):
        if rows and len(tokens) != len(rows[0]):
            raise FormatError(
                path, f"line {lineno} has {len(tokens)} values but earlier lines have {len(rows[0])}"
            )
        rows.append([parse_float(t, path, f"line {lineno}") for t in tokens])
    if not rows:
        raise FormatError(path, "holds no angles (one angle in degrees per line expected)")
    return np.asarray(rows, dtype=np.float64)


def read_tlt(path: str | Path) -> np.ndarray:
    """Read the angles of an IMOD angle file.

    Parameters
    ----------
    path
        ``.tlt``, ``.rawtlt`` or ``.xtilt`` file.

    Returns
    -------
    numpy.ndarray
        float64 array ``(n_views,)`` of angles in degrees, in stack order (the first column of each line).
    """
    return read_tlt_columns(path)[:, 0].copy()


def write_tlt(
    angles_deg: Sequence[float] | np.ndarray,
    path: str | Path,
    extra_columns: np.ndarray | None = None,
) -> Path:
    """Write an IMOD angle file, ``%7.2f`` per angle as tiltalign does (more decimals only where needed).

    Parameters
    ----------
    angles_deg
        One angle in degrees per view, in stack order.
    path
        Destination (``.tlt``, ``.rawtlt``, ``.xtilt``); written atomically.
    extra_columns
        Optional ``(n_views, k)`` values written after each angle (e.g. column 1.. of :func:`read_tlt_columns`).

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.size == 0 or not np.isfinite(angles).all():
        raise FormatError(path, "angles to write must be a non-empty list of finite numbers")
    extra = (
        np.zeros((angles.size, 0)) if extra_columns is None else np.asarray(extra_columns, dtype=np.float64)
    )
    if extra.ndim == 1:
        extra = extra[:, None]
    if extra.shape[0] != angles.size or not np.isfinite(extra).all():
        raise FormatError(
            path, f"extra columns must be finite with one row per angle ({angles.size}), got {extra.shape}"
        )
    lines = []
    for angle, row in zip(angles, extra, strict=True):
        fields = [format_fixed(float(angle), _ANGLE_WIDTH, _ANGLE_DECIMALS)]
        fields += [format_fixed(float(v), 0, 0, extra_decimals=8) for v in row]
        lines.append(" ".join(fields) + "\n")
    return write_text_atomic(path, "".join(lines))
