"""Per-tilt CTF estimates between IMOD, AreTomo, Warp and RELION 5, through :class:`~tomoforge.models.CtfTiltSeries`.

Defocus is in Å and positive for underfocus, ``defocus_u`` along the astigmatism angle (CONVENTIONS.md §5, §8);
each format's module converts its own units and conventions. Tilt indices are stack positions (the stack sorted
by tilt angle). Writing a RELION table or an IMOD ``.defocus`` also needs the tilt angle of every tilt, which
AreTomo's CTF file does not hold (pass a ``.tlt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomoforge.io.aretomo import aretomo_ctf_to_ctf, read_aretomo_ctf
from tomoforge.io.convert._common import ConversionSummary, check_ts_id, format_of, reading, require_file
from tomoforge.io.convert._relion import (
    TiltRecord,
    read_relion_series,
    relion_tilt_axis_deg,
    write_relion_series,
)
from tomoforge.io.errors import FormatError
from tomoforge.io.imod import (
    ctf_to_imod_defocus,
    imod_defocus_to_ctf,
    read_imod_defocus,
    read_tlt,
    write_imod_defocus,
)
from tomoforge.io.imod.defocus import FLAG_INVERTED_TILTS, ImodDefocusFile
from tomoforge.io.warp import read_warp_xml, warp_ctf_to_ctf
from tomoforge.models import CtfTiltEstimate, CtfTiltSeries

__all__ = ["CTF_READERS", "CTF_WRITERS", "TiltSeriesCtf", "convert_ctf", "read_ctf", "write_ctf"]

CTF_READERS = {
    ".defocus": "IMOD .defocus",
    ".txt": "AreTomo CTF text",
    ".xml": "Warp XML",
    ".star": "RELION 5 tilt-series STAR",
}
"""Extensions :func:`read_ctf` reads, with the names of their formats."""

CTF_WRITERS = {".defocus": "IMOD .defocus", ".star": "RELION 5 tilt-series STAR"}
"""Extensions :func:`write_ctf` writes."""

_ANGLES_HINT = "pass --tilt-angles FILE.tlt (one angle per tilt of the stack)"


@dataclass
class TiltSeriesCtf:
    """CTF estimates of one tilt series with what other formats need besides them.

    Attributes
    ----------
    ctf
        The per-tilt estimates (tilt index = stack position).
    tilt_angles_deg
        Nominal tilt angle of every stack position ``0 … n − 1``, when known.
    prior_dose_e_per_angstrom2
        Dose received before each tilt, when known (RELION, Warp).
    tilt_axis_angle_deg
        Nominal tilt-axis angle, when known (RELION, Warp).
    """

    ctf: CtfTiltSeries
    tilt_angles_deg: tuple[float, ...] | None = None
    prior_dose_e_per_angstrom2: tuple[float, ...] | None = None
    tilt_axis_angle_deg: float | None = None

    def __post_init__(self) -> None:
        if self.tilt_angles_deg is not None:
            self.tilt_angles_deg = tuple(float(a) for a in self.tilt_angles_deg)
            n = len(self.tilt_angles_deg)
            beyond = [t.tilt_index for t in self.ctf.tilts if t.tilt_index >= n]
            if beyond:
                raise ValueError(f"tilt index {beyond[0]} has no tilt angle ({n} angles given)")
            if self.prior_dose_e_per_angstrom2 is not None and len(self.prior_dose_e_per_angstrom2) != n:
                raise ValueError(f"{len(self.prior_dose_e_per_angstrom2)} doses for {n} tilt angles")

    @property
    def ts_id(self) -> str:
        """Tilt-series id."""
        return self.ctf.ts_id

    @property
    def n_tilts(self) -> int:
        """Number of stack positions: the number of tilt angles, else the highest tilt index + 1."""
        if self.tilt_angles_deg is not None:
            return len(self.tilt_angles_deg)
        return max((t.tilt_index for t in self.ctf.tilts), default=-1) + 1

    @property
    def n_usable(self) -> int:
        """Number of tilts with usable (fitted, not excluded) parameters."""
        return sum(1 for t in self.ctf.tilts if t.parameters is not None and not t.excluded)


def read_ctf(
    path: str | Path,
    *,
    tilt_angles_path: str | Path | None = None,
    ts_id: str | None = None,
    all_tilts_path: str | Path | None = None,
) -> TiltSeriesCtf:
    """Read the per-tilt CTF estimates of one tilt series (format chosen by extension).

    Parameters
    ----------
    path
        ``.defocus`` (ctfplotter), ``.txt`` (AreTomo ``_CTF.txt``), ``.xml`` (Warp/M tilt series) or ``.star``
        (a RELION 5 per-tilt-series table with ``rlnDefocusU/V/Angle``).
    tilt_angles_path
        A ``.tlt`` (one angle per stack position) for ``.defocus`` or AreTomo input; the ``.defocus`` file's own
        angles are used without it.
    ts_id
        Tilt-series id; default the RELION block name or the file stem (``_CTF`` removed).
    all_tilts_path
        For RELION input: the table from before tilts were excluded, to keep the excluded tilts.

    Returns
    -------
    TiltSeriesCtf

    Raises
    ------
    FormatError
        For a missing or bad file, an unknown extension, or an option that does not apply.
    """
    p = require_file(path, "CTF")
    suffix = format_of(p, CTF_READERS, "CTF estimates", "read")
    if tilt_angles_path is not None and suffix in (".xml", ".star"):
        raise FormatError(
            p,
            f"is a {CTF_READERS[suffix]} with its own tilt angles; --tilt-angles is for .defocus and .txt input",
        )
    if all_tilts_path is not None and suffix != ".star":
        raise FormatError(p, "is not a RELION STAR file; --all-tilts is for RELION input")
    angles = None
    if tilt_angles_path is not None:
        angles = tuple(float(a) for a in read_tlt(require_file(tilt_angles_path, "tilt-angle")))
    if suffix == ".star":
        return _read_relion(p, all_tilts_path, ts_id)
    if suffix == ".xml":
        warp = read_warp_xml(p)
        with reading(p):
            axes = warp.axis_angles_deg
            return TiltSeriesCtf(
                ctf=warp_ctf_to_ctf(warp, check_ts_id(p, ts_id or p.stem)),
                tilt_angles_deg=tuple((-warp.angles_deg).tolist()),
                prior_dose_e_per_angstrom2=tuple(warp.dose_e_per_angstrom2.tolist()),
                tilt_axis_angle_deg=float(np.median(axes)) if len(axes) else None,
            )
    if suffix == ".txt":
        stem = p.stem[:-4] if p.stem.lower().endswith("_ctf") else p.stem
        with reading(p):
            ctf = aretomo_ctf_to_ctf(read_aretomo_ctf(p), check_ts_id(p, ts_id or stem))
    else:
        defocus = read_imod_defocus(p)
        if defocus.flags & FLAG_INVERTED_TILTS:
            raise FormatError(
                p, f"has flag {FLAG_INVERTED_TILTS} (tilt angles inverted), which is not converted"
            )
        with reading(p):
            ctf = imod_defocus_to_ctf(
                defocus, check_ts_id(p, ts_id or p.stem), len(angles) if angles else None
            )
        if angles is None:
            angles = _defocus_angles(defocus)
    with reading(tilt_angles_path or p):
        return TiltSeriesCtf(ctf=ctf, tilt_angles_deg=angles)


def _defocus_angles(defocus: ImodDefocusFile) -> tuple[float, ...] | None:
    """The tilt angle of every view of a defocus file (interpolated inside view ranges); None if views are missing."""
    angles: dict[int, float] = {}
    for e in defocus.entries:
        span = e.end_view - e.start_view
        for view in range(e.start_view, e.end_view + 1):
            fraction = (view - e.start_view) / span if span else 0.0
            angles.setdefault(view, e.start_tilt_deg + fraction * (e.end_tilt_deg - e.start_tilt_deg))
    if not angles or sorted(angles) != list(range(1, max(angles) + 1)):
        return None
    return tuple(angles[v] for v in range(1, max(angles) + 1))


def _read_relion(path: Path, all_tilts_path: str | Path | None, ts_id: str | None) -> TiltSeriesCtf:
    series = read_relion_series(path, all_tilts_path)
    if all(t.ctf is None for t in series.included()):
        raise FormatError(path, "has no CTF columns (rlnDefocusU, rlnDefocusV, rlnDefocusAngle)")
    estimates = [
        CtfTiltEstimate(tilt_index=t.index, parameters=t.ctf, excluded=t.excluded or t.ctf is None)
        for t in series.tilts
    ]
    with reading(path):
        return TiltSeriesCtf(
            ctf=CtfTiltSeries(ts_id=check_ts_id(path, ts_id or series.ts_id), tilts=estimates),
            tilt_angles_deg=tuple(series.tilt_angles_deg),
            prior_dose_e_per_angstrom2=tuple(t.prior_dose_e_per_angstrom2 for t in series.tilts),
            tilt_axis_angle_deg=relion_tilt_axis_deg(path),
        )


def write_ctf(
    ctf: TiltSeriesCtf,
    path: str | Path,
    *,
    template_path: str | Path | None = None,
    zero_dose: bool = False,
    tilt_axis_angle_deg: float | None = None,
) -> Path:
    """Write CTF estimates as an IMOD ``.defocus`` file or a RELION 5 tilt-series STAR file.

    Parameters
    ----------
    ctf
        The estimates and the tilt angles of the stack (needed by both formats).
    path
        ``.defocus``: ctfplotter's version-3 layout with astigmatism (and phase shift when any is non-zero), one
        line per usable tilt. ``.star``: a RELION 5 table of the tilts with usable estimates (``rlnDefocusU/V``,
        ``rlnDefocusAngle``, …); tilts without one are left out as excluded.
    template_path, zero_dose
        For RELION output: a RELION table of the same tilt series to match rows with and take doses and other
        columns from, or pre-exposures of 0 where the dose is unknown.
    tilt_axis_angle_deg
        For RELION output: the nominal tilt-axis angle, when neither the input nor the template has it.

    Returns
    -------
    pathlib.Path
    """
    p = Path(path)
    suffix = format_of(p, CTF_WRITERS, "CTF estimates", "written")
    angles = ctf.tilt_angles_deg
    if angles is None:
        raise FormatError(p, f"writing CTF estimates needs the tilt angle of every tilt; {_ANGLES_HINT}")
    if suffix == ".defocus":
        with reading(p):
            return write_imod_defocus(ctf_to_imod_defocus(ctf.ctf, list(angles)), p)
    by_index = ctf.ctf.by_index()
    doses = ctf.prior_dose_e_per_angstrom2
    records = []
    for i, angle in enumerate(angles):
        estimate = by_index.get(i)
        usable = estimate is not None and not estimate.excluded and estimate.parameters is not None
        records.append(
            TiltRecord(
                nominal_deg=angle,
                excluded=not usable,
                prior_dose_e_per_angstrom2=None if doses is None else doses[i],
                ctf=estimate.parameters if estimate is not None and usable else None,
            )
        )
    axis = tilt_axis_angle_deg if tilt_axis_angle_deg is not None else ctf.tilt_axis_angle_deg
    return write_relion_series(
        records,
        ctf.ts_id,
        p,
        source="CTF input",
        tilt_axis_angle_deg=axis,
        template_path=template_path,
        zero_dose=zero_dose,
    )


def convert_ctf(
    input_path: str | Path,
    output_path: str | Path,
    *,
    tilt_angles_path: str | Path | None = None,
    ts_id: str | None = None,
    all_tilts_path: str | Path | None = None,
    template_path: str | Path | None = None,
    zero_dose: bool = False,
    tilt_axis_angle_deg: float | None = None,
) -> ConversionSummary:
    """Read CTF estimates (:func:`read_ctf`) and write them in another format (:func:`write_ctf`)."""
    out = Path(output_path)
    target = CTF_WRITERS[format_of(out, CTF_WRITERS, "CTF estimates", "written")]
    src = Path(input_path)
    ctf = read_ctf(src, tilt_angles_path=tilt_angles_path, ts_id=ts_id, all_tilts_path=all_tilts_path)
    written = write_ctf(
        ctf, out, template_path=template_path, zero_dose=zero_dose, tilt_axis_angle_deg=tilt_axis_angle_deg
    )
    unusable = ctf.n_tilts - ctf.n_usable
    return ConversionSummary(
        noun="CTF estimates" if ctf.n_usable != 1 else "CTF estimate",
        count=ctf.n_usable,
        excluded=0,
        source_format=CTF_READERS[src.suffix.lower()],
        target_format=target,
        written=(written,),
        detail=f"of {ctf.ts_id}",
        note=f"; {unusable} tilt{'s' if unusable != 1 else ''} without a usable estimate left out"
        if unusable
        else "",
    )
