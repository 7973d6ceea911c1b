"""The average's pictures: the isosurface shows where the density is, the angular map where the particles point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomoforge.steps._map_pictures import angular_distribution_png, isosurface_png

N = 32


def _ball(centre_xyz: tuple[float, float, float], radius: float) -> np.ndarray:
    zz, yy, xx = np.indices((N, N, N)) - N // 2
    x, y, z = centre_xyz
    return (((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) <= radius**2).astype(np.float64)


def test_the_isosurface_shows_a_ball_where_it_is(
    tmp_path: Path, png_decode: Callable[[bytes], tuple[int, Any]]
) -> None:
    volume = _ball((0, 0, 0), 6.0) + _ball((9, 9, 0), 3.0)  # a small ball at +x, +y
    _, rows = png_decode(isosurface_png(volume, tmp_path / "iso.png", level=0.5).read_bytes())
    scale = 192 // N
    top = rows[::scale, : N * scale : scale, 0]
    assert rows.shape[1] == 3 * N * scale + 8
    filled = top < 255
    assert abs(int(filled.sum()) - (np.pi * 36 + np.pi * 9)) < 0.2 * (np.pi * 45)
    # Seen from the top with y up: the small ball is to the right (+x) and above (+y, smaller row index).
    small = filled[: N // 2 - 4, N // 2 + 4 :]
    assert small.sum() > 15 and filled[N // 2 + 4 :, : N // 2 - 4].sum() == 0
    # Lit from +x +y +z: the lit side of the big ball is brighter than the far side.
    assert int(top[N // 2 - 3, N // 2 + 3]) > int(top[N // 2 + 3, N // 2 - 3])


def test_the_angular_map_puts_each_axis_at_its_azimuth_and_elevation(
    tmp_path: Path, png_decode: Callable[[bytes], tuple[int, Any]]
) -> None:
    up = np.tile(np.eye(3), (50, 1, 1))  # z axes along +z: elevation 90°, the top row
    along_x = np.tile(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]), (50, 1, 1))  # z axis +x
    _, rows = png_decode(
        angular_distribution_png(np.concatenate([up, along_x]), tmp_path / "a.png").read_bytes()
    )
    grey = rows[:, :, 0]
    height, width = grey.shape
    assert int(grey[:2, width // 2 - 2 : width // 2 + 2].min()) == 0  # the pole, at the top
    assert int(grey[height // 4 : height // 2 - 4].min()) == 255  # nothing at mid elevations
    # Azimuth 0, elevation 0: the middle of the map (just above the equator row drawn there).
    middle = grey[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2]
    assert int(middle.min()) == 0
