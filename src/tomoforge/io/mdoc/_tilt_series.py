"""From a tilt-series mdoc to :class:`~tomoforge.models.TiltSeriesMovies`, with Scipion's import semantics.

Follows ``tomo/convert/mdoc.py`` of scipion-em-tomo (``../shared/docs/tutorial-steps.md`` §0-§1): the tilt-series
id from the file name, acquisition order from ``DateTime``, movie files next to the mdoc, the same priority of
dose sources and of user values over mdoc values. Differences, all deliberate: ``ExposureTime`` (not
``ExposureDose`` again) enters the dose-rate formula, ``DividedBy2 = 0`` does not double the dose, every tilt
needs a dose (not only the total), and the tilts are sorted by tilt angle as the data model requires.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from tomoforge.io.errors import FormatError
from tomoforge.io.mdoc._model import Mdoc, MdocSection
from tomoforge.io.mdoc._text import read_mdoc
from tomoforge.models import Acquisition, TiltImageMovie, TiltSeriesMovies

__all__ = ["MdocOverrides", "mdoc_to_tilt_series_movies", "normalize_ts_id", "read_tilt_series_mdoc"]

_TS_PREFIX = "TS_"


@dataclass(frozen=True)
class MdocOverrides:
    """Values the user gives at import; a value that is set wins over the mdoc's (Scipion's form semantics).

    Attributes
    ----------
    voltage_kv
        Acceleration voltage in kV; else the first acquired section's ``Voltage``, else the header's.
    spherical_aberration_mm, amplitude_contrast
        Not in mdocs; Scipion's form defaults 2.7 mm and 0.1.
    pixel_size_angstrom
        Pixel size of the frames in Å; else ``PixelSpacing`` of the first acquired section, else the header's.
        Note that ``PixelSpacing`` is that of the image SerialEM saved (5.4 Å for the bin-4 stack of
        EMPIAR-10164, whose super-resolution frames are 0.675 Å), so movies usually need this value.
    tilt_axis_angle_deg
        Tilt-axis angle in degrees; else the ``Tilt axis angle = …`` of a ``[T = …]`` title.
    dose_per_tilt_e_per_angstrom2
        Dose of every tilt in e⁻/Å²; else per tilt from ``ExposureDose``, ``FrameDosesAndNumber``,
        ``DoseRate``·``ExposureTime``/pixel², or ``MinMaxMean``/``CountsPerElectron``/pixel² (×2 when
        ``DividedBy2``), the first that is non-zero, with the pixel size in use.
    magnification
        Nominal magnification; else the first acquired section's, else the header's.
    tomo5_axis_convention
        The mdoc was written by Thermo Fisher Tomo 5 (via a converter): its tilt axis becomes ``−axis − 90°``
        (only when the axis comes from the mdoc).
    """

    voltage_kv: float | None = None
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.1
    pixel_size_angstrom: float | None = None
    tilt_axis_angle_deg: float | None = None
    dose_per_tilt_e_per_angstrom2: float | None = None
    magnification: float | None = None
    tomo5_axis_convention: bool = False


def normalize_ts_id(file_name: str | Path) -> str:
    """The tilt-series id Scipion derives from an mdoc file name (``normalizeTSId``).

    Directory and last extension are removed, the rest is cut at its first ``.``, ``TS_`` is prefixed when it
    starts with a digit, ``-`` becomes ``_``, ``.``, ``[`` and ``]`` are dropped and ``__`` becomes ``_``.
    ``TS_01.mrc.mdoc`` → ``TS_01``; ``1-2.mdoc`` → ``TS_1_2``.

    Parameters
    ----------
    file_name
        The mdoc file (path or name).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If nothing is left of the name.
    """
    base = os.path.splitext(Path(file_name).name)[0].split(".")[0]
    if not base:
        raise ValueError(f"no tilt-series id can be made from the file name {Path(file_name).name!r}")
    if base[0].isdigit():
        base = _TS_PREFIX + base
    for old, new in (("-", "_"), (".", ""), ("[", ""), ("]", ""), ("__", "_")):
        base = base.replace(old, new)
    return base


def _list(labels: list[str], limit: int = 4) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _dose_from_section(section: MdocSection, pixel_size_angstrom: float) -> float:
    """Incoming dose of one tilt from the first mdoc source that gives a non-zero value (0 if none does)."""
    exposure_dose = section.exposure_dose_e_per_angstrom2
    if exposure_dose:
        return exposure_dose
    pairs = section.frame_doses_and_numbers
    if pairs:
        total = sum(dose * n for dose, n in pairs)
        if total:
            return total
    dose_rate, exposure_time = section.dose_rate_e_per_pixel_s, section.exposure_time_s
    if dose_rate and exposure_time:
        return dose_rate * exposure_time / (pixel_size_angstrom * pixel_size_angstrom)
    min_max_mean, counts = section.min_max_mean, section.counts_per_electron
    if min_max_mean is not None and counts:
        dose = min_max_mean[2] / counts / (pixel_size_angstrom * pixel_size_angstrom)
        return dose * (2.0 if section.divided_by_2 else 1.0)
    return 0.0


def _first_value(
    override: float | None, first: MdocSection, mdoc: Mdoc, key: str, problems: list[str]
) -> float | None:
    if override is not None:
        return override
    try:
        value = first.number_of(key)
        return value if value is not None else mdoc.header_number(key)
    except FormatError as exc:
        problems.append(exc.problem)
        return None


def _wrap_deg(angle: float) -> float:
    """The same direction as an angle in (−180°, 180°]."""
    wrapped = math.fmod(angle, 360.0)
    if wrapped > 180.0:
        wrapped -= 360.0
    elif wrapped <= -180.0:
        wrapped += 360.0
    return wrapped


def _check_z_values(sections: list[MdocSection], problems: list[str]) -> None:
    """Z values must run 0, 1, 2, … in file order (Scipion's rule)."""
    for expected, section in enumerate(sections):
        try:
            number = section.number
        except FormatError as exc:
            problems.append(exc.problem)
            return
        if number != expected:
            problems.append(
                f"{section.label} is section {expected} of the file; Z values must run 0, 1, 2, …"
            )
            return


def _tilt_angles(sections: list[MdocSection], problems: list[str]) -> list[float]:
    """The ``TiltAngle`` of every section (0 where it is missing or bad, with the problem noted)."""
    angles = []
    for section in sections:
        try:
            angle = section.tilt_angle_deg
        except FormatError as exc:
            problems.append(exc.problem)
            angle = 0.0
        if angle is None:
            problems.append(f"{section.label} has no TiltAngle")
            angle = 0.0
        elif not -90.0 <= angle <= 90.0:
            problems.append(f"{section.label} has a TiltAngle {angle:g} outside [-90, 90]")
        angles.append(angle)
    return angles


def _doses(
    sections: list[MdocSection], override: float | None, pixel_size_angstrom: float, problems: list[str]
) -> list[float]:
    """The incoming dose of every section: the user's value, else the mdoc's; a tilt without dose is a problem."""
    doses: list[float] = []
    for section in sections:
        if override is not None:
            doses.append(override)
            continue
        try:
            doses.append(_dose_from_section(section, pixel_size_angstrom))
        except FormatError as exc:
            problems.append(exc.problem)
            doses.append(math.nan)
    no_dose = [s.label for s, d in zip(sections, doses, strict=True) if not d > 0 and not math.isnan(d)]
    if no_dose:
        what = "no section" if len(no_dose) == len(sections) else _list(no_dose)
        problems.append(
            f"{what} has a positive dose from ExposureDose, FrameDosesAndNumber, DoseRate with ExposureTime "
            "or MinMaxMean with CountsPerElectron (set dose_per_tilt_e_per_angstrom2)"
        )
    return doses


def _acquisition_order(sections: list[MdocSection], problems: list[str]) -> list[int]:
    """Positions of the sections in time (0 first); ZValue order when no section has a DateTime."""
    times = []
    for section in sections:
        try:
            times.append(section.date_time)
        except FormatError as exc:
            problems.append(exc.problem)
            times.append(None)
    missing = [s.label for s, t in zip(sections, times, strict=True) if t is None]
    if len(missing) == len(sections):
        return list(range(len(sections)))
    if missing:
        problems.append(f"{_list(missing)} lack a readable DateTime that the other sections have")
        return list(range(len(sections)))
    by_time = sorted(range(len(sections)), key=lambda i: (times[i], i))
    order = [0] * len(sections)
    for position, i in enumerate(by_time):
        order[i] = position
    return order


def _validation_problem(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


def mdoc_to_tilt_series_movies(
    mdoc: Mdoc,
    path: str | Path | None = None,
    overrides: MdocOverrides | None = None,
    *,
    check_frames_exist: bool = False,
) -> TiltSeriesMovies:
    """Turn a tilt-series mdoc into the imported tilt-series movies.

    Each ``[ZValue = n]`` section is one tilt movie (``n`` must run 0, 1, 2, … in file order). The tilts are
    sorted by tilt angle; ``acquisition_order`` is the position in time by ``DateTime`` (ZValue order when
    the mdoc has no times); the prior dose of a tilt is the sum of the doses of the tilts acquired before it.
    The movie of a tilt is the file named by the last component of ``SubFramePath``, in the mdoc's folder.

    Parameters
    ----------
    mdoc
        The raw model (from :func:`~tomoforge.io.mdoc.read_mdoc`).
    path
        The mdoc file: its name gives the tilt-series id (:func:`normalize_ts_id`), its folder holds the
        movies. Defaults to ``mdoc.source``.
    overrides
        User values that win over the mdoc's (:class:`MdocOverrides`).
    check_frames_exist
        Also require every movie file to exist.

    Returns
    -------
    TiltSeriesMovies

    Raises
    ------
    FormatError
        One sentence naming the file and every problem found: no ``ZValue`` sections, Z values out of order,
        a missing or unreadable ``TiltAngle``/``DateTime``/``SubFramePath``, no voltage, pixel size or tilt
        axis, a tilt without dose, missing movie files, or values the data model refuses.
    """
    if path is None and mdoc.source is None:
        raise ValueError("give the path of the mdoc: it names the tilt series and the folder of its movies")
    source = Path(path) if path is not None else Path(str(mdoc.source))
    options = overrides or MdocOverrides()
    sections = mdoc.z_values
    if not sections:
        raise FormatError(source, "has no [ZValue = …] sections, so it is not a tilt-series mdoc")
    problems: list[str] = []
    _check_z_values(sections, problems)
    angles = _tilt_angles(sections, problems)
    order = _acquisition_order(sections, problems)
    first = sections[order.index(0)]

    voltage = _first_value(options.voltage_kv, first, mdoc, "Voltage", problems)
    if voltage is None:
        problems.append("no Voltage is given (set voltage_kv)")
    magnification = _first_value(options.magnification, first, mdoc, "Magnification", problems)
    pixel_size = _first_value(options.pixel_size_angstrom, first, mdoc, "PixelSpacing", problems)
    if pixel_size is None or pixel_size <= 0:
        problems.append("no positive PixelSpacing is given (set pixel_size_angstrom)")
        pixel_size = None

    tilt_axis = options.tilt_axis_angle_deg
    if tilt_axis is None:
        tilt_axis = mdoc.tilt_axis_angle_deg
        if tilt_axis is None:
            problems.append(
                "no [T = Tilt axis angle = …] title gives the tilt axis (set tilt_axis_angle_deg)"
            )
        elif options.tomo5_axis_convention:
            tilt_axis = -tilt_axis - 90.0
    if tilt_axis is not None:
        if math.isfinite(tilt_axis):
            tilt_axis = _wrap_deg(tilt_axis)
        else:
            problems.append(f"the tilt axis angle {tilt_axis} is not finite")

    doses = _doses(sections, options.dose_per_tilt_e_per_angstrom2, pixel_size or 1.0, problems)
    names: list[str | None] = [s.sub_frame_name for s in sections]
    no_frames = [s.label for s, n in zip(sections, names, strict=True) if n is None]
    if no_frames:
        problems.append(f"{_list(no_frames)} {'has' if len(no_frames) == 1 else 'have'} no SubFramePath")
    folder = source.parent
    if check_frames_exist:
        absent = [n for n in names if n is not None and not (folder / n).is_file()]
        if absent:
            problems.append(f"the movie files {_list(absent, 3)} are missing from {folder}")

    frame_counts: list[int | None] = []
    exposure_times: set[float | None] = set()
    for section in sections:
        try:
            exposure_times.add(section.exposure_time_s)
            count = section.num_sub_frames
            if not count:
                pairs = section.frame_doses_and_numbers
                count = sum(n for _, n in pairs) if pairs else None
        except FormatError as exc:
            problems.append(exc.problem)
            count = None
        frame_counts.append(count if count and count > 0 else None)

    ts_id = ""
    try:
        ts_id = normalize_ts_id(source)
    except ValueError as exc:
        problems.append(str(exc))

    if problems:
        raise FormatError(source, "cannot be imported as a tilt series: " + "; ".join(problems))
    assert voltage is not None and pixel_size is not None and tilt_axis is not None

    exposure_time = exposure_times.pop() if len(exposure_times) == 1 else None
    by_time = sorted(range(len(sections)), key=lambda i: order[i])
    prior = [0.0] * len(sections)
    accumulated = 0.0
    for i in by_time:
        prior[i] = accumulated
        accumulated += doses[i]
    stack = sorted(range(len(sections)), key=lambda i: (angles[i], order[i]))
    try:
        acquisition = Acquisition(
            voltage_kv=voltage,
            spherical_aberration_mm=options.spherical_aberration_mm,
            amplitude_contrast=options.amplitude_contrast,
            pixel_size_angstrom=pixel_size,
            tilt_axis_angle_deg=tilt_axis,
            dose_per_tilt_e_per_angstrom2=sum(doses) / len(doses),
            magnification=magnification or None,
            frames_per_tilt=frame_counts[0] if len(set(frame_counts)) == 1 else None,
            exposure_time_per_tilt_s=exposure_time if exposure_time and exposure_time > 0 else None,
        )
        tilts = [
            TiltImageMovie(
                index=index,
                tilt_angle_deg=angles[i],
                acquisition_order=order[i],
                prior_dose_e_per_angstrom2=prior[i],
                dose_e_per_angstrom2=doses[i],
                acquired_at=sections[i].date_time,
                frames_file=folder / str(names[i]),
                frame_count=frame_counts[i],
            )
            for index, i in enumerate(stack)
        ]
        return TiltSeriesMovies(ts_id=ts_id, acquisition=acquisition, tilts=tilts, mdoc_file=source)
    except ValidationError as exc:
        raise FormatError(
            source, "cannot be imported as a tilt series: " + _validation_problem(exc)
        ) from None


def read_tilt_series_mdoc(
    path: str | Path, overrides: MdocOverrides | None = None, *, check_frames_exist: bool = False
) -> TiltSeriesMovies:
    """Read a SerialEM tilt-series mdoc as the imported tilt-series movies.

    :func:`~tomoforge.io.mdoc.read_mdoc` followed by :func:`mdoc_to_tilt_series_movies`; see there.

    Parameters
    ----------
    path
        The ``.mdoc`` file; the movies are expected in the same folder.
    overrides
        User values that win over the mdoc's.
    check_frames_exist
        Also require every movie file to exist.

    Returns
    -------
    TiltSeriesMovies

    Raises
    ------
    FormatError
        If the file cannot be read or imported.
    """
    return mdoc_to_tilt_series_movies(read_mdoc(path), path, overrides, check_frames_exist=check_frames_exist)
