"""RELION 5 picking annotations (``Picks/jobNNN/annotations/<ts>_spheres.star``, ``<ts>_particles.star``).

The picker stores ``rlnCoordinate{X,Y,Z}`` in voxels of the binned tomogram it showed (``rlnTomoTomogramBinning``)
and, for spheres, ``rlnSphereRadius`` in the same voxels. RELION turns them into centred coordinates as
``Å = (coordinate · binning − (rlnTomoSize / 2 − 1)) · tilt-series pixel``: this was measured on the real
EMPIAR-10164 run, where the 1960 TS_01 annotations and the ``rlnCenteredCoordinate*Angst`` of the same job's
``particles.star`` agree to 5·10⁻⁷ Å with exactly that offset. The same mapping is used here, both ways.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError
from tomoforge.io.relion5._star import (
    block_as_table,
    numeric_column,
    read_star_blocks,
    require_columns,
    write_star_blocks,
)
from tomoforge.io.relion5.tomograms import RelionTomogram
from tomoforge.models import ParticleSet

__all__ = [
    "RelionSpheres",
    "read_relion_picks",
    "read_relion_spheres",
    "write_relion_picks",
    "write_relion_spheres",
]

_COORDS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
Tomograms = Mapping[str, RelionTomogram] | RelionTomogram


@dataclass
class RelionSpheres:
    """Spheres picked on tomograms (e.g. virus particles): centres relative to the tomogram centre and radii, in Å.

    Attributes
    ----------
    ts_ids
        ``rlnTomoName`` of each sphere.
    centres_angstrom
        ``(n, 3)`` centres ``(x, y, z)`` in Å from the tomogram centre.
    radii_angstrom
        ``(n,)`` radii in Å.
    """

    ts_ids: list[str]
    centres_angstrom: np.ndarray
    radii_angstrom: np.ndarray


def _geometry(path: Path | None, tomograms: Tomograms, ts_id: str) -> tuple[float, float, np.ndarray]:
    tomo = tomograms if isinstance(tomograms, RelionTomogram) else tomograms.get(ts_id)
    if tomo is None or tomo.ts_id != ts_id:
        problem = f"tomogram {ts_id!r} is not among the tomograms given"
        if path is None:
            raise ValueError(problem)
        raise FormatError(path, problem)
    if tomo.binning is None or tomo.size_xyz_px is None or tomo.tilt_series_pixel_size_angstrom is None:
        raise ValueError(f"tomogram {ts_id!r} lacks rlnTomoTomogramBinning, rlnTomoSize* or its pixel size")
    offset = np.array(tomo.size_xyz_px, dtype=np.float64) / 2.0 - 1.0
    return tomo.binning, tomo.tilt_series_pixel_size_angstrom, offset


def _voxel(path: Path | None, tomograms: Tomograms, ts_id: str) -> float:
    binning, pixel, _ = _geometry(path, tomograms, ts_id)
    return binning * pixel


def _to_angstrom(path: Path, table: pd.DataFrame, tomograms: Tomograms) -> tuple[list[str], np.ndarray]:
    require_columns(path, table, ("rlnTomoName", *_COORDS), "the annotation table")
    coords = np.stack([numeric_column(path, table, c, "the annotation table") for c in _COORDS], axis=1)
    names = [str(n) for n in table["rlnTomoName"]]
    out = np.empty_like(coords)
    for i, name in enumerate(names):
        binning, pixel, offset = _geometry(path, tomograms, name)
        out[i] = (coords[i] * binning - offset) * pixel
    return names, out


def _from_angstrom(names: list[str], positions: np.ndarray, tomograms: Tomograms) -> np.ndarray:
    out = np.empty_like(positions, dtype=np.float64)
    for i, name in enumerate(names):
        binning, pixel, offset = _geometry(None, tomograms, name)
        out[i] = (positions[i] / pixel + offset) / binning
    return out


def read_relion_spheres(path: str | os.PathLike[str], tomograms: Tomograms) -> RelionSpheres:
    """Read a RELION 5 sphere annotation file.

    Parameters
    ----------
    path
        ``<ts>_spheres.star`` with ``rlnTomoName``, ``rlnCoordinate{X,Y,Z}`` and ``rlnSphereRadius``.
    tomograms
        The ``tomograms.star`` rows (or the one row) of the tomograms picked on.

    Raises
    ------
    FormatError
        If a column is missing or not numeric, or a tomogram is unknown.
    """
    p = Path(path)
    blocks = read_star_blocks(p)
    table = block_as_table(p, blocks, tuple(blocks)[:1])
    require_columns(p, table, ("rlnSphereRadius",), "the annotation table")
    names, centres = _to_angstrom(p, table, tomograms)
    radii_px = numeric_column(p, table, "rlnSphereRadius", "the annotation table")
    radii = np.array([r * _voxel(p, tomograms, n) for r, n in zip(radii_px, names, strict=True)])
    return RelionSpheres(ts_ids=names, centres_angstrom=centres, radii_angstrom=radii)


def write_relion_spheres(spheres: RelionSpheres, path: str | os.PathLike[str], tomograms: Tomograms) -> Path:
    """Write a RELION 5 sphere annotation file atomically (inverse of :func:`read_relion_spheres`)."""
    coords = _from_angstrom(spheres.ts_ids, np.asarray(spheres.centres_angstrom, dtype=np.float64), tomograms)
    radii = [
        float(r) / _voxel(None, tomograms, n)
        for r, n in zip(spheres.radii_angstrom, spheres.ts_ids, strict=True)
    ]
    table = pd.DataFrame({"rlnTomoName": spheres.ts_ids})
    for i, column in enumerate(_COORDS):
        table[column] = coords[:, i]
    table["rlnSphereRadius"] = radii
    return write_star_blocks({"": table}, path)


def read_relion_picks(path: str | os.PathLike[str], tomograms: Tomograms) -> ParticleSet:
    """Read a RELION 5 particle annotation file (``<ts>_particles.star``) as particles without orientations.

    Raises
    ------
    FormatError
        If a column is missing or not numeric, a tomogram is unknown, or a name is not a usable id.
    """
    p = Path(path)
    blocks = read_star_blocks(p)
    table = block_as_table(p, blocks, tuple(blocks)[:1])
    names, positions = _to_angstrom(p, table, tomograms)
    try:
        return ParticleSet.from_arrays(names, positions)
    except ValidationError as exc:
        raise FormatError(p, f"particles do not validate ({one_line(exc.errors()[0]['msg'])})") from None


def write_relion_picks(particles: ParticleSet, path: str | os.PathLike[str], tomograms: Tomograms) -> Path:
    """Write particle positions as a RELION 5 particle annotation file atomically (orientations are not kept)."""
    names = particles.ts_ids()
    coords = _from_angstrom(names, particles.positions_angstrom(), tomograms)
    table = pd.DataFrame({"rlnTomoName": names})
    for i, column in enumerate(_COORDS):
        table[column] = coords[:, i]
    return write_star_blocks({"": table}, path)
