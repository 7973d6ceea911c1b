"""Binary IMOD model files (``.mod``, ``.fid``): a minimal reader and writer, and fiducial models as landmarks.

The format (IMOD ``binspec``) is big-endian: the 8-byte id ``IMODV1.2``, a 232-byte model header, then chunks that
each start with a 4-character tag. ``OBJT`` (176 bytes) opens an object, ``CONT`` (16 bytes + 12 per point)
holds one contour of ``(x, y, z)`` float32 points, ``MESH`` (16 bytes + 12 per vertex + 4 per index) a mesh, and
``IEOF`` ends the file. Every other chunk (``SIZE``, ``IMAT``, ``VIEW``, ``MINX``, ``MEPA``, ``SLAN``, ``COST``,
``OBST``, ``MEST`` …) stores its byte count after the tag and is skipped, except ``SIZE`` (per-point sizes of the
preceding contour), which is kept. Meshes and display chunks are not kept, so writing a read model drops them.

Coordinates: model ``x, y`` are in pixels with the lower-left corner of the first pixel at 0 (its centre at 0.5),
``z`` is the section index. tomoforge pixel indices put pixel centres at integers, so a fiducial point converts
as ``x_px = x − 0.5``, ``y_px = y − 0.5``, ``tilt_index = z`` (CONVENTIONS.md §2).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomoforge.io._atomic import write_bytes_atomic
from tomoforge.io._text import read_bytes
from tomoforge.io.errors import FormatError
from tomoforge.models import LandmarkChain, LandmarkModel, LandmarkPoint

__all__ = [
    "OBJECT_OPEN",
    "OBJECT_SCATTERED",
    "ImodContour",
    "ImodModel",
    "ImodObject",
    "imod_model_to_landmarks",
    "landmarks_to_imod_model",
    "read_imod_model",
    "write_imod_model",
]

OBJECT_OPEN = 1 << 3  # IMOD_OBJFLAG_OPEN: contours are open lines
OBJECT_SCATTERED = 1 << 9  # IMOD_OBJFLAG_SCAT: contours are scattered points
MODEL_FLIP_YZ = 1 << 16  # IMODF_FLIPYZ: y and z were swapped when the model was stored

_MAGIC = b"IMODV1.2"
_HEADER = struct.Struct(">128s3iiI4i6f5ifii3f")  # after the magic: 232 bytes
_OBJECT = struct.Struct(">64s64siIii3fi8Bii")  # after the tag: 176 bytes
_CONTOUR = struct.Struct(">iIii")
_MESH = struct.Struct(">iiIhh")
_UNIT_EXPONENTS = {-12, -10, -9, -6, -3, -2, 1, 3}  # pm, Å, nm, µm, mm, cm, m, km (0 = pixels)


@dataclass
class ImodContour:
    """One contour: points ``(x, y, z)`` in model coordinates, with optional per-point sizes."""

    points_xyz: np.ndarray
    flags: int = 0
    time: int = 0
    surface: int = 0
    point_sizes: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImodContour):
            return NotImplemented
        sizes_equal = (self.point_sizes is None and other.point_sizes is None) or (
            self.point_sizes is not None
            and other.point_sizes is not None
            and np.array_equal(self.point_sizes, other.point_sizes)
        )
        return (
            np.array_equal(self.points_xyz, other.points_xyz)
            and (self.flags, self.time, self.surface) == (other.flags, other.time, other.surface)
            and sizes_equal
        )


@dataclass
class ImodObject:
    """One object: a list of contours and how they are drawn."""

    contours: list[ImodContour] = field(default_factory=list)
    name: str = ""
    flags: int = 0
    colour_rgb: tuple[float, float, float] = (0.0, 1.0, 0.0)
    point_radius_px: int = 0
    symbol: int = 1
    symbol_size: int = 3
    line_width_2d: int = 1
    line_width_3d: int = 1
    transparency: int = 0

    @property
    def is_open(self) -> bool:
        """Whether contours are open lines (fiducial models are)."""
        return bool(self.flags & OBJECT_OPEN)

    @property
    def is_scattered(self) -> bool:
        """Whether contours are scattered points."""
        return bool(self.flags & OBJECT_SCATTERED)


@dataclass
class ImodModel:
    """An IMOD model: header values that matter for coordinates, and its objects."""

    objects: list[ImodObject] = field(default_factory=list)
    name: str = "IMOD-NewModel"
    max_xyz: tuple[int, int, int] = (0, 0, 0)
    flags: int = 0
    offset_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pixel_size: float = 1.0
    units: int = 0
    """Unit of ``pixel_size`` as a power of ten of metres (-9 nm, -10 Å), or 0 when in pixels."""

    @property
    def pixel_size_angstrom(self) -> float | None:
        """Pixel size in Å from the header, or None when the header gives none (units of pixels)."""
        if self.units == 0 or self.units not in _UNIT_EXPONENTS or not self.pixel_size > 0.0:
            return None
        return float(self.pixel_size) * 10.0 ** (self.units + 10)


class _Reader:
    def __init__(self, data: bytes, path: str | Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(
                self.path,
                f"is truncated: the {what} at byte {self.pos} needs {n} bytes but {len(self.data) - self.pos} remain",
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def _f32(value: float) -> float:
    """The shortest decimal that a stored float32 stands for (1.068, not 1.0679999589920044)."""
    return float(str(np.float32(value)))


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def read_imod_model(path: str | Path) -> ImodModel:
    """Read a binary IMOD model.

    Parameters
    ----------
    path
        ``.mod`` or ``.fid`` file.

    Returns
    -------
    ImodModel
        Header, objects and contours (points as float64 arrays of the stored float32 values).

    Raises
    ------
    FormatError
        When the file is not an ``IMODV1.2`` model, is truncated, has an unknown chunk, or its object and contour
        counts disagree with its header.
    """
    data = read_bytes(path)
    if not data.startswith(_MAGIC):
        raise FormatError(path, f"does not start with {_MAGIC.decode()}; is this a binary IMOD model?")
    r = _Reader(data, path)
    r.take(len(_MAGIC), "file id")
    h = _HEADER.unpack(r.take(_HEADER.size, "model header"))
    model = ImodModel(
        name=_name(h[0]),
        max_xyz=(h[1], h[2], h[3]),
        flags=h[5],
        offset_xyz=(_f32(h[10]), _f32(h[11]), _f32(h[12])),
        scale_xyz=(_f32(h[13]), _f32(h[14]), _f32(h[15])),
        pixel_size=_f32(h[21]),
        units=h[22],
    )
    n_objects = h[4]
    counts: list[tuple[int, int]] = []  # declared (contours, meshes) per object
    meshes: list[int] = []
    while True:
        tag = r.take(4, "chunk tag")
        if tag == b"IEOF":
            break
        if tag == b"OBJT":
            o = _OBJECT.unpack(r.take(_OBJECT.size, "object"))
            model.objects.append(
                ImodObject(
                    name=_name(o[0]),
                    flags=o[3],
                    colour_rgb=(_f32(o[6]), _f32(o[7]), _f32(o[8])),
                    point_radius_px=o[9],
                    symbol=o[10],
                    symbol_size=o[11],
                    line_width_2d=o[12],
                    line_width_3d=o[13],
                    transparency=o[17],
                )
            )
            counts.append((o[2], o[18]))
            meshes.append(0)
        elif tag == b"CONT":
            if not model.objects:
                raise FormatError(path, f"has a contour before any object (byte {r.pos - 4})")
            n, flags, time, surface = _CONTOUR.unpack(r.take(_CONTOUR.size, "contour header"))
            raw = r.take(12 * n, f"contour of {n} points")
            with np.errstate(invalid="ignore"):  # NaN payloads of a damaged file are kept, not warned about
                points = np.frombuffer(raw, dtype=">f4").reshape(n, 3).astype(np.float64)
            model.objects[-1].contours.append(ImodContour(points, flags, time, surface))
        elif tag == b"MESH":
            if not model.objects:
                raise FormatError(path, f"has a mesh before any object (byte {r.pos - 4})")
            n_vert, n_index, *_ = _MESH.unpack(r.take(_MESH.size, "mesh header"))
            r.take(12 * n_vert + 4 * n_index, f"mesh of {n_vert} vertices")
            meshes[-1] += 1
        else:
            _skip_chunk(r, tag, model)
    _check_counts(model, n_objects, counts, meshes, path)
    return model


def _skip_chunk(r: _Reader, tag: bytes, model: ImodModel) -> None:
    if not all(48 <= c <= 57 or 65 <= c <= 90 for c in tag):
        raise FormatError(r.path, f"has an unknown chunk {tag!r} at byte {r.pos - 4}")
    (size,) = struct.unpack(">i", r.take(4, f"{tag.decode()} chunk size"))
    body = r.take(size, f"{tag.decode()} chunk")
    if tag == b"SIZE" and model.objects and model.objects[-1].contours:
        contour = model.objects[-1].contours[-1]
        if size == 4 * len(contour.points_xyz):
            with np.errstate(invalid="ignore"):
                contour.point_sizes = np.frombuffer(body, dtype=">f4").astype(np.float64)


def _check_counts(
    model: ImodModel,
    n_objects: int,
    counts: list[tuple[int, int]],
    meshes: list[int],
    path: str | Path,
) -> None:
    if len(model.objects) != n_objects:
        raise FormatError(
            path, f"header announces {n_objects} objects but the file holds {len(model.objects)}"
        )
    for i, (obj, (n_contours, n_meshes), n_found) in enumerate(
        zip(model.objects, counts, meshes, strict=True)
    ):
        if len(obj.contours) != n_contours or n_found != n_meshes:
            raise FormatError(
                path,
                f"object {i + 1} announces {n_contours} contours and {n_meshes} meshes "
                f"but holds {len(obj.contours)} and {n_found}",
            )


def write_imod_model(model: ImodModel, path: str | Path) -> Path:
    """Write a binary IMOD model (header, objects, contours with their point sizes, end marker).

    Parameters
    ----------
    model
        The model; meshes and display chunks are not written.
    path
        Destination; written atomically.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    parts = [_MAGIC]
    try:
        parts.append(
            _HEADER.pack(
                model.name.encode("latin-1")[:127],
                *model.max_xyz,
                len(model.objects),
                model.flags,
                1,  # drawmode: draw the model
                1,  # mousemode: model mode
                0,  # black level
                255,  # white level
                *model.offset_xyz,
                *model.scale_xyz,
                0,  # current object
                0,  # current contour
                0,  # current point
                3,  # minimum pixels between points when drawing
                128,  # threshold of the auto-contour tool
                model.pixel_size,
                model.units,
                0,  # checksum, autosave only
                0.0,
                0.0,
                0.0,
            )
        )
        for obj in model.objects:
            parts.append(b"OBJT" + _pack_object(obj))
            for contour in obj.contours:
                parts.append(_pack_contour(contour))
    except (struct.error, UnicodeEncodeError, ValueError) as exc:
        raise FormatError(path, f"model cannot be written: {exc}") from None
    parts.append(b"IEOF")
    return write_bytes_atomic(path, b"".join(parts))


def _pack_object(obj: ImodObject) -> bytes:
    return _OBJECT.pack(
        obj.name.encode("latin-1")[:63],
        bytes(64),
        len(obj.contours),
        obj.flags,
        0,  # axis (unused)
        0,  # drawmode (unused)
        *obj.colour_rgb,
        obj.point_radius_px,
        obj.symbol,
        obj.symbol_size,
        obj.line_width_2d,
        obj.line_width_3d,
        0,  # line style
        0,  # symbol flags
        0,  # padding
        obj.transparency,
        0,  # meshes
        0,  # surfaces
    )


def _pack_contour(contour: ImodContour) -> bytes:
    points = np.asarray(contour.points_xyz, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise ValueError("contour points must be finite")
    out = b"CONT" + _CONTOUR.pack(len(points), contour.flags, contour.time, contour.surface)
    out += points.astype(">f4").tobytes()
    if contour.point_sizes is not None:
        sizes = np.asarray(contour.point_sizes, dtype=">f4").reshape(-1)
        if sizes.size != len(points):
            raise ValueError(f"contour has {len(points)} points but {sizes.size} point sizes")
        out += b"SIZE" + struct.pack(">i", 4 * sizes.size) + sizes.tobytes()
    return out


def imod_model_to_landmarks(
    model: ImodModel,
    *,
    ts_id: str,
    bead_diameter_angstrom: float,
    pixel_size_angstrom: float | None = None,
    n_tilts: int | None = None,
    object_index: int | None = None,
) -> LandmarkModel:
    """Read a fiducial model (one contour per bead, ``z`` = view index) as a :class:`LandmarkModel`.

    Parameters
    ----------
    model
        The fiducial model (beadtrack ``.fid``, tiltalign ``_nogaps.fid``).
    ts_id
        Tilt-series identifier.
    bead_diameter_angstrom
        Gold bead diameter in Å (not stored in the model).
    pixel_size_angstrom
        Pixel size of the images the model was made on; by default from the model header.
    n_tilts
        Number of views; by default the header's z size, or one more than the largest view index.
    object_index
        Use only this object (0-based); by default the contours of all objects, numbered in order.

    Returns
    -------
    LandmarkModel
        One chain per non-empty contour, points at ``x − 0.5, y − 0.5`` (pixel centres at integers).
    """
    if model.flags & MODEL_FLIP_YZ:
        raise ValueError("the model is stored with Y and Z flipped; a fiducial model never is")
    pixel = pixel_size_angstrom if pixel_size_angstrom is not None else model.pixel_size_angstrom
    if pixel is None:
        raise ValueError("the model header has no pixel size; pass pixel_size_angstrom")
    objects = model.objects if object_index is None else [model.objects[object_index]]
    contours = [c for obj in objects for c in obj.contours if len(c.points_xyz)]
    views = [_view_indices(c) for c in contours]
    if n_tilts is None:
        largest = max((int(v.max()) for v in views), default=0)
        n_tilts = max(model.max_xyz[2], largest + 1)
    chains = []
    for bead_id, (contour, view) in enumerate(zip(contours, views, strict=True)):
        points = [
            LandmarkPoint(tilt_index=int(t), x_px=float(p[0]) - 0.5, y_px=float(p[1]) - 0.5)
            for p, t in zip(contour.points_xyz, view, strict=True)
        ]
        chains.append(LandmarkChain(bead_id=bead_id, points=points))
    return LandmarkModel(
        ts_id=ts_id,
        pixel_size_angstrom=pixel,
        n_tilts=n_tilts,
        bead_diameter_angstrom=bead_diameter_angstrom,
        chains=chains,
    )


def _view_indices(contour: ImodContour) -> np.ndarray:
    z = contour.points_xyz[:, 2]
    views = np.rint(z)
    if np.any(np.abs(z - views) > 1e-3) or np.any(views < 0):
        raise ValueError(
            f"contour points lie between views (z = {z[np.abs(z - views) > 1e-3][:3]}); not a fiducial model"
        )
    return views.astype(np.int64)


def landmarks_to_imod_model(landmarks: LandmarkModel, image_size_xy: tuple[int, int]) -> ImodModel:
    """Write a :class:`LandmarkModel` as an IMOD fiducial model (one open contour per bead).

    Parameters
    ----------
    landmarks
        The beads; points become ``(x + 0.5, y + 0.5, tilt_index)``, sorted by view.
    image_size_xy
        ``(nx, ny)`` of the tilt images, stored as the model's size with ``n_tilts`` sections.

    Returns
    -------
    ImodModel
        One open object with the pixel size in nm in its header.
    """
    contours = []
    for chain in landmarks.chains:
        pts = sorted(chain.points, key=lambda p: p.tilt_index)
        xyz = np.array([[p.x_px + 0.5, p.y_px + 0.5, p.tilt_index] for p in pts], dtype=np.float64).reshape(
            -1, 3
        )
        contours.append(ImodContour(points_xyz=xyz))
    radius = max(1, math.ceil(0.5 * landmarks.bead_diameter_px))
    obj = ImodObject(contours=contours, name="fiducials", flags=OBJECT_OPEN, point_radius_px=radius)
    return ImodModel(
        objects=[obj],
        max_xyz=(int(image_size_xy[0]), int(image_size_xy[1]), landmarks.n_tilts),
        pixel_size=landmarks.pixel_size_angstrom / 10.0,
        units=-9,
    )
