"""Coarse tilt-series alignment (tiltxcorr semantics) on synthetic tilt series with known shifts.

The series are projections of random 3D Gaussian blobs through the projection model (CONVENTIONS.md §7) with
known per-view shifts ``sᵢ``. The truth for a coarse alignment is ``dᵢ = −sᵢ`` in the gauge the kernel uses (the
tilt axis passes through the centre of the zero-tilt view): the specimen origin is moved within its plane so that
the reference view's shift is 0. A thick specimen has no single translation that registers all of it; the
registered height is a further gauge (it only moves the tomogram up or down), removed where stated.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from tomoforge.alignment.coarse import CoarseAlignment, coarse_align, imod_filter
from tomoforge.geometry import project_points, projection_matrices, rotation_2d

SIZE = 128


def _render(
    points_xyz: torch.Tensor,
    sigma_px: torch.Tensor,
    amplitude: torch.Tensor,
    tilts_deg: torch.Tensor,
    axis_deg: float,
    shifts_xy: torch.Tensor,
    noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """``(t, SIZE, SIZE)`` float32 projections of Gaussian blobs, plus Gaussian noise (``noise`` × signal SD)."""
    projected = project_points(points_xyz, projection_matrices(tilts_deg, axis_deg, shifts_xy))
    grid = (
        torch.arange(SIZE, dtype=torch.float64) - SIZE // 2
    )  # pixel positions relative to the centre N // 2
    gx = torch.exp(-((grid - projected[..., 0:1]) ** 2) / (2 * sigma_px[:, None] ** 2))
    gy = torch.exp(-((grid - projected[..., 1:2]) ** 2) / (2 * sigma_px[:, None] ** 2))
    images = torch.einsum("tny,tnx->tyx", gy * amplitude[:, None], gx)
    images = images + noise * images.std() * torch.randn(
        images.shape, generator=generator, dtype=torch.float64
    )
    return images.to(torch.float32)


@cache
def _series(
    *,
    axis_deg: float,
    heights_px: tuple[float, ...] | float = 16.0,
    n_views: int = 25,
    max_tilt_deg: float = 60.0,
    max_shift_px: float = 10.0,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, tilt angles and true shifts of a slab of blobs; ``heights_px`` a half-thickness or the z values.

    Cached: callers must not modify the returned tensors.
    """
    g = torch.Generator().manual_seed(seed)
    n = 1400
    tilts = torch.linspace(-max_tilt_deg, max_tilt_deg, n_views, dtype=torch.float64)
    points = torch.empty(n, 3, dtype=torch.float64)
    # Wider than the field of view across the axis, where high tilts see more of the specimen.
    points[:, 0] = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 1.5 * SIZE
    points[:, 1] = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 0.8 * SIZE
    if isinstance(heights_px, tuple):
        layers = torch.tensor(heights_px, dtype=torch.float64)
        points[:, 2] = layers[torch.randint(len(layers), (n,), generator=g)]
    else:
        points[:, 2] = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * heights_px
    sigma = 1.0 + 1.5 * torch.rand(n, generator=g, dtype=torch.float64)
    amplitude = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
    shifts = (torch.rand(n_views, 2, generator=g, dtype=torch.float64) * 2 - 1) * max_shift_px
    images = _render(points, sigma, amplitude, tilts, axis_deg, shifts, noise, g)
    return images, tilts, shifts


def _truth_xf_shifts(shifts: torch.Tensor, tilts: torch.Tensor, axis_deg: float, ref: int) -> torch.Tensor:
    """``dᵢ = −sᵢ`` after moving the specimen origin within its plane so that ``s_ref = 0``."""
    rot = rotation_2d(torch.tensor(axis_deg, dtype=torch.float64))
    across, along = rot.T @ shifts[ref]
    cosines = torch.cos(torch.deg2rad(tilts))
    moved = torch.stack([across / cosines[ref] * cosines, along.expand_as(cosines)], dim=-1) @ rot.T
    return -(shifts - moved)


def _errors(
    result: CoarseAlignment, shifts: torch.Tensor, tilts: torch.Tensor, axis_deg: float
) -> torch.Tensor:
    return result.shifts_xy_px - _truth_xf_shifts(shifts, tilts, axis_deg, result.reference_index)


def _rms(errors: torch.Tensor) -> float:
    return float(errors.square().sum(-1).mean().sqrt())


def _without_height(errors: torch.Tensor, tilts: torch.Tensor, axis_deg: float) -> torch.Tensor:
    """Errors after removing the best registered height ``z``: ``z·sin θᵢ`` across the tilt axis."""
    across = rotation_2d(torch.tensor(axis_deg, dtype=torch.float64))[:, 0]
    sines = torch.sin(torch.deg2rad(tilts))
    height = (errors @ across * sines).sum() / sines.square().sum()
    return errors - height * sines[:, None] * across[None, :]


@pytest.mark.parametrize("axis_deg", [85.3, 0.0])
@pytest.mark.parametrize("cumulative", [False, True])
def test_recovers_known_shifts_of_a_thick_noisy_slab(axis_deg: float, cumulative: bool) -> None:
    images, tilts, shifts = _series(axis_deg=axis_deg)
    result = coarse_align(images, tilts, axis_deg, cumulative_reference=cumulative)
    errors = _errors(result, shifts, tilts, axis_deg)
    assert result.reference_index == 12
    assert _rms(_without_height(errors, tilts, axis_deg)) <= 1.0
    if not cumulative:  # neighbours see nearly the same parallax: no height to remove
        assert _rms(errors) <= 1.0


def test_flat_specimen_is_aligned_to_a_tenth_of_a_pixel_rms_even_when_the_reference_view_is_shifted() -> None:
    # Height 0 only: the cosine stretch is then exact, and the shift of the reference view (the tilt axis off
    # the image centre) must be carried through the stretch about the centre (tiltxcorr's axis correction).
    images, tilts, shifts = _series(axis_deg=85.3, heights_px=0.0, n_views=7, max_tilt_deg=60.0, noise=0.1)
    assert float(shifts[3].norm()) > 3.0
    errors = _errors(coarse_align(images, tilts, 85.3), shifts, tilts, 85.3)
    assert _rms(errors) < 0.1
    assert float(errors.norm(dim=-1).max()) < 0.2


def test_result_in_stack_order_with_neighbours_stretches_and_identity_reference() -> None:
    images, tilts, shifts = _series(axis_deg=85.3, n_views=9, noise=0.3, seed=1)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    shuffled = coarse_align(images[order], tilts[order], 85.3, pixel_size_angstrom=2.0)
    result = coarse_align(images, tilts, 85.3)
    assert torch.allclose(shuffled.xf, result.xf[order], atol=1e-4)
    assert shuffled.reference_index == int(torch.nonzero(order == 4))
    ref = result.reference_index
    assert ref == 4
    assert torch.equal(result.xf[ref], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64))
    assert torch.equal(result.xf[:, :, :2], torch.eye(2, dtype=torch.float64).expand(9, 2, 2))
    assert result.neighbour_index.tolist() == [1, 2, 3, 4, -1, 4, 5, 6, 7]
    cosines = torch.cos(torch.deg2rad(tilts))
    expected = cosines[result.neighbour_index.clamp_min(0)] / cosines
    expected[ref] = 1.0
    assert torch.allclose(result.stretch_factors, expected)
    assert math.isnan(float(result.peak_values[ref]))
    others = torch.cat([result.peak_values[:ref], result.peak_values[ref + 1 :]])
    assert bool(((others > 0.3) & (others <= 1.0)).all())
    assert torch.equal(result.relative_shifts_xy_px[ref], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(shuffled.shifts_xy_angstrom, 2.0 * shuffled.shifts_xy_px)
    with pytest.raises(ValueError, match="pixel_size_angstrom"):
        _ = result.shifts_xy_angstrom


def test_zero_mean_moves_the_tilt_axis_within_the_specimen_only() -> None:
    axis = 85.3
    images, tilts, _ = _series(axis_deg=axis, n_views=9, seed=2)
    anchored = coarse_align(images, tilts, axis)
    centred = coarse_align(images, tilts, axis, zero_mean=True)
    assert float(centred.shifts_xy_px.mean(dim=0).abs().max()) < 1e-9
    # The difference is the projection of an in-plane move of the specimen origin: R(α)·(a cos θᵢ, b).
    rot = rotation_2d(torch.tensor(axis, dtype=torch.float64))
    across, along = ((centred.shifts_xy_px - anchored.shifts_xy_px) @ rot).unbind(-1)
    cosines = torch.cos(torch.deg2rad(tilts))
    assert float((across / cosines).std()) < 1e-9
    assert float(along.std()) < 1e-9


def test_specimen_thickness_keeps_two_layers_from_pulling_views_apart() -> None:
    # Two layers 48 px apart: their parallax between neighbours splits each correlation into two peaks and plain
    # cross-correlation follows one or the other from pair to pair; smoothing by the parallax finds their centre.
    axis = 85.3
    images, tilts, shifts = _series(axis_deg=axis, heights_px=(-24.0, 24.0))
    plain = coarse_align(images, tilts, axis)
    smoothed = coarse_align(images, tilts, axis, specimen_thickness_px=48.0)
    plain_rms = _rms(_without_height(_errors(plain, shifts, tilts, axis), tilts, axis))
    smoothed_rms = _rms(_without_height(_errors(smoothed, shifts, tilts, axis), tilts, axis))
    assert plain_rms > 1.5
    assert smoothed_rms < 0.8
    assert smoothed_rms < plain_rms / 2


def test_erasing_outliers_removes_hot_pixels_that_would_otherwise_win() -> None:
    axis = 85.3
    images, tilts, shifts = _series(axis_deg=axis, heights_px=0.0, n_views=9, max_tilt_deg=30.0, seed=4)
    hot = torch.zeros(SIZE * SIZE)
    hot[torch.randint(SIZE * SIZE, (60,), generator=torch.Generator().manual_seed(5))] = 40 * float(
        images.std()
    )
    spoiled = images + hot.reshape(SIZE, SIZE)  # the same detector pixels in every view
    assert _rms(_errors(coarse_align(spoiled, tilts, axis), shifts, tilts, axis)) > 3.0
    erased = coarse_align(spoiled, tilts, axis, erase_outliers_sd=4.0)
    assert _rms(_errors(erased, shifts, tilts, axis)) < 0.3


def test_excluding_the_central_peak_ignores_fixed_pattern_noise_of_untilted_frames() -> None:
    g = torch.Generator().manual_seed(6)
    images, _, _ = _series(axis_deg=0.0, heights_px=0.0, n_views=2, max_shift_px=0.0, noise=0.0, seed=6)
    frame = images[0]
    moved = torch.roll(frame, shifts=(3, -5), dims=(0, 1))  # content moves by (x, y) = (−5, 3)
    pattern = 3 * float(frame.std()) * torch.randn(SIZE, SIZE, generator=g)
    stack = torch.stack([frame, moved]) + pattern
    zero = torch.zeros(2, dtype=torch.float64)
    stuck = coarse_align(stack, zero, 0.0, stretch=False, sigma2=0.0)
    assert torch.allclose(stuck.relative_shifts_xy_px[1], zero, atol=0.5)
    freed = coarse_align(stack, zero, 0.0, stretch=False, sigma2=0.0, exclude_central_peak=True)
    assert torch.allclose(freed.shifts_xy_px[1], torch.tensor([5.0, -3.0], dtype=torch.float64), atol=0.2)


def test_binned_correlation_and_shift_limit() -> None:
    axis = 85.3
    images, tilts, shifts = _series(axis_deg=axis, n_views=9, max_tilt_deg=40.0, seed=7)
    binned = coarse_align(images, tilts, axis, binning=2, sigma1=0.0)
    assert binned.binning == 2
    assert _rms(_errors(binned, shifts, tilts, axis)) <= 1.0
    limited = coarse_align(images, tilts, axis, max_shift_px=3.0)
    # The integer peak is searched within the limit; the sub-pixel fit may move it by less than a pixel.
    assert float(limited.relative_shifts_xy_px.abs().max()) < 3.0 + 1.0
    assert float(coarse_align(images, tilts, axis).relative_shifts_xy_px.abs().max()) > 4.0


def test_imod_filter_matches_filterplot_formulas() -> None:
    r = torch.tensor([0.0, 0.03, 0.25, 0.30, 0.5], dtype=torch.float64)
    f = imod_filter(r, sigma1=0.03, sigma2=0.05, radius2=0.25)
    high = 1 - torch.exp(-(r**2) / (2 * 0.03**2))
    assert torch.allclose(f[:3], high[:3])  # flat band below radius2
    assert float(f[3]) == pytest.approx(float(high[3]) * math.exp(-0.5))  # one sigma2 above radius2
    assert float(f[0]) == 0.0
    assert torch.equal(imod_filter(r, sigma1=0.0, sigma2=0.0, radius2=0.25), torch.ones_like(r))
    with pytest.raises(ValueError, match="sigma1"):
        imod_filter(r, sigma1=-0.1, sigma2=0.05, radius2=0.25)


def test_bad_input_is_refused() -> None:
    images = torch.zeros(3, 64, 64)
    with pytest.raises(ValueError, match="shape"):
        coarse_align(images[0], [0.0], 0.0)
    with pytest.raises(ValueError, match="3 views"):
        coarse_align(images, [0.0, 3.0], 0.0)
    with pytest.raises(ValueError, match="cosine stretching"):
        coarse_align(images, [-85.0, 0.0, 85.0], 0.0)
    with pytest.raises(ValueError, match="trim"):
        coarse_align(images, [-3.0, 0.0, 3.0], 0.0, trim_px=(25, 0))
    with pytest.raises(ValueError, match="reference_index"):
        coarse_align(images, [-3.0, 0.0, 3.0], 0.0, reference_index=3)
    with pytest.raises(ValueError, match="radius2"):
        coarse_align(images, [-3.0, 0.0, 3.0], 0.0, radius2=-1.0)
