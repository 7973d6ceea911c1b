"""RELION 5 particle STAR files (``data_general``, ``data_optics``, ``data_particles``).

Orientation and position (``tutorial-steps.md`` §18, RELION ``particle_set.cpp``; CONVENTIONS.md §4):

* ``R = A_subtomogram · A_particle`` with ``A_subtomogram = Euler(rlnTomoSubtomogram{Rot,Tilt,Psi})`` and
  ``A_particle = Euler(rlnAngle{Rot,Tilt,Psi})`` (RELION's matrices, :func:`tomoforge.geometry.relion_euler_to_matrix`);
  ``R`` maps reference-box coordinates into the tomogram.
* ``position = rlnCenteredCoordinate{X,Y,Z}Angst − A_subtomogram · rlnOrigin{X,Y,Z}Angst`` (Å from the tomogram
  centre), RELION's ``getPosition`` in Å.

Writing splits ``R`` again: the subtomogram angles and origins are written as they were read (kept in
:attr:`RelionParticles.extra`), or as zero when there are none; ``rlnAngle*`` become ``A_subtomogramᵀ · R`` and the
centred coordinate ``position + A_subtomogram · origin``. Every column the data model does not hold is kept in
``extra`` and written back unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from tomoforge.geometry import matrix_to_relion_euler, relion_euler_to_matrix
from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError
from tomoforge.io.relion5._star import (
    StarBlock,
    numeric_column,
    read_star_blocks,
    require_columns,
    write_star_blocks,
)
from tomoforge.models import Particle, ParticleSet
from tomoforge.models._base import Matrix3

__all__ = ["RelionParticles", "read_relion_particles", "write_relion_particles"]

CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
SUBTOMOGRAM = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
ORIGIN = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
# Optional integer/float columns held by the model: RELION column → (Particle field, validity test).
_OPTIONAL: dict[str, tuple[str, Any]] = {
    "rlnRandomSubset": ("half_set", lambda v: v in (1, 2)),
    "rlnClassNumber": ("class_number", lambda v: v >= 1 and v == int(v)),
    "rlnGroupNumber": ("group", lambda v: v == int(v)),
    "rlnAutopickFigureOfMerit": ("score", lambda v: np.isfinite(v)),
}


@dataclass
class RelionParticles:
    """A RELION 5 particle file: the particles plus everything RELION-specific, for lossless write-back.

    Attributes
    ----------
    particles
        The particles (``rlnTomoName``, positions, composed rotations, half sets, classes, groups).
    extra
        One row per particle: every ``data_particles`` column not held by :attr:`particles`, including the
        subtomogram angles and origins used to split ``R`` when writing.
    optics
        The ``data_optics`` table, if any.
    general
        The ``data_general`` key-value block (``rlnTomoSubTomosAre2DStacks``), if any.
    column_order
        The ``data_particles`` columns in file order.
    """

    particles: ParticleSet
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)
    optics: pd.DataFrame | None = None
    general: dict[str, Any] = field(default_factory=dict)
    column_order: list[str] = field(default_factory=list)


def _matrices(table: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    if not all(c in table.columns for c in columns):
        return np.broadcast_to(np.eye(3), (len(table), 3, 3)).copy()
    angles = torch.tensor(table[list(columns)].to_numpy(dtype=np.float64))
    return relion_euler_to_matrix(angles).numpy()


def _vectors(table: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    if not all(c in table.columns for c in columns):
        return np.zeros((len(table), 3))
    return table[list(columns)].to_numpy(dtype=np.float64)


def read_relion_particles(path: str | os.PathLike[str]) -> RelionParticles:
    """Read a RELION 5 particle STAR file.

    Parameters
    ----------
    path
        A ``particles.star`` / ``run_data.star`` with a ``data_particles`` table (or a single anonymous table)
        holding ``rlnTomoName`` and ``rlnCenteredCoordinate{X,Y,Z}Angst``.

    Returns
    -------
    RelionParticles
        ``particles.pixel_size_angstrom`` / ``box_size_px`` come from ``rlnImagePixelSize`` / ``rlnImageSize``
        when there is one optics group.

    Raises
    ------
    FormatError
        If the table or a required column is missing, a value is not a number, or a tomogram name is unusable.
    """
    p = Path(path)
    blocks = read_star_blocks(p)
    table = _particle_table(p, blocks)
    what = "the data_particles table"
    require_columns(p, table, ("rlnTomoName", *CENTRED), what)
    for column in (*CENTRED, *ANGLES, *SUBTOMOGRAM, *ORIGIN, *_OPTIONAL):
        if column in table.columns:
            numeric_column(p, table, column, what)
    a_sub = _matrices(table, SUBTOMOGRAM)
    rotations = a_sub @ _matrices(table, ANGLES)
    positions = _vectors(table, CENTRED) - np.einsum("nij,nj->ni", a_sub, _vectors(table, ORIGIN))
    held = {"rlnTomoName", *CENTRED, *ANGLES}
    per_particle: dict[str, list[Any]] = {}
    for column, (name, valid) in _OPTIONAL.items():
        if column in table.columns:
            values = table[column].to_numpy(dtype=np.float64)
            if all(valid(v) for v in values):
                held.add(column)
                if name == "score":
                    per_particle[name] = [float(v) for v in values]
                elif name == "group":
                    per_particle[name] = [str(int(v)) for v in values]
                else:
                    per_particle[name] = [int(v) for v in values]
    optics = blocks.get("optics")
    optics = optics if isinstance(optics, pd.DataFrame) else None
    pixel, box = None, None
    if optics is not None and len(optics) == 1:
        if "rlnImagePixelSize" in optics.columns:
            pixel = float(optics["rlnImagePixelSize"].iloc[0])
        if "rlnImageSize" in optics.columns:
            box = int(optics["rlnImageSize"].iloc[0])
    names = [str(n) for n in table["rlnTomoName"]]
    try:
        particles = [
            Particle(
                ts_id=names[i],
                position_angstrom=tuple(positions[i].tolist()),
                rotation_matrix=cast(Matrix3, rotations[i].tolist()),
                **{k: v[i] for k, v in per_particle.items()},
            )
            for i in range(len(table))
        ]
        particle_set = ParticleSet(particles=particles, pixel_size_angstrom=pixel, box_size_px=box)
    except ValidationError as exc:
        raise FormatError(p, f"particles do not validate ({one_line(exc.errors()[0]['msg'])})") from None
    general = blocks.get("general")
    return RelionParticles(
        particles=particle_set,
        extra=table[[c for c in table.columns if c not in held]].copy(),
        optics=optics,
        general=dict(general) if isinstance(general, dict) else {},
        column_order=list(table.columns),
    )


def _particle_table(path: Path, blocks: dict[str, StarBlock]) -> pd.DataFrame:
    block = blocks.get("particles", blocks.get("") if len(blocks) == 1 else None)
    if isinstance(block, dict):  # a single particle written as key-value pairs
        block = pd.DataFrame([block])
    if not isinstance(block, pd.DataFrame):
        raise FormatError(path, f"no data_particles table (found {', '.join('data_' + n for n in blocks)})")
    return block


def _split_table(particle_set: ParticleSet, extra: pd.DataFrame) -> dict[str, Any]:
    n = particle_set.n_particles
    if len(extra) != n:
        raise ValueError(f"extra has {len(extra)} rows for {n} particles; they must correspond row by row")
    sub_angles = _vectors(extra, SUBTOMOGRAM)
    a_sub = _matrices(extra, SUBTOMOGRAM)
    rotations = particle_set.rotation_matrices()
    a_part = np.swapaxes(a_sub, -1, -2) @ rotations
    angles = matrix_to_relion_euler(torch.from_numpy(a_part)).numpy() if n else np.zeros((0, 3))
    origins = _vectors(extra, ORIGIN)
    centred = particle_set.positions_angstrom() + np.einsum("nij,nj->ni", a_sub, origins)
    data: dict[str, Any] = {"rlnTomoName": particle_set.ts_ids()}
    for i, column in enumerate(SUBTOMOGRAM):
        data[column] = sub_angles[:, i]
    for i, column in enumerate(ANGLES):
        data[column] = angles[:, i]
    for i, column in enumerate(ORIGIN):
        data[column] = origins[:, i]
    for i, column in enumerate(CENTRED):
        data[column] = centred[:, i]
    ps = particle_set.particles
    for column, (name, _) in _OPTIONAL.items():
        values = [getattr(q, name) for q in ps]
        if not n or all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(
                f"only some particles have a {name}; RELION's {column} needs one for every particle"
            )
        if name == "group":
            try:
                data[column] = [int(v) for v in values]
            except ValueError:
                raise ValueError(
                    f"group labels must be integers for RELION's {column}, got {values[0]!r}"
                ) from None
        else:
            data[column] = values
    return data


def write_relion_particles(
    particles: RelionParticles | ParticleSet,
    path: str | os.PathLike[str],
    *,
    optics: pd.DataFrame | None = None,
    general: dict[str, Any] | None = None,
) -> Path:
    """Write a RELION 5 particle STAR file atomically.

    Parameters
    ----------
    particles
        A :class:`RelionParticles` (written back with all its columns and blocks) or a bare
        :class:`~tomoforge.models.ParticleSet` (subtomogram angles and origins 0, ``rlnAngle*`` = ``R``).
    path
        Destination file.
    optics, general
        Replace the ``data_optics`` table / ``data_general`` block. Without either, a bare ``ParticleSet`` gets a
        one-group ``data_optics`` (``rlnOpticsGroup`` 1, ``optics1``, its pixel and box size when set).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``extra`` does not have one row per particle, or a group label is not an integer.
    """
    bare = isinstance(particles, ParticleSet)
    if isinstance(particles, ParticleSet):
        particles = RelionParticles(
            particles=particles, extra=pd.DataFrame(index=range(particles.n_particles))
        )
    particle_set = particles.particles
    data = _split_table(particle_set, particles.extra.reset_index(drop=True))
    table = particles.extra.reset_index(drop=True).copy()
    for column, values in data.items():
        table[column] = values
    order = [c for c in particles.column_order if c in table.columns]
    order += [c for c in data if c not in order]
    order += [c for c in table.columns if c not in order]
    table = table[order]
    optics_table = optics if optics is not None else particles.optics
    if optics_table is None and bare:
        row: dict[str, Any] = {"rlnOpticsGroup": 1, "rlnOpticsGroupName": "optics1"}
        if particle_set.pixel_size_angstrom is not None:
            row["rlnImagePixelSize"] = particle_set.pixel_size_angstrom
        if particle_set.box_size_px is not None:
            row["rlnImageSize"] = particle_set.box_size_px
        optics_table = pd.DataFrame([row])
    blocks: dict[str, StarBlock] = {}
    general_block = general if general is not None else particles.general
    if general_block:
        blocks["general"] = dict(general_block)
    if optics_table is not None:
        blocks["optics"] = optics_table
        if "rlnOpticsGroup" not in table.columns:
            table["rlnOpticsGroup"] = 1
    blocks["particles"] = table
    return write_star_blocks(blocks, path)
