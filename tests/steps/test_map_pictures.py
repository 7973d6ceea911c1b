"""The average's pictures: the isosurface shows where the density is, the angular map where the particles point."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np

from tomoforge.steps._map_pictures import angular_distribution_svg, isosurface_png

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


def test_the_angular_map_puts_each_axis_at_its_azimuth_and_elevation() -> None:
    up = np.tile(np.eye(3), (50, 1, 1))  # z axes along +z: elevation 90°
    along_x = np.tile(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]), (30, 1, 1))  # z axis +x
    along_y = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]), (20, 1, 1))  # z axis +y
    svg = angular_distribution_svg(np.concatenate([up, along_x, along_y]))
    ElementTree.fromstring(svg)  # well-formed
    bins = {
        (float(a), float(e)): int(c)
        for a, e, c in re.findall(
            r'data-azimuth="([-\d.]+)" data-elevation="([-\d.]+)" data-count="(\d+)"', svg
        )
    }
    assert sum(bins.values()) == 100 and len(bins) == 3
    pole = [c for (a, e), c in bins.items() if e > 85]
    assert pole == [50]
    assert (
        bins[(2.5, 2.5)] + bins.get((-2.5, 2.5), 0) + bins.get((2.5, -2.5), 0) + bins.get((-2.5, -2.5), 0)
        == 30
    )
    assert sum(c for (a, e), c in bins.items() if abs(a - 90) < 5 and abs(e) < 5) == 20
    # Darker for more: the pole's bin is the most opaque.
    opacities = [
        float(o) for o in re.findall(r'fill-opacity="([\d.]+)" data-azimuth="[-\d.]+" data-elevation="8', svg)
    ]
    assert opacities == [1.0]
    assert "azimuth (°)" in svg and "elevation (°)" in svg
