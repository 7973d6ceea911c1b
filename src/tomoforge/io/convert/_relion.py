"""RELION 5 per-tilt-series STAR files for the converters.

Reading goes through :func:`~tomoforge.io.relion5.read_relion_tilt_series`; writing builds the
:class:`~tomoforge.models.TiltSeries` that :func:`~tomoforge.io.relion5.write_relion_tilt_series` takes from what the
other format holds. RELION needs per tilt a nominal tilt angle and the dose received before it
(``rlnMicrographPreExposure``), and per series a nominal tilt-axis angle; what the input lacks comes from a
``template`` (a RELION table of the same tilt series, e.g. CtfFind's, whose other columns are carried over too) or,
for the dose, from an explicit ``zero_dose``. The microscope values of the :class:`~tomoforge.models.Acquisition`
that the models require are not written to this file; placeholders stand in for them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tomoforge.io.convert._common import reading, require_file
from tomoforge.io.errors import FormatError
from tomoforge.io.relion5 import (
    read_relion_tilt_series,
    read_relion_tilt_series_table,
    write_relion_tilt_series,
)
from tomoforge.models import Acquisition, CtfParameters, TiltImage, TiltSeries, TiltTransform

__all__ = [
    "RIGID_TOLERANCE",
    "TiltRecord",
    "read_relion_series",
    "relion_tilt_axis_deg",
    "write_relion_series",
]

RIGID_TOLERANCE = 1e-5
"""Largest ``max |AᵀA − I|`` written to RELION as a rotation without ``nearest_rotation``: IMOD writes the matrix
with 7 decimals, which alone makes rigid alignments deviate by about 1.2e-6."""

_AXIS_COLUMN = "rlnTomoNominalTiltAxisAngle"


def _placeholder_acquisition(pixel_size_angstrom: float, tilt_axis_deg: float, dose: float) -> Acquisition:
    """The Acquisition the models require; only the tilt-axis angle reaches a RELION tilt-series file."""
    return Acquisition(
        voltage_kv=300.0,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.1,
        pixel_size_angstrom=pixel_size_angstrom,
        tilt_axis_angle_deg=tilt_axis_deg,
        dose_per_tilt_e_per_angstrom2=dose,
    )


def read_relion_series(path: Path, all_tilts_path: str | Path | None) -> TiltSeries:
    """Read a RELION 5 tilt-series STAR file (tilts sorted by nominal angle; ``all_tilts`` adds excluded ones)."""
    all_tilts = require_file(all_tilts_path, "RELION STAR") if all_tilts_path is not None else None
    with reading(path):
        return read_relion_tilt_series(
            path,
            acquisition=_placeholder_acquisition(1.0, 0.0, 0.0),
            pixel_size_angstrom=1.0,
            all_tilts=all_tilts,
        )


def relion_tilt_axis_deg(path: Path) -> float | None:
    """The ``rlnTomoNominalTiltAxisAngle`` of a RELION tilt-series file (its first row), if the column is there."""
    table = read_relion_tilt_series_table(path)[1]
    return float(table[_AXIS_COLUMN].iloc[0]) if _AXIS_COLUMN in table.columns else None


@dataclass(frozen=True)
class TiltRecord:
    """What a converter knows about one tilt, before it becomes a :class:`~tomoforge.models.TiltImage`."""

    nominal_deg: float
    """Nominal tilt angle (the refined one where no nominal is known), used to match template rows."""
    excluded: bool = False
    prior_dose_e_per_angstrom2: float | None = None
    transform: TiltTransform | None = None
    refined_deg: float | None = None
    x_tilt_deg: float = 0.0
    ctf: CtfParameters | None = None


def _apply_template(
    records: list[TiltRecord], template: pd.DataFrame, template_path: Path
) -> list[TiltRecord]:
    """Take the nominal angle (and the dose where missing) of each tilt from the template row nearest to it.

    A tilt matches a row when their angles differ by less than half the smallest step between the template's
    angles, so no two rows can claim one tilt.
    """
    angles = template["rlnTomoNominalStageTiltAngle"].to_numpy(dtype=np.float64)
    doses = template["rlnMicrographPreExposure"].to_numpy(dtype=np.float64)
    steps = np.diff(np.sort(angles))
    tolerance = 0.5 * float(steps.min()) if steps.size else 5.0
    out: list[TiltRecord] = []
    used: dict[int, float] = {}
    for record in records:
        j = int(np.argmin(np.abs(angles - record.nominal_deg)))
        if not abs(angles[j] - record.nominal_deg) < tolerance:
            if record.excluded:
                out.append(record)
                continue
            raise FormatError(
                template_path,
                f"has no row within {tolerance:.3g}° of the tilt at {record.nominal_deg:.2f}°; "
                "is it a table of the same tilt series?",
            )
        if j in used:
            raise FormatError(
                template_path,
                f"its row at {angles[j]:.2f}° is the nearest to two tilts ({used[j]:.2f}° and "
                f"{record.nominal_deg:.2f}°)",
            )
        used[j] = record.nominal_deg
        dose = record.prior_dose_e_per_angstrom2
        out.append(
            replace(
                record,
                nominal_deg=float(angles[j]),
                prior_dose_e_per_angstrom2=float(doses[j]) if dose is None else dose,
            )
        )
    return out


def _check_rigid(records: list[TiltRecord], path: Path, source: str) -> None:
    for i, record in enumerate(records):
        t = record.transform
        if t is None or record.excluded:
            continue
        a = np.array([[t.a11, t.a12], [t.a21, t.a22]])
        error = float(np.abs(a.T @ a - np.eye(2)).max())
        if error > RIGID_TOLERANCE or t.determinant < 0:
            raise FormatError(
                path,
                f"RELION 5 holds one rotation per tilt, but tilt {i} of the {source} has scale, skew or a mirror "
                f"(max |AᵀA − I| = {error:.2g}); pass --nearest-rotation to write its nearest rotation",
            )


def write_relion_series(
    records: list[TiltRecord],
    ts_id: str,
    path: Path,
    *,
    source: str,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
    template_path: str | Path | None = None,
    zero_dose: bool = False,
    nearest_rotation: bool = False,
) -> Path:
    """Write the included tilts of ``records`` as a RELION 5 tilt-series STAR file.

    Parameters
    ----------
    records
        One per tilt, any order (written sorted by nominal angle, excluded tilts left out as RELION does).
    ts_id
        Tilt-series id, the name of the ``data_`` block.
    path
        Destination ``.star`` file.
    source
        Name of the input format, for error messages.
    pixel_size_angstrom
        Pixel size of the tilt series, if known (not written; the models want one).
    tilt_axis_angle_deg
        Nominal tilt-axis angle for ``rlnTomoNominalTiltAxisAngle`` (the template's column wins when it has one).
    template_path
        A RELION tilt-series STAR file of the same tilt series whose rows are matched by tilt angle: it gives the
        nominal angles, the doses the input lacks and every column the data model does not hold.
    zero_dose
        Write a pre-exposure of 0 for tilts whose dose is unknown (RELION then applies no dose weighting).
    nearest_rotation
        Write the nearest rotation of transforms with scale or skew instead of refusing them.

    Returns
    -------
    pathlib.Path
    """
    template = None
    if template_path is not None:
        template_file = require_file(template_path, "RELION STAR")
        template = read_relion_tilt_series_table(template_file)[1]
        records = _apply_template(records, template, template_file)
    unknown_dose = [r for r in records if r.prior_dose_e_per_angstrom2 is None and not r.excluded]
    if unknown_dose and not zero_dose:
        raise FormatError(
            path,
            f"the {source} holds no electron dose per tilt, which RELION needs (rlnMicrographPreExposure); "
            "pass --template with a RELION table of this tilt series (e.g. CtfFind's) or --zero-dose",
        )
    has_axis = template is not None and _AXIS_COLUMN in template.columns
    if tilt_axis_angle_deg is None and not has_axis:
        raise FormatError(
            path,
            f"the {source} does not give the nominal tilt-axis angle RELION needs (rlnTomoNominalTiltAxisAngle); "
            "pass --tilt-axis-angle-deg or --template",
        )
    if not nearest_rotation:
        _check_rigid(records, path, source)
    records = sorted(records, key=lambda r: r.nominal_deg)
    doses = np.array([r.prior_dose_e_per_angstrom2 or 0.0 for r in records])
    orders = np.argsort(np.argsort(doses, kind="stable"), kind="stable")
    steps = np.diff(np.unique(doses))
    dose_step = float(np.median(steps)) if steps.size else 0.0
    with reading(path):
        tilts = [
            TiltImage(
                index=i,
                tilt_angle_deg=r.nominal_deg,
                acquisition_order=int(orders[i]),
                prior_dose_e_per_angstrom2=float(doses[i]),
                dose_e_per_angstrom2=dose_step,
                excluded=r.excluded,
                transform=None if r.excluded else r.transform,
                refined_tilt_angle_deg=r.refined_deg,
                x_tilt_angle_deg=r.x_tilt_deg,
                ctf=None if r.excluded else r.ctf,
            )
            for i, r in enumerate(records)
        ]
        pixel = pixel_size_angstrom or 1.0
        series = TiltSeries(
            ts_id=ts_id,
            acquisition=_placeholder_acquisition(pixel, tilt_axis_angle_deg or 0.0, dose_step),
            stack_file=path,
            pixel_size_angstrom=pixel,
            tilts=tilts,
        )
        return write_relion_tilt_series(series, path, template=template, rigid_tolerance=None)
