"""The ``particles`` artifact, reading the points people click, and the picture of picks over a tomogram.

A ``particles`` folder holds:

* ``particles.json``: the :class:`~tomoforge.models.ParticleSet` (positions in Å from each tomogram's centre voxel,
  rotations reference → tomogram, ``group`` = the virus/model a particle belongs to, ``prior_normal``);
* ``particles.star``: the same as a RELION 5 particle STAR file (what RELION and the simulator's scorer read;
  groups numbered in ``particle_groups.json`` when their labels are not integers);
* ``particles.tbl`` + ``tomograms.doc`` (Dynamo) and ``coordinates.sqlite`` (Scipion SetOfCoordinates3D);
* ``<ts>_picks.png``: picks near the central section drawn over it (y up), coloured by group.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tomoforge.models import ParticleSet, Tomogram, load_json, save_json

if TYPE_CHECKING:
    from tomoforge.io.convert import TomogramGeometry

__all__ = [
    "tomograms_geometry",
    "POINT_COLUMNS",
    "draw_picks",
    "read_particles_artifact",
    "read_points",
    "write_particles_artifact",
]

POINT_COLUMNS = "ts_id,group,x,y,z"
"""Header of a points CSV: tomogram id, model (e.g. virus) label, and the position in voxels of that tomogram
(0-based, corner origin: IMOD's and Dynamo's convention), or with columns ``x_angstrom,y_angstrom,z_angstrom``
in Å from the tomogram's centre voxel."""


def tomograms_geometry(tomograms: Sequence[Tomogram]) -> TomogramGeometry:
    """The geometry of the tomograms for particle files: Dynamo tomogram ``k`` is the ``k``-th in ``ts_id`` order."""
    from tomoforge.io.convert import TomogramGeometry
    from tomoforge.io.dynamo import DynamoTomogram

    ordered = sorted(tomograms, key=lambda t: t.ts_id)
    return TomogramGeometry(
        ordered=tuple(DynamoTomogram(t.ts_id, t.shape_zyx, t.voxel_size_angstrom) for t in ordered),
        ts_ids=tuple(t.ts_id for t in ordered),
    )


def write_particles_artifact(
    folder: Path, particles: ParticleSet, tomograms: Sequence[Tomogram], *, picture_half_depth_angstrom: float
) -> None:
    """Write a ``particles`` artifact into ``folder`` (module docstring).

    RELION numbers groups (``rlnGroupNumber``); labels that are not all integers are numbered 1, 2, … in sorted
    order for the exported files, and the numbering is written to ``particle_groups.json``. Scipion's set has one
    sampling, so ``coordinates.sqlite`` is written only when the tomograms share one voxel size. The pictures
    show the picks within ``picture_half_depth_angstrom`` of each tomogram's central section.
    """
    from tomoforge.io.convert import write_particles
    from tomoforge.io.dynamo import write_dynamo_tomogram_index
    from tomoforge.io.mrc import read_mrc
    from tomoforge.io.png import write_png
    from tomoforge.io.relion5 import write_relion_particles
    from tomoforge.workflow.fsutil import atomic_write_text

    save_json(particles, folder / "particles.json")
    labels = sorted({p.group for p in particles.particles if p.group is not None})
    exported = particles
    if not all(label.lstrip("-").isdigit() for label in labels):
        numbers = {label: str(k + 1) for k, label in enumerate(labels)}
        exported = particles.model_copy(
            update={
                "particles": [
                    p if p.group is None else p.model_copy(update={"group": numbers[p.group]})
                    for p in particles.particles
                ]
            }
        )
        atomic_write_text(folder / "particle_groups.json", json.dumps(numbers, indent=1) + "\n")
    write_relion_particles(exported, folder / "particles.star")
    geometry = tomograms_geometry(tomograms)
    write_particles(exported, folder / "particles.tbl", geometry)
    volumes = {k + 1: str(t.volume_file) for k, t in enumerate(sorted(tomograms, key=lambda t: t.ts_id))}
    write_dynamo_tomogram_index(volumes, folder / "tomograms.doc")
    if len({t.voxel_size_angstrom for t in tomograms}) == 1:
        write_particles(exported, folder / "coordinates.sqlite", geometry)
    for tomogram in tomograms:
        picture = draw_picks(
            read_mrc(tomogram.volume_file).data, tomogram, particles, picture_half_depth_angstrom
        )
        write_png(picture, folder / f"{tomogram.ts_id}_picks.png", origin="lower")


def read_particles_artifact(folder: Path) -> ParticleSet:
    """Read the ``particles.json`` of a ``particles`` folder."""
    return load_json(ParticleSet, folder / "particles.json")


def _csv_points(path: Path, tomograms: dict[str, Tomogram]) -> dict[tuple[str, str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: holds no points (expected a header {POINT_COLUMNS} and one row per point)")
    columns = set(rows[0])
    in_angstrom = {"x_angstrom", "y_angstrom", "z_angstrom"} <= columns
    if not ({"ts_id", "group"} <= columns and (in_angstrom or {"x", "y", "z"} <= columns)):
        raise ValueError(
            f"{path}: the header must hold {POINT_COLUMNS} (voxels) or ts_id,group,x_angstrom,y_angstrom,"
            f"z_angstrom; it has {sorted(columns)}"
        )
    names = ("x_angstrom", "y_angstrom", "z_angstrom") if in_angstrom else ("x", "y", "z")
    points: dict[tuple[str, str], list[np.ndarray]] = {}
    for line, row in enumerate(rows, start=2):
        ts_id = row["ts_id"].strip()
        if ts_id not in tomograms:
            raise ValueError(
                f"{path}: line {line} names tomogram {ts_id!r}; the tomograms are {sorted(tomograms)}"
            )
        try:
            xyz = np.array([float(row[c]) for c in names])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: line {line} has a position that is not three numbers") from None
        if not np.isfinite(xyz).all():
            raise ValueError(f"{path}: line {line} has a non-finite position")
        if not in_angstrom:
            xyz = tomograms[ts_id].index_zyx_to_position(xyz[::-1])
        points.setdefault((ts_id, row["group"].strip()), []).append(xyz)
    return {key: np.stack(value) for key, value in points.items()}


def read_points(path: Path, tomograms: Sequence[Tomogram]) -> dict[tuple[str, str], np.ndarray]:
    """Points per ``(ts_id, group)`` in Å from each tomogram's centre voxel, from a CSV or a particle file.

    A CSV has :data:`POINT_COLUMNS`; a RELION ``.star``, Dynamo ``.tbl`` or Scipion ``.sqlite`` (e.g. the meshes of
    Dynamo's vectorial picking) is read with :func:`tomoforge.io.convert.read_particles` and grouped by each
    particle's group.
    """
    by_id = {t.ts_id: t for t in tomograms}
    if path.suffix.lower() == ".csv":
        return _csv_points(path, by_id)
    from tomoforge.io.convert import read_particles

    geometry = tomograms_geometry(tomograms)
    particles = read_particles(path, geometry)
    points: dict[tuple[str, str], list[np.ndarray]] = {}
    for p in particles.particles:
        if p.ts_id not in by_id:
            raise ValueError(
                f"{path}: holds points of tomogram {p.ts_id!r}; the tomograms are {sorted(by_id)}"
            )
        points.setdefault((p.ts_id, p.group or "0"), []).append(np.array(p.position_angstrom))
    if not points:
        raise ValueError(f"{path}: holds no points")
    return {key: np.stack(value) for key, value in points.items()}


_PALETTE = [(60, 220, 60), (240, 60, 60), (250, 220, 40), (40, 210, 230), (230, 120, 240), (255, 160, 60)]


def draw_picks(
    volume: np.ndarray, tomogram: Tomogram, particles: ParticleSet, half_depth_angstrom: float
) -> np.ndarray:
    """RGB ``(y, x, 3)`` of the central section (5-section average) with the picks within ``half_depth`` of it as
    circles, one colour per group (row 0 at the bottom: write with ``origin="lower"``)."""
    from tomoforge.steps._plots import draw_circle, to_rgb
    from tomoforge.steps._tomograms import central_slices

    xy, _ = central_slices(volume)
    rgb = to_rgb(xy)
    mine = particles.for_tomogram(tomogram.ts_id)
    if not mine:
        return rgb
    positions = np.array([p.position_angstrom for p in mine])
    index = tomogram.position_to_index_zyx(positions)
    centre_z = tomogram.shape_zyx[0] // 2
    groups = sorted({p.group or "" for p in mine})
    radius = max(1.5, 0.4 * 60.0 / tomogram.voxel_size_angstrom)
    for p, (k, j, i) in zip(mine, index, strict=True):
        if abs(k - centre_z) * tomogram.voxel_size_angstrom <= half_depth_angstrom:
            colour = _PALETTE[groups.index(p.group or "") % len(_PALETTE)]
            draw_circle(rgb, float(i), float(j), radius, colour)
    return rgb
