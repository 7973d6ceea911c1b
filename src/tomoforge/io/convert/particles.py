"""Particles between RELION 5, Dynamo and Scipion, through :class:`~tomoforge.models.ParticleSet`.

Positions are in Å from each tomogram's centre voxel and orientations are the rotation ``R`` reference → tomogram
(CONVENTIONS.md §2, §4). Dynamo and Scipion store voxel coordinates, so converting them needs the geometry of the
tomograms they were picked in (voxel size and shape): from a RELION 5 ``tomograms.star`` (the reconstructed,
binned tomogram of each row) or, for all tomograms alike, from an explicit voxel size and size.

Dynamo tables name tomograms by number: with a ``tomograms.star``, number ``k`` is its ``k``-th row (file order);
without one, the tilt-series id is the number itself (``"3"``), and writing numbers tilt-series ids that are
integers as themselves and others 1, 2, … in sorted order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tomoforge.io.convert._common import ConversionSummary, format_of, reading, require_file
from tomoforge.io.dynamo import (
    DynamoTomogram,
    dynamo_table_to_particles,
    particles_to_dynamo_table,
    read_dynamo_table,
    write_dynamo_table,
)
from tomoforge.io.errors import FormatError
from tomoforge.io.relion5 import read_relion_particles, read_tomograms_star, write_relion_particles
from tomoforge.io.scipion import read_scipion_coordinates, write_scipion_coordinates
from tomoforge.models import ParticleSet

__all__ = [
    "PARTICLE_FORMATS",
    "TomogramGeometry",
    "convert_particles",
    "read_particles",
    "tomogram_geometry",
    "write_particles",
]

PARTICLE_FORMATS = {".star": "RELION 5 particles STAR", ".tbl": "Dynamo table", ".sqlite": "Scipion sqlite"}
"""Extensions :func:`read_particles` and :func:`write_particles` handle, with the names of their formats."""

_GEOMETRY_HINT = "pass --tomograms tomograms.star, or --pixel-size-angstrom and --tomogram-size-px X,Y,Z"


@dataclass(frozen=True)
class TomogramGeometry:
    """Voxel size and shape of the tomograms that voxel coordinates refer to.

    Attributes
    ----------
    ordered
        The tomograms of a ``tomograms.star`` in file order (Dynamo number = position + 1), None for a row without
        reconstruction geometry; empty without a ``tomograms.star``.
    ts_ids
        The ``rlnTomoName`` of those rows, in the same order.
    default
        ``(voxel size in Å, shape (nz, ny, nx))`` for every tomogram, from explicit values; None without them.
    """

    ordered: tuple[DynamoTomogram | None, ...] = ()
    ts_ids: tuple[str, ...] = ()
    default: tuple[float, tuple[int, int, int]] | None = None

    def of(self, ts_id: str) -> DynamoTomogram | None:
        """The geometry of one tomogram (explicit values win over ``tomograms.star``), None if unknown."""
        if self.default is not None:
            return DynamoTomogram(ts_id, self.default[1], self.default[0])
        if ts_id in self.ts_ids:
            return self.ordered[self.ts_ids.index(ts_id)]
        return None

    def require(self, ts_id: str, path: Path) -> DynamoTomogram:
        """The geometry of one tomogram, or a FormatError saying which options give it."""
        found = self.of(ts_id)
        if found is not None:
            return found
        if ts_id in self.ts_ids:
            problem = (
                f"the tomograms.star row of {ts_id} lacks rlnTomoTomogramBinning or rlnTomoSize{{X,Y,Z}}"
            )
        elif self.ts_ids:
            problem = f"tomogram {ts_id!r} has no row in the tomograms.star"
        else:
            problem = f"voxel coordinates need the voxel size and shape of tomogram {ts_id!r}"
        raise FormatError(path, f"{problem}; {_GEOMETRY_HINT}")


def tomogram_geometry(
    *,
    tomograms_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    tomogram_size_xyz_px: Sequence[int] | None = None,
) -> TomogramGeometry:
    """Gather the tomogram geometry from a RELION ``tomograms.star`` and/or explicit values (which win).

    Parameters
    ----------
    tomograms_path
        A RELION 5 ``tomograms.star``: voxel size ``rlnTomoTiltSeriesPixelSize × rlnTomoTomogramBinning`` and shape
        ``round(rlnTomoSize / binning)`` of each row's tomogram.
    pixel_size_angstrom, tomogram_size_xyz_px
        Voxel size in Å and ``(x, y, z)`` size in voxels of every tomogram; give both or neither.

    Raises
    ------
    ValueError
        When only one of the explicit values is given, or they are not positive.
    FormatError
        When the ``tomograms.star`` is missing or bad.
    """
    default = None
    if (pixel_size_angstrom is None) != (tomogram_size_xyz_px is None):
        given = "--pixel-size-angstrom" if pixel_size_angstrom is not None else "--tomogram-size-px"
        raise ValueError(
            f"{given} was given alone; pass both --pixel-size-angstrom and --tomogram-size-px X,Y,Z"
        )
    if pixel_size_angstrom is not None and tomogram_size_xyz_px is not None:
        size = tuple(int(v) for v in tomogram_size_xyz_px)
        if (
            not (pixel_size_angstrom > 0 and math.isfinite(pixel_size_angstrom))
            or len(size) != 3
            or min(size) < 1
        ):
            raise ValueError(
                "--pixel-size-angstrom must be positive and --tomogram-size-px three positive integers X,Y,Z"
            )
        default = (float(pixel_size_angstrom), (size[2], size[1], size[0]))
    ordered: list[DynamoTomogram | None] = []
    names: list[str] = []
    if tomograms_path is not None:
        for name, row in read_tomograms_star(require_file(tomograms_path, "RELION tomograms.star")).items():
            voxel, shape = row.tomogram_voxel_size_angstrom, row.tomogram_shape_zyx
            names.append(name)
            ordered.append(None if voxel is None or shape is None else DynamoTomogram(name, shape, voxel))
    return TomogramGeometry(ordered=tuple(ordered), ts_ids=tuple(names), default=default)


def read_particles(
    path: str | Path, geometry: TomogramGeometry | None = None, *, dynamo_one_based: bool = False
) -> ParticleSet:
    """Read particles from a RELION 5 particle STAR file, a Dynamo table or a Scipion SetOfCoordinates3D.

    Parameters
    ----------
    path
        ``.star``, ``.tbl`` or ``.sqlite``.
    geometry
        Tomogram geometry (:func:`tomogram_geometry`): required for Dynamo; for Scipion it gives the shapes of
        odd-sized tomograms (even sizes are assumed without).
    dynamo_one_based
        Treat Dynamo ``x, y, z`` as MATLAB 1-based indices.

    Returns
    -------
    ParticleSet
    """
    p = require_file(path, "particle")
    suffix = format_of(p, PARTICLE_FORMATS, "particles", "read")
    geometry = geometry or TomogramGeometry()
    if suffix == ".star":
        return read_relion_particles(p).particles
    if suffix == ".sqlite":
        coordinates = read_scipion_coordinates(p)
        shapes = {}
        for name in sorted(set(coordinates.particles.ts_ids())):
            tomogram = geometry.of(name)
            if tomogram is not None:
                shapes[name] = tomogram.shape_zyx
        return read_scipion_coordinates(p, shapes_zyx=shapes).particles if shapes else coordinates.particles
    table = read_dynamo_table(p)
    tomograms = {}
    for number in sorted({int(round(float(v.real))) for v in table["tomo"]}):
        if geometry.ts_ids:
            if not 1 <= number <= len(geometry.ts_ids):
                raise FormatError(
                    p,
                    f"Dynamo tomogram number {number} has no row in the tomograms.star, which has "
                    f"{len(geometry.ts_ids)} (number k is its k-th row)",
                )
            name = geometry.ts_ids[number - 1]
        else:
            name = str(number)
        tomograms[number] = geometry.require(name, p)
    with reading(p):
        return dynamo_table_to_particles(table, tomograms, one_based=dynamo_one_based)


def _dynamo_numbers(ts_ids: list[str], geometry: TomogramGeometry, path: Path) -> dict[str, int]:
    if geometry.ts_ids:
        missing = [name for name in ts_ids if name not in geometry.ts_ids]
        if missing:
            raise FormatError(
                path, f"tomogram {missing[0]!r} has no row in the tomograms.star to number it by"
            )
        return {name: geometry.ts_ids.index(name) + 1 for name in ts_ids}
    if all(name.isdigit() and int(name) >= 1 for name in ts_ids):
        return {name: int(name) for name in ts_ids}
    return {name: i + 1 for i, name in enumerate(sorted(ts_ids))}


def write_particles(
    particles: ParticleSet,
    path: str | Path,
    geometry: TomogramGeometry | None = None,
    *,
    dynamo_one_based: bool = False,
) -> Path:
    """Write particles as a RELION 5 particle STAR file, a Dynamo table or a Scipion SetOfCoordinates3D.

    Parameters
    ----------
    particles
        The particles.
    path
        ``.star``, ``.tbl`` or ``.sqlite``.
    geometry
        Tomogram geometry, required for Dynamo and Scipion output (Scipion's sampling is the tomograms' voxel
        size, which must then be the same for all of them).
    dynamo_one_based
        Write Dynamo ``x, y, z`` as MATLAB 1-based indices.

    Returns
    -------
    pathlib.Path
    """
    p = Path(path)
    suffix = format_of(p, PARTICLE_FORMATS, "particles", "written")
    geometry = geometry or TomogramGeometry()
    if suffix == ".star":
        with reading(p):
            return write_relion_particles(particles, p)
    names = sorted(set(particles.ts_ids()))
    tomograms = {name: geometry.require(name, p) for name in names}
    if suffix == ".tbl":
        numbers = _dynamo_numbers(names, geometry, p)
        by_number = {numbers[name]: tomograms[name] for name in names}
        with reading(p):
            table = particles_to_dynamo_table(particles, by_number, one_based=dynamo_one_based)
            return write_dynamo_table(table, p)
    voxels = {t.voxel_size_angstrom for t in tomograms.values()}
    if len(voxels) > 1:
        raise FormatError(
            p, f"a Scipion set has one sampling, but the tomograms have voxel sizes {sorted(voxels)} Å"
        )
    voxel = voxels.pop() if voxels else 1.0
    box = particles.box_size_px
    if box is not None and particles.pixel_size_angstrom is not None:
        box = max(1, round(box * particles.pixel_size_angstrom / voxel))
    with reading(p):
        at_sampling = ParticleSet(
            particles=particles.particles,
            pixel_size_angstrom=voxel,
            box_size_px=box,
            symmetry=particles.symmetry,
        )
        return write_scipion_coordinates(
            at_sampling, p, shapes_zyx={name: t.shape_zyx for name, t in tomograms.items()}
        )


def convert_particles(
    input_path: str | Path,
    output_path: str | Path,
    *,
    tomograms_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    tomogram_size_xyz_px: Sequence[int] | None = None,
    dynamo_one_based: bool = False,
) -> ConversionSummary:
    """Read particles (:func:`read_particles`) and write them in another format (:func:`write_particles`)."""
    out = Path(output_path)
    target = PARTICLE_FORMATS[format_of(out, PARTICLE_FORMATS, "particles", "written")]
    src = Path(input_path)
    with reading(src):
        geometry = tomogram_geometry(
            tomograms_path=tomograms_path,
            pixel_size_angstrom=pixel_size_angstrom,
            tomogram_size_xyz_px=tomogram_size_xyz_px,
        )
    particles = read_particles(src, geometry, dynamo_one_based=dynamo_one_based)
    written = write_particles(particles, out, geometry, dynamo_one_based=dynamo_one_based)
    counts = particles.count_per_tomogram()
    detail = f"in {len(counts)} tomogram" + ("s" if len(counts) != 1 else "")
    note = ""
    numbers = _dynamo_numbers(sorted(counts), geometry, out) if out.suffix.lower() == ".tbl" else {}
    if any(str(k) != name for name, k in numbers.items()):
        shown = ", ".join(f"{k}={name}" for name, k in sorted(numbers.items(), key=lambda item: item[1])[:6])
        note = f"; Dynamo tomogram numbers {shown}" + (", …" if len(numbers) > 6 else "")
    return ConversionSummary(
        noun="particles" if particles.n_particles != 1 else "particle",
        count=particles.n_particles,
        excluded=0,
        source_format=PARTICLE_FORMATS[src.suffix.lower()],
        target_format=target,
        written=(written,),
        detail=detail,
        note=note,
    )
