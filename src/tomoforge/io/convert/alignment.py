"""Tilt-series alignments between IMOD, AreTomo, Warp and RELION 5, through one data model.

Every input becomes an :class:`Alignment`: per tilt, in stack order, a raw → aligned
:class:`~tomoforge.models.TiltTransform` (IMOD ``.xf`` meaning about tomoforge's centres, shifts in Å), the tilt
angle, the x-tilt and an excluded flag (CONVENTIONS.md §6-7). Each format's own conversion functions do the
convention changes; this module only gathers what they need and says clearly what is missing.

Excluded tilts (AreTomo dark frames, Warp ``UseTilt = False``, RELION tilts missing from the aligned table) stay in
the :class:`Alignment`, marked; IMOD and RELION outputs hold the included tilts only, as the stacks those programs
align do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomoforge.io.aretomo import (
    aretomo_excluded_indices,
    aretomo_to_transforms,
    aretomo_view_indices,
    read_aretomo_aln,
)
from tomoforge.io.convert._alignment_model import Alignment, size_xy
from tomoforge.io.convert._common import (
    ConversionSummary,
    check_ts_id,
    format_of,
    reading,
    require_file,
)
from tomoforge.io.convert._relion import (
    TiltRecord,
    read_relion_series,
    write_relion_series,
)
from tomoforge.io.errors import FormatError
from tomoforge.io.imod import read_tlt, read_xf, transforms_to_xf, write_tlt, write_xf, xf_to_transforms
from tomoforge.io.relion5 import read_tomograms_star
from tomoforge.io.warp import read_warp_xml, warp_projection_parameters, warp_to_transforms
from tomoforge.models import TiltTransform

__all__ = [
    "ALIGNMENT_READERS",
    "ALIGNMENT_WRITERS",
    "Alignment",
    "convert_alignment",
    "read_alignment",
    "write_alignment",
]

ALIGNMENT_READERS = {
    ".xf": "IMOD .xf",
    ".aln": "AreTomo .aln",
    ".xml": "Warp XML",
    ".star": "RELION 5 tilt-series STAR",
}
"""Extensions :func:`read_alignment` reads, with the names of their formats."""

ALIGNMENT_WRITERS = {".xf": "IMOD .xf", ".star": "RELION 5 tilt-series STAR"}
"""Extensions :func:`write_alignment` writes."""

_PIXEL_HINT = "--pixel-size-angstrom"
_SIZE_HINT = "--image-size-px NX,NY (the size of the raw tilt images)"


def read_alignment(
    path: str | Path,
    *,
    pixel_size_angstrom: float | None = None,
    image_size_xy: Sequence[int] | None = None,
    tilt_angles_path: str | Path | None = None,
    ts_id: str | None = None,
    tomograms_path: str | Path | None = None,
    all_tilts_path: str | Path | None = None,
) -> Alignment:
    """Read the alignment of one tilt series from IMOD, AreTomo, Warp or RELION 5 files (chosen by extension).

    The keyword arguments mirror the options of ``tomoforge convert alignment``, which the error messages name.

    Parameters
    ----------
    path
        ``.xf`` (IMOD; the tilt angles from ``tilt_angles_path`` or the ``.tlt`` beside it, the x-tilts from an
        ``.xtilt`` and nominal angles from a ``.rawtlt`` beside it when present), ``.aln`` (AreTomo), ``.xml``
        (Warp/M tilt series) or ``.star`` (a RELION 5 per-tilt-series table with alignment columns).
    pixel_size_angstrom
        Pixel size of the tilt images the IMOD/AreTomo numbers are in (needed to read ``.xf`` and ``.aln``; for
        the others it is the pixel size an IMOD output will use). Defaults: Warp's ``PixelSize``, the
        ``rlnTomoTiltSeriesPixelSize`` of ``tomograms_path``.
    image_size_xy
        ``(nx, ny)`` of the raw tilt images (needed to read ``.xf``; AreTomo's ``RawSize`` and Warp's
        ``ImageDimensionsAngstrom`` give it otherwise).
    tilt_angles_path
        A ``.tlt`` file for an IMOD ``.xf`` (only for ``.xf`` input).
    ts_id
        Tilt-series id; default the RELION block name or the file stem.
    tomograms_path
        A RELION 5 ``tomograms.star`` whose row of this tilt series gives the pixel size.
    all_tilts_path
        For RELION input: the table from before tilts were excluded (e.g. CtfFind's), to keep the excluded tilts.

    Returns
    -------
    Alignment

    Raises
    ------
    FormatError
        For a missing or bad file, an unknown extension, or information the input lacks (naming the option to
        pass).
    """
    p = require_file(path, "alignment")
    suffix = format_of(p, ALIGNMENT_READERS, "an alignment", "read")
    if tilt_angles_path is not None and suffix != ".xf":
        raise FormatError(
            p, f"is an {ALIGNMENT_READERS[suffix]} with its own tilt angles; --tilt-angles is for .xf input"
        )
    if all_tilts_path is not None and suffix != ".star":
        raise FormatError(p, "is not a RELION STAR file; --all-tilts is for RELION input")
    with reading(p):
        size = size_xy(image_size_xy)
    if suffix in (".xf", ".aln"):
        name = check_ts_id(p, ts_id if ts_id is not None else p.stem)
        pixel = _pixel_size(p, pixel_size_angstrom, tomograms_path, name)
        if suffix == ".xf":
            return _read_imod(p, name, tilt_angles_path, pixel, size)
        return _read_aretomo(p, name, pixel, size)
    alignment = _read_relion(p, all_tilts_path) if suffix == ".star" else _read_warp(p, p.stem)
    name = check_ts_id(p, ts_id if ts_id is not None else alignment.ts_id)
    pixel = _pixel_size(p, pixel_size_angstrom or alignment.pixel_size_angstrom, tomograms_path, name)
    with reading(p):
        return alignment.replace(
            ts_id=name, pixel_size_angstrom=pixel, image_size_xy=size or alignment.image_size_xy
        )


def _pixel_size(
    path: Path, explicit: float | None, tomograms_path: str | Path | None, ts_id: str
) -> float | None:
    """The pixel size given, else the tilt-series pixel size of this tilt series' row of ``tomograms.star``."""
    if explicit is not None:
        if not (explicit > 0 and math.isfinite(explicit)):
            raise FormatError(path, f"needs a positive pixel size, but --pixel-size-angstrom is {explicit}")
        return explicit
    if tomograms_path is None:
        return None
    path = require_file(tomograms_path, "RELION tomograms.star")
    row = read_tomograms_star(path).get(ts_id)
    if row is None:
        raise FormatError(
            path, f"has no row for tilt series {ts_id!r}; pass --ts-id or --pixel-size-angstrom"
        )
    return row.tilt_series_pixel_size_angstrom or row.original_pixel_size_angstrom


def _beside(path: Path, suffix: str) -> Path | None:
    candidate = path.with_suffix(suffix)
    return candidate if candidate.is_file() else None


def _angles(path: Path, n: int, source: Path, what: str) -> tuple[float, ...]:
    values = read_tlt(path)
    if len(values) != n:
        raise FormatError(path, f"has {len(values)} {what} but {source.name} has {n} transforms")
    return tuple(float(v) for v in values)


def _read_imod(
    path: Path,
    ts_id: str,
    tilt_angles_path: str | Path | None,
    pixel: float | None,
    size: tuple[int, int] | None,
) -> Alignment:
    xf = read_xf(path)
    n = len(xf)
    if tilt_angles_path is not None:
        tlt: Path | None = require_file(tilt_angles_path, "tilt-angle")
    else:
        tlt = _beside(path, ".tlt")
    if tlt is None:
        raise FormatError(
            path,
            f"an IMOD .xf holds no tilt angles and no {path.stem}.tlt lies beside it; pass --tilt-angles FILE.tlt",
        )
    angles = _angles(tlt, n, path, "tilt angles")
    xtilt = _beside(path, ".xtilt")
    rawtlt = _beside(path, ".rawtlt")
    nominal = tuple(float(v) for v in read_tlt(rawtlt)) if rawtlt is not None else None
    if pixel is None or size is None:
        raise FormatError(
            path, f"IMOD .xf shifts are in pixels about the image centre; {_missing(pixel, size)}"
        )
    with reading(path):
        return Alignment(
            ts_id=ts_id,
            tilt_angles_deg=angles,
            transforms=tuple(xf_to_transforms(xf, pixel, size)),
            x_tilt_angles_deg=_angles(xtilt, n, path, "x-tilt angles") if xtilt is not None else (),
            nominal_tilt_angles_deg=nominal if nominal is not None and len(nominal) == n else None,
            pixel_size_angstrom=pixel,
            image_size_xy=size,
        )


def _missing(pixel: float | None, size: tuple[int, int] | None) -> str:
    return "pass " + " and ".join(
        hint for hint, value in ((_PIXEL_HINT, pixel), (_SIZE_HINT, size)) if value is None
    )


def _read_aretomo(path: Path, stem: str, pixel: float | None, size: tuple[int, int] | None) -> Alignment:
    aln = read_aretomo_aln(path)
    if aln.beta_offset_deg:
        raise FormatError(
            path, f"has BetaOffset = {aln.beta_offset_deg:g}°, whose meaning is not converted (only 0 is)"
        )
    if pixel is None:
        raise FormatError(
            path, f"AreTomo shifts are in pixels; pass {_PIXEL_HINT} (of the stack AreTomo aligned)"
        )
    raw_size = aln.raw_size_xyz[:2] if aln.raw_size_xyz is not None else None
    if raw_size is not None and size is not None and tuple(size) != tuple(raw_size):
        raise FormatError(
            path, f"says RawSize = {raw_size[0]} {raw_size[1]} but --image-size-px gives {size[0]},{size[1]}"
        )
    with reading(path):
        views = aretomo_view_indices(aln)
        rows = aretomo_to_transforms(aln, pixel)
    dark = sorted(aln.dark_frames, key=lambda d: d.frame_index)
    n = len(views) + len(dark)
    angles = [0.0] * n
    transforms: list[TiltTransform | None] = [None] * n
    excluded = [True] * n
    for view, transform, tilt in zip(views, rows, aln.tilt_angles_deg, strict=True):
        angles[view], transforms[view], excluded[view] = float(tilt), transform, False
    for index, frame in zip(aretomo_excluded_indices(aln), dark, strict=True):
        angles[index] = frame.tilt_deg
    return Alignment(
        ts_id=stem,
        tilt_angles_deg=tuple(angles),
        transforms=tuple(transforms),
        excluded=tuple(excluded),
        pixel_size_angstrom=pixel,
        image_size_xy=(raw_size[0], raw_size[1]) if raw_size is not None else size,
    )


def _read_warp(path: Path, stem: str) -> Alignment:
    warp = read_warp_xml(path)
    with reading(path):
        geometry = warp_projection_parameters(warp)
        transforms = warp_to_transforms(warp)
    pixel = warp.pixel_size_angstrom
    size = None
    dims = warp.attributes.get("ImageDimensionsAngstrom", "")
    if pixel is not None and dims:
        try:
            pixels = [float(v) / pixel for v in dims.split(",")]
        except ValueError:
            pixels = []
        if len(pixels) == 2 and all(abs(v - round(v)) < 1e-2 and v >= 1 for v in pixels):
            size = (round(pixels[0]), round(pixels[1]))
    return Alignment(
        ts_id=stem,
        tilt_angles_deg=tuple(geometry.tilt_angles_deg.tolist()),
        transforms=tuple(transforms),
        excluded=tuple(not bool(u) for u in warp.use_tilt),
        x_tilt_angles_deg=(geometry.x_tilt_deg,) * warp.n_tilts,
        nominal_tilt_angles_deg=tuple((-warp.angles_deg).tolist()),
        prior_dose_e_per_angstrom2=tuple(warp.dose_e_per_angstrom2.tolist()),
        pixel_size_angstrom=pixel,
        image_size_xy=size,
    )


def _read_relion(path: Path, all_tilts_path: str | Path | None) -> Alignment:
    series = read_relion_series(path, all_tilts_path)
    if all(t.transform is None for t in series.included()):
        raise FormatError(
            path,
            "has no alignment columns (rlnTomoXTilt, rlnTomoYTilt, rlnTomoZRot, rlnTomo{X,Y}ShiftAngst); "
            "is it the table of an alignment or reconstruction job?",
        )
    tilts = series.tilts
    return Alignment(
        ts_id=series.ts_id,
        tilt_angles_deg=tuple(t.effective_tilt_angle_deg for t in tilts),
        transforms=tuple(t.transform for t in tilts),
        excluded=tuple(t.excluded for t in tilts),
        x_tilt_angles_deg=tuple(t.x_tilt_angle_deg for t in tilts),
        nominal_tilt_angles_deg=tuple(t.tilt_angle_deg for t in tilts),
        prior_dose_e_per_angstrom2=tuple(t.prior_dose_e_per_angstrom2 for t in tilts),
    )


def write_alignment(
    alignment: Alignment,
    path: str | Path,
    *,
    template_path: str | Path | None = None,
    zero_dose: bool = False,
    nearest_rotation: bool = False,
) -> tuple[Path, ...]:
    """Write the included tilts of an alignment as IMOD files or a RELION 5 tilt-series STAR file.

    Parameters
    ----------
    alignment
        The alignment.
    path
        ``.xf``: IMOD transforms, plus ``.tlt`` (tilt angles) beside it, ``.xtilt`` when an x-tilt is not zero (or
        such a file is already there) and ``.rawtlt`` when the nominal angles are known; needs the pixel size and
        the image size. ``.star``: a RELION 5 tilt-series table (``data_<ts_id>``), transforms as
        ``rlnTomoZRot`` and ``rlnTomo{X,Y}ShiftAngst`` (CONVENTIONS.md §7).
    template_path, zero_dose
        For RELION output: see :func:`tomoforge.io.convert._relion.write_relion_series` (a RELION table of the
        same tilt series to match rows with and take doses and other columns from; or pre-exposures of 0).
    nearest_rotation
        For RELION output: write the nearest rotation of a transform with scale or skew instead of refusing it.

    Returns
    -------
    tuple of pathlib.Path
        The files written, the main one first.
    """
    p = Path(path)
    suffix = format_of(p, ALIGNMENT_WRITERS, "an alignment", "written")
    if suffix == ".xf":
        return _write_imod(alignment, p)
    included = alignment.included_indices()
    axes = [t.tilt_axis_angle_deg for i in included if (t := alignment.transforms[i]) is not None]
    nominal = alignment.nominal_tilt_angles_deg or alignment.tilt_angles_deg
    doses = alignment.prior_dose_e_per_angstrom2
    records = [
        TiltRecord(
            nominal_deg=nominal[i],
            excluded=alignment.excluded[i],
            prior_dose_e_per_angstrom2=None if doses is None else doses[i],
            transform=alignment.transforms[i],
            refined_deg=alignment.tilt_angles_deg[i],
            x_tilt_deg=alignment.x_tilt_angles_deg[i],
        )
        for i in range(alignment.n_tilts)
    ]
    written = write_relion_series(
        records,
        alignment.ts_id,
        p,
        source="alignment",
        pixel_size_angstrom=alignment.pixel_size_angstrom,
        tilt_axis_angle_deg=_circular_median(axes) if axes else None,
        template_path=template_path,
        zero_dose=zero_dose,
        nearest_rotation=nearest_rotation,
    )
    return (written,)


def _circular_median(angles_deg: list[float]) -> float:
    """The median of angles near each other, taken after unwrapping them around their circular mean."""
    radians = np.radians(angles_deg)
    mean = math.atan2(float(np.sin(radians).mean()), float(np.cos(radians).mean()))
    unwrapped = mean + np.angle(np.exp(1j * (radians - mean)))
    value = math.degrees(float(np.median(unwrapped)))
    return (value + 180.0) % 360.0 - 180.0


def _write_imod(alignment: Alignment, path: Path) -> tuple[Path, ...]:
    pixel, size = alignment.pixel_size_angstrom, alignment.image_size_xy
    if pixel is None or size is None:
        raise FormatError(
            path,
            f"IMOD .xf shifts are in pixels about the image centre, so writing them needs the sizes; "
            f"{_missing(pixel, size)}",
        )
    included = alignment.included_indices()
    transforms = [t for i in included if (t := alignment.transforms[i]) is not None]
    with reading(path):
        xf = transforms_to_xf(transforms, pixel, size)
    written = [
        write_xf(xf, path),
        write_tlt([alignment.tilt_angles_deg[i] for i in included], path.with_suffix(".tlt")),
    ]
    x_tilts = [alignment.x_tilt_angles_deg[i] for i in included]
    xtilt = path.with_suffix(".xtilt")
    if any(x != 0.0 for x in x_tilts) or xtilt.exists():
        written.append(write_tlt(x_tilts, xtilt))
    if alignment.nominal_tilt_angles_deg is not None:
        nominal = [alignment.nominal_tilt_angles_deg[i] for i in included]
        written.append(write_tlt(nominal, path.with_suffix(".rawtlt")))
    return tuple(written)


def convert_alignment(
    input_path: str | Path,
    output_path: str | Path,
    *,
    pixel_size_angstrom: float | None = None,
    image_size_xy: Sequence[int] | None = None,
    tilt_angles_path: str | Path | None = None,
    ts_id: str | None = None,
    tomograms_path: str | Path | None = None,
    all_tilts_path: str | Path | None = None,
    template_path: str | Path | None = None,
    zero_dose: bool = False,
    nearest_rotation: bool = False,
) -> ConversionSummary:
    """Read an alignment (:func:`read_alignment`) and write it in another format (:func:`write_alignment`).

    The output format is checked before anything is read. Returns what was done, for a one-line report.
    """
    out = Path(output_path)
    target = ALIGNMENT_WRITERS[format_of(out, ALIGNMENT_WRITERS, "an alignment", "written")]
    src = Path(input_path)
    alignment = read_alignment(
        src,
        pixel_size_angstrom=pixel_size_angstrom,
        image_size_xy=image_size_xy,
        tilt_angles_path=tilt_angles_path,
        ts_id=ts_id,
        tomograms_path=tomograms_path,
        all_tilts_path=all_tilts_path,
    )
    written = write_alignment(
        alignment, out, template_path=template_path, zero_dose=zero_dose, nearest_rotation=nearest_rotation
    )
    left_out = "; excluded tilts are left out, as in IMOD and RELION stacks" if alignment.n_excluded else ""
    return ConversionSummary(
        noun="tilts",
        count=alignment.n_tilts,
        excluded=alignment.n_excluded,
        source_format=ALIGNMENT_READERS[src.suffix.lower()],
        target_format=target,
        written=written,
        detail=f"of {alignment.ts_id}",
        note=left_out,
    )
