"""Pictures of an average a person looks at: a shaded isosurface from three directions, and the distribution of
the particles' orientations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["angular_distribution_png", "isosurface_png"]


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

    The default level encloses the brightest 5 % of the box (about a protein's volume in a box twice its size).
    """
    from tomoforge.io.png import write_png

    data = np.asarray(volume, dtype=np.float64)
    threshold = float(np.quantile(data, 0.95)) if level is None else level
    views = [data, np.transpose(data, (1, 0, 2))[::-1], np.transpose(data, (2, 1, 0))]  # top, front, side
    scale = max(1, 192 // data.shape[0])  # tiles of about 200 pixels, whole-pixel magnification
    tiles = [np.kron(_render(v, threshold), np.ones((scale, scale), dtype=np.uint8)) for v in views]
    gap = np.full((tiles[0].shape[0], 4), 255, dtype=np.uint8)
    grey = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
    return write_png(np.repeat(grey[..., None], 3, axis=-1), path, origin="upper")


def angular_distribution_png(rotations: np.ndarray, path: Path, *, width: int = 360) -> Path:
    """A PNG of where the particles' z axes point: an equirectangular map (azimuth −180…180° across, elevation
    −90…90° up, 2° bins scaled to ``width``), darker for more particles."""
    from tomoforge.io.png import write_png

    axes = np.asarray(rotations, dtype=np.float64)[:, :, 2]
    azimuth = np.degrees(np.arctan2(axes[:, 1], axes[:, 0]))
    elevation = np.degrees(np.arcsin(np.clip(axes[:, 2], -1.0, 1.0)))
    counts, _, _ = np.histogram2d(elevation, azimuth, bins=(90, 180), range=((-90, 90), (-180, 180)))
    scale = counts / max(1.0, float(counts.max()))
    grey = (255.0 * (1.0 - scale)).astype(np.uint8)[::-1]  # elevation up
    factor = max(1, width // 180)
    grey = np.kron(grey, np.ones((factor, factor), dtype=np.uint8))
    grey[grey.shape[0] // 2, :] = np.minimum(grey[grey.shape[0] // 2, :], 200)  # the equator
    return write_png(np.repeat(grey[..., None], 3, axis=-1), path, origin="upper")
