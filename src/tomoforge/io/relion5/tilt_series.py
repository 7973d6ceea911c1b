"""RELION 5 per-tilt-series STAR files (``tilt_series/<ts>.star``, one ``data_<ts>`` table, one row per tilt).

Alignment (CONVENTIONS.md §6–7, ``tutorial-steps.md`` §18): RELION projects a specimen point ``X`` (pixels from the
tomogram centre) to ``Rz(α)·Ry(θ)·Rx(φ)·X + s`` in the raw tilt image, with ``α = rlnTomoZRot``,
``θ = rlnTomoYTilt``, ``φ = rlnTomoXTilt`` and ``s = rlnTomo{X,Y}ShiftAngst / pixel size``. tomoforge stores the same
alignment as an IMOD-style raw → aligned transform ``a = A·r + d`` with ``A = R(−α)`` and ``d = −A·s`` (in Å), the
refined tilt angle ``θ`` and the x-tilt ``φ``; :func:`relion_alignment_to_transform` and
:func:`transform_to_relion_alignment` convert one way and back.

RELION drops excluded tilts from the table; pass the table written before the exclusion as ``all_tilts`` to get
them back, marked excluded. Columns that the data model does not hold (per-tilt image and power-spectrum files,
motion totals, CTF scale factor, …) are carried over by :func:`write_relion_tilt_series` from a ``template``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from tomoforge.geometry import rotation_2d
from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError
from tomoforge.io.relion5._star import numeric_column, read_star_blocks, require_columns, write_star_blocks
from tomoforge.io.relion5.tomograms import RelionTomogram
from tomoforge.models import Acquisition, CtfParameters, TiltImage, TiltSeries, TiltTransform

__all__ = [
    "read_relion_tilt_series",
    "read_relion_tilt_series_table",
    "relion_alignment_to_transform",
    "transform_to_relion_alignment",
    "write_relion_tilt_series",
]

_ALIGNMENT = ("rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst")
_CTF = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
_NUMERIC = (
    "rlnTomoNominalStageTiltAngle",
    "rlnTomoNominalTiltAxisAngle",
    "rlnMicrographPreExposure",
    *_ALIGNMENT,
    *_CTF,
)
_ANGLE_MATCH_DEG = 1e-4
_ASTIGMATISM_MATCH = 1e-2
_STACK_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali")


def relion_alignment_to_transform(
    z_rot_deg: float, x_shift_angstrom: float, y_shift_angstrom: float
) -> TiltTransform:
    """RELION 5 in-plane alignment of one tilt as a tomoforge raw → aligned transform.

    Parameters
    ----------
    z_rot_deg
        ``rlnTomoZRot`` α: the tilt-axis angle in the raw image (from +Y, counter-clockwise).
    x_shift_angstrom, y_shift_angstrom
        ``rlnTomo{X,Y}ShiftAngst`` s: where the tomogram centre projects in the raw image, in Å from its centre.

    Returns
    -------
    TiltTransform
        ``A = R(−α)``, ``d = −A·s`` (Å), so that ``projection_matrices_from_xf(A, d/px, θ, φ)`` equals
        ``projection_matrices(θ, α, s/px, φ)``.
    """
    a = rotation_2d(-float(z_rot_deg)).numpy()
    d = -a @ np.array([x_shift_angstrom, y_shift_angstrom], dtype=np.float64)
    return TiltTransform(
        a11=float(a[0, 0]),
        a12=float(a[0, 1]),
        a21=float(a[1, 0]),
        a22=float(a[1, 1]),
        dx_angstrom=float(d[0]),
        dy_angstrom=float(d[1]),
    )


def transform_to_relion_alignment(
    transform: TiltTransform, rigid_tolerance: float | None = 1e-5
) -> tuple[float, float, float]:
    """Inverse of :func:`relion_alignment_to_transform`: ``(rlnTomoZRot, rlnTomoXShiftAngst, rlnTomoYShiftAngst)``.

    Parameters
    ----------
    transform
        A raw → aligned transform.
    rigid_tolerance
        Largest allowed ``max |AᵀA − I|``: RELION 5 holds only a rotation per tilt (1e-5 admits IMOD .xf files,
        whose 7 written decimals leave them rigid to about 1.2e-6). ``None`` accepts any ``A`` and
        writes the angle of its nearest rotation; the shift ``s = −A⁻¹·d`` (the tomogram centre's image position)
        is exact either way.

    Returns
    -------
    tuple of float
        ``α = atan2(a12, a11)`` in degrees and ``s`` in Å.

    Raises
    ------
    ValueError
        If the transform is not a rotation within ``rigid_tolerance`` (or is a mirror).
    """
    a = np.array([[transform.a11, transform.a12], [transform.a21, transform.a22]], dtype=np.float64)
    if rigid_tolerance is not None:
        error = float(np.abs(a.T @ a - np.eye(2)).max())
        if error > rigid_tolerance or np.linalg.det(a) < 0:
            raise ValueError(
                f"RELION 5 stores one rotation per tilt, but this transform has scale/skew max |AᵀA − I| = {error:.3g}"
                f" > {rigid_tolerance:g} (pass rigid_tolerance=None to write its nearest rotation)"
            )
    u, _, vt = np.linalg.svd(a)
    nearest = u @ vt
    alpha = math.degrees(math.atan2(nearest[0, 1], nearest[0, 0]))
    s = -np.linalg.solve(a, np.array([transform.dx_angstrom, transform.dy_angstrom]))
    return alpha, float(s[0]), float(s[1])


def read_relion_tilt_series_table(path: str | os.PathLike[str]) -> tuple[str, pd.DataFrame]:
    """Read the raw table of a RELION 5 tilt-series STAR file.

    Returns
    -------
    tuple
        The block name (the tilt-series id, ``""`` for an anonymous block) and the table, rows as in the file.

    Raises
    ------
    FormatError
        If the file has no table, lacks ``rlnTomoNominalStageTiltAngle`` or ``rlnMicrographPreExposure``, has only
        part of the alignment columns, or holds a non-number in a numeric column.
    """
    p = Path(path)
    blocks = read_star_blocks(p)
    tables = [(name, b) for name, b in blocks.items() if isinstance(b, pd.DataFrame)]
    if not tables:
        raise FormatError(p, "no table of tilts (a loop_ block) found")
    name, table = tables[0]
    what = f"the data_{name} table"
    require_columns(p, table, ("rlnTomoNominalStageTiltAngle", "rlnMicrographPreExposure"), what)
    present = [c for c in _ALIGNMENT if c in table.columns]
    if present and len(present) < len(_ALIGNMENT):
        require_columns(p, table, _ALIGNMENT, what + " (which has part of the alignment)")
    for column in _NUMERIC:
        if column in table.columns:
            numeric_column(p, table, column, what)
    angles = table["rlnTomoNominalStageTiltAngle"].to_numpy(dtype=np.float64)
    if np.any(np.abs(angles) > 90.0):
        raise FormatError(p, f"a nominal tilt angle lies outside [-90, 90]: {angles[np.abs(angles) > 90][0]}")
    if np.any(table["rlnMicrographPreExposure"].to_numpy(dtype=np.float64) < 0):
        raise FormatError(p, "a pre-exposure (rlnMicrographPreExposure) is negative")
    return name, table


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("rlnTomoNominalStageTiltAngle", kind="stable").reset_index(drop=True)


def _stack_file(path: Path, table: pd.DataFrame) -> Path:
    if "rlnMicrographName" in table.columns:
        names = [str(n) for n in table["rlnMicrographName"]]
        if all("@" in n for n in names):
            files = {n.split("@", 1)[1] for n in names}
            if len(files) == 1:
                return Path(files.pop())
    return path


def _dose_per_tilt(pre_exposures: np.ndarray) -> float:
    steps = np.diff(np.unique(pre_exposures))
    return float(np.median(steps)) if steps.size else 0.0


def _tilt(row: pd.Series, index: int, order: int, dose: float, excluded: bool, aligned: bool) -> TiltImage:
    fields: dict[str, Any] = {
        "index": index,
        "tilt_angle_deg": float(row["rlnTomoNominalStageTiltAngle"]),
        "acquisition_order": order,
        "prior_dose_e_per_angstrom2": float(row["rlnMicrographPreExposure"]),
        "dose_e_per_angstrom2": dose,
        "excluded": excluded,
    }
    if "rlnMicrographMovieName" in row.index:
        fields["frames_file"] = Path(str(row["rlnMicrographMovieName"]))
    if aligned and not excluded:
        fields["transform"] = relion_alignment_to_transform(
            row["rlnTomoZRot"], row["rlnTomoXShiftAngst"], row["rlnTomoYShiftAngst"]
        )
        fields["refined_tilt_angle_deg"] = float(row["rlnTomoYTilt"])
        fields["x_tilt_angle_deg"] = float(row["rlnTomoXTilt"])
    if all(c in row.index for c in _CTF) and not excluded:
        resolution = float(row["rlnCtfMaxResolution"]) if "rlnCtfMaxResolution" in row.index else 0.0
        fields["ctf"] = CtfParameters(
            defocus_u_angstrom=float(row["rlnDefocusU"]),
            defocus_v_angstrom=float(row["rlnDefocusV"]),
            astigmatism_angle_deg=float(row["rlnDefocusAngle"]),
            phase_shift_deg=float(row["rlnPhaseShift"]) if "rlnPhaseShift" in row.index else 0.0,
            fit_resolution_angstrom=resolution if resolution > 0 and math.isfinite(resolution) else None,
            score=float(row["rlnCtfFigureOfMerit"]) if "rlnCtfFigureOfMerit" in row.index else None,
        )
    return TiltImage(**fields)


def _key(row: pd.Series) -> str | float:
    if "rlnMicrographMovieName" in row.index:
        return str(row["rlnMicrographMovieName"])
    return round(float(row["rlnTomoNominalStageTiltAngle"]), 3)


def read_relion_tilt_series(
    path: str | os.PathLike[str],
    tomogram: RelionTomogram | None = None,
    *,
    acquisition: Acquisition | None = None,
    pixel_size_angstrom: float | None = None,
    all_tilts: str | os.PathLike[str] | None = None,
) -> TiltSeries:
    """Read a RELION 5 tilt-series STAR file as a :class:`~tomoforge.models.TiltSeries`.

    Tilts are sorted by nominal tilt angle (stack order); acquisition orders are the ranks of the pre-exposures and
    the dose per tilt is the median step between them. Alignment columns become ``transform``,
    ``refined_tilt_angle_deg`` and ``x_tilt_angle_deg``; ``rlnDefocusU/V/Angle`` become ``ctf``.

    Parameters
    ----------
    path
        The per-tilt-series STAR file.
    tomogram
        Its row of ``tomograms.star``: gives the microscope values and the tilt-series pixel size.
    acquisition, pixel_size_angstrom
        Override (or, without ``tomogram``, supply) the acquisition and the pixel size of the images.
    all_tilts
        The same tilt series' STAR file from before tilts were excluded (e.g. CtfFind's); tilts missing from
        ``path`` are then included in the result, marked ``excluded``.

    Returns
    -------
    TiltSeries
        ``stack_file`` is the common stack of ``"n@stack"`` image names, else the STAR file itself (RELION 5 keeps
        one file per tilt, in ``rlnMicrographName``).

    Raises
    ------
    FormatError
        For a bad file (see :func:`read_relion_tilt_series_table`).
    ValueError
        If neither ``tomogram`` nor ``acquisition`` and ``pixel_size_angstrom`` are given.
    """
    p = Path(path)
    name, table = read_relion_tilt_series_table(p)
    table = _sorted(table)
    aligned = all(c in table.columns for c in _ALIGNMENT)
    full = _sorted(read_relion_tilt_series_table(all_tilts)[1]) if all_tilts is not None else table
    rows_by_key = {_key(row): row for _, row in table.iterrows()}
    kept = set(rows_by_key)
    unknown = kept - {_key(row) for _, row in full.iterrows()}
    if unknown:
        raise FormatError(p, f"tilt {sorted(map(str, unknown))[0]} is not in all_tilts={all_tilts}")
    pre = full["rlnMicrographPreExposure"].to_numpy(dtype=np.float64)
    orders = np.argsort(np.argsort(pre, kind="stable"), kind="stable")
    dose = _dose_per_tilt(pre)
    tilts = []
    for i, (_, full_row) in enumerate(full.iterrows()):
        key = _key(full_row)
        row = rows_by_key.get(key, full_row)
        try:
            tilts.append(_tilt(row, i, int(orders[i]), dose, key not in kept, aligned))
        except ValidationError as exc:
            raise FormatError(p, f"tilt {i} (stack order) is not valid ({_first_error(exc)})") from None
    if acquisition is None:
        if tomogram is None:
            raise ValueError("read_relion_tilt_series needs tomogram= (a tomograms.star row) or acquisition=")
        axis = (
            float(table["rlnTomoNominalTiltAxisAngle"].iloc[0])
            if "rlnTomoNominalTiltAxisAngle" in table
            else 0.0
        )
        acquisition = Acquisition(
            voltage_kv=tomogram.voltage_kv,
            spherical_aberration_mm=tomogram.spherical_aberration_mm,
            amplitude_contrast=tomogram.amplitude_contrast,
            pixel_size_angstrom=tomogram.original_pixel_size_angstrom,
            tilt_axis_angle_deg=axis,
            dose_per_tilt_e_per_angstrom2=dose,
        )
    if pixel_size_angstrom is None:
        if tomogram is None:
            raise ValueError("read_relion_tilt_series needs tomogram= or pixel_size_angstrom=")
        pixel_size_angstrom = (
            tomogram.tilt_series_pixel_size_angstrom or tomogram.original_pixel_size_angstrom
        )
    ts_id = name or (tomogram.ts_id if tomogram is not None else p.stem)
    try:
        return TiltSeries(
            ts_id=ts_id,
            acquisition=acquisition,
            stack_file=_stack_file(p, table),
            pixel_size_angstrom=pixel_size_angstrom,
            tilts=tilts,
        )
    except ValidationError as exc:
        raise FormatError(p, f"the tilt series is not valid ({_first_error(exc)})") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return one_line(f"{where}: {error['msg']}" if where else error["msg"])


def _template_rows(template: pd.DataFrame, tilts: list[TiltImage]) -> pd.DataFrame:
    template = _sorted(template)
    angles = template["rlnTomoNominalStageTiltAngle"].to_numpy(dtype=np.float64)
    picked = []
    for t in tilts:
        match = np.flatnonzero(np.abs(angles - t.tilt_angle_deg) < _ANGLE_MATCH_DEG)
        if match.size != 1:
            raise ValueError(
                f"the template has {match.size} rows with nominal tilt angle {t.tilt_angle_deg}° (need exactly one)"
            )
        picked.append(int(match[0]))
    return template.iloc[picked].reset_index(drop=True)


def write_relion_tilt_series(
    tilt_series: TiltSeries,
    path: str | os.PathLike[str],
    *,
    template: pd.DataFrame | str | os.PathLike[str] | None = None,
    rigid_tolerance: float | None = 1e-5,
) -> Path:
    """Write the included tilts of a tilt series as a RELION 5 tilt-series STAR file (``data_<ts_id>``), atomically.

    Parameters
    ----------
    tilt_series
        The tilt series. Excluded tilts are left out, as RELION does.
    path
        Destination file.
    template
        A RELION tilt-series table (or its file) whose other columns are carried over, rows matched by nominal tilt
        angle; the model's values replace its copies of the columns the model holds.
    rigid_tolerance
        See :func:`transform_to_relion_alignment`.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If only some included tilts have a transform (or a CTF), or a transform is not rigid.
    """
    tilts = tilt_series.included()
    if not tilts:
        raise ValueError(f"tilt series {tilt_series.ts_id} has no included tilts to write")
    if template is not None and not isinstance(template, pd.DataFrame):
        template = read_relion_tilt_series_table(template)[1]
    out = _template_rows(template, tilts) if template is not None else pd.DataFrame(index=range(len(tilts)))
    if all(t.frames_file is not None for t in tilts):
        out["rlnMicrographMovieName"] = [str(t.frames_file) for t in tilts]
    out["rlnTomoNominalStageTiltAngle"] = [t.tilt_angle_deg for t in tilts]
    if "rlnTomoNominalTiltAxisAngle" not in out.columns:
        out["rlnTomoNominalTiltAxisAngle"] = tilt_series.acquisition.tilt_axis_angle_deg
    out["rlnMicrographPreExposure"] = [t.prior_dose_e_per_angstrom2 for t in tilts]
    stack = tilt_series.stack_file
    if "rlnMicrographName" not in out.columns and stack.suffix.lower() in _STACK_SUFFIXES:
        out["rlnMicrographName"] = [f"{t.index + 1}@{stack}" for t in tilts]
    with_ctf = [t.ctf is not None for t in tilts]
    if any(with_ctf) and not all(with_ctf):
        raise ValueError(
            f"tilt series {tilt_series.ts_id}: only some included tilts have a CTF; RELION needs all"
        )
    if all(with_ctf):
        ctfs = [t.ctf for t in tilts if t.ctf is not None]
        out["rlnDefocusU"] = [c.defocus_u_angstrom for c in ctfs]
        out["rlnDefocusV"] = [c.defocus_v_angstrom for c in ctfs]
        astigmatism = np.array([abs(c.defocus_u_angstrom - c.defocus_v_angstrom) for c in ctfs])
        if "rlnCtfAstigmatism" not in out.columns or not np.allclose(
            pd.to_numeric(out["rlnCtfAstigmatism"], errors="coerce"),
            astigmatism,
            rtol=0,
            atol=_ASTIGMATISM_MATCH,
        ):  # keep RELION's own value (computed in single precision) unless the defocus changed
            out["rlnCtfAstigmatism"] = astigmatism
        out["rlnDefocusAngle"] = [c.astigmatism_angle_deg for c in ctfs]
        if any(c.phase_shift_deg != 0.0 for c in ctfs) or "rlnPhaseShift" in out.columns:
            out["rlnPhaseShift"] = [c.phase_shift_deg for c in ctfs]
        if all(c.score is not None for c in ctfs):
            out["rlnCtfFigureOfMerit"] = [c.score for c in ctfs]
        if all(c.fit_resolution_angstrom is not None for c in ctfs):
            out["rlnCtfMaxResolution"] = [c.fit_resolution_angstrom for c in ctfs]
    with_transform = [t.transform is not None for t in tilts]
    if any(with_transform) and not all(with_transform):
        raise ValueError(
            f"tilt series {tilt_series.ts_id}: only some included tilts are aligned; RELION needs all"
        )
    if all(with_transform):
        alignment = [
            transform_to_relion_alignment(t.transform, rigid_tolerance) for t in tilts if t.transform
        ]
        out["rlnTomoXTilt"] = [t.x_tilt_angle_deg for t in tilts]
        out["rlnTomoYTilt"] = [t.effective_tilt_angle_deg for t in tilts]
        out["rlnTomoZRot"] = [a[0] for a in alignment]
        out["rlnTomoXShiftAngst"] = [a[1] for a in alignment]
        out["rlnTomoYShiftAngst"] = [a[2] for a in alignment]
    return write_star_blocks({tilt_series.ts_id: out}, path)
