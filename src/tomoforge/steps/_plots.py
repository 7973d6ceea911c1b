"""Small raster plots the steps write next to their outputs (PNG, no plotting library needed).

Images are ``(y, x, 3)`` uint8 arrays with row 0 at the bottom (written with ``origin="lower"``, so y points up as
in IMOD and CONVENTIONS.md §1); positions are in pixels of that array, x along columns.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["COLOURS", "curves_svg", "draw_circle", "draw_polyline", "panel_grid", "to_rgb"]

COLOURS = {
    "green": (60, 220, 60),
    "red": (240, 60, 60),
    "yellow": (250, 220, 40),
    "cyan": (40, 210, 230),
    "white": (255, 255, 255),
    "grey": (110, 110, 110),
}


def to_rgb(image: np.ndarray, *, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """A grey image scaled between two percentiles, as ``(y, x, 3)`` uint8."""
    data = np.asarray(image, dtype=np.float64)
    finite = data[np.isfinite(data)]
    lo, hi = np.percentile(finite, [low_percentile, high_percentile]) if finite.size else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    grey = (scaled * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _plot(rgb: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour: tuple[int, int, int]) -> None:
    xi, yi = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
    keep = (xi >= 0) & (xi < rgb.shape[1]) & (yi >= 0) & (yi < rgb.shape[0])
    rgb[yi[keep], xi[keep]] = colour


def draw_circle(
    rgb: np.ndarray, x: float, y: float, radius: float, colour: tuple[int, int, int], *, width: float = 1.0
) -> None:
    """Draw a circle outline of ``radius`` px (ring of ``width`` px) centred at ``(x, y)``, in place."""
    steps = max(int(2 * np.pi * (radius + width) * 2), 16)
    angles = np.linspace(0.0, 2 * np.pi, steps, endpoint=False)
    for r in np.arange(radius, radius + width, 0.5):
        _plot(rgb, x + r * np.cos(angles), y + r * np.sin(angles), colour)


def draw_polyline(
    rgb: np.ndarray,
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    colour: tuple[int, int, int],
) -> None:
    """Draw straight segments through the points ``(xs[i], ys[i])``, in place (NaN points break the line)."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    for i in range(len(x) - 1):
        if not np.isfinite([x[i], y[i], x[i + 1], y[i + 1]]).all():
            continue
        n = int(max(abs(x[i + 1] - x[i]), abs(y[i + 1] - y[i]))) * 2 + 2
        t = np.linspace(0.0, 1.0, n)
        _plot(rgb, x[i] + t * (x[i + 1] - x[i]), y[i] + t * (y[i + 1] - y[i]), colour)
    if len(x) == 1 and np.isfinite([x[0], y[0]]).all():
        _plot(rgb, x[:1], y[:1], colour)


def panel_grid(
    traces: Sequence[np.ndarray], *, panel_px: int = 96, columns: int = 8, half_range: float | None = None
) -> np.ndarray:
    """One square panel per trace ``(n, 2)`` (x, y), all at one scale, laid out row by row from the top left.

    Every panel has grey axes through its centre (the origin) and a grey square at ``±half_range`` (the largest
    absolute value over all traces when None); the trace is drawn in yellow with its first point in green and its
    last in red. Returns ``(y, x, 3)`` uint8 with row 0 at the bottom.
    """
    if not traces:
        raise ValueError("panel_grid needs at least one trace")
    values = np.concatenate([np.asarray(t, dtype=np.float64).reshape(-1, 2) for t in traces])
    scale_range = half_range or float(np.nanmax(np.abs(values))) or 1.0
    rows = (len(traces) + columns - 1) // columns
    grid = np.full((rows * panel_px, min(columns, len(traces)) * panel_px, 3), 16, dtype=np.uint8)
    half = panel_px / 2.0 - 4.0
    for k, trace in enumerate(traces):
        row, col = divmod(k, columns)
        cx = col * panel_px + panel_px / 2.0
        cy = (rows - 1 - row) * panel_px + panel_px / 2.0  # first row at the top of the picture
        box = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=np.float64) * half
        draw_polyline(grid, cx + box[:, 0], cy + box[:, 1], COLOURS["grey"])
        draw_polyline(grid, [cx - half, cx + half], [cy, cy], COLOURS["grey"])
        draw_polyline(grid, [cx, cx], [cy - half, cy + half], COLOURS["grey"])
        points = np.asarray(trace, dtype=np.float64).reshape(-1, 2) / scale_range * half
        draw_polyline(grid, cx + points[:, 0], cy + points[:, 1], COLOURS["yellow"])
        for index, colour in ((0, "green"), (-1, "red")):
            draw_circle(grid, cx + points[index, 0], cy + points[index, 1], 1.5, COLOURS[colour], width=1.5)
    return grid


def curves_svg(
    x_values: np.ndarray,
    series: Sequence[tuple[str, np.ndarray, str]],
    *,
    title: str,
    x_label: str,
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    guides: Sequence[float] = (),
    x_resolution_ticks: bool = False,
    x_low: float | None = 0.0,
) -> str:
    """A self-contained SVG line plot of one or more curves against one axis (600 × 340, with a ``viewBox`` so a
    page may scale it).

    Parameters
    ----------
    x_values
        ``(n,)`` abscissae shared by the curves.
    series
        ``(name, (n,) values, colour)`` per curve; non-finite values break nothing, they are left out. With more
        than one curve, a legend sized to the longest name sits at the top right.
    title, x_label, y_label
        Text above the plot, under the x axis and along the y axis.
    y_range
        ``(low, high)`` of the y axis (values outside are clipped to it); default: the curves' range, padded.
    guides
        Horizontal lines with their value as the y tick labels (e.g. FSC 0, 0.143, 0.5, 1); default: nice ticks.
    x_resolution_ticks
        Label x ticks as ``1/d`` (spatial frequency axes).
    x_low
        Left end of the x axis; None: the smallest abscissa.
    """
    from tomoforge.steps._ctf_plots import nice_ticks

    width, height = 600, 340
    left, top, bottom = (72 if y_label else 60), 30, 288
    right = width - 16
    x = np.asarray(x_values, dtype=np.float64)
    finite_x = x[np.isfinite(x)]
    x_min = float(finite_x.min()) if x_low is None and finite_x.size else float(x_low or 0.0)
    x_max = float(finite_x.max()) if finite_x.size else 1.0
    if x_max <= x_min:
        x_max = x_min + 1.0
    if y_range is None:
        values = np.concatenate(
            [np.asarray(v, dtype=np.float64).ravel() for _, v, _ in series] or [np.zeros(1)]
        )
        values = values[np.isfinite(values)]
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        pad = 0.05 * (high - low) if high > low else 0.5
        y_range = (low - pad, high + pad)
    y_low, y_high = y_range

    def px(v: float) -> float:
        return left + (v - x_min) / (x_max - x_min) * (right - left)

    def py(v: float) -> float:
        clipped = min(max(v, y_low), y_high)
        return bottom - (clipped - y_low) / (y_high - y_low) * (bottom - top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    y_ticks = list(guides) or [float(t) for t in nice_ticks(y_low, y_high) if y_low <= t <= y_high]
    for v in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(v):.1f}" x2="{right}" y2="{py(v):.1f}" stroke="#ccc"/>')
        out.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for t in nice_ticks(x_min, x_max):
        if x_min <= t <= x_max and not (x_resolution_ticks and t <= 0):
            label = f"1/{1 / t:.3g}" if x_resolution_ticks else f"{t:g}"
            out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{bottom}" stroke="#eee"/>')
            out.append(f'<text x="{px(t):.1f}" y="{bottom + 16}" text-anchor="middle">{label}</text>')
    legend_width = 30 + 6.5 * max((len(name) for name, _, _ in series), default=0)
    for i, (name, values, colour) in enumerate(series):
        points = [
            f"{px(float(a)):.1f},{py(float(b)):.1f}"
            for a, b in zip(x, np.asarray(values, dtype=np.float64), strict=True)
            if math.isfinite(float(a)) and math.isfinite(float(b))
        ]
        if points:
            out.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        if len(series) > 1:
            y_legend = top + 16 + 15 * i
            x_legend = right - legend_width
            out.append(
                f'<line x1="{x_legend:.1f}" y1="{y_legend - 4}" x2="{x_legend + 20:.1f}" y2="{y_legend - 4}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
            out.append(
                f'<text x="{x_legend + 25:.1f}" y="{y_legend}" paint-order="stroke" stroke="white" '
                f'stroke-width="3">{html.escape(name)}</text>'
            )
    out.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#333"/>'
    )
    out.append(f'<text x="{left}" y="{top - 10}" font-size="13">{html.escape(title)}</text>')
    out.append(
        f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">{html.escape(x_label)}</text>'
    )
    if y_label:
        middle = (top + bottom) / 2
        out.append(
            f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})">'
            f"{html.escape(y_label)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
