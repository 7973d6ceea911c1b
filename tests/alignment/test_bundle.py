"""Fiducial bundle adjustment and two-surface analysis against seeded synthetic tilt series with known geometry."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tomoforge.alignment.bundle import FiducialAlignment, fiducial_align
from tomoforge.alignment.surfaces import two_surface_analysis
from tomoforge.geometry import (
    project_points,
    projection_matrices,
    projection_matrices_from_xf,
    rotation_x,
    rotation_y,
)
from tomoforge.simulate.scoring.alignment import fit_rigid_specimen_transform

IMAGE = (512, 512)
CENTRE = np.array([256.0, 256.0])
NOMINAL = np.arange(-60.0, 61.0, 3.0)  # 41 views
REF = 20  # the 0° view
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass
class Series:
    tilt_deg: np.ndarray  # (n,) true tilt angles
    axis_deg: np.ndarray  # (n,)
    mag: np.ndarray  # (n,)
    shifts: np.ndarray  # (n, 2)
    beads: np.ndarray  # (b, 3), z centroid 0
    clean_px: np.ndarray  # (b, n, 2) raw 0-based pixel coordinates without noise
    observed_px: np.ndarray  # (b, n, 2) with noise, NaN where missing, outliers added
    outliers: np.ndarray  # (k, 2) (bead, view)


def rz_ry(axis_deg: np.ndarray, tilt_deg: np.ndarray) -> np.ndarray:
    """``(n, 3, 3)`` Rz(α)·Ry(θ), written out independently of the code under test."""
    a, t = np.deg2rad(axis_deg), np.deg2rad(tilt_deg)
    ca, sa, ct, st = np.cos(a), np.sin(a), np.cos(t), np.sin(t)
    zero = np.zeros_like(a)
    return np.stack(
        [
            np.stack([ca * ct, -sa, ca * st], -1),
            np.stack([sa * ct, ca, sa * st], -1),
            np.stack([-st, zero, ct], -1),
        ],
        -2,
    )


def project(
    series_axis: np.ndarray, tilt: np.ndarray, mag: np.ndarray, shifts: np.ndarray, beads: np.ndarray
):
    rot = rz_ry(series_axis, tilt)[:, :2]
    return mag[None, :, None] * np.einsum("nij,bj->bni", rot, beads) + shifts[None] + CENTRE


def make_series(
    seed: int,
    *,
    n_beads: int = 30,
    thickness_px: float = 200.0,
    noise_px: float = 0.3,
    missing: float = 0.1,
    n_outliers: int = 6,
    tilt_offsets_deg: float = 0.5,
    axis_deviation_deg: float = 0.3,
    mag_deviation: float = 0.005,
) -> Series:
    """Beads on both surfaces of a flat slab, per-view tilt/axis/magnification errors, shifts, noise, gaps."""
    rng = np.random.default_rng(seed)
    n = NOMINAL.size
    tilt = NOMINAL + rng.uniform(-tilt_offsets_deg, tilt_offsets_deg, n)
    tilt[REF] = NOMINAL[REF]
    axis = 85.3 + rng.uniform(-axis_deviation_deg, axis_deviation_deg, n)
    mag = 1.0 + rng.uniform(-mag_deviation, mag_deviation, n)
    mag[REF] = 1.0
    shifts = rng.uniform(-20.0, 20.0, (n, 2))
    shifts[REF] = 0.0
    top = np.arange(n_beads) % 2 == 0
    z = np.where(top, thickness_px / 2, -thickness_px / 2) + rng.normal(0.0, 0.5, n_beads)
    beads = np.stack([rng.uniform(-200, 200, n_beads), rng.uniform(-200, 200, n_beads), z], -1)
    beads[:, 2] -= beads[:, 2].mean()
    clean = project(axis, tilt, mag, shifts, beads)
    observed = clean + rng.normal(0.0, noise_px, clean.shape)
    gone = rng.random((n_beads, n)) < missing
    observed[gone] = np.nan
    present = np.argwhere(~gone)
    outliers = present[rng.choice(len(present), n_outliers, replace=False)]
    directions = rng.uniform(0.0, 2 * np.pi, n_outliers)
    for (b, i), phi in zip(outliers, directions, strict=True):
        observed[b, i] += 5.0 * np.array([np.cos(phi), np.sin(phi)])
    return Series(tilt, axis, mag, shifts, beads, clean, observed, outliers)


def xf_projection(axis_deg, mag, shifts, tilt_deg) -> torch.Tensor:
    """True projection matrices through the IMOD-meaning transform, ``A = Rz(−α)/m``, ``d = −A·s``."""
    a = np.deg2rad(axis_deg)
    mat = np.stack([np.stack([np.cos(a), np.sin(a)], -1), np.stack([-np.sin(a), np.cos(a)], -1)], -2)
    mat = mat / mag[:, None, None]
    d = -np.einsum("nij,nj->ni", mat, shifts)
    return projection_matrices_from_xf(torch.tensor(mat), torch.tensor(d), torch.tensor(tilt_deg))


def solve(series: Series, **options) -> tuple[FiducialAlignment, float]:
    start = time.perf_counter()
    result = fiducial_align(
        torch.tensor(series.observed_px), torch.tensor(NOMINAL), 85.3 + 5.0, image_size_xy=IMAGE, **options
    )
    return result, time.perf_counter() - start


def test_recovers_the_geometry_of_a_noisy_series_with_gaps_outliers_and_a_wrong_axis() -> None:
    series = make_series(0)
    result, seconds = solve(series, rotation="all", tilt="all", magnification="all")
    assert result.converged
    assert result.robust_rounds >= 1

    # Reprojection of the true beads with the solved geometry vs the true projections, after the rigid fit.
    p_est = projection_matrices_from_xf(
        result.to_xf()[..., :2], result.to_xf()[..., 2], result.tilt_angles_deg
    )
    p_true = xf_projection(series.axis_deg, series.mag, series.shifts, series.tilt_deg)
    fit = fit_rigid_specimen_transform(torch.tensor(series.beads), p_est, p_true)
    rms = float(fit.residuals_xy.square().sum(-1).mean().sqrt())
    assert not fit.mirrored
    assert rms <= 0.5, rms
    # The gauges are those of the truth (reference view tilt 0 and magnification 1, s_ref = 0, z centroid 0),
    # so the raw numbers compare directly.
    assert np.abs(result.tilt_axis_angles_deg.numpy() - series.axis_deg).max() <= 0.2
    assert np.abs(result.tilt_angles_deg.numpy() - series.tilt_deg).max() <= 0.2
    assert np.abs(result.magnifications.numpy() - series.mag).max() <= 0.003
    assert np.abs(result.positions_xyz_px.numpy() - series.beads).max() <= 1.5
    assert np.abs(result.shifts_xy_px.numpy() - series.shifts).max() <= 1.5
    # Outliers are switched off, almost every good point is kept.
    outlier_weights = result.weights[series.outliers[:, 0], series.outliers[:, 1]]
    assert float(outlier_weights.max()) <= 0.05, outlier_weights
    good = torch.isfinite(torch.tensor(series.observed_px)).all(-1)
    good[series.outliers[:, 0], series.outliers[:, 1]] = False
    assert float((result.weights[good] < 0.5).double().mean()) < 0.06
    # The residuals are the localisation noise (0.3 px per axis: mean length 0.3·√(π/2) ≈ 0.38 px).
    assert 0.3 < result.weighted_mean_residual_px < 0.45
    assert result.view_mean_residual_px.shape == (NOMINAL.size,)
    # Two surfaces 200 px apart.
    surfaces = two_surface_analysis(result.positions_xyz_px)
    assert surfaces.thickness_px == pytest.approx(200.0, rel=0.05)
    assert abs(surfaces.tilt_angle_offset_deg) < 0.3
    top = series.beads[:, 2] > 0
    assert torch.equal(surfaces.surface, torch.tensor(top.astype(np.int64)))
    assert seconds < 5.0, f"{seconds:.2f} s"


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_rotation_tilt_and_magnification_are_recovered_exactly_from_noise_free_data(
    device: str,
) -> None:
    """Truth piecewise linear with nodes every 5 views from the 0° view; the stack order is shuffled."""
    rng = np.random.default_rng(3)
    nodes = np.arange(0, 41, 5)  # by tilt order; REF = 20 is a node
    pos = np.arange(41)

    def piecewise(values: np.ndarray) -> np.ndarray:
        return np.interp(pos, nodes, values)

    tilt_dev = rng.uniform(-0.5, 0.5, nodes.size)
    tilt_dev[nodes == REF] = 0.0
    mag_dev = rng.uniform(-0.005, 0.005, nodes.size)
    mag_dev[nodes == REF] = 0.0
    tilt = NOMINAL + piecewise(tilt_dev)
    axis = 85.3 + piecewise(rng.uniform(-0.3, 0.3, nodes.size))
    mag = 1.0 + piecewise(mag_dev)
    shifts = rng.uniform(-20, 20, (41, 2))
    shifts[REF] = 0.0
    beads = np.stack(
        [rng.uniform(-200, 200, 25), rng.uniform(-200, 200, 25), rng.choice([-90.0, 110.0], 25)], -1
    )
    beads[:, 2] -= beads[:, 2].mean()
    clean = project(axis, tilt, mag, shifts, beads)
    perm = rng.permutation(41)
    result = fiducial_align(
        torch.tensor(clean[:, perm], device=device),
        torch.tensor(NOMINAL[perm], device=device),
        80.0,
        image_size_xy=IMAGE,
        rotation="grouped",
        tilt="grouped",
        magnification="grouped",
        mag_group_size=5,
        robust=False,
    )
    assert result.reference_view == int(np.flatnonzero(perm == REF)[0])
    assert result.mean_residual_px < 1e-6
    assert result.positions_xyz_px.device.type == device and result.to_xf().device.type == device
    assert two_surface_analysis(result.positions_xyz_px).thickness_px == pytest.approx(200.0, abs=1e-4)
    result = FiducialAlignment(
        **{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(result).items()}
    )
    np.testing.assert_allclose(result.tilt_angles_deg.numpy(), tilt[perm], atol=1e-6)
    np.testing.assert_allclose(result.tilt_axis_angles_deg.numpy(), axis[perm], atol=1e-6)
    np.testing.assert_allclose(result.magnifications.numpy(), mag[perm], atol=1e-8)
    np.testing.assert_allclose(result.shifts_xy_px.numpy(), shifts[perm], atol=1e-5)
    np.testing.assert_allclose(result.positions_xyz_px.numpy(), beads, atol=1e-5)


def test_single_rotation_and_fixed_options() -> None:
    series = make_series(5, axis_deviation_deg=0.0, tilt_offsets_deg=0.0, mag_deviation=0.0, n_outliers=0)
    one, _ = solve(series, rotation="one", robust=False)
    assert torch.all(one.tilt_axis_angles_deg == one.tilt_axis_angles_deg[0])
    assert float(one.tilt_axis_angles_deg[0]) == pytest.approx(85.3, abs=0.02)
    assert torch.equal(one.tilt_angles_deg, torch.tensor(NOMINAL))  # tilt fixed by default
    assert torch.equal(one.magnifications, torch.ones(41, dtype=torch.float64))
    assert torch.all(one.weights[torch.isfinite(torch.tensor(series.observed_px)).all(-1)] == 1.0)
    assert one.robust_rounds == 0
    assert one.mean_residual_px < 0.45
    fixed, _ = solve(series, rotation="fixed", robust=False)
    assert torch.all(fixed.tilt_axis_angles_deg == 85.3 + 5.0)
    assert fixed.mean_residual_px > 2.0  # a 5° axis error cannot be absorbed by shifts and positions


def test_to_xf_reproduces_the_solved_projection() -> None:
    result, _ = solve(make_series(1), rotation="grouped", tilt="grouped", magnification="all")
    xf = result.to_xf()
    assert xf.shape == (41, 2, 3)
    matrices = projection_matrices_from_xf(xf[..., :2], xf[..., 2], result.tilt_angles_deg)
    torch.testing.assert_close(matrices, result.projection_matrices(), rtol=0, atol=1e-10)
    # The tilt-axis angle reads back from the transform (CONVENTIONS.md §6).
    torch.testing.assert_close(
        torch.rad2deg(torch.atan2(xf[:, 0, 1], xf[:, 0, 0])), result.tilt_axis_angles_deg, rtol=0, atol=1e-10
    )
    # The projected beads are the measurements minus the residuals, in raw pixel coordinates.
    projected = project_points(result.positions_xyz_px, matrices)[..., :2].transpose(0, 1) + torch.tensor(
        CENTRE
    )
    measured = torch.tensor(make_series(1).observed_px)
    seen = torch.isfinite(measured).all(-1)
    torch.testing.assert_close(projected[seen], (measured - result.residuals_xy_px)[seen], rtol=0, atol=1e-9)
    assert torch.isnan(result.residuals_xy_px[~seen]).all()


def test_gauges_reference_view_and_tomogram_centre() -> None:
    result, _ = solve(make_series(2), rotation="all", tilt="all", magnification="all", reference_view=25)
    assert result.reference_view == 25
    assert float(result.tilt_angles_deg[25]) == NOMINAL[25]
    assert float(result.magnifications[25]) == 1.0
    assert float(result.shifts_xy_px[25].abs().max()) < 1e-9
    assert abs(float(result.positions_xyz_px[:, 2].mean())) < 1e-9


def test_a_bead_above_the_centre_moves_towards_plus_x_at_positive_tilt() -> None:
    """Data made with tomoforge.geometry's projection model (α = 0); CONVENTIONS.md §7 sign of the tilt."""
    rng = np.random.default_rng(4)
    beads = torch.tensor(
        np.stack([rng.uniform(-150, 150, 12), rng.uniform(-150, 150, 12), rng.choice([-60.0, 60.0], 12)], -1)
    )
    beads[0] = torch.tensor([0.0, 0.0, 80.0])
    beads[:, 2] -= beads[1:, 2].sum() / 12 + 80.0 / 12  # z centroid 0 (the gauge), bead 0 stays highest
    tilts = torch.arange(-45.0, 46.0, 5.0, dtype=torch.float64)
    matrices = projection_matrices(tilts, 0.0)
    observed = project_points(beads, matrices)[..., :2].transpose(0, 1) + torch.tensor(CENTRE)
    x_of_top_bead = observed[0, :, 0] - CENTRE[0]
    assert torch.all(torch.sign(x_of_top_bead[tilts != 0]) == torch.sign(tilts[tilts != 0]))
    result = fiducial_align(
        observed, tilts, 3.0, image_size_xy=IMAGE, rotation="one", tilt="all", robust=False
    )
    assert float(result.tilt_axis_angles_deg[0]) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(result.tilt_angles_deg, tilts, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.positions_xyz_px, beads, rtol=0, atol=1e-5)
    assert float(result.positions_xyz_px[0, 2]) > 0


def test_two_surface_analysis_of_a_tilted_slab() -> None:
    """A flat slab rotated by Ry(Δ)·Rx(φ): adding Δ to the tilts and using φ as x-tilt makes it flat again."""
    rng = np.random.default_rng(6)
    flat = (
        np.stack([rng.uniform(-250, 250, 40), rng.uniform(-250, 250, 40), np.repeat([-80.0, 100.0], 20)], -1)
        + np.c_[np.zeros((40, 2)), rng.normal(0, 1.0, 40)]
    )
    delta, phi = 7.0, -4.0
    rot = (rotation_y(delta) @ rotation_x(phi)).numpy()
    positions = torch.tensor(flat @ rot.T)
    positions[3] = math.nan
    result = two_surface_analysis(positions)
    assert result.tilt_angle_offset_deg == pytest.approx(delta, abs=0.2)
    assert result.pretilt_deg == pytest.approx(-delta, abs=0.2)
    assert result.x_axis_tilt_deg == pytest.approx(phi, abs=0.2)
    normal_z = float(rot[2, 2])
    assert result.thickness_normal_px == pytest.approx(180.0, abs=1.5)
    assert result.thickness_px == pytest.approx(180.0 / normal_z, abs=1.5)
    assert result.z_centre_px == pytest.approx(10.0 / normal_z, abs=1.5)
    assert result.residual_rms_px == pytest.approx(1.0, abs=0.3)
    assert result.surface[3] == -1
    expected = torch.tensor(np.repeat([0, 1], 20))
    assert torch.equal(result.surface[torch.arange(40) != 3], expected[torch.arange(40) != 3])
    assert (result.n_bottom, result.n_top) == (19, 20)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"points": np.zeros((3, 41))}, "shape"),
        ({"tilts": NOMINAL[:-1]}, "tilt_angles_deg"),
        ({"rotation": "some"}, "rotation must be one of"),
        ({"tilt": "one"}, "tilt must be one of"),
        ({"magnification": "free"}, "magnification must be one of"),
        ({"tilt_group_size": 0}, "tilt_group_size"),
        ({"reference_view": 41}, "reference_view"),
        ({"image_size_xy": (512,)}, "image_size_xy"),
        ({"empty_view": 7}, "views [7] have no bead"),
        ({"tilts": np.zeros(41)}, "tilt angles span"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(change: dict, message: str) -> None:
    series = make_series(7, n_beads=8, n_outliers=0)
    points = series.observed_px.copy()
    if "empty_view" in change:
        points[:, change.pop("empty_view")] = np.nan
    points = change.pop("points", points)
    tilts = change.pop("tilts", NOMINAL)
    options = {"image_size_xy": IMAGE, **change}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        fiducial_align(torch.tensor(points), torch.tensor(tilts), 85.0, **options)


def test_two_surface_analysis_refuses_too_few_beads() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        two_surface_analysis(torch.zeros((3, 3)))
    with pytest.raises(ValueError, match="on a line"):
        two_surface_analysis(torch.tensor([[float(i), 2.0 * i, (-1.0) ** i] for i in range(6)]))


def test_two_surfaces_in_separate_halves_of_the_field() -> None:
    """Top beads on one side, bottom beads on the other: one tilted plane must not hide the two flat ones."""
    from tomoforge.alignment.surfaces import two_surface_analysis

    g = torch.Generator().manual_seed(3)
    top = torch.cat([torch.rand(5, 2, generator=g) * 200 - 230, torch.full((5, 1), 91.0)], dim=1)
    bottom = torch.cat([torch.rand(3, 2, generator=g) * 200 + 30, torch.full((3, 1), -151.0)], dim=1)
    points = torch.cat([top, bottom]).double()
    points[:, 2] += 0.3 * torch.randn(8, generator=g, dtype=torch.float64)
    result = two_surface_analysis(points)
    assert result.surface.tolist() == [1] * 5 + [0] * 3
    assert abs(result.thickness_px - 242.0) < 2.0
    assert abs(result.tilt_angle_offset_deg) < 0.5
