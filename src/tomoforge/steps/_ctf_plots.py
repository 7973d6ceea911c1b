"""Diagnostic pictures of the ``ctf.estimate`` step, drawn without a plotting library (numpy and text only).

* :func:`ctf_series_svg` — defocus and fit resolution against tilt angle, as a self-contained SVG document (the
  step writes it with ``tomoforge.io._atomic.write_text_atomic``).
* :func:`psd_montage` — one panel per tilt of the power spectra, data in the left half and the fitted model in
  the right half as in CTFFIND's diagnostic image, as a ``(y, x, 3)`` uint8 image with row 0 at the bottom (written
  with ``tomoforge.io.png.write_png(..., origin="lower")``, like :mod:`tomoforge.steps._plots`).
* :func:`nice_ticks` and :func:`text_bitmap` — the axis ticks (1-2-5 steps) and the 5×7 bitmap font they use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

import numpy as np

__all__ = ["FONT_HEIGHT_PX", "ctf_series_svg", "nice_ticks", "psd_montage", "text_bitmap"]

# ---------------------------------------------------------------------------------------------------- ticks


def nice_ticks(low: float, high: float, *, target_count: int = 5) -> np.ndarray:
    """Evenly spaced tick values with a 1, 2 or 5 × 10ᵏ step that cover ``[low, high]``.

    The step is the smallest such value not below ``(high − low) / target_count``; the first tick is at or below
    ``low`` and the last at or above ``high``, both multiples of the step (so they also serve as axis limits).
    When ``low == high`` the range is widened by 10 % of its magnitude (or by 1 around zero).

    Returns
    -------
    numpy.ndarray
        ``(k,)`` float64 ticks, ``k >= 2``, rounded to the step's decimals.

    Raises
    ------
    ValueError
        If a bound is not finite or ``target_count < 1``.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"nice_ticks needs finite bounds, got {low!r} and {high!r}")
    if target_count < 1:
        raise ValueError(f"target_count must be at least 1, got {target_count}")
    low, high = min(low, high), max(low, high)
    if high - low <= 1e-12 * max(abs(low), abs(high), 1.0):
        pad = 0.1 * abs(low) if low != 0 else 1.0
        low, high = low - pad, high + pad
    step = _nice_step((high - low) / target_count)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return np.round(np.arange(first, last + 1, dtype=np.float64) * step, _decimals(step) + 2)


def _nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw))
    for mantissa in (1.0, 2.0, 5.0, 10.0):
        if mantissa * 10.0**exponent >= raw * (1 - 1e-9):
            return mantissa * 10.0**exponent
    return 10.0 ** (exponent + 1)  # pragma: no cover (10 always qualifies)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def _tick_label(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return f"{0.0:.{decimals}f}" if float(text) == 0.0 else text


def _tilt_ticks(low: float, high: float) -> np.ndarray:
    """Tilt-angle ticks every 15° (every 20° for spans over 135°) covering ``[low, high]``."""
    step = 20.0 if high - low > 135.0 else 15.0
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    if last == first:
        first, last = first - 1, last + 1
    return np.arange(first, last + 1, dtype=np.float64) * step


# ---------------------------------------------------------------------------------------------------- SVG

_WIDTH, _HEIGHT = 720, 420
_LEFT, _RIGHT = 72.0, 700.0
_PANELS = {"defocus": (74.0, 206.0), "resolution": (238.0, 366.0)}  # (top, bottom) in SVG pixels, y down
_INK, _FAINT_INK, _GRID = "#222222", "#555555", "#e3e3e3"
_SERIES_COLOUR = {"defocus": "#1f5fa8", "resolution": "#c0392b"}
_EXCLUDED_COLOUR = "#8c8c8c"
_MARKER_RADIUS = 3.5


def _text(value: str) -> str:
    """XML-escape ``value`` for element content and attributes, dropping characters XML 1.0 forbids."""
    cleaned = "".join(ch for ch in str(value) if ch in "\t\n" or ord(ch) >= 0x20)
    return escape(cleaned, {'"': "&quot;"})


def _series(name: str, values: Sequence[float | None] | np.ndarray, length: int | None) -> np.ndarray:
    items = np.asarray(values, dtype=object)
    if items.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {items.shape}")
    try:
        array = np.array([np.nan if v is None else float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold numbers (None for missing), got {values!r}") from exc
    if length is not None and array.size != length:
        raise ValueError(f"{name} has {array.size} values but there are {length} tilt angles")
    return array


def _excluded_mask(excluded: Sequence[bool] | np.ndarray | None, length: int) -> np.ndarray:
    if excluded is None:
        return np.zeros(length, dtype=bool)
    mask = np.asarray(excluded)
    if mask.dtype != np.bool_:
        raise ValueError(f"excluded must be one boolean per view, got dtype {mask.dtype}")
    if mask.shape != (length,):
        raise ValueError(f"excluded has shape {mask.shape} but there are {length} tilt angles")
    return mask


def _value_ticks(*arrays: np.ndarray | None) -> np.ndarray:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays if a is not None])
    if finite.size == 0:
        return nice_ticks(0.0, 1.0)
    return nice_ticks(float(finite.min()), float(finite.max()))


def _padded(ticks: np.ndarray, fraction: float = 0.04) -> tuple[float, float]:
    pad = fraction * float(ticks[-1] - ticks[0])
    return float(ticks[0]) - pad, float(ticks[-1]) + pad


def _points_attr(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


class _Axes:
    """Maps tilt angles and values of one panel to SVG pixels."""

    def __init__(
        self, x_domain: tuple[float, float], y_domain: tuple[float, float], top: float, bottom: float
    ):
        self.x_domain, self.y_domain, self.top, self.bottom = x_domain, y_domain, top, bottom

    def x(self, tilt_deg: np.ndarray | float) -> np.ndarray:
        x0, x1 = self.x_domain
        return _LEFT + (np.asarray(tilt_deg, dtype=np.float64) - x0) / (x1 - x0) * (_RIGHT - _LEFT)

    def y(self, value: np.ndarray | float) -> np.ndarray:
        y0, y1 = self.y_domain
        return self.bottom - (np.asarray(value, dtype=np.float64) - y0) / (y1 - y0) * (self.bottom - self.top)


def _panel_frame(
    out: list[str], axes: _Axes, x_ticks: np.ndarray, y_ticks: np.ndarray, label: str, *, x_labels: bool
) -> None:
    top, bottom = axes.top, axes.bottom
    decimals = _decimals(float(y_ticks[1] - y_ticks[0]))
    for value in y_ticks:
        y = float(axes.y(value))
        out.append(f'<line x1="{_LEFT:.1f}" y1="{y:.1f}" x2="{_RIGHT:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        out.append(
            f'<text class="tick-y" x="{_LEFT - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_tick_label(float(value), decimals)}</text>"
        )
    for value in x_ticks:
        x = float(axes.x(value))
        out.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{_GRID}"/>')
        out.append(
            f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 4:.1f}" stroke="{_INK}"/>'
        )
        if x_labels:
            out.append(
                f'<text class="tick-x" x="{x:.1f}" y="{bottom + 17:.1f}" text-anchor="middle">'
                f"{_tick_label(float(value), 0)}</text>"
            )
    out.append(
        f'<rect x="{_LEFT:.1f}" y="{top:.1f}" width="{_RIGHT - _LEFT:.1f}" height="{bottom - top:.1f}" '
        f'fill="none" stroke="{_INK}"/>'
    )
    out.append(
        f'<text class="axis-label" x="{_LEFT:.1f}" y="{top - 7:.1f}" font-size="13">{_text(label)}</text>'
    )


def _markers(
    out: list[str],
    axes: _Axes,
    tilts: np.ndarray,
    values: np.ndarray,
    excluded: np.ndarray,
    colour: str,
    unit: str,
    decimals: int,
) -> None:
    for tilt, value, is_excluded in zip(tilts, values, excluded, strict=True):
        if not (np.isfinite(tilt) and np.isfinite(value)):
            continue
        x, y = float(axes.x(tilt)), float(axes.y(value))
        tip = f"{tilt:.1f}°: {value:.{decimals}f} {unit}" + (" (excluded)" if is_excluded else "")
        style = (
            f'class="point excluded" fill="white" stroke="{_EXCLUDED_COLOUR}" stroke-width="1.5"'
            if is_excluded
            else f'class="point" fill="{colour}" stroke="none"'
        )
        out.append(
            f'<circle {style} cx="{x:.1f}" cy="{y:.1f}" r="{_MARKER_RADIUS}"><title>{_text(tip)}</title></circle>'
        )


def _line(
    out: list[str], axes: _Axes, tilts: np.ndarray, values: np.ndarray, keep: np.ndarray, attrs: str
) -> None:
    use = keep & np.isfinite(tilts) & np.isfinite(values)
    if use.sum() < 2:
        return
    order = np.argsort(tilts[use], kind="stable")
    xs, ys = axes.x(tilts[use][order]), axes.y(values[use][order])
    out.append(f'<polyline fill="none" {attrs} points="{_points_attr(xs, ys)}"/>')


def _no_data(out: list[str], axes: _Axes) -> None:
    out.append(
        f'<text x="{(_LEFT + _RIGHT) / 2:.1f}" y="{(axes.top + axes.bottom) / 2 + 4:.1f}" text-anchor="middle" '
        f'fill="{_EXCLUDED_COLOUR}">no data</text>'
    )


def _legend(out: list[str], has_uv: bool, has_excluded: bool) -> None:
    items: list[tuple[str, str]] = [
        (f'<circle class="legend" r="{_MARKER_RADIUS}" fill="{_SERIES_COLOUR["defocus"]}"', "mean defocus")
    ]
    if has_uv:
        items.append(
            (f'<line class="legend" stroke="{_SERIES_COLOUR["defocus"]}" stroke-opacity="0.35"', "u, v")
        )
    if has_excluded:
        items.append(
            (
                f'<circle class="legend" r="{_MARKER_RADIUS}" fill="white" stroke="{_EXCLUDED_COLOUR}" '
                'stroke-width="1.5"',
                "excluded",
            )
        )
    x, y = _RIGHT, _PANELS["defocus"][0] - 7
    for shape, words in reversed(items):
        x -= 7.0 * len(words) + 6
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="12">{_text(words)}</text>')
        x -= 8
        if shape.startswith("<circle"):
            out.append(f'{shape} cx="{x:.1f}" cy="{y - 4:.1f}"/>')
        else:
            out.append(
                f'{shape} stroke-width="1.5" x1="{x - 8:.1f}" y1="{y - 4:.1f}" x2="{x + 4:.1f}" y2="{y - 4:.1f}"/>'
            )
        x -= 18


def ctf_series_svg(
    tilt_angles_deg: Sequence[float | None] | np.ndarray,
    defocus_angstrom: Sequence[float | None] | np.ndarray,
    fit_resolution_angstrom: Sequence[float | None] | np.ndarray,
    *,
    excluded: Sequence[bool] | np.ndarray | None = None,
    defocus_u_angstrom: Sequence[float | None] | np.ndarray | None = None,
    defocus_v_angstrom: Sequence[float | None] | np.ndarray | None = None,
    title: str = "",
    handedness_note: str = "",
) -> str:
    """Defocus and CTF fit resolution against tilt angle, as a self-contained 720 × 420 px SVG document.

    Two stacked panels share the tilt axis (ticks every 15°, every 20° beyond a 135° span): the top one shows the
    mean defocus in µm (filled points joined in tilt order; the defoci along the two astigmatism axes as faint
    lines when given), the bottom one the resolution to which the fit holds, in Å (smaller is better). Excluded
    views are hollow grey markers and are left out of the lines. Every point is an SVG ``<circle>`` of class
    ``point`` (``point excluded`` for excluded views) with a hover title. NaN or None values are skipped.

    Parameters
    ----------
    tilt_angles_deg
        ``(n,)`` tilt angles in degrees.
    defocus_angstrom
        ``(n,)`` mean defocus in Å (positive underfocus, CTFFIND sign); drawn in µm.
    fit_resolution_angstrom
        ``(n,)`` resolution of the fit in Å.
    excluded
        ``(n,)`` booleans, True for views excluded from the series.
    defocus_u_angstrom, defocus_v_angstrom
        ``(n,)`` defocus along the major and minor astigmatism axes in Å.
    title
        First text line (e.g. the tilt-series name).
    handedness_note
        Second, smaller line under the title (e.g. the defocus-gradient handedness verdict).

    Returns
    -------
    str
        The SVG document (UTF-8 XML with declaration); identical inputs give identical text.

    Raises
    ------
    ValueError
        If a series is not one-dimensional numbers, lengths differ, or ``excluded`` is not one boolean per view.
    """
    tilts = _series("tilt_angles_deg", tilt_angles_deg, None)
    n = tilts.size
    defocus_um = _series("defocus_angstrom", defocus_angstrom, n) / 1e4
    resolution = _series("fit_resolution_angstrom", fit_resolution_angstrom, n)
    u_um = None if defocus_u_angstrom is None else _series("defocus_u_angstrom", defocus_u_angstrom, n) / 1e4
    v_um = None if defocus_v_angstrom is None else _series("defocus_v_angstrom", defocus_v_angstrom, n) / 1e4
    is_excluded = _excluded_mask(excluded, n)

    finite_tilts = tilts[np.isfinite(tilts)]
    x_ticks = _tilt_ticks(*(finite_tilts.min(), finite_tilts.max()) if finite_tilts.size else (-60.0, 60.0))
    x_domain = _padded(x_ticks, 0.03)
    defocus_ticks = _value_ticks(defocus_um, u_um, v_um)
    resolution_ticks = _value_ticks(resolution)
    top_axes = _Axes(x_domain, _padded(defocus_ticks), *_PANELS["defocus"])
    bottom_axes = _Axes(x_domain, _padded(resolution_ticks), *_PANELS["resolution"])

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        f'font-size="12" fill="{_INK}">',
        f"<title>{_text(title or 'CTF estimation per tilt')}</title>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text class="title" x="{_LEFT:.1f}" y="22" font-size="15" font-weight="bold">{_text(title)}</text>',
    ]
    if handedness_note:
        out.append(
            f'<text class="note" x="{_LEFT:.1f}" y="40" font-size="12" fill="{_FAINT_INK}">'
            f"{_text(handedness_note)}</text>"
        )

    out.append('<g id="defocus">')
    _panel_frame(out, top_axes, x_ticks, defocus_ticks, "Mean defocus (µm)", x_labels=False)
    faint = f'stroke="{_SERIES_COLOUR["defocus"]}" stroke-opacity="0.35" stroke-width="1.5"'
    if u_um is not None:
        _line(out, top_axes, tilts, u_um, ~is_excluded, faint)
    if v_um is not None:
        _line(out, top_axes, tilts, v_um, ~is_excluded, faint + ' stroke-dasharray="4 3"')
    _line(
        out,
        top_axes,
        tilts,
        defocus_um,
        ~is_excluded,
        f'stroke="{_SERIES_COLOUR["defocus"]}" stroke-width="1.5"',
    )
    _markers(out, top_axes, tilts, defocus_um, is_excluded, _SERIES_COLOUR["defocus"], "µm", 3)
    if not np.any(np.isfinite(tilts) & np.isfinite(defocus_um)):
        _no_data(out, top_axes)
    out.append("</g>")
    _legend(out, u_um is not None or v_um is not None, bool(is_excluded.any()))

    out.append('<g id="resolution">')
    _panel_frame(
        out,
        bottom_axes,
        x_ticks,
        resolution_ticks,
        "CTF fit resolution (Å), smaller is better",
        x_labels=True,
    )
    _markers(out, bottom_axes, tilts, resolution, is_excluded, _SERIES_COLOUR["resolution"], "Å", 1)
    if not np.any(np.isfinite(tilts) & np.isfinite(resolution)):
        _no_data(out, bottom_axes)
    out.append("</g>")

    out.append(
        f'<text class="axis-label" x="{(_LEFT + _RIGHT) / 2:.1f}" y="{_HEIGHT - 14}" text-anchor="middle" '
        'font-size="13">Tilt angle (°)</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------- font

FONT_HEIGHT_PX = 7
"""Height of :func:`text_bitmap`'s glyphs in pixels (5 wide, narrower for punctuation)."""

_GLYPH_ROWS: dict[str, str] = {  # rows top to bottom, '#' = ink, separated by '|'
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    "-": "...|...|...|###|...|...|...",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....",
    ".": "..|..|..|..|..|##|##",
    "°": ".#.|#.#|.#.|...|...|...|...",
    " ": "...|...|...|...|...|...|...",
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "Å": "..#..|.....|.###.|#...#|#####|#...#|#...#",
    "n": ".....|.....|#.##.|##..#|#...#|#...#|#...#",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#...#|#...#",
    "µ": ".....|.....|#..#.|#..#.|#..#.|###.#|#....",
}
_ALIASES = {"μ": "µ", "−": "-"}  # Greek mu and the minus sign draw as the micro sign and hyphen-minus
_GLYPHS = {
    char: np.array([[c == "#" for c in row] for row in rows.split("|")], dtype=bool)
    for char, rows in _GLYPH_ROWS.items()
}


def text_bitmap(text: str) -> np.ndarray:
    """Render ``text`` in the built-in 5×7 font (digits, ``- + . °``, space, ``A Å n m µ``).

    Returns
    -------
    numpy.ndarray
        ``(7, w)`` bool, True where there is ink; row 0 is the TOP of the text (reading order), glyphs separated
        by one blank column.

    Raises
    ------
    ValueError
        If ``text`` holds a character the font lacks.
    """
    missing = sorted({ch for ch in text if _ALIASES.get(ch, ch) not in _GLYPHS})
    if missing:
        raise ValueError(f"the montage font has no glyph for {missing}; it draws {''.join(_GLYPHS)!r}")
    if not text:
        return np.zeros((FONT_HEIGHT_PX, 0), dtype=bool)
    parts: list[np.ndarray] = []
    for ch in text:
        if parts:
            parts.append(np.zeros((FONT_HEIGHT_PX, 1), dtype=bool))
        parts.append(_GLYPHS[_ALIASES.get(ch, ch)])
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------------------------------------------- montage

_NAN_GREY = (64, 64, 64)
_GAP_COLOUR = (255, 255, 255)
_SEPARATOR_COLOUR = (40, 210, 230)
_LABEL_COLOUR = (250, 220, 40)
_GAP_PX = 2


def _resample_axis(arrays: list[np.ndarray], n_out: int, axis: int) -> list[np.ndarray]:
    """Sum bins of ``arrays`` along ``axis`` down to ``n_out`` (area), or repeat samples up to it (nearest)."""
    n_in = arrays[0].shape[axis]
    if n_in >= n_out:
        starts = (np.arange(n_out) * n_in) // n_out
        return [np.add.reduceat(a, starts, axis=axis) for a in arrays]
    index = ((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64)
    return [np.take(a, index, axis=axis) for a in arrays]


def _resize_nan(image: np.ndarray, size_px: int) -> np.ndarray:
    """Resize a 2D image to ``(size_px, size_px)``: area average down, nearest up, NaN where most input is NaN."""
    finite = np.isfinite(image)
    sums, counts, areas = np.where(finite, image, 0.0), finite.astype(np.float64), np.ones_like(image)
    arrays = [sums, counts, areas]
    for axis in (0, 1):
        arrays = _resample_axis(arrays, size_px, axis)
    sums, counts, areas = arrays
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts >= 0.5 * areas, sums / counts, np.nan)


def _scale_grey(values: np.ndarray, low_percentile: float, high_percentile: float) -> np.ndarray:
    """Grey levels 0–255 between two percentiles of the finite values; NaN stays NaN."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(values.shape, np.nan)
    lo, hi = np.percentile(finite, [low_percentile, high_percentile])
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-30):
        return np.where(np.isfinite(values), 128.0, np.nan)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0


def psd_montage(
    spectra: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[str] | None = None,
    *,
    panel_px: int = 128,
    columns: int = 8,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    scale_halves_separately: bool = True,
) -> np.ndarray:
    """One grey panel per tilt of the (data | model) power spectra, laid out row by row from the top left.

    Each spectrum is resized to ``panel_px`` square (area average when shrinking, nearest sample when enlarging)
    and scaled between its own ``low_percentile`` and ``high_percentile`` of finite values, the left half
    (columns ``< panel_px // 2``, the data) and the right half (the fitted model) separately unless
    ``scale_halves_separately`` is False. NaN (outside the fitted band) is dark grey (64, 64, 64). A cyan line in
    column ``panel_px // 2`` of each panel separates data from model; an optional label (e.g. ``"-60°"``) is drawn
    in yellow on black in the panel's top left corner with :func:`text_bitmap` (scaled ×``panel_px // 128``).
    Panels are separated by 2 px white gaps. A spectrum's row 0 is its panel's bottom row (y up,
    CONVENTIONS.md §1).

    Parameters
    ----------
    spectra
        ``n`` 2D float arrays ``(t, t)`` (any size, e.g. ``fftshift``-ed power spectra), or one ``(n, t, t)``
        array.
    labels
        ``n`` short strings in the font of :func:`text_bitmap`, or None.
    panel_px
        Side of a panel in pixels (at least 16).
    columns
        Panels per row.
    low_percentile, high_percentile
        Percentiles (0–100) mapped to black and white.
    scale_halves_separately
        Scale the data and model halves independently (they usually have different units).

    Returns
    -------
    numpy.ndarray
        ``(rows·panel_px + 2·(rows − 1), c·panel_px + 2·(c − 1), 3)`` uint8 with ``c = min(columns, n)``, row 0 at
        the bottom (write with ``origin="lower"``).

    Raises
    ------
    ValueError
        If there are no spectra, one is not a non-empty 2D array, the label count differs, a label has a character
        the font lacks, or an option is out of range.
    """
    images = [np.asarray(s, dtype=np.float64) for s in spectra]
    if not images:
        raise ValueError("psd_montage needs at least one spectrum")
    for k, image in enumerate(images):
        if image.ndim != 2 or image.size == 0:
            raise ValueError(f"spectrum {k} must be a non-empty 2D array, got shape {image.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} spectra")
    if panel_px < 16:
        raise ValueError(f"panel_px must be at least 16, got {panel_px}")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(
            f"need 0 <= low_percentile < high_percentile <= 100, got {low_percentile}, {high_percentile}"
        )
    glyphs = [text_bitmap(label) for label in labels] if labels is not None else None

    n = len(images)
    rows, cols = (n + columns - 1) // columns, min(columns, n)
    pitch = panel_px + _GAP_PX
    montage = np.empty((rows * pitch - _GAP_PX, cols * pitch - _GAP_PX, 3), dtype=np.uint8)
    montage[:] = _GAP_COLOUR  # built with row 0 at the TOP, flipped at the end
    half = panel_px // 2
    scale = max(1, panel_px // 128)
    for k, image in enumerate(images):
        resized = _resize_nan(image, panel_px)
        if scale_halves_separately:
            grey = np.concatenate(
                [
                    _scale_grey(resized[:, :half], low_percentile, high_percentile),
                    _scale_grey(resized[:, half:], low_percentile, high_percentile),
                ],
                axis=1,
            )
        else:
            grey = _scale_grey(resized, low_percentile, high_percentile)
        panel = np.empty((panel_px, panel_px, 3), dtype=np.uint8)
        panel[:] = _NAN_GREY
        level = np.rint(np.nan_to_num(grey, nan=0.0)).astype(np.uint8)
        panel[np.isfinite(grey)] = level[np.isfinite(grey), None]
        panel = panel[::-1].copy()  # spectrum row 0 at the bottom of the panel
        panel[:, half] = _SEPARATOR_COLOUR
        if glyphs is not None and glyphs[k].size:
            _stamp_label(panel, glyphs[k], scale)
        row, col = divmod(k, columns)
        montage[row * pitch : row * pitch + panel_px, col * pitch : col * pitch + panel_px] = panel
    return np.ascontiguousarray(montage[::-1])


def _stamp_label(panel_top_down: np.ndarray, bitmap: np.ndarray, scale: int) -> None:
    """Draw ``bitmap`` (row 0 = top) at the top-left of a panel stored top-down, on a black box, clipped."""
    ink = np.repeat(np.repeat(bitmap, scale, axis=0), scale, axis=1)
    margin = 2 * scale
    size = panel_top_down.shape[0]
    ink = ink[: size - 2 * margin, : size - 2 * margin]
    h, w = ink.shape
    box = panel_top_down[margin - scale : margin + h + scale, margin - scale : margin + w + scale]
    box[:] = 0
    region = panel_top_down[margin : margin + h, margin : margin + w]
    region[ink] = _LABEL_COLOUR
