"""AreTomo alignment (``.aln``) and CTF (``_CTF.txt``) files.

**.aln** (written by AreTomo 1.x, AreTomo2 and AreTomo3 ``CSaveAlignFile``): comment header lines
``# AreTomo Alignment / Priims bprmMn``, ``# RawSize = nx ny nz``, ``# NumPatches = n``, one
``# DarkFrame = frame section tilt`` per excluded (dark) image, ``# AlphaOffset``, ``# BetaOffset``,
``# Thickness``; the global table ``SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT`` (one row per kept image,
sorted by tilt); after ``# Local Alignment`` the patch table ``tilt patch centre_x centre_y shift_x shift_y good``.
AreTomo 1.0-1.2 wrote ``# <n_tilts> <n_patches>`` instead of RawSize/NumPatches. AreTomo3 numbers sections from 1,
older versions from 0 (AreTomo3's own loader converts); :func:`aretomo_view_indices` handles both.

**Meaning of a row** (derived from AreTomo2's ``ImodUtil/CSaveXF.cpp``, which writes the IMOD ``.xf`` that AreTomo
hands to RELION): with ``α = ROT``, ``A = R(−α) = [[cos α, sin α], [−sin α, cos α]]`` and ``d = −A·(TX, TY)``.
In tomoforge's terms (CONVENTIONS.md §6-7) ``ROT`` is the tilt-axis angle α (from the image Y axis,
counter-clockwise), ``(TX, TY)`` is where the tomogram centre projects in the raw image (the shift ``s`` of the
projection model, pixels of the raw stack), and ``TILT`` the tilt angle θ (AlphaOffset already added). AreTomo
rotates about ``N/2``, which is tomoforge's ``N // 2`` for the even sizes of real detectors, so no half-pixel
correction is applied (for odd sizes AreTomo's own centre convention is unverified). ``GMAG``, ``SMEAN``,
``SFIT``, ``SCALE`` and ``BASE`` are always written as 1/0 by AreTomo3 and ignored by its loader; they are kept
but not used.

**_CTF.txt** (AreTomo3; CTFFIND layout): ``# Columns: #1 micrograph number; #2 - defocus 1 [A]; #3 - defocus 2;
#4 - azimuth of astigmatism; #5 - additional phase shift [radian]; #6 - cross correlation; #7 - spacing (in
Angstroms) up to which CTF rings were fit successfully[; #8 - dfHand]``. Defocus 1 lies along the azimuth,
counter-clockwise from X (CTFFIND's convention, = tomoforge's ``defocus_u`` / ``astigmatism_angle_deg``,
CONVENTIONS.md §8); Å and positive for underfocus already; phase shift converted from radians to degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomoforge.io._atomic import write_text_atomic
from tomoforge.io._text import format_fixed, parse_float, parse_int, quote, read_text
from tomoforge.io.errors import FormatError
from tomoforge.models import CtfParameters, CtfTiltEstimate, CtfTiltSeries, TiltTransform

__all__ = [
    "AretomoAlignment",
    "AretomoCtf",
    "AretomoDarkFrame",
    "aretomo_ctf_to_ctf",
    "aretomo_excluded_indices",
    "aretomo_to_imod_xf",
    "aretomo_to_transforms",
    "aretomo_view_indices",
    "read_aretomo_aln",
    "read_aretomo_ctf",
    "write_aretomo_aln",
    "write_aretomo_ctf",
]

_MAGIC = "# AreTomo Alignment"
_GLOBAL_HEADER = (
    "# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT"
)
_LOCAL_HEADER = "# Local Alignment"
# (width, decimals) of the columns as AreTomo3 writes them ("%5d  %9.4f  %9.5f ..."), leading blanks included.
_GLOBAL_FORMAT = [(5, 0), (11, 4), (11, 5), (11, 3), (11, 3), (9, 2), (9, 2), (9, 2), (9, 2), (10, 2)]
_LOCAL_FORMAT = [(4, 0), (4, 0), (9, 2), (10, 2), (10, 2), (10, 2), (6, 1)]


@dataclass(frozen=True)
class AretomoDarkFrame:
    """A ``# DarkFrame`` line: an image AreTomo left out."""

    frame_index: int
    """Position of the image among the tilt-sorted raw images (as written: 0- or 1-based, see the module)."""
    section_index: int
    """Its section in the raw stack, as written."""
    tilt_deg: float


@dataclass
class AretomoAlignment:
    """The content of an ``.aln`` file, numbers as written.

    ``global_table`` is ``(n, 10)`` with the columns ``SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT``;
    ``local_table`` is ``(m, 7)`` with ``tilt patch centre_x centre_y shift_x shift_y good`` (patch centres and
    shifts in pixels relative to the image centre; ``good`` 1.0 for a reliable patch).
    """

    global_table: np.ndarray
    raw_size_xyz: tuple[int, int, int] | None = None
    num_patches: int = 0
    dark_frames: tuple[AretomoDarkFrame, ...] = ()
    alpha_offset_deg: float | None = None
    beta_offset_deg: float | None = None
    thickness_px: int | None = None
    local_table: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    legacy_counts: tuple[int, int] | None = None
    """``(n_tilts, n_patches)`` of the ``# 41 0`` line of AreTomo 1.0-1.2 files, written back when set."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AretomoAlignment):
            return NotImplemented
        scalars = [
            "raw_size_xyz",
            "num_patches",
            "dark_frames",
            "alpha_offset_deg",
            "beta_offset_deg",
            "thickness_px",
            "legacy_counts",
        ]
        return all(getattr(self, s) == getattr(other, s) for s in scalars) and all(
            np.array_equal(getattr(self, t), getattr(other, t)) for t in ("global_table", "local_table")
        )

    @property
    def sections(self) -> np.ndarray:
        """The SEC column as integers, as written."""
        return self.global_table[:, 0].astype(np.int64)

    @property
    def tilt_axis_angles_deg(self) -> np.ndarray:
        """ROT: the tilt-axis angle α of each row in degrees (IMOD sense, CONVENTIONS.md §6)."""
        return self.global_table[:, 1].copy()

    @property
    def shifts_xy_px(self) -> np.ndarray:
        """(TX, TY): image position of the tomogram centre in each raw image, pixels from the image centre."""
        return self.global_table[:, 3:5].copy()

    @property
    def tilt_angles_deg(self) -> np.ndarray:
        """TILT: the tilt angle θ of each row in degrees (AlphaOffset included)."""
        return self.global_table[:, 9].copy()


def read_aretomo_aln(path: str | Path) -> AretomoAlignment:
    """Read an AreTomo ``.aln`` file (AreTomo 1.x, AreTomo2, AreTomo3; with or without local patches).

    Parameters
    ----------
    path
        The ``.aln`` file.

    Returns
    -------
    AretomoAlignment

    Raises
    ------
    FormatError
        When the ``# AreTomo Alignment`` line or the global table is missing, or a line has the wrong number of
        values.
    """
    lines = read_text(path).splitlines()
    if not lines or not lines[0].lstrip().startswith(_MAGIC):
        raise FormatError(path, f"does not start with {_MAGIC!r}; is this an AreTomo .aln file?")
    aln = AretomoAlignment(global_table=np.zeros((0, 10)))
    rows: dict[str, list[list[float]]] = {"global": [], "local": []}
    section: str | None = None
    for lineno, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        where = f"line {lineno}"
        if not stripped:
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith("SEC"):
                section = "global"
            elif body.startswith("Local Alignment"):
                section = "local"
            else:
                _header_line(aln, body, path, where)
            continue
        if section is None:
            raise FormatError(
                path, f"{where}: data line {quote(stripped)} before the '# SEC ROT …' table header"
            )
        tokens = stripped.split()
        expected = 10 if section == "global" else 7
        if len(tokens) != expected:
            raise FormatError(
                path, f"{where} has {len(tokens)} values; a {section} alignment row has {expected}"
            )
        ints = 1 if section == "global" else 2
        values = [float(parse_int(t, path, where)) for t in tokens[:ints]]
        rows[section].append(values + [parse_float(t, path, where) for t in tokens[ints:]])
    if not rows["global"]:
        raise FormatError(path, "has no global alignment table ('# SEC ROT GMAG TX TY …' followed by rows)")
    aln.global_table = np.asarray(rows["global"], dtype=np.float64)
    aln.local_table = np.asarray(rows["local"], dtype=np.float64).reshape(-1, 7)
    return aln


def _header_line(aln: AretomoAlignment, body: str, path: str | Path, where: str) -> None:
    key, sep, value = body.partition("=")
    key, tokens = key.strip(), value.split()

    def numbers(count: int, kinds: str) -> list[float]:
        if len(tokens) != count:
            raise FormatError(path, f"{where}: {key} has {len(tokens)} values, expected {count}")
        return [
            parse_int(t, path, where) if k == "i" else parse_float(t, path, where)
            for t, k in zip(tokens, kinds, strict=True)
        ]

    if not sep:
        words = body.split()
        if len(words) == 2 and all(w.lstrip("-").isdigit() for w in words):
            aln.legacy_counts = (int(words[0]), int(words[1]))
            aln.num_patches = int(words[1])
        return  # other comments are free text
    if key == "RawSize":
        x, y, z = (int(v) for v in numbers(3, "iii"))
        aln.raw_size_xyz = (x, y, z)
    elif key == "NumPatches":
        aln.num_patches = int(numbers(1, "i")[0])
    elif key == "DarkFrame":
        frame, sec, tilt = numbers(3, "iif")
        aln.dark_frames = (*aln.dark_frames, AretomoDarkFrame(int(frame), int(sec), float(tilt)))
    elif key == "AlphaOffset":
        aln.alpha_offset_deg = numbers(1, "f")[0]
    elif key == "BetaOffset":
        aln.beta_offset_deg = numbers(1, "f")[0]
    elif key == "Thickness":
        aln.thickness_px = int(numbers(1, "i")[0])


def _row(values: np.ndarray, layout: list[tuple[int, int]]) -> str:
    return "".join(
        f"{int(v):{w}d}" if d == 0 else format_fixed(float(v), w, d)
        for v, (w, d) in zip(values, layout, strict=True)
    )


def write_aretomo_aln(aln: AretomoAlignment, path: str | Path) -> Path:
    """Write an ``.aln`` file in AreTomo3's layout (legacy ``# n p`` line instead when ``legacy_counts`` is set).

    Parameters
    ----------
    aln
        The alignment, e.g. from :func:`read_aretomo_aln`.
    path
        Destination; written atomically.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    table, local = (
        np.asarray(aln.global_table, dtype=np.float64),
        np.asarray(aln.local_table, dtype=np.float64),
    )
    if table.ndim != 2 or table.shape[1] != 10 or not len(table) or not np.isfinite(table).all():
        raise FormatError(
            path, f"global table to write must be finite with shape (n >= 1, 10), got {table.shape}"
        )
    if local.ndim != 2 or local.shape[1] != 7 or not np.isfinite(local).all():
        raise FormatError(path, f"local table to write must be finite with shape (m, 7), got {local.shape}")
    out = ["# AreTomo Alignment / Priims bprmMn"]
    if aln.legacy_counts is not None:
        out.append(f"# {aln.legacy_counts[0]}  {aln.legacy_counts[1]}")
    if aln.raw_size_xyz is not None:
        out.append("# RawSize = {} {} {}".format(*aln.raw_size_xyz))
    if aln.legacy_counts is None or aln.num_patches != aln.legacy_counts[1]:
        out.append(f"# NumPatches = {aln.num_patches}")
    out += [
        f"# DarkFrame =  {d.frame_index:4d} {d.section_index:4d} {d.tilt_deg:8.2f}" for d in aln.dark_frames
    ]
    for name, value in (("AlphaOffset", aln.alpha_offset_deg), ("BetaOffset", aln.beta_offset_deg)):
        if value is not None:
            out.append(f"# {name} = {format_fixed(value, 8, 2)}")
    if aln.thickness_px is not None:
        out.append(f"# Thickness = {aln.thickness_px}")
    out.append(_GLOBAL_HEADER)
    out += [_row(r, _GLOBAL_FORMAT) for r in table]
    if len(local):
        out.append(_LOCAL_HEADER)
        out += [_row(r, _LOCAL_FORMAT) for r in local]
    return write_text_atomic(path, "\n".join(out) + "\n")


def aretomo_to_imod_xf(aln: AretomoAlignment) -> np.ndarray:
    """The IMOD transforms AreTomo itself writes for this alignment (``-OutImod``; AreTomo2 ``CSaveXF``).

    Returns
    -------
    numpy.ndarray
        ``(n, 2, 3)``, one per table row: ``A = R(−ROT)``, ``d = −A·(TX, TY)`` in pixels. AreTomo writes these
        numbers unchanged although IMOD rotates about ``(N − 1)/2``.
    """
    alpha = np.radians(aln.global_table[:, 1])
    c, s = np.cos(alpha), np.sin(alpha)
    a = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)
    d = -(a @ aln.global_table[:, 3:5, None])
    return np.concatenate([a, d], axis=-1)


def aretomo_to_transforms(aln: AretomoAlignment, pixel_size_angstrom: float) -> list[TiltTransform]:
    """tomoforge transforms (raw → aligned, about ``N // 2``, shifts in Å) of the global table's rows.

    Parameters
    ----------
    aln
        The alignment.
    pixel_size_angstrom
        Pixel size in Å of the stack AreTomo aligned (the raw-size stack).

    Returns
    -------
    list of TiltTransform
        One per row, in table order; ``tilt_axis_angle_deg`` of each equals ROT.
    """
    return [
        TiltTransform.from_matrix(np.vstack([m, [0.0, 0.0, 1.0]]), pixel_size_angstrom)
        for m in aretomo_to_imod_xf(aln)
    ]


def _one_based(aln: AretomoAlignment) -> bool:
    indices = {int(s) for s in aln.sections} | {d.frame_index for d in aln.dark_frames}
    return 0 not in indices


def aretomo_excluded_indices(aln: AretomoAlignment) -> list[int]:
    """0-based positions, in the tilt-sorted raw series, of the images AreTomo excluded (its dark frames)."""
    shift = 1 if _one_based(aln) else 0
    return sorted(d.frame_index - shift for d in aln.dark_frames)


def aretomo_view_indices(aln: AretomoAlignment) -> np.ndarray:
    """0-based position in the tilt-sorted raw series of each global-table row.

    The rows fill, in order, the positions that are not dark frames (AreTomo sorts by tilt and drops dark images).

    Raises
    ------
    ValueError
        When the number of rows plus dark frames does not match the raw series size.
    """
    excluded = set(aretomo_excluded_indices(aln))
    n_raw = aln.raw_size_xyz[2] if aln.raw_size_xyz is not None else len(aln.global_table) + len(excluded)
    kept = [i for i in range(n_raw) if i not in excluded]
    if len(kept) != len(aln.global_table):
        raise ValueError(
            f"{len(aln.global_table)} alignment rows and {len(excluded)} dark frames do not make up {n_raw} images"
        )
    return np.asarray(kept, dtype=np.int64)


@dataclass
class AretomoCtf:
    """The content of an AreTomo ``_CTF.txt`` file: its ``#`` header lines and the numeric table as written."""

    table: np.ndarray
    """``(n, 7)`` or ``(n, 8)``: micrograph number, defocus 1 [Å], defocus 2 [Å], azimuth [°], phase shift [rad],
    cross correlation, fit spacing [Å], and in AreTomo3's 8-column form the defocus handedness ``dfHand``."""
    header: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AretomoCtf):
            return NotImplemented
        return self.header == other.header and np.array_equal(self.table, other.table)


# (width, decimals) per column as AreTomo writes them; the 8-column form writes the phase shift with 4 decimals.
_CTF_FORMAT_7 = [(4, 0), (11, 2), (10, 2), (10, 2), (10, 2), (10, 4), (10, 4)]
_CTF_FORMAT_8 = [(4, 0), (11, 2), (10, 2), (10, 2), (11, 4), (10, 4), (10, 4), (5, 0)]


def read_aretomo_ctf(path: str | Path) -> AretomoCtf:
    """Read an AreTomo CTF text file (7 columns, or 8 with ``dfHand``).

    Raises
    ------
    FormatError
        When rows have a column count other than 7 or 8, differ from each other, or the file has no rows.
    """
    header: list[str] = []
    rows: list[list[float]] = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            header.append(stripped)
            continue
        tokens = stripped.split()
        where = f"line {lineno}"
        if len(tokens) not in (7, 8) or (rows and len(tokens) != len(rows[0])):
            want = len(rows[0]) if rows else "7 or 8"
            raise FormatError(path, f"{where} has {len(tokens)} values; an AreTomo CTF row has {want}")
        values = [float(parse_int(tokens[0], path, where))] + [
            parse_float(t, path, where) for t in tokens[1:]
        ]
        if len(tokens) == 8:
            values[7] = float(parse_int(tokens[7], path, where))
        rows.append(values)
    if not rows:
        raise FormatError(path, "has no CTF rows (micrograph number, defocus 1, defocus 2, azimuth, …)")
    return AretomoCtf(table=np.asarray(rows, dtype=np.float64), header=tuple(header))


def write_aretomo_ctf(ctf: AretomoCtf, path: str | Path) -> Path:
    """Write an AreTomo CTF text file in AreTomo's column layout (header lines as given)."""
    table = np.asarray(ctf.table, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] not in (7, 8) or not len(table) or not np.isfinite(table).all():
        raise FormatError(
            path, f"CTF table to write must be finite with shape (n >= 1, 7 or 8), got {table.shape}"
        )
    layout = _CTF_FORMAT_7 if table.shape[1] == 7 else _CTF_FORMAT_8
    return write_text_atomic(path, "\n".join([*ctf.header, *(_row(r, layout) for r in table)]) + "\n")


def aretomo_ctf_to_ctf(ctf: AretomoCtf, ts_id: str) -> CtfTiltSeries:
    """Per-tilt CTF estimates (tilt index = micrograph number − 1, i.e. the row's image in the stack AreTomo fit).

    Defocus 1/2 become ``defocus_u/v`` (Å), the azimuth the astigmatism angle, the phase shift is converted to
    degrees, the cross correlation becomes ``score`` and a positive fit spacing ``fit_resolution_angstrom``.
    """
    estimates = []
    for row in ctf.table:
        params = CtfParameters(
            defocus_u_angstrom=float(row[1]),
            defocus_v_angstrom=float(row[2]),
            astigmatism_angle_deg=float(row[3]),
            phase_shift_deg=math.degrees(float(row[4])),
            score=float(row[5]),
            fit_resolution_angstrom=float(row[6]) if row[6] > 0 else None,
        )
        index = int(row[0]) - 1
        if index < 0:
            raise ValueError(f"micrograph number {int(row[0])} is not 1-based")
        estimates.append(CtfTiltEstimate(tilt_index=index, parameters=params))
    return CtfTiltSeries(ts_id=ts_id, tilts=estimates)
