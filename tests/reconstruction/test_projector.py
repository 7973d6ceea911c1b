"""Back-projection, projection and SIRT against analytic Gaussian beads and the projection model (§7, §11).

A 3D Gaussian ``exp(−|r − c|² / 2σ²)`` projects along any direction to ``σ√(2π)·exp(−ρ² / 2σ²)``, ``ρ`` the 2D
distance from the projected centre, so the views below are exact line integrals at every tilt (unlike a
simulator that samples layers). Bead centres are projected with :func:`tomoforge.geometry.project_points` in the
aligned frame (tilt axis along y, image centre at pixel ``N // 2``): the reconstruction is tested against the one
projection model every step uses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoforge.geometry import project_points, projection_matrices
from tomoforge.reconstruction import (
    backproject_general,
    backproject_single_axis,
    full_ray_width,
    general_rows_needed,
    project_single_axis,
    single_axis_matrix,
    sirt_slab,
    transpose_matrix,
    weight_projections,
    weighting_filters,
)

SIGMA = 1.5
PADDED = 256
# (x, y, z) specimen positions in pixels from the tomogram centre
BEADS_XYZ = ((10.0, 5.0, 12.0), (-20.0, -8.0, -10.0), (30.0, 20.0, 0.0), (0.0, 0.0, 0.0))
SHAPE_ZYX = (48, 64, 96)
VIEW_HW = (64, 128)
FULL_RANGE = torch.arange(-89.0, 90.0, 1.0)
LIMITED_RANGE = torch.arange(-60.0, 61.0, 3.0)


def bead_views(
    angles_deg: torch.Tensor,
    height: int,
    width: int,
    beads_xyz: tuple[tuple[float, float, float], ...] = BEADS_XYZ,
    *,
    x_tilt_deg: float = 0.0,
    sigma: float = SIGMA,
) -> torch.Tensor:
    """``(m, height, width)`` exact projections of unit Gaussian beads in the aligned frame."""
    matrices = projection_matrices(angles_deg.to(torch.float64), 0.0, None, x_tilt_deg)
    centres = project_points(torch.tensor(beads_xyz, dtype=torch.float64), matrices)  # (m, n, 3)
    y = torch.arange(height, dtype=torch.float64) - height // 2
    x = torch.arange(width, dtype=torch.float64) - width // 2
    dx = x[None, None, None, :] - centres[:, :, 0, None, None]
    dy = y[None, None, :, None] - centres[:, :, 1, None, None]
    gauss = sigma * math.sqrt(2.0 * math.pi) * torch.exp(-(dx**2 + dy**2) / (2.0 * sigma**2))
    return gauss.sum(dim=1).to(torch.float32)


def bead_volume(
    shape_zyx: tuple[int, int, int],
    beads_xyz: tuple[tuple[float, float, float], ...] = BEADS_XYZ,
    *,
    offset_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
    sigma: float = SIGMA,
) -> torch.Tensor:
    """The phantom sampled on the tomogram's voxels (centre voxel at specimen ``offset_xyz``)."""
    nz, ny, nx = shape_zyx
    axes = [
        torch.arange(n, dtype=torch.float64) - n // 2 + o
        for n, o in zip((nx, ny, nz), offset_xyz, strict=True)
    ]
    x, y, z = axes
    volume = torch.zeros(shape_zyx, dtype=torch.float64)
    for bx, by, bz in beads_xyz:
        r2 = (z[:, None, None] - bz) ** 2 + (y[None, :, None] - by) ** 2 + (x[None, None, :] - bx) ** 2
        volume += torch.exp(-r2 / (2.0 * sigma**2))
    return volume.to(torch.float32)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double() - a.double().mean()
    b = b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def scale_against(rec: torch.Tensor, truth: torch.Tensor) -> float:
    """Least-squares scale of the truth that best matches the reconstruction."""
    return float((rec.double() * truth.double()).sum() / (truth.double() ** 2).sum())


def voxel_of(bead_xyz: tuple[float, float, float], shape_zyx, offset_xyz=(0.0, 0.0, 0.0)) -> tuple[int, ...]:
    """(k, j, i) index of an integer specimen position."""
    return tuple(
        int(round(b - o)) + n // 2
        for b, o, n in zip(bead_xyz[::-1], offset_xyz[::-1], shape_zyx, strict=True)
    )


def local_peak(volume: torch.Tensor, index: tuple[int, ...], radius: int = 3) -> tuple[int, ...]:
    """Index of the maximum within ``radius`` voxels of ``index``."""
    lo = [max(0, c - radius) for c in index]
    window = volume[
        lo[0] : index[0] + radius + 1, lo[1] : index[1] + radius + 1, lo[2] : index[2] + radius + 1
    ]
    offset = np.unravel_index(int(window.argmax()), tuple(window.shape))
    return tuple(int(a + b) for a, b in zip(lo, offset, strict=True))


def global_peak(volume: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unravel_index(int(volume.argmax()), tuple(volume.shape)))


def wbp(
    angles_deg: torch.Tensor,
    views: torch.Tensor,
    shape_zyx: tuple[int, int, int],
    *,
    matrix_angles_deg: torch.Tensor | None = None,
    x_offset_px: float = 0.0,
    z_offset_px: float = 0.0,
) -> torch.Tensor:
    """Ramp-weighted back-projection of all rows of ``views`` (rows map 1:1 to tomogram rows)."""
    nz, _, nx = shape_zyx
    weighted = weight_projections(views, weighting_filters(angles_deg, PADDED, cutoff=None), PADDED)
    matrix = single_axis_matrix(
        angles_deg if matrix_angles_deg is None else matrix_angles_deg,
        detector_width=views.shape[-1],
        volume_width=nx,
        thickness=nz,
        x_offset_px=x_offset_px,
        z_offset_px=z_offset_px,
    )
    return backproject_single_axis(matrix, weighted, nz, nx)


def missing_wedge(volume: torch.Tensor, max_tilt_deg: float) -> torch.Tensor:
    """The volume with only the Fourier components that views up to ``max_tilt_deg`` measure (plus DC)."""
    nz, _, nx = volume.shape
    kz = torch.fft.fftfreq(nz, dtype=torch.float64)[:, None, None]
    kx = torch.fft.fftfreq(nx, dtype=torch.float64)[None, None, :]
    keep = (kz.abs() <= math.tan(math.radians(max_tilt_deg)) * kx.abs()) | ((kz == 0) & (kx == 0))
    return torch.fft.ifftn(torch.fft.fftn(volume.double()) * keep).real.to(torch.float32)


@pytest.fixture(scope="module")
def full_range_wbp() -> torch.Tensor:
    views = bead_views(FULL_RANGE, *VIEW_HW)
    return wbp(FULL_RANGE, views, SHAPE_ZYX)


# --- geometry against the projection model ------------------------------------------------------------------


def test_a_bead_above_the_centre_moves_to_plus_x_in_a_positive_tilt_and_the_kernel_agrees():
    bead = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)
    image_x = float(project_points(bead, projection_matrices(torch.tensor([30.0]), 0.0))[0, 0, 0])
    assert image_x == pytest.approx(10.0 * math.sin(math.radians(30.0)))  # §7: x' = x cos θ + z sin θ
    nz, nx, width = 32, 48, 64
    volume = torch.zeros(nz, 1, nx)
    volume[nz // 2 + 10, 0, nx // 2] = 1.0
    projector = transpose_matrix(
        single_axis_matrix([30.0], detector_width=width, volume_width=nx, thickness=nz)
    )
    row = project_single_axis(projector, volume, 1)[0, 0]
    assert int(row.argmax()) == width // 2 + 5 and float(row.max()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("offsets", [(0.0, 0.0), (7.0, -5.0), (-3.25, 2.5)])
def test_every_voxel_projects_where_project_points_puts_it(offsets):
    # a voxel's projected row is its linear-interpolation footprint: its centroid is the model's image x
    ox, oz = offsets
    nz, nx, width = 12, 20, 48
    angles = torch.tensor([-71.0, -40.0, -3.0, 0.0, 17.0, 55.0, 88.0])
    projector = transpose_matrix(
        single_axis_matrix(
            angles, detector_width=width, volume_width=nx, thickness=nz, x_offset_px=ox, z_offset_px=oz
        )
    )
    k, i = torch.meshgrid(torch.arange(nz), torch.arange(nx), indexing="ij")
    volume = torch.eye(nz * nx).reshape(nz * nx, nz, nx).permute(1, 0, 2)  # (nz, one voxel per row, nx)
    rows = project_single_axis(projector, volume, len(angles)).double()  # (m, nz·nx, W)
    u = torch.arange(width, dtype=torch.float64)
    centroid = (rows * u).sum(-1) / rows.sum(-1)
    points = (
        torch.stack([i - nx // 2 + ox, torch.zeros_like(i), k - nz // 2 + oz], -1).reshape(-1, 3).double()
    )
    expected = project_points(points, projection_matrices(angles.double(), 0.0))[..., 0] + width // 2
    inside = (expected >= 0) & (expected <= width - 1)
    assert bool(inside.all())
    np.testing.assert_allclose(centroid.numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(rows.sum(-1).numpy(), 1.0, atol=1e-5)  # every voxel sends all of itself


def test_beads_come_back_at_their_voxels_and_not_mirrored(full_range_wbp):
    rec = full_range_wbp
    top = float(rec.max())
    for bead in BEADS_XYZ:
        index = voxel_of(bead, SHAPE_ZYX)
        assert local_peak(rec, index) == index, bead
        assert float(rec[index]) > 0.8 * top
        if bead[2] != 0:
            mirrored = voxel_of((bead[0], bead[1], -bead[2]), SHAPE_ZYX)
            assert float(rec[mirrored]) < 0.05 * top, bead
    k, _, _ = voxel_of(BEADS_XYZ[0], SHAPE_ZYX)
    assert k > SHAPE_ZYX[0] // 2  # z = +12 is above the centre section


def test_handedness_mirror_control_negated_tilts_put_the_bead_at_minus_z():
    angles = torch.arange(-88.0, 89.0, 2.0)
    bead = ((12.0, 4.0, 10.0),)
    shape = (32, 16, 64)
    views = bead_views(angles, 16, 96, bead)
    right = wbp(angles, views, shape)
    mirrored = wbp(angles, views, shape, matrix_angles_deg=-angles)
    assert global_peak(right) == voxel_of(bead[0], shape) == (26, 12, 44)
    assert global_peak(mirrored) == voxel_of((12.0, 4.0, -10.0), shape)
    assert float(right.max()) == pytest.approx(float(mirrored.max()), rel=1e-3)


def test_the_tilt_axis_is_y_rows_never_mix():
    angles = torch.arange(-88.0, 89.0, 2.0)
    bead = ((12.0, 4.0, -6.0),)
    shape = (32, 16, 64)
    views = bead_views(angles, 16, 96, bead)
    # the model keeps image y = specimen y in every single-axis view
    centre = project_points(
        torch.tensor(bead, dtype=torch.float64), projection_matrices(angles.double(), 0.0)
    )
    np.testing.assert_allclose(centre[:, 0, 1].numpy(), 4.0, atol=1e-12)
    rec = wbp(angles, views, shape)
    k, j, i = voxel_of(bead[0], shape)
    assert global_peak(rec) == (k, j, i)
    # along y the bead keeps the Gaussian profile of the views: the same profile in every (z, x) column
    profile = rec[k, :, i].double()
    expected = torch.exp(-((torch.arange(16) - j) ** 2) / (2 * SIGMA**2)).double()
    np.testing.assert_allclose((profile / profile[j]).numpy(), expected.numpy(), atol=1e-5)
    # a view row that is empty leaves its tomogram row exactly empty
    views[:, 3] = 0.0
    assert float(wbp(angles, views, shape)[:, 3].abs().max()) == 0.0


def test_offsets_put_the_centre_voxel_at_the_specimen_offset():
    ox, oz = 7.0, -5.0
    shape = (48, 64, 96)
    views = bead_views(FULL_RANGE, *VIEW_HW)
    centred = wbp(FULL_RANGE, views, shape)
    moved = wbp(FULL_RANGE, views, shape, x_offset_px=ox, z_offset_px=oz)
    # voxel (k, i) of the moved tomogram is specimen (i − nx//2 + ox, k − nz//2 + oz) = voxel (k + oz, i + ox)
    np.testing.assert_allclose(moved[5:, :, : 96 - 7].numpy(), centred[:-5, :, 7:].numpy(), atol=1e-5)
    for bead in BEADS_XYZ[:2]:
        index = voxel_of(bead, shape, (ox, 0.0, oz))
        assert local_peak(moved, index) == index


# --- accuracy ------------------------------------------------------------------------------------------------


def test_full_range_wbp_recovers_the_phantom(full_range_wbp):
    truth = bead_volume(SHAPE_ZYX)
    assert correlation(full_range_wbp, truth) >= 0.99  # measured 0.9984
    assert scale_against(full_range_wbp, truth) == pytest.approx(1.0, abs=0.1)  # measured 0.961


def test_limited_range_wbp_recovers_the_wedge_filtered_phantom():
    views = bead_views(LIMITED_RANGE, *VIEW_HW)
    rec = wbp(LIMITED_RANGE, views, SHAPE_ZYX)
    truth = bead_volume(SHAPE_ZYX)
    assert correlation(rec, missing_wedge(truth, 61.5)) >= 0.95  # measured 0.988
    assert correlation(rec, truth) < 0.9  # the wedge is really missing (measured 0.836)
    for bead in BEADS_XYZ:
        index = voxel_of(bead, SHAPE_ZYX)
        assert local_peak(rec, index) == index


# --- projector ------------------------------------------------------------------------------------------------


def test_project_is_the_exact_adjoint_of_backproject():
    generator = torch.Generator().manual_seed(0)
    angles = torch.tensor([-62.0, -31.5, 0.0, 14.0, 47.0, 70.0])
    nz, r, nx, width = 20, 5, 36, 50
    matrix = single_axis_matrix(
        angles, detector_width=width, volume_width=nx, thickness=nz, x_offset_px=2.5, z_offset_px=-1.5
    )
    transposed = transpose_matrix(matrix)
    np.testing.assert_array_equal(transposed.to_dense().numpy(), matrix.to_dense().T.numpy())
    volume = torch.randn(nz, r, nx, generator=generator, dtype=torch.float64)
    rows = torch.randn(len(angles), r, width, generator=generator, dtype=torch.float64)
    forward = float((project_single_axis(transposed, volume, len(angles)).double() * rows).sum())
    backward = float((volume * backproject_single_axis(matrix, rows, nz, nx).double()).sum())
    assert forward == pytest.approx(backward, rel=1e-5)


def test_a_uniform_slab_projects_to_thickness_over_cos_tilt():
    angles = torch.tensor([-60.0, -45.0, -20.0, 0.0, 10.0, 30.0, 45.0, 60.0])
    nz, width = 32, 64
    nx = full_ray_width(angles, detector_width=width, thickness=nz, volume_width=64)
    matrix = single_axis_matrix(angles, detector_width=width, volume_width=nx, thickness=nz)
    rows = project_single_axis(transpose_matrix(matrix), torch.ones(nz, 1, nx), len(angles))[:, 0]
    ratio = rows.double() / (nz / torch.cos(torch.deg2rad(angles.double())))[:, None]
    # on average over the detector exactly; per pixel within the aliasing of voxel-driven linear interpolation
    np.testing.assert_allclose(ratio.mean(1).numpy(), 1.0, atol=2e-3)
    assert float((ratio - 1).abs().max()) < 0.13  # measured 0.121 at ±45°
    small = angles.abs() <= 30
    assert float((ratio[small] - 1).abs().max()) < 3e-3  # measured 1.9e-3
    np.testing.assert_allclose(ratio[angles == 0].numpy(), 1.0, atol=1e-6)
    # a volume of the views' width is not wide enough: edge rays leave it through its sides at 60°
    narrow = single_axis_matrix(angles, detector_width=width, volume_width=width, thickness=nz)
    short = project_single_axis(transpose_matrix(narrow), torch.ones(nz, 1, width), len(angles))[:, 0]
    assert float(short[-1, 0]) == 0.0 and nx > width


def test_bad_projector_sizes_are_refused():
    with pytest.raises(ValueError, match="views"):
        single_axis_matrix([], detector_width=64, volume_width=64, thickness=16)
    with pytest.raises(ValueError, match="width 1"):
        single_axis_matrix([0.0], detector_width=1, volume_width=64, thickness=16)


# --- SIRT ----------------------------------------------------------------------------------------------------

SIRT_BEADS = ((10.0, 1.0, 8.0), (-14.0, -1.0, -6.0), (20.0, 2.0, 0.0), (0.0, 0.0, 0.0))
SIRT_SHAPE = (32, 8, 64)
SIRT_ANGLES = torch.arange(-89.0, 90.0, 2.0)


@pytest.fixture(scope="module")
def sirt_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    nz, _, nx = SIRT_SHAPE
    matrix = single_axis_matrix(SIRT_ANGLES, detector_width=96, volume_width=nx, thickness=nz)
    return matrix, transpose_matrix(matrix), bead_views(SIRT_ANGLES, 8, 96, SIRT_BEADS)


def test_sirt_residual_decreases_and_the_result_approaches_the_phantom(sirt_problem):
    matrix, transposed, views = sirt_problem
    nz, _, nx = SIRT_SHAPE
    residuals: list[tuple[int, float]] = []
    rec = sirt_slab(
        matrix,
        transposed,
        views,
        thickness=nz,
        volume_width=nx,
        iterations=60,
        on_iteration=lambda k, r: residuals.append((k, r)),
    )
    assert [k for k, _ in residuals] == list(range(1, 61))
    values = np.array([r for _, r in residuals])
    assert values[0] == pytest.approx(1.0)  # from zeros, the residual is the data
    assert bool(np.all(np.diff(values) < 0))
    assert values[-1] < 0.06  # measured 0.045
    truth = bead_volume(SIRT_SHAPE, SIRT_BEADS)
    assert correlation(rec, truth) >= 0.99  # measured 0.9984
    assert scale_against(rec, truth) == pytest.approx(1.0, abs=0.05)  # measured 0.994
    for bead in SIRT_BEADS:
        index = voxel_of(bead, SIRT_SHAPE)
        assert local_peak(rec, index) == index
    # starting from the answer, little is left to do
    first: list[float] = []
    sirt_slab(
        matrix,
        transposed,
        views,
        thickness=nz,
        volume_width=nx,
        iterations=1,
        initial=truth,
        on_iteration=lambda k, r: first.append(r),
    )
    assert first[0] < 0.05


def test_sirt_keeps_the_scale_of_a_uniform_slab():
    nz, nx, width = 16, 64, 64
    wide = full_ray_width(SIRT_ANGLES, detector_width=width, thickness=nz, volume_width=nx)
    matrix = single_axis_matrix(SIRT_ANGLES, detector_width=width, volume_width=wide, thickness=nz)
    transposed = transpose_matrix(matrix)
    rows = project_single_axis(transposed, torch.ones(nz, 2, wide), len(SIRT_ANGLES))
    rec = sirt_slab(matrix, transposed, rows, thickness=nz, volume_width=wide, iterations=3)
    np.testing.assert_allclose(rec.numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("relaxation", [0.0, 2.0, -0.5, 2.5])
def test_sirt_relaxation_outside_0_2_is_refused(sirt_problem, relaxation):
    matrix, transposed, views = sirt_problem
    with pytest.raises(ValueError, match="relaxation"):
        sirt_slab(
            matrix, transposed, views, thickness=32, volume_width=64, iterations=1, relaxation=relaxation
        )


# --- general back-projection ------------------------------------------------------------------------------

GENERAL_SHAPE = (32, 32, 64)
GENERAL_BEADS = ((10.0, 5.0, 8.0), (-14.0, -8.0, -6.0), (20.0, 10.0, 0.0), (0.0, 0.0, 0.0))


def test_general_backprojection_equals_the_fast_path_without_x_tilt():
    nz, ny, nx = GENERAL_SHAPE
    ox, oy, oz = 5.0, 3.0, -4.0
    height, width = 48, 96
    views = bead_views(LIMITED_RANGE, height, width, GENERAL_BEADS)
    weighted = weight_projections(views, weighting_filters(LIMITED_RANGE, PADDED, cutoff=None), PADDED)
    matrix = single_axis_matrix(
        LIMITED_RANGE, detector_width=width, volume_width=nx, thickness=nz, x_offset_px=ox, z_offset_px=oz
    )
    # tomogram row j is image row j − ny//2 + oy + H//2
    first_row = int(oy) + height // 2 - ny // 2
    fast = backproject_single_axis(matrix, weighted[:, first_row : first_row + ny], nz, nx)
    general = backproject_general(
        weighted, 0, height, projection_matrices(LIMITED_RANGE, 0.0), GENERAL_SHAPE, (0, ny), (ox, oy, oz)
    )
    np.testing.assert_allclose(general.numpy(), fast.numpy(), atol=1e-6 * float(fast.abs().max()))


@pytest.mark.parametrize("x_tilt_deg", [10.0, -10.0])
def test_general_backprojection_with_x_tilt_finds_the_beads_slab_by_slab(x_tilt_deg):
    nz, ny, nx = GENERAL_SHAPE
    height, width = 48, 96
    matrices = projection_matrices(LIMITED_RANGE, 0.0, None, x_tilt_deg)
    views = bead_views(LIMITED_RANGE, height, width, GENERAL_BEADS, x_tilt_deg=x_tilt_deg)
    weighted = weight_projections(views, weighting_filters(LIMITED_RANGE, PADDED, cutoff=None), PADDED)
    whole = backproject_general(weighted, 0, height, matrices, GENERAL_SHAPE, (0, ny))
    top = float(whole.max())
    for bead in GENERAL_BEADS:
        index = voxel_of(bead, GENERAL_SHAPE)
        assert local_peak(whole, index) == index, bead
        assert float(whole[index]) > 0.8 * top
    assert correlation(whole, missing_wedge(bead_volume(GENERAL_SHAPE, GENERAL_BEADS), 61.5)) > 0.95  # 0.965
    for j0, j1 in [(0, 10), (10, 21), (21, 32)]:
        r0, r1 = general_rows_needed(matrices, GENERAL_SHAPE, (j0, j1), (0.0, 0.0, 0.0), height)
        assert r1 - r0 < height
        slab = backproject_general(weighted[:, r0:r1], r0, height, matrices, GENERAL_SHAPE, (j0, j1))
        np.testing.assert_allclose(slab.numpy(), whole[:, j0:j1].numpy(), atol=1e-6 * top)
    # mirror control: the opposite x-tilt misses the beads off the tilt axis
    wrong = backproject_general(
        weighted,
        0,
        height,
        projection_matrices(LIMITED_RANGE, 0.0, None, -x_tilt_deg),
        GENERAL_SHAPE,
        (0, ny),
    )
    assert float(wrong[voxel_of(GENERAL_BEADS[0], GENERAL_SHAPE)]) < 0.25 * top  # measured 0.13


def test_slabs_beyond_the_edge_of_the_views_equal_the_whole_volume():
    generator = torch.Generator().manual_seed(0)
    height, width, shape = 16, 32, (6, 24, 16)  # a tomogram taller than the views
    matrices = projection_matrices(torch.tensor([-40.0, 0.0, 40.0]), 0.0, None, 5.0)
    rows = torch.rand(3, height, width, generator=generator)
    whole = backproject_general(rows, 0, height, matrices, shape, (0, shape[1]))
    for j in range(shape[1]):
        r0, r1 = general_rows_needed(matrices, shape, (j, j + 1), (0.0, 0.0, 0.0), height)
        slab = backproject_general(rows[:, r0:r1], r0, height, matrices, shape, (j, j + 1))
        np.testing.assert_allclose(slab.numpy(), whole[:, j : j + 1].numpy(), atol=1e-5, err_msg=f"row {j}")
