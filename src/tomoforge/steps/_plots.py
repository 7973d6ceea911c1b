"""Small raster plots the steps write next to their outputs (PNG, no plotting library needed).

Images are ``(y, x, 3)`` uint8 arrays with row 0 at the bottom (written with ``origin="lower"``, so y points up as
in IMOD and CONVENTIONS.md §1); positions are in pixels of that array, x along columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["COLOURS", "draw_circle", "draw_polyline", "panel_grid", "to_rgb"]

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
