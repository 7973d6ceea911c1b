"""Scipion SetOfCoordinates3D sqlite files: read, and write in Scipion's own table layout.

Conventions (CONVENTIONS.md §2, §4; ``tutorial-steps.md`` §18):

* ``_x, _y, _z`` are voxels (at the set's ``_samplingRate``) relative to the tomogram's Scipion origin,
  ``stored = bottom-left-corner index + origin / pixel``; with Scipion's default origin ``−dims/2 · pixel`` the
  tomoforge position is ``(stored + dims/2 − dims//2) · pixel`` Å, i.e. ``stored · pixel`` for even sizes (assumed
  when the tomogram shape is not given). :func:`scipion_coordinate` gives Scipion's three getter conventions.
* ``_eulerMatrix._matrix`` is a 4×4 ``M`` whose rotation part is ``Rᵀ`` (tomoforge ``R`` = its transpose). Its
  translation (a Dynamo or RELION shift, in the converters' conventions) is not applied to the position, as in
  Scipion's own ``getPosition``; it is kept in :attr:`ScipionCoordinates.translations_px` and written back.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from pydantic import ValidationError

from tomoforge.io._atomic import atomic_output
from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError
from tomoforge.io.scipion import _sqlite as sq
from tomoforge.models import Particle, ParticleSet
from tomoforge.models._base import Matrix3

__all__ = [
    "ScipionCoordinates",
    "read_scipion_coordinates",
    "scipion_coordinate",
    "write_scipion_coordinates",
]

_CORE = ("_x", "_y", "_z", "_volId", "_eulerMatrix", "_eulerMatrix._matrix", "_groupId", "_tomoId", "_score")
_CORE_CLASSES = ("Float", "Float", "Float", "Integer", "Transform", "Matrix", "Integer", "String", "Float")


def scipion_coordinate(
    stored_xyz_px: np.ndarray,
    convention: Literal["SCIPION", "BOTTOM_LEFT_CORNER", "CENTER_GRAVITY"],
    shape_zyx: tuple[int, int, int],
    pixel_size_angstrom: float,
    origin_angstrom: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Scipion's coordinate getters: a stored ``(_x, _y, _z)`` in one of its three conventions.

    ``BOTTOM_LEFT_CORNER``: the voxel index from the tomogram's first voxel (IMOD, Dynamo, RELION 4 pixels);
    ``CENTER_GRAVITY``: that minus ``dims/2``; ``SCIPION``: the stored value. ``origin_angstrom`` is the tomogram's
    Scipion origin, by default ``−dims/2 · pixel``.
    """
    dims = np.array(shape_zyx[::-1], dtype=np.float64)
    origin = -dims / 2 * pixel_size_angstrom if origin_angstrom is None else np.asarray(origin_angstrom)
    stored = np.asarray(stored_xyz_px, dtype=np.float64)
    if convention == "SCIPION":
        return stored.copy()
    corner = stored - origin / pixel_size_angstrom
    if convention == "BOTTOM_LEFT_CORNER":
        return corner
    if convention == "CENTER_GRAVITY":
        return corner - dims / 2
    raise ValueError(f"unknown Scipion coordinate convention {convention!r}")


@dataclass
class ScipionCoordinates:
    """A Scipion SetOfCoordinates3D: the particles plus what Scipion keeps besides them.

    Attributes
    ----------
    particles
        Positions (Å from the tomogram centre), ``R``, ``group`` (= ``_groupId``), ``score``, and class and half
        set when ``_classNumber`` / ``_randomSubset`` are valid for every item.
    translations_px
        ``(n, 3)`` translation column of each 4×4 ``_eulerMatrix``, as stored.
    volume_ids
        ``_volId`` of each coordinate (object id of its tomogram in the tomogram set).
    object_ids, enabled
        Item ``id`` and ``enabled`` flag of each row (disabled items are kept, flagged).
    extra
        Other item attributes, label → (Scipion class name, one value per item), in column order.
    properties
        The ``Properties`` table (``self``, ``_size``, ``_samplingRate``, ``_boxSize``, …), as strings.
    """

    particles: ParticleSet
    translations_px: np.ndarray
    volume_ids: list[int]
    object_ids: list[int] = field(default_factory=list)
    enabled: list[bool] = field(default_factory=list)
    extra: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)
    properties: dict[str, str | None] = field(default_factory=dict)
    column_order: list[str] = field(default_factory=list)


def read_scipion_coordinates(
    path: str | os.PathLike[str],
    *,
    shapes_zyx: Mapping[str, tuple[int, int, int]] | None = None,
    ts_ids_by_volume: Mapping[int, str] | None = None,
) -> ScipionCoordinates:
    """Read a Scipion SetOfCoordinates3D sqlite file.

    Parameters
    ----------
    path
        The ``coordinates*.sqlite`` file.
    shapes_zyx
        Shape of each tomogram (by ts_id) the coordinates were picked on, for odd sizes; even sizes assumed without.
    ts_ids_by_volume
        ``_volId`` → ts_id, for old files without ``_tomoId``.

    Returns
    -------
    ScipionCoordinates

    Raises
    ------
    FormatError
        If the file is not SQLite, not a Scipion set, a set of another kind (``"a SetOfTiltSeries, not a
        SetOfCoordinates3D"``), lacks ``_x/_y/_z``, or holds a bad value.
    """
    p = Path(path)
    con = sq.connect(p)
    try:
        properties, mapping = sq.checked_set(p, con, "SetOfCoordinates3D", ("_x", "_y", "_z"))
        items = sq.items(p, con, mapping)
    finally:
        con.close()
    sampling = sq.number(p, properties.get("_samplingRate"), "the _samplingRate property")
    box = properties.get("_boxSize")
    n = len(items)
    stored = np.array(
        [[sq.number(p, it[a], f"{a} of item {it['id']}") for a in ("_x", "_y", "_z")] for it in items]
    )
    matrices = [
        sq.matrix(p, it["_eulerMatrix._matrix"], (4, 4), f"the _eulerMatrix of item {it['id']}")
        if it.get("_eulerMatrix._matrix") is not None
        else np.eye(4)
        for it in items
    ]
    volume_ids = [int(sq.number(p, it.get("_volId") or 0, f"_volId of item {it['id']}")) for it in items]
    names = []
    for it, vol in zip(items, volume_ids, strict=True):
        name = it.get("_tomoId") or (ts_ids_by_volume or {}).get(vol)
        if name is None:
            raise FormatError(
                p, f"item {it['id']} has no _tomoId and _volId {vol} is not in ts_ids_by_volume"
            )
        names.append(str(name))
    positions = stored.reshape(n, 3).copy()
    for i, name in enumerate(names):
        if shapes_zyx is not None and name in shapes_zyx:
            dims = np.array(shapes_zyx[name][::-1], dtype=np.float64)
            positions[i] += dims / 2 - dims // 2
    positions *= sampling
    fields: dict[str, list[Any]] = {
        "group": [None if it.get("_groupId") is None else str(it["_groupId"]) for it in items],
        "score": [
            None if it.get("_score") is None else sq.number(p, it["_score"], f"_score of item {it['id']}")
            for it in items
        ],
    }
    held = {*_CORE}
    for label, name, valid in (
        ("_classNumber", "class_number", lambda v: isinstance(v, int) and v >= 1),
        ("_randomSubset", "half_set", lambda v: v in (1, 2)),
    ):
        if label in mapping and all(valid(it[label]) for it in items):
            fields[name] = [it[label] for it in items]
            held.add(label)
    try:
        particles = [
            Particle(
                ts_id=names[i],
                position_angstrom=tuple(positions[i].tolist()),
                rotation_matrix=cast(Matrix3, matrices[i][:3, :3].T.tolist()),
                **{k: v[i] for k, v in fields.items()},
            )
            for i in range(n)
        ]
        particle_set = ParticleSet(
            particles=particles, pixel_size_angstrom=sampling, box_size_px=int(float(box)) if box else None
        )
    except (ValidationError, ValueError) as exc:
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise FormatError(p, f"coordinates do not validate ({one_line(message)})") from None
    return ScipionCoordinates(
        particles=particle_set,
        translations_px=np.array([m[:3, 3] for m in matrices]).reshape(n, 3),
        volume_ids=volume_ids,
        object_ids=[int(it["id"]) for it in items],
        enabled=[bool(it["enabled"]) for it in items],
        extra={
            label: (mapping[label][1], [it[label] for it in items]) for label in mapping if label not in held
        },
        properties=properties,
        column_order=list(mapping),
    )


def write_scipion_coordinates(
    coordinates: ScipionCoordinates | ParticleSet,
    path: str | os.PathLike[str],
    *,
    shapes_zyx: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write a Scipion SetOfCoordinates3D sqlite file atomically, in Scipion's own table layout.

    Parameters
    ----------
    coordinates
        As read by :func:`read_scipion_coordinates` (written back with its ids, translations, extra attributes and
        properties), or a bare :class:`~tomoforge.models.ParticleSet` with ``pixel_size_angstrom`` set (volume ids
        1, 2, … by sorted ts_id, no translation, no extra attributes).
    path
        Destination file.
    shapes_zyx
        Tomogram shapes for odd sizes, as for reading.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If the pixel size is unknown, or a group label is not an integer.
    """
    if isinstance(coordinates, ParticleSet):
        ids = {name: i + 1 for i, name in enumerate(sorted(set(coordinates.ts_ids())))}
        coordinates = ScipionCoordinates(
            particles=coordinates,
            translations_px=np.zeros((coordinates.n_particles, 3)),
            volume_ids=[ids[name] for name in coordinates.ts_ids()],
        )
    ps = coordinates.particles
    if ps.pixel_size_angstrom is None:
        raise ValueError(
            "writing Scipion coordinates needs the particle set's pixel_size_angstrom (the sampling)"
        )
    n = ps.n_particles
    sampling = ps.pixel_size_angstrom
    stored = ps.positions_angstrom() / sampling
    for i, name in enumerate(ps.ts_ids()):
        if shapes_zyx is not None and name in shapes_zyx:
            dims = np.array(shapes_zyx[name][::-1], dtype=np.float64)
            stored[i] -= dims / 2 - dims // 2
    labels: list[tuple[str, str]] = list(zip(_CORE, _CORE_CLASSES, strict=True))
    values: dict[str, list[Any]] = {
        "_x": list(stored[:, 0]),
        "_y": list(stored[:, 1]),
        "_z": list(stored[:, 2]),
    }
    values["_volId"] = list(coordinates.volume_ids)
    values["_eulerMatrix"] = [None] * n
    matrices = []
    for i, particle in enumerate(ps.particles):
        m = np.eye(4)
        m[:3, :3] = particle.rotation().T
        m[:3, 3] = coordinates.translations_px[i]
        matrices.append(json.dumps(m.tolist()))
    values["_eulerMatrix._matrix"] = matrices
    try:
        values["_groupId"] = [0 if q.group is None else int(q.group) for q in ps.particles]
    except ValueError:
        raise ValueError("Scipion's _groupId needs integer group labels") from None
    values["_tomoId"] = ps.ts_ids()
    values["_score"] = [0.0 if q.score is None else q.score for q in ps.particles]
    if any(q.class_number is not None for q in ps.particles) and "_classNumber" not in coordinates.extra:
        labels.append(("_classNumber", "Integer"))
        values["_classNumber"] = [q.class_number or 0 for q in ps.particles]
    if any(q.half_set is not None for q in ps.particles) and "_randomSubset" not in coordinates.extra:
        labels.append(("_randomSubset", "Integer"))
        values["_randomSubset"] = [q.half_set or 0 for q in ps.particles]
    for label, (cls, column_values) in coordinates.extra.items():
        if len(column_values) != n:
            raise ValueError(f"extra attribute {label} has {len(column_values)} values for {n} coordinates")
        labels.append((label, cls))
        values[label] = list(column_values)
    rank = {label: i for i, label in enumerate(coordinates.column_order)}
    labels.sort(key=lambda pair: rank.get(pair[0], len(rank)))
    properties = dict(coordinates.properties)
    properties.update(self="SetOfCoordinates3D", _size=str(n), _samplingRate=repr(float(sampling)))
    properties.setdefault("_streamState", "2")
    properties.setdefault("_mapperPath", f"{Path(path)}, ")
    if ps.box_size_px is not None:
        properties["_boxSize"] = str(ps.box_size_px)
    object_ids = coordinates.object_ids or list(range(1, n + 1))
    enabled = coordinates.enabled or [True] * n
    with atomic_output(path) as tmp:
        con = sqlite3.connect(tmp)
        try:
            sq.write_flat_set(con, "Coordinate3D", labels, values, object_ids, enabled, properties)
            con.commit()
        finally:
            con.close()
    return Path(path)
