"""Dynamo particle tables (``.tbl``) and tomogram indices (``.doc``).

A table is plain text, one particle per line, whitespace-separated numbers; Dynamo writes 35 to 42 columns
(meanings from the Dynamo wiki's *Table convention*, ``tutorial-steps.md`` §18): 1 tag, 2 aligned, 3 averaged,
4–6 ``dx dy dz`` (shift from the box centre, voxels), 7–9 ``tdrot tilt narot`` (ZXZ Euler angles), 10 ``cc``, …,
20 ``tomo``, 21 ``reg``, 22 ``class``, 23 ``annotation``, 24–26 ``x y z`` (voxel in the tomogram), …, 36 ``apix``.
MATLAB sometimes writes complex numbers (``0+1.2074e-06i``); such a column is kept complex so that a table is
written back exactly, and only its real part enters conversions.

Conventions (CONVENTIONS.md §2, §4):

* Orientation: ``R = dynamo_euler_to_matrix(tdrot, tilt, narot) = (Rz(narot)·Rx(tilt)·Rz(tdrot))ᵀ``, reference →
  tomogram; ``R·ẑ`` is the particle's normal.
* Position: the particle sits at voxel ``x + dx`` (likewise y, z) of the tomogram. Dynamo coordinates are taken
  as **0-based, corner-based** voxel indices, as Scipion's Dynamo converter does (it subtracts nothing;
  ``tutorial-steps.md`` §19 leaves a 1-voxel uncertainty for MATLAB's 1-based indexing): pass
  ``one_based=True`` to subtract 1. The position relative to the tomogram centre is then
  ``(x + dx − N // 2) · voxel size`` in Å.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from tomoforge.geometry import dynamo_euler_to_matrix, matrix_to_dynamo_euler
from tomoforge.io._atomic import write_text_atomic
from tomoforge.io._text import one_line, token_lines
from tomoforge.io.errors import FormatError
from tomoforge.models import Particle, ParticleSet
from tomoforge.models._base import Matrix3

__all__ = [
    "DYNAMO_COLUMNS",
    "DynamoTomogram",
    "dynamo_table_to_particles",
    "particles_to_dynamo_table",
    "read_dynamo_particles",
    "read_dynamo_table",
    "read_dynamo_tomogram_index",
    "write_dynamo_table",
    "write_dynamo_tomogram_index",
]

DYNAMO_COLUMNS: tuple[str, ...] = (
    "tag", "aligned", "averaged", "dx", "dy", "dz", "tdrot", "tilt", "narot", "cc", "cc2", "cpu", "ftype",
    "ymintilt", "ymaxtilt", "xmintilt", "xmaxtilt", "fs1", "fs2", "tomo", "reg", "class", "annotation",
    "x", "y", "z", "dshift", "daxis", "dnarot", "dcc", "otag", "npar", "col33", "ref", "sref", "apix", "def",
    "col38", "col39", "col40", "eig1", "eig2",
)  # fmt: skip
"""Names of Dynamo's table columns 1–42; further columns are named ``col43``, ``col44``, …"""

MIN_COLUMNS = 26
"""Fewest columns a table may have: up to ``x y z`` (columns 24–26)."""

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf)$", re.IGNORECASE)


def _parse_token(path: Path, token: str, line: int, column: int) -> complex | float:
    if _NUMBER.match(token):
        return float(token)
    if token.endswith(("i", "j")) and not token.lower().startswith(("nan", "inf")):
        try:
            return complex(token[:-1] + "j")
        except ValueError:
            pass
    raise FormatError(path, f"line {line}, column {column} holds {token[:40]!r}, not a number")


def _read_text(path: Path, encoding: str, what: str) -> str:
    """The text of ``path``; a missing, unreadable or undecodable file is a :class:`FormatError`."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise FormatError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"not a readable text {what} ({type(exc).__name__})") from None


def read_dynamo_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Dynamo table into a DataFrame with named columns (:data:`DYNAMO_COLUMNS`).

    Parameters
    ----------
    path
        The ``.tbl`` file.

    Returns
    -------
    pandas.DataFrame
        One row per particle; float64 columns, or complex128 for a column where MATLAB wrote complex numbers.

    Raises
    ------
    FormatError
        If the file is missing or not text, a line has a non-number, lines differ in length, there are fewer than
        26 columns, or a value is not finite.
    """
    p = Path(path)
    rows: list[list[complex | float]] = []
    for number, tokens in token_lines(_read_text(p, "ascii", "table")):
        if rows and len(tokens) != len(rows[0]):
            raise FormatError(
                p, f"line {number} has {len(tokens)} columns but the first row has {len(rows[0])}"
            )
        rows.append([_parse_token(p, t, number, c) for c, t in enumerate(tokens, start=1)])
    if not rows:
        raise FormatError(p, "empty table, no particle rows")
    n_columns = len(rows[0])
    if n_columns < MIN_COLUMNS:
        raise FormatError(
            p, f"{n_columns} columns, but a Dynamo table has at least {MIN_COLUMNS} (x y z are 24–26)"
        )
    values = np.array(rows, dtype=np.complex128)
    if not np.all(np.isfinite(values)):
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise FormatError(p, f"line {r + 1}, column {c + 1} is not a finite number")
    names = [DYNAMO_COLUMNS[i] if i < len(DYNAMO_COLUMNS) else f"col{i + 1}" for i in range(n_columns)]
    data: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        column = values[:, i]
        data[name] = column if np.any(column.imag != 0) else column.real.copy()
    return pd.DataFrame(data)


def _format_number(value: complex | float) -> str:
    if isinstance(value, complex | np.complexfloating) and value.imag != 0:
        return (
            f"{_format_number(value.real)}{'+' if value.imag >= 0 else '-'}{_format_number(abs(value.imag))}i"
        )
    v = float(value.real if isinstance(value, complex | np.complexfloating) else value)
    if not math.isfinite(v):
        raise ValueError(f"Dynamo tables hold finite numbers only, got {v}")
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def write_dynamo_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a Dynamo table atomically, every column in order, numbers in shortest round-trip form.

    Parameters
    ----------
    table
        Named columns as :func:`read_dynamo_table` returns (at least 26, all numeric; the order of the columns
        is the order written).
    path
        Destination ``.tbl`` file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If the table has fewer than 26 columns or a value is not a finite number.
    """
    if table.shape[1] < MIN_COLUMNS:
        raise ValueError(
            f"a Dynamo table needs at least {MIN_COLUMNS} columns, this one has {table.shape[1]}"
        )
    for name in table.columns:
        if not pd.api.types.is_numeric_dtype(table[name].dtype):
            raise ValueError(f"column {name!r} of a Dynamo table must be numeric, it is {table[name].dtype}")
    lines = [" ".join(_format_number(v) for v in row) for row in table.itertuples(index=False, name=None)]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_dynamo_tomogram_index(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a Dynamo tomogram index (``.doc``: lines ``<index> <tomogram file>``) as index → file name.

    Raises
    ------
    FormatError
        If a line does not start with an integer followed by a file name, or an index repeats.
    """
    p = Path(path)
    out: dict[int, str] = {}
    for number, line in enumerate(_read_text(p, "utf-8", "file").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[+-]?\d+", parts[0]):
            raise FormatError(p, f"line {number} is not '<index> <tomogram file>': {line.strip()[:60]!r}")
        index = int(parts[0])
        if index in out:
            raise FormatError(p, f"tomogram index {index} occurs twice (line {number})")
        out[index] = parts[1].strip()
    if not out:
        raise FormatError(p, "no '<index> <tomogram file>' lines")
    return out


def write_dynamo_tomogram_index(
    index: Mapping[int, str | os.PathLike[str]], path: str | os.PathLike[str]
) -> Path:
    """Write a Dynamo tomogram index (``.doc``) atomically, one ``<index>\\t<file>`` line per tomogram."""
    lines = [f"{int(i)}\t{os.fspath(f)}" for i, f in index.items()]
    return write_text_atomic(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class DynamoTomogram:
    """What a Dynamo tomogram index alone does not say about a tomogram.

    Attributes
    ----------
    ts_id
        Identifier of the tomogram in tomoforge.
    shape_zyx
        Shape of the tomogram the table's coordinates refer to, voxels.
    voxel_size_angstrom
        Its voxel size in Å.
    """

    ts_id: str
    shape_zyx: tuple[int, int, int]
    voxel_size_angstrom: float


def _real(table: pd.DataFrame, column: str) -> np.ndarray:
    return np.real(table[column].to_numpy()).astype(np.float64)


def dynamo_table_to_particles(
    table: pd.DataFrame, tomograms: Mapping[int, DynamoTomogram], *, one_based: bool = False
) -> ParticleSet:
    """Convert a Dynamo table to particles (positions in Å from the tomogram centre, ``R`` reference → tomogram).

    Parameters
    ----------
    table
        As returned by :func:`read_dynamo_table`.
    tomograms
        Table ``tomo`` number → the tomogram's id, shape and voxel size.
    one_based
        Treat ``x, y, z`` as MATLAB 1-based indices (subtract 1); default 0-based, as Scipion does.

    Returns
    -------
    ParticleSet
        ``score`` = ``cc``, ``class_number`` = ``class`` where ≥ 1.

    Raises
    ------
    ValueError
        If a ``tomo`` number has no entry in ``tomograms``.
    """
    tomo = _real(table, "tomo").round().astype(int)
    missing = sorted(set(tomo.tolist()) - set(tomograms))
    if missing:
        raise ValueError(f"Dynamo tomogram number {missing[0]} has no entry in tomograms")
    voxel = np.array([tomograms[t].voxel_size_angstrom for t in tomo])
    centre = np.array([[n // 2 for n in tomograms[t].shape_zyx[::-1]] for t in tomo], dtype=np.float64)
    xyz = np.stack([_real(table, c) + _real(table, "d" + c) for c in "xyz"], axis=1) - (
        1.0 if one_based else 0.0
    )
    positions = (xyz - centre.reshape(-1, 3)) * voxel[:, None]
    angles = torch.from_numpy(np.stack([_real(table, c) for c in ("tdrot", "tilt", "narot")], axis=1))
    rotations = dynamo_euler_to_matrix(angles).numpy()
    classes = _real(table, "class") if "class" in table.columns else np.zeros(len(table))
    scores = _real(table, "cc") if "cc" in table.columns else None
    return ParticleSet(
        particles=[
            Particle(
                ts_id=tomograms[int(tomo[i])].ts_id,
                position_angstrom=tuple(positions[i].tolist()),
                rotation_matrix=cast(Matrix3, rotations[i].tolist()),
                score=None if scores is None else float(scores[i]),
                class_number=int(classes[i]) if classes[i] >= 1 and classes[i] == int(classes[i]) else None,
            )
            for i in range(len(table))
        ]
    )


def particles_to_dynamo_table(
    particles: ParticleSet, tomograms: Mapping[int, DynamoTomogram], *, one_based: bool = False
) -> pd.DataFrame:
    """Convert particles to a 36-column Dynamo table (up to ``apix``) (inverse of :func:`dynamo_table_to_particles`).

    Positions go into ``x, y, z`` (``dx, dy, dz`` = 0); ``tag`` numbers the particles from 1; ``aligned`` and
    ``averaged`` are 1; ``cc`` = score (0 without); ``class`` = class number (0 without); ``apix`` = voxel size.

    Raises
    ------
    ValueError
        If a particle's tomogram is not among ``tomograms``.
    """
    number = {t.ts_id: i for i, t in tomograms.items()}
    n = particles.n_particles
    table = pd.DataFrame(np.zeros((n, 36)), columns=list(DYNAMO_COLUMNS[:36]))
    tomo = []
    for p in particles.particles:
        if p.ts_id not in number:
            raise ValueError(f"tomogram {p.ts_id!r} has no Dynamo tomogram number in tomograms")
        tomo.append(number[p.ts_id])
    table["tag"] = np.arange(1, n + 1, dtype=np.float64)
    table["aligned"] = 1.0
    table["averaged"] = 1.0
    table["tomo"] = np.array(tomo, dtype=np.float64)
    if n:
        voxel = np.array([tomograms[t].voxel_size_angstrom for t in tomo])
        centre = np.array([[m // 2 for m in tomograms[t].shape_zyx[::-1]] for t in tomo], dtype=np.float64)
        xyz = particles.positions_angstrom() / voxel[:, None] + centre + (1.0 if one_based else 0.0)
        angles = matrix_to_dynamo_euler(torch.from_numpy(particles.rotation_matrices())).numpy()
        for i, c in enumerate("xyz"):
            table[c] = xyz[:, i]
        for i, c in enumerate(("tdrot", "tilt", "narot")):
            table[c] = angles[:, i]
        table["cc"] = [p.score or 0.0 for p in particles.particles]
        table["class"] = [float(p.class_number or 0) for p in particles.particles]
        table["apix"] = voxel
    return table


def read_dynamo_particles(
    path: str | os.PathLike[str], tomograms: Mapping[int, DynamoTomogram], *, one_based: bool = False
) -> ParticleSet:
    """Read a Dynamo table straight into particles (:func:`read_dynamo_table` + :func:`dynamo_table_to_particles`).

    Raises
    ------
    FormatError
        For a bad table, a ``tomo`` number without an entry in ``tomograms``, or particles that do not validate.
    """
    table = read_dynamo_table(path)
    try:
        return dynamo_table_to_particles(table, tomograms, one_based=one_based)
    except (ValueError, ValidationError) as exc:
        raise FormatError(Path(path), one_line(exc)[:200]) from None
