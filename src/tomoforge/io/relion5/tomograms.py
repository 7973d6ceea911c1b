"""RELION 5 ``tomograms.star`` (the ``data_global`` table of tilt series) and ``optimisation_set.star``.

``rlnTomoSize{X,Y,Z}`` are in unbinned tilt-series pixels (``rlnTomoTiltSeriesPixelSize``); the reconstructed
tomogram has ``round(size / rlnTomoTomogramBinning)`` voxels of ``pixel size × binning`` Å along each axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tomoforge.io.errors import FormatError
from tomoforge.io.relion5._star import (
    block_as_table,
    numeric_column,
    read_star_blocks,
    require_columns,
    write_star_blocks,
)

__all__ = [
    "RelionOptimisationSet",
    "RelionTomogram",
    "read_optimisation_set",
    "read_tomograms_star",
    "write_optimisation_set",
    "write_tomograms_star",
]

_REQUIRED = (
    "rlnTomoName",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnMicrographOriginalPixelSize",
)
_SIZE = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
_KNOWN = (
    *_REQUIRED,
    "rlnTomoHand",
    "rlnOpticsGroupName",
    "rlnTomoTiltSeriesPixelSize",
    "rlnTomoTiltSeriesStarFile",
    "rlnTomoTomogramBinning",
    *_SIZE,
)


@dataclass
class RelionTomogram:
    """One row of a RELION 5 ``tomograms.star``: a tilt series and the tomogram reconstructed from it.

    Attributes
    ----------
    ts_id
        ``rlnTomoName``.
    voltage_kv, spherical_aberration_mm, amplitude_contrast
        ``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``.
    original_pixel_size_angstrom
        ``rlnMicrographOriginalPixelSize``: pixel size of the movies as acquired.
    handedness
        ``rlnTomoHand`` (RELION's default −1); ``None`` when absent.
    optics_group_name
        ``rlnOpticsGroupName``.
    tilt_series_pixel_size_angstrom
        ``rlnTomoTiltSeriesPixelSize`` (after motion correction); ``None`` before it.
    tilt_series_star_file
        ``rlnTomoTiltSeriesStarFile``, the per-tilt table, as written (relative to the project folder).
    binning
        ``rlnTomoTomogramBinning``; ``None`` before reconstruction.
    size_xyz_px
        ``rlnTomoSize{X,Y,Z}`` in unbinned tilt-series pixels; ``None`` before reconstruction.
    extra
        Every other column (e.g. ``rlnEtomoDirectiveFile``, ``rlnTomoReconstructedTomogramHalf1``), in file order,
        written back unchanged.
    """

    ts_id: str
    voltage_kv: float
    spherical_aberration_mm: float
    amplitude_contrast: float
    original_pixel_size_angstrom: float
    handedness: float | None = None
    optics_group_name: str | None = None
    tilt_series_pixel_size_angstrom: float | None = None
    tilt_series_star_file: Path | None = None
    binning: float | None = None
    size_xyz_px: tuple[int, int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tomogram_voxel_size_angstrom(self) -> float | None:
        """Voxel size of the reconstructed tomogram, ``tilt-series pixel × binning`` in Å (``None`` if unknown)."""
        if self.tilt_series_pixel_size_angstrom is None or self.binning is None:
            return None
        return self.tilt_series_pixel_size_angstrom * self.binning

    @property
    def tomogram_shape_zyx(self) -> tuple[int, int, int] | None:
        """Shape ``(nz, ny, nx)`` of the binned tomogram, ``round(rlnTomoSize / binning)`` (``None`` if unknown)."""
        if self.size_xyz_px is None or self.binning is None:
            return None
        x, y, z = (round(n / self.binning) for n in self.size_xyz_px)
        return z, y, x


def _value(row: pd.Series, column: str) -> Any:
    value = row[column]
    if hasattr(value, "item"):
        value = value.item()
    return value


def read_tomograms_star(path: str | os.PathLike[str]) -> dict[str, RelionTomogram]:
    """Read a RELION 5 ``tomograms.star`` (or the ``tilt_series.star`` of Import, which has the same table).

    Parameters
    ----------
    path
        The STAR file, with a ``data_global`` table.

    Returns
    -------
    dict
        ``rlnTomoName`` → :class:`RelionTomogram`, in file order.

    Raises
    ------
    FormatError
        If the table or a required column is missing, a number is not a number, or a name repeats.
    """
    p = Path(path)
    table = block_as_table(p, read_star_blocks(p), ("global",))
    require_columns(p, table, _REQUIRED, "the data_global table")
    for column in _KNOWN:
        if column in table.columns and column not in (
            "rlnTomoName",
            "rlnOpticsGroupName",
            "rlnTomoTiltSeriesStarFile",
        ):
            numeric_column(p, table, column, "the data_global table")
    names = [str(n) for n in table["rlnTomoName"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FormatError(p, f"rlnTomoName {duplicates[0]!r} occurs more than once in data_global")
    out: dict[str, RelionTomogram] = {}
    for _, row in table.iterrows():
        has_size = all(c in table.columns for c in _SIZE)
        out[str(row["rlnTomoName"])] = RelionTomogram(
            ts_id=str(row["rlnTomoName"]),
            voltage_kv=float(row["rlnVoltage"]),
            spherical_aberration_mm=float(row["rlnSphericalAberration"]),
            amplitude_contrast=float(row["rlnAmplitudeContrast"]),
            original_pixel_size_angstrom=float(row["rlnMicrographOriginalPixelSize"]),
            handedness=float(row["rlnTomoHand"]) if "rlnTomoHand" in table.columns else None,
            optics_group_name=str(row["rlnOpticsGroupName"])
            if "rlnOpticsGroupName" in table.columns
            else None,
            tilt_series_pixel_size_angstrom=(
                float(row["rlnTomoTiltSeriesPixelSize"])
                if "rlnTomoTiltSeriesPixelSize" in table.columns
                else None
            ),
            tilt_series_star_file=(
                Path(str(row["rlnTomoTiltSeriesStarFile"]))
                if "rlnTomoTiltSeriesStarFile" in table.columns
                else None
            ),
            binning=float(row["rlnTomoTomogramBinning"])
            if "rlnTomoTomogramBinning" in table.columns
            else None,
            size_xyz_px=(
                (
                    int(round(row["rlnTomoSizeX"])),
                    int(round(row["rlnTomoSizeY"])),
                    int(round(row["rlnTomoSizeZ"])),
                )
                if has_size
                else None
            ),
            extra={c: _value(row, c) for c in table.columns if c not in _KNOWN},
        )
    return out


def write_tomograms_star(
    tomograms: Mapping[str, RelionTomogram] | Iterable[RelionTomogram], path: str | os.PathLike[str]
) -> Path:
    """Write a RELION 5 ``tomograms.star`` (``data_global``) atomically.

    Known fields are written in RELION's column order, then the ``extra`` columns. Optional fields are written
    only when every tomogram has them; ``extra`` columns only when every tomogram has them.

    Parameters
    ----------
    tomograms
        The rows (a mapping as returned by :func:`read_tomograms_star`, or any iterable of them).
    path
        Destination file.

    Returns
    -------
    pathlib.Path
    """
    rows = list(tomograms.values()) if isinstance(tomograms, Mapping) else list(tomograms)
    if not rows:
        raise ValueError("write_tomograms_star needs at least one tomogram")

    def all_have(attr: str) -> bool:
        return all(getattr(t, attr) is not None for t in rows)

    data: dict[str, list[Any]] = {
        "rlnTomoName": [t.ts_id for t in rows],
        "rlnVoltage": [float(t.voltage_kv) for t in rows],
        "rlnSphericalAberration": [float(t.spherical_aberration_mm) for t in rows],
        "rlnAmplitudeContrast": [float(t.amplitude_contrast) for t in rows],
        "rlnMicrographOriginalPixelSize": [float(t.original_pixel_size_angstrom) for t in rows],
    }
    if all_have("handedness"):
        data["rlnTomoHand"] = [float(t.handedness) for t in rows]  # type: ignore[arg-type]
    if all_have("optics_group_name"):
        data["rlnOpticsGroupName"] = [t.optics_group_name for t in rows]
    if all_have("tilt_series_pixel_size_angstrom"):
        data["rlnTomoTiltSeriesPixelSize"] = [float(t.tilt_series_pixel_size_angstrom) for t in rows]  # type: ignore[arg-type]
    if all_have("tilt_series_star_file"):
        data["rlnTomoTiltSeriesStarFile"] = [str(t.tilt_series_star_file) for t in rows]
    if all_have("binning"):
        data["rlnTomoTomogramBinning"] = [float(t.binning) for t in rows]  # type: ignore[arg-type]
    if all_have("size_xyz_px"):
        for i, column in enumerate(_SIZE):
            data[column] = [int(t.size_xyz_px[i]) for t in rows]  # type: ignore[index]
    for column in rows[0].extra:
        if column not in data and all(column in t.extra for t in rows):
            data[column] = [t.extra[column] for t in rows]
    for t in rows:
        for number in (
            t.voltage_kv,
            t.spherical_aberration_mm,
            t.amplitude_contrast,
            t.original_pixel_size_angstrom,
        ):
            if not math.isfinite(number):
                raise ValueError(f"tomogram {t.ts_id}: non-finite acquisition value {number}")
    return write_star_blocks({"global": pd.DataFrame(data)}, path)


@dataclass
class RelionOptimisationSet:
    """A RELION 5 ``optimisation_set.star``: the files that make up one refinement's input.

    Attributes
    ----------
    particles_file
        ``rlnTomoParticlesFile``.
    tomograms_file
        ``rlnTomoTomogramsFile``.
    other
        Every other key (e.g. ``rlnTomoTrajectoriesFile``, ``rlnTomoReferenceMap1File``), as strings, in file order.
    """

    particles_file: Path | None = None
    tomograms_file: Path | None = None
    other: dict[str, str] = field(default_factory=dict)


def read_optimisation_set(path: str | os.PathLike[str]) -> RelionOptimisationSet:
    """Read a RELION 5 ``optimisation_set.star`` (one key-value block of file names).

    Raises
    ------
    FormatError
        If the file has no key-value block, or neither ``rlnTomoParticlesFile`` nor ``rlnTomoTomogramsFile``.
    """
    p = Path(path)
    blocks = read_star_blocks(p)
    pairs: dict[str, Any] | None = None
    for block in blocks.values():
        if isinstance(block, dict):
            pairs = block
            break
        if isinstance(block, pd.DataFrame) and len(block) == 1:
            pairs = {c: block[c].iloc[0] for c in block.columns}
            break
    if pairs is None:
        raise FormatError(p, "no key-value block of file names; is this an optimisation_set.star?")
    if "rlnTomoParticlesFile" not in pairs and "rlnTomoTomogramsFile" not in pairs:
        raise FormatError(p, "neither rlnTomoParticlesFile nor rlnTomoTomogramsFile is given")
    text = {str(k): str(v) for k, v in pairs.items()}
    particles = text.pop("rlnTomoParticlesFile", None)
    tomograms = text.pop("rlnTomoTomogramsFile", None)
    return RelionOptimisationSet(
        particles_file=Path(particles) if particles is not None else None,
        tomograms_file=Path(tomograms) if tomograms is not None else None,
        other=text,
    )


def write_optimisation_set(optimisation_set: RelionOptimisationSet, path: str | os.PathLike[str]) -> Path:
    """Write a RELION 5 ``optimisation_set.star`` atomically (one key-value block)."""
    pairs: dict[str, Any] = {}
    if optimisation_set.particles_file is not None:
        pairs["rlnTomoParticlesFile"] = str(optimisation_set.particles_file)
    if optimisation_set.tomograms_file is not None:
        pairs["rlnTomoTomogramsFile"] = str(optimisation_set.tomograms_file)
    pairs.update({k: str(v) for k, v in optimisation_set.other.items()})
    if not pairs:
        raise ValueError("an optimisation set needs at least one file")
    return write_star_blocks({"": pairs}, path)
