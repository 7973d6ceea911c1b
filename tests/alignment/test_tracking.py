"""Seeding and tracking gold beads through synthetic tilt series with known 3D bead positions and shifts."""

from __future__ import annotations

import math

import pytest
import torch
from test_beads import BeadSeries, _smooth_noise, render_bead_series, visible

from tomoforge.alignment.tracking import _fit, _rotations, seed_beads, track_beads


def _identity_xf(shifts_xy_px: torch.Tensor) -> torch.Tensor:
    """Translation-only coarse transforms whose projection-model shift is ``shifts_xy_px`` (``s = −d``)."""
    xf = torch.zeros((shifts_xy_px.shape[0], 2, 3), dtype=torch.float64)
    xf[:, 0, 0] = xf[:, 1, 1] = 1.0
    xf[:, :, 2] = -shifts_xy_px
    return xf


def _truth_of(series: BeadSeries, seeds_xy: torch.Tensor, view: int) -> torch.Tensor:
    """Index of the true bead at each seed (asserting it is within a pixel)."""
    dist, index = torch.cdist(seeds_xy.double(), series.positions_xy_px[:, view]).min(dim=1)
    assert float(dist.max()) < 1.0, dist
    return index


def _score(series: BeadSeries, tracks_xy: torch.Tensor, truth_index: torch.Tensor) -> tuple[float, float]:
    """Fraction of beads found in ≥ 80 % of the views where they are visible, and RMS error of tracked points."""
    found = torch.isfinite(tracks_xy).all(-1)
    vis = visible(series, series.bead_diameter_px / 2)[truth_index]
    fraction = (found & vis).sum(1) / vis.sum(1)
    err = (tracks_xy - series.positions_xy_px[truth_index]).norm(dim=-1)[found]
    return float((fraction >= 0.8).double().mean()), float(err.pow(2).mean().sqrt())


@pytest.fixture(scope="module")
def series() -> BeadSeries:
    return render_bead_series(seed=2)


@pytest.fixture(scope="module")
def seeds(series: BeadSeries):  # type: ignore[no-untyped-def]
    return seed_beads(
        series.stack,
        series.tilt_angles_deg,
        series.tilt_axis_deg,
        bead_diameter_px=series.bead_diameter_px,
        target_number=40,
        two_surfaces=True,
    )


def test_linear_model_fit_is_exact_on_noise_free_projections() -> None:
    gen = torch.Generator().manual_seed(0)
    tilts = torch.arange(-60.0, 61.0, 10.0, dtype=torch.float64)
    points = torch.randn((8, 3), generator=gen, dtype=torch.float64) * 60
    shifts = torch.randn((tilts.numel(), 2), generator=gen, dtype=torch.float64) * 5
    proj = _rotations(tilts, 85.3)
    obs = torch.einsum("nij,bj->bni", proj[:, :2], points) + shifts[None]
    obs[2, 3] = math.nan  # a gap
    g = 6  # the 0° view
    x, s = _fit(obs, torch.ones(obs.shape[:2], dtype=torch.float64), proj, g, shifts[g])
    # Gauge: the fit's points differ from the truth by a translation along the 0° beam (z) only.
    offset = x - points
    torch.testing.assert_close(offset[:, :2], torch.zeros_like(offset[:, :2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(offset[:, 2], offset[:, 2].mean().expand(8), atol=1e-5, rtol=0)
    assert abs(float(x[:, 2].mean())) < 1e-5  # mean depth zero
    model = torch.einsum("nij,bj->bni", proj[:, :2], x) + s[None]
    finite = torch.isfinite(obs)
    torch.testing.assert_close(model[finite], obs[finite], atol=1e-5, rtol=0)


def test_two_surface_seeds_are_real_beads_on_both_surfaces(series: BeadSeries, seeds) -> None:  # type: ignore[no-untyped-def]
    g = seeds.view_index
    assert float(series.tilt_angles_deg[g]) == 0.0
    index = _truth_of(series, seeds.positions_xy_px, g)
    assert seeds.positions_xy_px.shape[0] >= 34  # of 40: a few are too close to another bead or an edge
    assert torch.equal(seeds.surfaces, series.surfaces[index])
    # Heights: the surfaces are 150 px apart.
    top, bottom = seeds.heights_px[seeds.surfaces == 1], seeds.heights_px[seeds.surfaces == 0]
    assert 130 < float(top.mean() - bottom.mean()) < 170


def test_seeding_balances_surfaces_and_spreads_over_the_field() -> None:
    series = render_bead_series(seed=5, n_beads=36, n_beads_top=28, tilts_deg=(-21.0, 21.0, 3.0))
    got = seed_beads(
        series.stack,
        series.tilt_angles_deg,
        series.tilt_axis_deg,
        bead_diameter_px=series.bead_diameter_px,
        target_number=10,
        two_surfaces=True,
    )
    index = _truth_of(series, got.positions_xy_px, got.view_index)
    assert torch.equal(got.surfaces, series.surfaces[index])
    assert got.surfaces.tolist().count(0) == 5 and got.surfaces.tolist().count(1) == 5
    # Spread: the seeds cover every quadrant of the field, and are further apart than the 10 strongest would be.
    centre = torch.tensor([128.0, 128.0], dtype=torch.float64)
    quadrant = ((got.positions_xy_px - centre) > 0).long() @ torch.tensor([1, 2])
    assert set(quadrant.tolist()) == {0, 1, 2, 3}
    one = seed_beads(
        series.stack,
        series.tilt_angles_deg,
        series.tilt_axis_deg,
        bead_diameter_px=series.bead_diameter_px,
        target_number=10,
    )
    assert one.positions_xy_px.shape == (10, 2)
    assert (one.surfaces == 0).all()
    pair = torch.cdist(one.positions_xy_px, one.positions_xy_px) + torch.eye(10) * 1e9
    assert float(pair.min()) > 40.0


def test_tracking_recovers_beads_with_a_coarse_alignment(series: BeadSeries, seeds) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(7)
    coarse = series.shifts_xy_px + 2.0 * torch.randn(
        series.shifts_xy_px.shape, generator=gen, dtype=torch.float64
    )
    tracks = track_beads(
        series.stack,
        series.tilt_angles_deg,
        series.tilt_axis_deg,
        seeds_xy_px=seeds.positions_xy_px,
        bead_diameter_px=series.bead_diameter_px,
        coarse_xf=_identity_xf(coarse),
    )
    index = _truth_of(series, seeds.positions_xy_px, seeds.view_index)
    complete, rms = _score(series, tracks.positions_xy_px, index)
    assert complete >= 0.9, complete
    assert rms <= 0.5, rms
    n = series.stack.shape[0]
    assert tracks.scores.shape == tracks.residuals_px.shape == (index.numel(), n)
    found = torch.isfinite(tracks.positions_xy_px).all(-1)
    assert torch.equal(torch.isfinite(tracks.residuals_px), found)
    assert float(tracks.residuals_px[found].max()) < 2.0
    # The model reproduces the truth: positions in every view, and 3D points up to the gauge translation.
    vis = visible(series, series.bead_diameter_px)[index]
    model_err = (tracks.predicted_xy_px - series.positions_xy_px[index]).norm(dim=-1)[vis]
    assert float(model_err.pow(2).mean().sqrt()) < 0.3
    offset = tracks.points_xyz_px - series.points_xyz_px[index]
    assert float((offset - offset.mean(0)).abs().max()) < 1.5
    assert abs(tracks.tilt_axis_deg - series.tilt_axis_deg) < 0.2


def test_tracking_without_coarse_alignment_and_with_a_wrong_axis(series: BeadSeries, seeds) -> None:  # type: ignore[no-untyped-def]
    # Per-view shifts up to ±8 px unknown, and the axis 4° off: the common-shift search and the axis refinement
    # recover both.
    tracks = track_beads(
        series.stack,
        series.tilt_angles_deg,
        series.tilt_axis_deg + 4.0,
        seeds_xy_px=seeds.positions_xy_px,
        bead_diameter_px=series.bead_diameter_px,
    )
    index = _truth_of(series, seeds.positions_xy_px, seeds.view_index)
    complete, rms = _score(series, tracks.positions_xy_px, index)
    assert complete >= 0.9, complete
    assert rms <= 0.5, rms
    assert abs(tracks.tilt_axis_deg - series.tilt_axis_deg) < 0.2
    # Shifts: equal to the truth up to the gauge (a common depth offset projected by each view).
    depth_offset = float((tracks.points_xyz_px[:, 2] - series.points_xyz_px[index, 2]).mean())
    theta = torch.deg2rad(series.tilt_angles_deg)
    alpha = math.radians(tracks.tilt_axis_deg)
    gauge = depth_offset * torch.stack(
        [math.cos(alpha) * torch.sin(theta), math.sin(alpha) * torch.sin(theta)], -1
    )
    assert float((tracks.shifts_xy_px + gauge - series.shifts_xy_px).abs().max()) < 0.5


def test_lost_beads_are_nan_and_a_stack_without_beads_gives_nothing() -> None:
    gen = torch.Generator().manual_seed(4)
    stack = (
        0.05 * _smooth_noise(gen, (7, 128, 128), 3.0) + 0.2 * torch.randn((7, 128, 128), generator=gen)
    ).float()
    tilts = torch.arange(-9.0, 10.0, 3.0)
    seeds = seed_beads(stack, tilts, 85.3, bead_diameter_px=10.0, two_surfaces=True)
    assert seeds.positions_xy_px.shape == (0, 2) and seeds.surfaces.shape == (0,)
    empty = track_beads(stack, tilts, 85.3, seeds_xy_px=seeds.positions_xy_px, bead_diameter_px=10.0)
    assert empty.positions_xy_px.shape == (0, 7, 2)
    # A seed on noise is found nowhere but in its own view.
    lone = track_beads(stack, tilts, 85.3, seeds_xy_px=torch.tensor([[64.0, 64.0]]), bead_diameter_px=10.0)
    found = torch.isfinite(lone.positions_xy_px).all(-1)
    assert int(found.sum()) <= 3 and bool(found[0, 3])


def test_bad_input_is_rejected(series: BeadSeries) -> None:
    stack, tilts = series.stack[:5], series.tilt_angles_deg[:5]
    seeds = torch.tensor([[100.0, 100.0]])
    with pytest.raises(ValueError, match="coarse_xf"):
        track_beads(
            stack, tilts, 85.3, seeds_xy_px=seeds, bead_diameter_px=10.0, coarse_xf=torch.zeros(5, 3, 3)
        )
    with pytest.raises(ValueError, match="seeds_xy_px"):
        track_beads(stack, tilts, 85.3, seeds_xy_px=torch.zeros(3), bead_diameter_px=10.0)
    with pytest.raises(ValueError, match="tilt_angles_deg"):
        track_beads(stack, tilts[:4], 85.3, seeds_xy_px=seeds, bead_diameter_px=10.0)
    with pytest.raises(ValueError, match="seed_view"):
        track_beads(stack, tilts, 85.3, seeds_xy_px=seeds, bead_diameter_px=10.0, seed_view=9)
    with pytest.raises(ValueError, match="bead_diameter_px"):
        track_beads(stack, tilts, 85.3, seeds_xy_px=seeds, bead_diameter_px=1.0)
    with pytest.raises(ValueError, match="target_number"):
        seed_beads(stack, tilts, 85.3, bead_diameter_px=10.0, target_number=0)
