"""From :class:`~tomoforge.models.TiltSeriesMovies` to an mdoc laid out as SerialEM writes one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PureWindowsPath

from tomoforge.io.errors import FormatError
from tomoforge.io.mdoc._model import Mdoc, MdocSection, format_serialem_datetime
from tomoforge.io.mdoc._text import write_mdoc
from tomoforge.models import TiltSeriesMovies

__all__ = ["serialem_frames_name", "tilt_series_movies_to_mdoc", "write_tilt_series_mdoc"]


def format_number(value: float) -> str:
    """A number as SerialEM prints it (``%g``: ``0.675``, ``105000``, ``-3``), exact when ``%g`` is not."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def serialem_frames_name(
    ts_id: str, acquisition_order: int, tilt_angle_deg: float, extension: str = ".mrc"
) -> str:
    """The movie name of one tilt in the EMPIAR-10164 style, e.g. ``TS_01_000_0.0.mrc``.

    Parameters
    ----------
    ts_id
        Tilt-series id.
    acquisition_order
        0-based position of the tilt in time (three digits).
    tilt_angle_deg
        Nominal tilt angle, written with one decimal.
    extension
        File ending including the dot.

    Returns
    -------
    str
    """
    return f"{ts_id}_{acquisition_order:03d}_{tilt_angle_deg:.1f}{extension}"


def tilt_series_movies_to_mdoc(
    series: TiltSeriesMovies,
    *,
    frames_folder: str = "X:\\frames",
    image_size_xy: tuple[int, int] | None = None,
    binning: float = 1.0,
    spot_size: int | None = None,
    camera_index: int | None = None,
    section_values: Sequence[Mapping[str, str]] | None = None,
    newline: str = "\r\n",
) -> Mdoc:
    """Build the mdoc SerialEM would have written for these tilt-series movies.

    One ``[ZValue = n]`` section per tilt in acquisition order (as SerialEM stacks them), with ``TiltAngle``,
    ``ExposureDose``, ``PixelSpacing`` (the frames' pixel), ``RotationAngle`` (tilt axis + 90°), a Windows
    ``SubFramePath``, ``NumSubFrames``, ``FrameDosesAndNumber``, ``PriorRecordDose`` (the tilt's prior dose)
    and ``DateTime`` where known; the tilt axis goes into a ``[T = Tilt axis angle = …]`` title. Reading the result back with
    :func:`~tomoforge.io.mdoc.mdoc_to_tilt_series_movies` (with the same Cs and amplitude contrast, which an
    mdoc does not hold) gives the same series when the movies sit next to the mdoc and the prior doses are
    the running sums of the doses.

    Parameters
    ----------
    series
        The tilt-series movies.
    frames_folder
        Windows folder written in front of each movie name in ``SubFramePath``.
    image_size_xy
        ``ImageSize`` of the stack in the header (with ``DataMode = 1``), when known.
    binning
        ``Binning`` of each section and the title.
    spot_size, camera_index
        ``SpotSize`` and ``CameraIndex``, when given.
    section_values
        Further keys per tilt in stack (index) order, e.g. ``{"Defocus": "-2.5"}``; they replace or follow
        the keys above.
    newline
        Line ending (SerialEM on Windows writes ``"\\r\\n"``).

    Returns
    -------
    Mdoc

    Raises
    ------
    ValueError
        If ``section_values`` does not have one entry per tilt, or the recording times contradict the
        acquisition order (the order is read back from ``DateTime``).
    """
    acquisition = series.acquisition
    tilts = sorted(series.tilts, key=lambda t: t.acquisition_order)
    if section_values is not None and len(section_values) != len(series.tilts):
        raise ValueError(f"section_values has {len(section_values)} entries for {len(series.tilts)} tilts")
    with_times = all(t.acquired_at is not None for t in tilts)
    if with_times:
        seconds = [t.acquired_at.replace(microsecond=0) for t in tilts if t.acquired_at is not None]
        if any(later < earlier for earlier, later in zip(seconds, seconds[1:], strict=False)):
            raise ValueError("the tilts' acquired_at times do not increase with their acquisition order")

    header = {"PixelSpacing": format_number(acquisition.pixel_size_angstrom)}
    header["Voltage"] = format_number(acquisition.voltage_kv)
    header["ImageFile"] = f"{series.ts_id}.mrc"
    if image_size_xy is not None:
        header["ImageSize"] = f"{image_size_xy[0]} {image_size_xy[1]}"
        header["DataMode"] = "1"
    mdoc = Mdoc(header=header, newline=newline)

    start = tilts[0].acquired_at if with_times else None
    scope = f"SerialEM: {acquisition.microscope or 'tomoforge'}"
    title = f"{scope:<56}{format_serialem_datetime(start)}    " if start is not None else scope
    mdoc.sections.append(MdocSection("T", title))
    axis_title = f"    Tilt axis angle = {format_number(acquisition.tilt_axis_angle_deg)}, binning = {format_number(binning)}"
    if spot_size is not None:
        axis_title += f"  spot = {spot_size}"
    if camera_index is not None:
        axis_title += f"  camera = {camera_index}"
    mdoc.sections.append(MdocSection("T", axis_title))

    rotation = math.remainder(acquisition.tilt_axis_angle_deg + 90.0, 360.0)
    folder = frames_folder.rstrip("\\/")
    for z_value, tilt in enumerate(tilts):
        values = {"TiltAngle": format_number(tilt.tilt_angle_deg)}
        if acquisition.magnification is not None:
            values["Magnification"] = format_number(acquisition.magnification)
        values["ExposureDose"] = format_number(tilt.dose_e_per_angstrom2)
        values["PixelSpacing"] = format_number(acquisition.pixel_size_angstrom)
        if spot_size is not None:
            values["SpotSize"] = str(spot_size)
        values["RotationAngle"] = format_number(rotation)
        if acquisition.exposure_time_per_tilt_s is not None:
            values["ExposureTime"] = format_number(acquisition.exposure_time_per_tilt_s)
        values["Binning"] = format_number(binning)
        if camera_index is not None:
            values["CameraIndex"] = str(camera_index)
        values["SubFramePath"] = str(PureWindowsPath(folder, tilt.frames_file.name))
        if tilt.frame_count is not None:
            values["NumSubFrames"] = str(tilt.frame_count)
            per_frame = format_number(tilt.dose_e_per_angstrom2 / tilt.frame_count)
            values["FrameDosesAndNumber"] = f"{per_frame} {tilt.frame_count}"
        values["PriorRecordDose"] = format_number(tilt.prior_dose_e_per_angstrom2)
        if with_times and tilt.acquired_at is not None:
            moment = tilt.acquired_at
            values["DateTime"] = format_serialem_datetime(
                moment, four_digit_year=not 2000 <= moment.year < 2100
            )
        if section_values is not None:
            values.update(section_values[tilt.index])
        mdoc.sections.append(MdocSection("ZValue", str(z_value), values))
    return mdoc


def write_tilt_series_mdoc(series: TiltSeriesMovies, path: str | Path, **options: object) -> Path:
    """Write tilt-series movies as a SerialEM-style mdoc, atomically.

    Parameters
    ----------
    series
        The tilt-series movies.
    path
        The destination, conventionally ``<movies folder>/<ts_id>.mrc.mdoc``.
    **options
        Passed to :func:`tilt_series_movies_to_mdoc`.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    FormatError
        If the series cannot be written as an mdoc (see :func:`tilt_series_movies_to_mdoc`).
    """
    try:
        mdoc = tilt_series_movies_to_mdoc(series, **options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise FormatError(path, f"cannot be written as an mdoc: {exc}") from None
    return write_mdoc(mdoc, path)
