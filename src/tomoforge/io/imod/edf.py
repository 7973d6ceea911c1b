"""etomo ``.edf`` dataset files (Java properties, ``key=value`` per line) and the few values tomoforge uses.

The file records how a dataset was set up in etomo: ``Setup.PixelSize`` (nm, of the raw stack),
``Setup.ImageRotationA`` (the tilt-axis angle of axis A, in IMOD's sense: from the image Y axis,
counter-clockwise, CONVENTIONS.md §6), ``Setup.AxisA.ExcludeProjections`` (views left out, 1-based list such as
``1-3,40``) and ``Setup.FiducialDiameter`` (nm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tomoforge.io._text import parse_float, quote, read_text
from tomoforge.io.errors import FormatError

__all__ = ["EtomoDataset", "etomo_dataset", "parse_view_list", "read_etomo_edf"]


@dataclass(frozen=True)
class EtomoDataset:
    """The values of an etomo dataset that matter outside IMOD (``None`` where the file leaves them empty)."""

    dataset_name: str | None
    pixel_size_angstrom: float | None
    tilt_axis_angle_deg: float | None
    excluded_views: tuple[int, ...]
    """0-based indices of the views excluded on axis A."""
    fiducial_diameter_nm: float | None
    binning: float | None


def read_etomo_edf(path: str | Path) -> dict[str, str]:
    """Read an etomo ``.edf`` file into a dict of its ``key=value`` entries (values as written).

    Parameters
    ----------
    path
        The ``.edf`` file; ``#`` lines are comments.

    Returns
    -------
    dict of str to str

    Raises
    ------
    FormatError
        When a line is not ``key=value`` or no ``Setup.`` entry is present.
    """
    values: dict[str, str] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")):
            continue
        key, sep, value = stripped.partition("=")
        if not sep or not key.strip():
            raise FormatError(path, f"line {lineno}: {quote(stripped)} is not a key=value entry")
        values[key.strip()] = value.strip()
    if not any(k.startswith("Setup.") for k in values):
        raise FormatError(path, "has no Setup.* entries; is this an etomo .edf dataset file?")
    return values


def parse_view_list(text: str) -> list[int]:
    """Parse an IMOD list of 1-based view numbers (``"1-3,7"``) into sorted 0-based indices.

    Raises
    ------
    ValueError
        When an item is not a number or a range ``a-b`` with ``1 <= a <= b``.
    """
    views: set[int] = set()
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        first, dash, last = item.partition("-")
        try:
            a = int(first)
            b = int(last) if dash else a
        except ValueError:
            raise ValueError(f"{item!r} is not a view number or range") from None
        if not 1 <= a <= b:
            raise ValueError(f"{item!r} is not a 1-based view range")
        views.update(range(a - 1, b))
    return sorted(views)


def _number(values: dict[str, str], key: str, path: str | Path) -> float | None:
    text = values.get(key, "")
    if not text:
        return None
    return parse_float(text, path, key)


def etomo_dataset(values: dict[str, str], path: str | Path = "<edf>") -> EtomoDataset:
    """Pick the dataset values tomoforge uses from :func:`read_etomo_edf`'s result.

    Parameters
    ----------
    values
        Entries of the ``.edf`` file.
    path
        The file they came from, for error messages.

    Returns
    -------
    EtomoDataset
        Pixel size converted from nm to Å, excluded views converted to 0-based indices.
    """
    pixel_nm = _number(values, "Setup.PixelSize", path)
    try:
        excluded = parse_view_list(values.get("Setup.AxisA.ExcludeProjections", ""))
    except ValueError as exc:
        raise FormatError(path, f"Setup.AxisA.ExcludeProjections: {exc}") from None
    return EtomoDataset(
        dataset_name=values.get("Setup.DatasetName") or None,
        pixel_size_angstrom=None if pixel_nm is None else pixel_nm * 10.0,
        tilt_axis_angle_deg=_number(values, "Setup.ImageRotationA", path),
        excluded_views=tuple(excluded),
        fiducial_diameter_nm=_number(values, "Setup.FiducialDiameter", path),
        binning=_number(values, "Setup.Binning", path),
    )
