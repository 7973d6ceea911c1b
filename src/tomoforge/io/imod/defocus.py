"""ctfplotter / ctfphaseflip ``.defocus`` files, in all their flavours, as per-view :class:`CtfParameters`.

Layout (IMOD ctfphaseflip manual; the files in ``tests/data/imod``):

* **version 2** (defocus only): ``start end tilt_start tilt_end defocus_nm`` per line, the format version ``2``
  appended to the first line;
* **version 3**: a first line ``flags 0 0.0 0.0 0.0 3``, then per line
  ``start end tilt_start tilt_end defocus1_nm [defocus2_nm astig_angle] [phase_shift] [cut_on]``. ``flags`` is the
  sum of 1 (astigmatism columns present), 2 (astigmatism angle in radians), 4 (phase-shift column present),
  8 (phase shift in radians), 16 (tilt angles inverted, as ctfplotter ``-invert``), 32 (cut-on frequency column).

View numbers are 1-based and inclusive (a line may cover a range of views); defocus is in nm, positive for
underfocus; angles are in degrees unless a flag says radians. Files without a format version (IMOD before 3.12)
are refused rather than guessed at.

Conventions (CONVENTIONS.md §5, §8): defocus is converted to Å (``× 10``). ctfplotter follows CTFFIND: defocus 1
lies along the direction at the astigmatism angle, counter-clockwise from the image X axis, which is exactly
tomoforge's ``defocus_u`` / ``astigmatism_angle_deg``; so ``u = defocus 1``, ``v = defocus 2`` and the angle is
copied (Scipion's IMOD plugin reads the columns the same way). Files without astigmatism get ``u = v``.
:class:`CtfParameters` keeps angles in [-90°, 90°), so an angle outside that range is written back as its
equivalent there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tomoforge.io._atomic import write_text_atomic
from tomoforge.io._text import format_fixed, parse_float, parse_int, read_text, token_lines
from tomoforge.io.errors import FormatError
from tomoforge.models import CtfParameters, CtfTiltEstimate, CtfTiltSeries

__all__ = [
    "FLAG_ASTIGMATISM",
    "FLAG_ASTIGMATISM_RADIANS",
    "FLAG_CUT_ON",
    "FLAG_INVERTED_TILTS",
    "FLAG_PHASE_SHIFT",
    "FLAG_PHASE_RADIANS",
    "ImodDefocusEntry",
    "ImodDefocusFile",
    "ctf_to_imod_defocus",
    "imod_defocus_to_ctf",
    "read_imod_defocus",
    "write_imod_defocus",
]

FLAG_ASTIGMATISM = 1
FLAG_ASTIGMATISM_RADIANS = 2
FLAG_PHASE_SHIFT = 4
FLAG_PHASE_RADIANS = 8
FLAG_INVERTED_TILTS = 16
FLAG_CUT_ON = 32
_ALL_FLAGS = 63
_ANGSTROM_PER_NM = 10


@dataclass(frozen=True)
class ImodDefocusEntry:
    """One line of a defocus file: a CTF fit that applies to views ``start_view..end_view`` (1-based)."""

    start_view: int
    end_view: int
    start_tilt_deg: float
    end_tilt_deg: float
    ctf: CtfParameters
    cut_on_frequency_per_nm: float | None = None
    """Cut-on frequency of the phase-shift attenuation, in the file's unit (1/nm per the IMOD manual)."""


@dataclass(frozen=True)
class ImodDefocusFile:
    """The content of a ``.defocus`` file: its flavour (``version``, ``flags``) and its lines."""

    version: int
    flags: int
    entries: tuple[ImodDefocusEntry, ...] = field(default_factory=tuple)

    @property
    def has_astigmatism(self) -> bool:
        """Whether the file has defocus 2 and astigmatism-angle columns."""
        return bool(self.flags & FLAG_ASTIGMATISM)

    @property
    def has_phase_shift(self) -> bool:
        """Whether the file has a phase-shift column."""
        return bool(self.flags & FLAG_PHASE_SHIFT)

    @property
    def has_cut_on(self) -> bool:
        """Whether the file has a cut-on-frequency column."""
        return bool(self.flags & FLAG_CUT_ON)


def _columns(flags: int) -> list[str]:
    names = ["start view", "end view", "start tilt", "end tilt", "defocus 1"]
    if flags & FLAG_ASTIGMATISM:
        names += ["defocus 2", "astigmatism angle"]
    if flags & FLAG_PHASE_SHIFT:
        names.append("phase shift")
    if flags & FLAG_CUT_ON:
        names.append("cut-on frequency")
    return names


def _nm_to_angstrom(token: str) -> float:
    return float(Decimal(token) * _ANGSTROM_PER_NM)  # exact decimal scaling: 1483.9 nm -> 14839.0 Å


def _angstrom_to_nm_text(angstrom: float, width: int, decimals: int) -> str:
    """Å → nm as text, exactly in decimal, so that reading it back gives the same float in Å.

    ``%{width}.{decimals}f`` when that holds every digit, otherwise as many decimals as needed.
    """
    nm = (Decimal(repr(angstrom)) / _ANGSTROM_PER_NM).normalize()
    places = max(-int(nm.as_tuple().exponent), 0)
    return f"{nm:{width}.{max(places, decimals)}f}"


def read_imod_defocus(path: str | Path) -> ImodDefocusFile:
    """Read a ctfplotter ``.defocus`` file of any flavour.

    Parameters
    ----------
    path
        The defocus file.

    Returns
    -------
    ImodDefocusFile
        The flavour and one :class:`ImodDefocusEntry` per line, defocus in Å and angles in degrees.

    Raises
    ------
    FormatError
        When the version line is missing or unknown, a line has the wrong number of columns for the flags, or a
        value is not a number.
    """
    lines = list(token_lines(read_text(path)))
    if not lines:
        raise FormatError(path, "is empty; expected a ctfplotter defocus file")
    first_no, first = lines[0]
    if len(first) == 6 and first[5] == "3":
        flags = parse_int(first[0], path, f"line {first_no}")
        if not 0 <= flags <= _ALL_FLAGS:
            raise FormatError(path, f"line {first_no}: unknown defocus-file flags {flags} (expected 0-63)")
        version, rows = 3, lines[1:]
    elif len(first) == 6 and first[5] == "2":
        version, flags = 2, 0
        rows = [(first_no, first[:5]), *lines[1:]]
    else:
        raise FormatError(
            path,
            f"line {first_no} does not end with a format version (2 or 3); "
            "is this a ctfplotter defocus file of IMOD 3.12 or later?",
        )
    names = _columns(flags)
    entries = [_parse_row(tokens, names, flags, path, n) for n, tokens in rows]
    if not entries:
        raise FormatError(path, "has a version line but no defocus lines")
    return ImodDefocusFile(version=version, flags=flags, entries=tuple(entries))


def _parse_row(tokens: list[str], names: list[str], flags: int, path: str | Path, n: int) -> ImodDefocusEntry:
    where = f"line {n}"
    if len(tokens) != len(names):
        raise FormatError(
            path,
            f"{where} has {len(tokens)} values; flags {flags} call for {len(names)} ({', '.join(names)})",
        )
    start, end = parse_int(tokens[0], path, where), parse_int(tokens[1], path, where)
    if not 1 <= start <= end:
        raise FormatError(path, f"{where}: view range {start}-{end} is not a 1-based range with start <= end")
    tilts = [parse_float(t, path, where) for t in tokens[2:4]]
    values = tokens[4:]
    for token in values:
        parse_float(token, path, where)  # validates every remaining column
    defocus_u = _nm_to_angstrom(values.pop(0))
    defocus_v, angle_deg = defocus_u, 0.0
    if flags & FLAG_ASTIGMATISM:
        defocus_v = _nm_to_angstrom(values.pop(0))
        angle = float(values.pop(0))
        angle_deg = math.degrees(angle) if flags & FLAG_ASTIGMATISM_RADIANS else angle
    phase_deg = 0.0
    if flags & FLAG_PHASE_SHIFT:
        phase = float(values.pop(0))
        phase_deg = math.degrees(phase) if flags & FLAG_PHASE_RADIANS else phase
    cut_on = float(values.pop(0)) if flags & FLAG_CUT_ON else None
    ctf = CtfParameters(
        defocus_u_angstrom=defocus_u,
        defocus_v_angstrom=defocus_v,
        astigmatism_angle_deg=angle_deg,
        phase_shift_deg=phase_deg,
    )
    return ImodDefocusEntry(start, end, tilts[0], tilts[1], ctf, cut_on)


def write_imod_defocus(defocus: ImodDefocusFile, path: str | Path) -> Path:
    """Write a defocus file in the flavour given by ``defocus.version`` and ``defocus.flags``.

    The layout is ctfplotter's: tab-separated, tilt angles ``%5.2f``, defocus ``%7.1f`` nm (``%6.0f`` in version 2),
    astigmatism angle ``%7.2f``, phase shift ``%9.2f``, cut-on ``%9.4f``; a value with more digits keeps them all
    (defocus is converted Å → nm exactly in decimal), so anything :func:`read_imod_defocus` returns is written back
    unchanged and ctfplotter's own files come out byte for byte.

    Parameters
    ----------
    defocus
        File content, e.g. from :func:`read_imod_defocus` or :func:`ctf_to_imod_defocus`.
    path
        Destination; written atomically.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    flags, version = defocus.flags, defocus.version
    if version not in (2, 3) or (version == 2 and flags != 0) or not 0 <= flags <= _ALL_FLAGS:
        raise FormatError(path, f"cannot write version {version} with flags {flags} (version 2 has flags 0)")
    if not defocus.entries:
        raise FormatError(path, "has no defocus entries to write")
    lines = [] if version == 2 else [f"{flags}\t0\t0.0\t0.0\t0.0\t3"]
    for entry in defocus.entries:
        lines.append("\t".join(_format_row(entry, flags, version, path)))
    if version == 2:
        lines[0] += f"{2:4d}"
    return write_text_atomic(path, "\n".join(lines) + "\n")


def _format_row(entry: ImodDefocusEntry, flags: int, version: int, path: str | Path) -> list[str]:
    ctf = entry.ctf
    fields = [str(entry.start_view), str(entry.end_view)]
    fields += [format_fixed(entry.start_tilt_deg, 5, 2), format_fixed(entry.end_tilt_deg, 5, 2)]
    if not flags & FLAG_ASTIGMATISM:
        width, decimals = (6, 0) if version == 2 else (7, 1)
        return [
            *fields,
            _angstrom_to_nm_text(ctf.defocus_mean_angstrom, width, decimals),
            *_tail(entry, flags, path),
        ]
    fields += [
        _angstrom_to_nm_text(ctf.defocus_u_angstrom, 7, 1),
        _angstrom_to_nm_text(ctf.defocus_v_angstrom, 7, 1),
        _angle_text(ctf.astigmatism_angle_deg, bool(flags & FLAG_ASTIGMATISM_RADIANS), 7, 2),
    ]
    return fields + _tail(entry, flags, path)


def _tail(entry: ImodDefocusEntry, flags: int, path: str | Path) -> list[str]:
    fields = []
    if flags & FLAG_PHASE_SHIFT:
        fields.append(_angle_text(entry.ctf.phase_shift_deg, bool(flags & FLAG_PHASE_RADIANS), 9, 2))
    if flags & FLAG_CUT_ON:
        if entry.cut_on_frequency_per_nm is None:
            raise FormatError(
                path,
                f"flags {flags} call for a cut-on frequency but views {entry.start_view}-{entry.end_view} have none",
            )
        fields.append(format_fixed(entry.cut_on_frequency_per_nm, 9, 4))
    return fields


def _angle_text(degrees: float, in_radians: bool, width: int, decimals: int) -> str:
    """An angle as written in the file (degrees, or radians when flagged) that reads back as exactly ``degrees``."""
    if not in_radians:
        return format_fixed(degrees, width, decimals)
    radians = math.radians(degrees)
    for d in range(decimals, decimals + 4):
        text = f"{radians:{width}.{d}f}"
        if math.degrees(float(text)) == degrees:
            return text
    for candidate in (radians, *_neighbours(radians)):  # radians(degrees(x)) may be a few ulp from x
        if math.degrees(candidate) == degrees:
            radians = candidate
            break
    return format_fixed(radians, width, decimals)


def _neighbours(value: float, steps: int = 4) -> list[float]:
    out, up, down = [], value, value
    for _ in range(steps):
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        out += [up, down]
    return out


def imod_defocus_to_ctf(defocus: ImodDefocusFile, ts_id: str, n_views: int | None = None) -> CtfTiltSeries:
    """Per-view CTF estimates from a defocus file (tilt index = view number − 1).

    Parameters
    ----------
    defocus
        File content from :func:`read_imod_defocus`.
    ts_id
        Tilt-series identifier for the result.
    n_views
        Number of views of the stack; views no line covers are then listed as excluded estimates without
        parameters. When omitted only covered views are listed.

    Returns
    -------
    CtfTiltSeries
        One estimate per view. A view covered by several lines takes the line whose view range is centred
        nearest to it (the first such line on a tie).
    """
    covered: dict[int, ImodDefocusEntry] = {}
    for entry in defocus.entries:
        centre = 0.5 * (entry.start_view + entry.end_view)
        for view in range(entry.start_view, entry.end_view + 1):
            best = covered.get(view)
            if best is None or abs(view - centre) < abs(view - 0.5 * (best.start_view + best.end_view)):
                covered[view] = entry
    last = max(covered) if n_views is None else n_views
    estimates = []
    for view in range(1, last + 1):
        match = covered.get(view)
        if match is not None:
            estimates.append(CtfTiltEstimate(tilt_index=view - 1, parameters=match.ctf))
        elif n_views is not None:
            estimates.append(CtfTiltEstimate(tilt_index=view - 1, parameters=None, excluded=True))
    return CtfTiltSeries(ts_id=ts_id, tilts=estimates)


def ctf_to_imod_defocus(
    ctf: CtfTiltSeries,
    tilt_angles_deg: list[float],
    *,
    astigmatism: bool = True,
    phase_shift: bool | None = None,
) -> ImodDefocusFile:
    """Build a defocus file with one line per usable tilt (excluded estimates are left out).

    Parameters
    ----------
    ctf
        Per-tilt CTF estimates.
    tilt_angles_deg
        Tilt angle of every tilt index of the stack (written in the two tilt columns).
    astigmatism
        Write defocus 1, defocus 2 and the angle (version 3, flag 1); otherwise the mean defocus only (version 2).
    phase_shift
        Write a phase-shift column (flag 4); by default only when some estimate has a non-zero phase shift.

    Returns
    -------
    ImodDefocusFile
    """
    usable = [
        t
        for t in sorted(ctf.tilts, key=lambda t: t.tilt_index)
        if not t.excluded and t.parameters is not None
    ]
    if phase_shift is None:
        phase_shift = any(t.parameters is not None and t.parameters.phase_shift_deg != 0.0 for t in usable)
    flags = (FLAG_ASTIGMATISM if astigmatism else 0) | (FLAG_PHASE_SHIFT if phase_shift else 0)
    entries = []
    for t in usable:
        if t.tilt_index >= len(tilt_angles_deg):
            raise ValueError(
                f"tilt index {t.tilt_index} has no tilt angle (got {len(tilt_angles_deg)} angles)"
            )
        assert t.parameters is not None
        angle = float(tilt_angles_deg[t.tilt_index])
        entries.append(ImodDefocusEntry(t.tilt_index + 1, t.tilt_index + 1, angle, angle, t.parameters))
    return ImodDefocusFile(version=3 if flags else 2, flags=flags, entries=tuple(entries))
