"""The raw, lossless model of a SerialEM ``.mdoc`` file (an IMOD "autodoc").

An mdoc is a list of global ``key = value`` lines followed by sections. Each section starts with a bracketed
line ``[Kind = name]`` and holds the ``key = value`` lines below it. SerialEM writes the kinds ``T`` (titles,
usually without values), ``ZValue`` (one image of a stack), ``FrameSet`` (one movie of a frame-saving mdoc) and
``MontSection`` (one montage). The model keeps every section, in file order, with its values as the strings of
the file; typed accessors read the keys SerialEM documents.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PureWindowsPath

from tomoforge.io.errors import FormatError

__all__ = [
    "Mdoc",
    "MdocSection",
    "format_serialem_datetime",
    "parse_serialem_datetime",
]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATETIME = re.compile(
    r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{2}|\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})\s*$",
)
_UNKNOWN = "<mdoc>"


def parse_serialem_datetime(text: str) -> datetime:
    """Parse a SerialEM ``DateTime`` value such as ``"30-Nov-15  15:21:38"`` or ``"08-Oct-2021  07:39:08"``.

    Month names are read in English whatever the locale; two-digit years are 2000-2099.

    Parameters
    ----------
    text
        The value of a ``DateTime`` line.

    Returns
    -------
    datetime.datetime
        A naive datetime (SerialEM records local time without a zone).

    Raises
    ------
    ValueError
        If the text is not in SerialEM's format or names an impossible date.
    """
    match = _DATETIME.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a SerialEM date and time like '30-Nov-15  15:21:38'")
    day, month_name, year, hour, minute, second = match.groups()
    months = [m.lower() for m in _MONTHS]
    if month_name.lower() not in months:
        raise ValueError(f"{text!r} has an unknown month {month_name!r}")
    full_year = int(year) + (2000 if len(year) == 2 else 0)
    return datetime(
        full_year, months.index(month_name.lower()) + 1, int(day), int(hour), int(minute), int(second)
    )


def format_serialem_datetime(moment: datetime, *, four_digit_year: bool = False) -> str:
    """Format a time as SerialEM writes ``DateTime`` values: ``"30-Nov-15  15:21:38"`` (two spaces).

    Parameters
    ----------
    moment
        The time; seconds are truncated, any time zone is ignored.
    four_digit_year
        Write ``2015`` instead of ``15`` (newer SerialEM versions can).

    Returns
    -------
    str
    """
    year = f"{moment.year:04d}" if four_digit_year else f"{moment.year % 100:02d}"
    return (
        f"{moment.day:02d}-{_MONTHS[moment.month - 1]}-{year}  "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


@dataclass(eq=False)
class MdocSection:
    """One bracketed section of an mdoc with its ``key = value`` lines.

    Attributes
    ----------
    kind
        The word before ``=`` in the bracket: ``"ZValue"``, ``"FrameSet"``, ``"MontSection"`` or ``"T"``.
    name
        The text after ``=`` in the bracket, as written (a number, or a title's text).
    values
        The section's keys and their values as written (strings), in file order.
    source
        The file it was read from, for error messages (not part of equality).
    """

    kind: str
    name: str
    values: dict[str, str] = field(default_factory=dict)
    source: Path | None = field(default=None, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MdocSection):
            return NotImplemented
        return (self.kind, self.name, list(self.values.items())) == (
            other.kind,
            other.name,
            list(other.values.items()),
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def label(self) -> str:
        """The section header as SerialEM writes it, e.g. ``"[ZValue = 3]"`` (``"header"`` for the globals)."""
        return f"[{self.kind} = {self.name.strip()}]" if self.kind else "header"

    def _error(self, problem: str) -> FormatError:
        return FormatError(self.source or _UNKNOWN, f"{self.label} {problem}")

    @property
    def number(self) -> int:
        """The section name as an integer (the Z value of a ``ZValue`` section).

        Raises
        ------
        FormatError
            If the name is not an integer.
        """
        try:
            return int(self.name.strip())
        except ValueError:
            raise self._error("does not have an integer number") from None

    def get(self, key: str, default: str | None = None) -> str | None:
        """The raw string of ``key``, or ``default`` when the section has no such key."""
        return self.values.get(key, default)

    def numbers(self, key: str) -> list[float] | None:
        """The whitespace-separated finite numbers of ``key`` (``None`` when absent).

        Raises
        ------
        FormatError
            If any item is not a finite number.
        """
        text = self.values.get(key)
        if text is None:
            return None
        result = []
        for item in text.split():
            try:
                value = float(item)
            except ValueError:
                raise self._error(f"has a non-numeric {key} value {text.strip()!r}") from None
            if not math.isfinite(value):
                raise self._error(f"has a non-finite {key} value {text.strip()!r}")
            result.append(value)
        return result

    def number_of(self, key: str) -> float | None:
        """The single finite number of ``key`` (``None`` when absent).

        Raises
        ------
        FormatError
            If the value is not exactly one finite number.
        """
        items = self.numbers(key)
        if items is None:
            return None
        if len(items) != 1:
            raise self._error(f"should have one number for {key}, got {self.values[key].strip()!r}")
        return items[0]

    def integer_of(self, key: str) -> int | None:
        """The single integer of ``key`` (``None`` when absent).

        Raises
        ------
        FormatError
            If the value is not one whole number.
        """
        value = self.number_of(key)
        if value is None:
            return None
        if value != int(value):
            raise self._error(f"should have a whole number for {key}, got {self.values[key].strip()!r}")
        return int(value)

    # Typed accessors of the keys SerialEM documents (about_formats.htm); None when the key is absent.

    @property
    def tilt_angle_deg(self) -> float | None:
        """``TiltAngle``: stage tilt in degrees."""
        return self.number_of("TiltAngle")

    @property
    def pixel_spacing_angstrom(self) -> float | None:
        """``PixelSpacing``: pixel size of the recorded image in Å (after its binning)."""
        return self.number_of("PixelSpacing")

    @property
    def exposure_dose_e_per_angstrom2(self) -> float | None:
        """``ExposureDose``: dose on the specimen during this exposure in e⁻/Å² (0 when not calibrated)."""
        return self.number_of("ExposureDose")

    @property
    def prior_record_dose_e_per_angstrom2(self) -> float | None:
        """``PriorRecordDose``: dose of earlier Record exposures in e⁻/Å², when SerialEM wrote it."""
        return self.number_of("PriorRecordDose")

    @property
    def exposure_time_s(self) -> float | None:
        """``ExposureTime``: exposure time in seconds."""
        return self.number_of("ExposureTime")

    @property
    def dose_rate_e_per_pixel_s(self) -> float | None:
        """``DoseRate``: dose rate at the camera in electrons per unbinned pixel per second."""
        return self.number_of("DoseRate")

    @property
    def frame_doses_and_numbers(self) -> list[tuple[float, int]] | None:
        """``FrameDosesAndNumber``: pairs (dose per frame in e⁻/Å², number of frames at that dose).

        Raises
        ------
        FormatError
            If the numbers do not come in pairs or a frame count is not a non-negative whole number.
        """
        items = self.numbers("FrameDosesAndNumber")
        if items is None:
            return None
        if not items or len(items) % 2:
            raise self._error(
                f"should have dose and frame-count pairs for FrameDosesAndNumber, "
                f"got {self.values['FrameDosesAndNumber'].strip()!r}"
            )
        pairs = list(zip(items[::2], items[1::2], strict=True))
        if any(n < 0 or n != int(n) for _, n in pairs):
            raise self._error("has a frame count in FrameDosesAndNumber that is not a whole number ≥ 0")
        return [(dose, int(n)) for dose, n in pairs]

    @property
    def min_max_mean(self) -> tuple[float, float, float] | None:
        """``MinMaxMean``: minimum, maximum and mean pixel value of the image (in counts)."""
        items = self.numbers("MinMaxMean")
        if items is None:
            return None
        if len(items) != 3:
            raise self._error(f"should have three numbers for MinMaxMean, got {self.values['MinMaxMean']!r}")
        return items[0], items[1], items[2]

    @property
    def counts_per_electron(self) -> float | None:
        """``CountsPerElectron``: camera counts per primary electron."""
        return self.number_of("CountsPerElectron")

    @property
    def divided_by_2(self) -> bool:
        """``DividedBy2``: whether the image values were divided by 2 to fit the file's data mode."""
        value = self.number_of("DividedBy2")
        return bool(value)

    @property
    def magnification(self) -> float | None:
        """``Magnification``: nominal magnification."""
        return self.number_of("Magnification")

    @property
    def voltage_kv(self) -> float | None:
        """``Voltage``: acceleration voltage in kV (newer SerialEM versions)."""
        return self.number_of("Voltage")

    @property
    def binning(self) -> float | None:
        """``Binning``: camera binning (0.5 for super-resolution on K3 cameras)."""
        return self.number_of("Binning")

    @property
    def spot_size(self) -> int | None:
        """``SpotSize``: condenser spot size."""
        return self.integer_of("SpotSize")

    @property
    def defocus_um(self) -> float | None:
        """``Defocus``: the microscope's defocus reading in µm (its sign convention: negative = underfocus)."""
        return self.number_of("Defocus")

    @property
    def target_defocus_um(self) -> float | None:
        """``TargetDefocus``: the focus target in µm (negative = underfocus)."""
        return self.number_of("TargetDefocus")

    @property
    def rotation_angle_deg(self) -> float | None:
        """``RotationAngle``: rotation of the image relative to the specimen in degrees (not the tilt axis)."""
        return self.number_of("RotationAngle")

    @property
    def num_sub_frames(self) -> int | None:
        """``NumSubFrames``: number of frames saved for this exposure."""
        return self.integer_of("NumSubFrames")

    @property
    def sub_frame_name(self) -> str | None:
        """The file name (last component) of ``SubFramePath``; Windows and POSIX separators both work."""
        path = self.values.get("SubFramePath")
        if path is None or not path.strip():
            return None
        name = PureWindowsPath(path.strip()).name
        return name or None

    @property
    def gain_reference(self) -> str | None:
        """``GainReference``: file name of the gain reference of a frame set, as written."""
        value = self.values.get("GainReference")
        return value.strip() if value is not None and value.strip() else None

    @property
    def frame_ts_start_end_frames(self) -> tuple[int, int] | None:
        """``FrameTSStartEndFrames``: first and last frame of this tilt in a continuous frame tilt series."""
        items = self.numbers("FrameTSStartEndFrames")
        if items is None:
            return None
        if len(items) != 2 or any(n != int(n) for n in items):
            raise self._error("should have two whole numbers for FrameTSStartEndFrames")
        return int(items[0]), int(items[1])

    @property
    def date_time(self) -> datetime | None:
        """``DateTime``: when the exposure was taken.

        Raises
        ------
        FormatError
            If the value is not a SerialEM date and time.
        """
        text = self.values.get("DateTime")
        if text is None:
            return None
        try:
            return parse_serialem_datetime(text)
        except ValueError as exc:
            raise self._error(f"has an unreadable DateTime: {exc}") from None


@dataclass(eq=False)
class Mdoc:
    """A whole mdoc file: global values and every section in file order, values as written.

    ``read_mdoc`` followed by ``write_mdoc`` and ``read_mdoc`` again gives an equal object (equality includes
    the order of keys and sections and the line ending).

    Attributes
    ----------
    header
        Global ``key = value`` lines before the first section, in file order.
    sections
        Every bracketed section, titles (kind ``T``) included, in file order.
    newline
        Line ending of the file (SerialEM on Windows writes ``"\\r\\n"``).
    source
        The file it was read from, for error messages (not part of equality).
    """

    header: dict[str, str] = field(default_factory=dict)
    sections: list[MdocSection] = field(default_factory=list)
    newline: str = "\r\n"
    source: Path | None = field(default=None, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mdoc):
            return NotImplemented
        return (list(self.header.items()), self.sections, self.newline) == (
            list(other.header.items()),
            other.sections,
            other.newline,
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def titles(self) -> list[str]:
        """The texts of the ``[T = ...]`` title lines, in file order, stripped of outer spaces."""
        return [s.name.strip() for s in self.sections if s.kind == "T"]

    def sections_of(self, kind: str) -> list[MdocSection]:
        """The sections of one kind (e.g. ``"ZValue"``), in file order."""
        return [s for s in self.sections if s.kind == kind]

    @property
    def z_values(self) -> list[MdocSection]:
        """The ``[ZValue = n]`` sections (one per image of the stack), in file order."""
        return self.sections_of("ZValue")

    @property
    def frame_sets(self) -> list[MdocSection]:
        """The ``[FrameSet = n]`` sections (one per saved movie), in file order."""
        return self.sections_of("FrameSet")

    @property
    def montage_sections(self) -> list[MdocSection]:
        """The ``[MontSection = n]`` sections (one per montage), in file order."""
        return self.sections_of("MontSection")

    @property
    def tilt_axis_angle_deg(self) -> float | None:
        """The tilt-axis angle of a title line like ``[T = Tilt axis angle = 85.3, binning = 4 ...]``.

        Spaces, case and an optional comma are ignored (``TiltAxisAngle = -91.81`` works too); the first
        title that names it wins. ``None`` when no title does.
        """
        for title in self.titles:
            match = _TILT_AXIS.search(title)
            if match is not None:
                value = float(match.group(1))
                if math.isfinite(value):
                    return value
        return None

    def header_number(self, key: str) -> float | None:
        """A single finite number from the global header (``None`` when absent)."""
        return MdocSection("", "", self.header, self.source).number_of(key)


_TILT_AXIS = re.compile(
    r"tilt\s*axis\s*angle\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)",
    re.IGNORECASE,
)
