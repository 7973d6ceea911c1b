"""Pictures of an average a person looks at: a shaded isosurface from three directions, and the distribution of
the particles' orientations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["angular_distribution_svg", "isosurface_png"]


def _render(volume: np.ndarray, level: float) -> np.ndarray:
    """Grey ``(n, n)`` image of the isosurface at ``level`` seen along −z (orthographic; first voxel above the
    level along each ray, Lambert-shaded by the map's gradient there; background white)."""
    n = volume.shape[0]
    above = volume >= level
    hit = above.any(axis=0)
    depth = np.where(hit, n - 1 - np.argmax(above[::-1], axis=0), 0)  # first voxel from the +z side
    gz, gy, gx = np.gradient(volume)
    jj, ii = np.indices(depth.shape)
    normal = -np.stack([gx[depth, jj, ii], gy[depth, jj, ii], gz[depth, jj, ii]], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
    light = np.array([0.4, 0.5, 0.77])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(normal @ light, 0.0, 1.0)
    image = np.where(hit, shade * 255.0, 255.0)
    return image[::-1].astype(np.uint8)  # row 0 at the top, y up


def isosurface_png(volume: np.ndarray, path: Path, *, level: float | None = None) -> Path:
    """A PNG of the isosurface seen from the top (−z), the front (−y) and the side (−x), side by side, each
    magnified to about 200 pixels.

    Only the sphere inscribed in the box is drawn (so neighbours in the box corners, e.g. of a lattice, do not hide
    the particle). The default level encloses the brightest 5 % of the box's volume within that sphere (about a
    protein's volume in a box twice its size).
    """
    from tomoforge.io.png import write_png

    data = np.asarray(volume, dtype=np.float64)
    n = data.shape[0]
    zz, yy, xx = np.indices(data.shape) - n // 2
    inside = xx**2 + yy**2 + zz**2 <= (n / 2) ** 2
    if level is None:
        threshold = float(np.quantile(data[inside], 1.0 - 0.05 / inside.mean()))
    else:
        threshold = level
    data = np.where(inside, data, min(float(data.min()), threshold) - 1.0)
    views = [data, np.transpose(data, (1, 0, 2))[::-1], np.transpose(data, (2, 1, 0))]  # top, front, side
    scale = max(1, 192 // data.shape[0])  # tiles of about 200 pixels, whole-pixel magnification
    tiles = [np.kron(_render(v, threshold), np.ones((scale, scale), dtype=np.uint8)) for v in views]
    gap = np.full((tiles[0].shape[0], 4), 255, dtype=np.uint8)
    grey = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
    return write_png(np.repeat(grey[..., None], 3, axis=-1), path, origin="upper")


def angular_distribution_svg(rotations: np.ndarray, *, bin_deg: float = 5.0) -> str:
    """An SVG of where the particles' z axes point: an equirectangular map, azimuth −180…180° across and
    elevation −90…90° up, in ``bin_deg`` bins, darker for more particles, with labelled axes.

    Every non-empty bin is a ``<rect class="bin">`` with ``data-azimuth``, ``data-elevation`` (its centre, degrees)
    and ``data-count``.
    """
    import html

    axes = np.asarray(rotations, dtype=np.float64)[:, :, 2]
    azimuth = np.degrees(np.arctan2(axes[:, 1], axes[:, 0]))
    elevation = np.degrees(np.arcsin(np.clip(axes[:, 2], -1.0, 1.0)))
    n_el, n_az = int(round(180 / bin_deg)), int(round(360 / bin_deg))
    counts, _, _ = np.histogram2d(elevation, azimuth, bins=(n_el, n_az), range=((-90, 90), (-180, 180)))
    width, height, left, top = 600, 340, 56, 30
    plot_w, plot_h = width - left - 16, 270
    cell_w, cell_h = plot_w / n_az, plot_h / n_el

    def px(az: float) -> float:
        return left + (az + 180.0) / 360.0 * plot_w

    def py(el: float) -> float:
        return top + (90.0 - el) / 180.0 * plot_h

    peak = max(1.0, float(counts.max()))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for i, j in zip(*np.nonzero(counts), strict=True):
        el, az = -90.0 + (i + 0.5) * bin_deg, -180.0 + (j + 0.5) * bin_deg
        shade = 0.15 + 0.85 * float(counts[i, j]) / peak
        out.append(
            f'<rect class="bin" x="{px(az - bin_deg / 2):.1f}" y="{py(el + bin_deg / 2):.1f}" '
            f'width="{cell_w:.2f}" height="{cell_h:.2f}" fill="#1f3f8f" fill-opacity="{shade:.2f}" '
            f'data-azimuth="{az:g}" data-elevation="{el:g}" data-count="{int(counts[i, j])}"/>'
        )
    for az in range(-180, 181, 45):
        out.append(
            f'<line x1="{px(az):.1f}" y1="{top}" x2="{px(az):.1f}" y2="{top + plot_h}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{px(az):.1f}" y="{top + plot_h + 15}" text-anchor="middle">{az}</text>')
    for el in range(-90, 91, 30):
        out.append(
            f'<line x1="{left}" y1="{py(el):.1f}" x2="{left + plot_w}" y2="{py(el):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{py(el) + 4:.1f}" text-anchor="end">{el}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    title = f"Particle z-axis directions ({len(axes)} particles, darkest {int(counts.max())} per {bin_deg:g}° bin)"
    out.append(f'<text x="{left}" y="{top - 10}" font-size="13">{html.escape(title)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">azimuth (°)</text>')
    middle = top + plot_h / 2
    out.append(
        f'<text x="14" y="{middle}" text-anchor="middle" transform="rotate(-90 14 {middle})">elevation (°)</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
