"""Grid, volume and tomogram sizes of one simulated tilt series (margins for delocalisation and motion)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tomoforge.ctf import electron_wavelength_angstrom
from tomoforge.simulate.dataset.acquisition import SeriesPlan
from tomoforge.simulate.presets import SimulationConfig

_Z_MARGIN_ANGSTROM = 150.0  # vacuum above and below the ice in the simulated volume
_VIRUS_GAP_ANGSTROM = 100.0  # build_specimen's min_gap: the ice grows to the tallest virus plus this


def _even_fast(n: float) -> int:
    """The smallest even 5-smooth integer ≥ n (a fast FFT size)."""
    m = max(2, int(math.ceil(n)))
    m += m % 2
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def _round_up(n: float, multiple: int) -> int:
    return multiple * int(math.ceil(n / multiple - 1e-9))


def _rotated_half_extent(width: float, height: float, angle_deg: float) -> tuple[float, float]:
    """Half extents (x, y) of the bounding box of a ``width × height`` rectangle rotated by ``angle_deg``."""
    c, s = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    return 0.5 * (c * width + s * height), 0.5 * (s * width + c * height)


@dataclass(frozen=True)
class _Sizes:
    frame_yx: tuple[int, int]
    grid_yx: tuple[int, int]  # simulation image grid (voxels), margins included, even
    fine_yx: tuple[int, int]  # the same at the frame pixel
    volume_zyx: tuple[int, int, int]
    field_xyz_angstrom: tuple[float, float, float]  # where objects are placed
    tomogram_zyx: tuple[int, int, int]  # tomogram voxels


def _sizes(config: SimulationConfig, plan: SeriesPlan) -> _Sizes:
    vs, pf, b = config.simulation_voxel_size_angstrom, config.frame_pixel_size_angstrom, config.upsampling
    fx, fy = config.frame_size_xy_px
    max_defocus = max(max(t.defocus_u_angstrom, t.defocus_v_angstrom) for t in plan.tilts)
    depth_reach = (
        0.5 * math.hypot(fx * pf, fy * pf) * math.sin(math.radians(60.0))
        + 2.0 * config.ice_thickness_angstrom
    )
    wavelength = float(electron_wavelength_angstrom(config.voltage_kv))
    delocalisation_px = wavelength * (max_defocus + depth_reach) / (2.0 * vs * vs)
    motion_px = float(np.abs(plan.motion_xy_px).max()) / b if plan.motion_xy_px.size else 0.0
    margin = int(math.ceil(delocalisation_px + motion_px)) + 4
    grid = (_even_fast(math.ceil(fy / b) + 2 * margin), _even_fast(math.ceil(fx / b) + 2 * margin))
    bt = config.tomogram_binning
    hx, hy = _rotated_half_extent(grid[1], grid[0], plan.tilt_axis_angle_deg)
    # Objects go into the field of view as the aligned images show it (tilt axis along y).
    swap = abs(math.sin(math.radians(plan.tilt_axis_angle_deg))) > abs(
        math.cos(math.radians(plan.tilt_axis_angle_deg))
    )
    field_x, field_y = (0.5 * fy * pf, 0.5 * fx * pf) if swap else (0.5 * fx * pf, 0.5 * fy * pf)
    tomo_x, tomo_y = (_round_up(2.0 * f / config.tomogram_voxel_size_angstrom, 2) for f in (field_x, field_y))
    # The volume covers the untilted, unshifted image grid; beyond it the ice goes on (border padding in
    # project_tilt), so stage shifts and high tilts see more ice but no more objects.
    nx = max(_round_up(2.0 * (hx + 2.0), 2 * bt), tomo_x * bt)
    ny = max(_round_up(2.0 * (hy + 2.0), 2 * bt), tomo_y * bt)
    r_max = config.virus_radius_range_angstrom[1] * (1.0 + config.virus_ellipticity)
    tallest = (
        2.0 * (r_max + config.membrane_thickness_angstrom / 2.0) + _VIRUS_GAP_ANGSTROM
        if config.n_viruses
        else 0.0
    )
    depth = max(config.ice_thickness_angstrom, tallest) + 2.0 * _Z_MARGIN_ANGSTROM
    nz = _round_up(depth / vs, 2 * bt)
    return _Sizes(
        frame_yx=(fy, fx),
        grid_yx=grid,
        fine_yx=(b * grid[0], b * grid[1]),
        volume_zyx=(nz, ny, nx),
        field_xyz_angstrom=(2.0 * field_x, 2.0 * field_y, nz * vs),
        tomogram_zyx=(nz // bt, tomo_y, tomo_x),
    )
