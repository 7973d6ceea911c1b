"""WBP weighting: angular weights, the Ram-Lak ramp, fall-offs, and the SIRT-like filter against SIRT itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoforge.geometry import project_points, projection_matrices
from tomoforge.reconstruction import (
    angular_weights_rad,
    backproject_single_axis,
    full_ray_width,
    radial_falloff,
    ramp_response,
    single_axis_matrix,
    sirt_like_factor,
    sirt_slab,
    transpose_matrix,
    weight_projections,
    weighting_filters,
)

# --- angular weights ----------------------------------------------------------------------------------------


def test_uniform_tilts_weigh_their_spacing():
    weights = angular_weights_rad(torch.arange(-60.0, 61.0, 3.0))
    np.testing.assert_allclose(weights.numpy(), math.radians(3.0), rtol=1e-12)


def test_uneven_tilts_weigh_half_of_each_gap_and_the_end_views_their_one_gap():
    angles = [-50.0, -45.0, -30.0, 10.0, 12.0]
    expected_deg = [5.0, 0.5 * (5 + 15), 0.5 * (15 + 40), 0.5 * (40 + 2), 2.0]
    np.testing.assert_allclose(angular_weights_rad(angles).numpy(), np.radians(expected_deg), rtol=1e-12)
    # the sum is the range plus half of each end gap
    total = float(angular_weights_rad(angles).sum())
    assert total == pytest.approx(math.radians(62.0 + 2.5 + 1.0))


def test_unsorted_tilts_keep_their_order():
    angles = np.array([10.0, -50.0, 12.0, -30.0, -45.0])
    order = np.argsort(angles)
    weights = angular_weights_rad(torch.tensor(angles)).numpy()
    np.testing.assert_allclose(weights[order], angular_weights_rad(np.sort(angles).tolist()).numpy())


@pytest.mark.parametrize(
    ("angles", "words"),
    [([0.0, 3.0, 3.0, 6.0], "same tilt angle"), ([12.0], "at least 2"), ([], "at least 2")],
)
def test_bad_tilt_sets_are_refused(angles, words):
    with pytest.raises(ValueError, match=words):
        angular_weights_rad(angles)


# --- ramp and fall-off ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [64, 250, 256, 1024])
def test_ram_lak_response_is_the_ramp_up_to_its_periodic_truncation(length):
    response = ramp_response(length)
    nu = torch.fft.rfftfreq(length, dtype=torch.float64)
    assert response.shape == (length // 2 + 1,)
    truncation = 2.0 / (math.pi**2 * length)  # the tail of Σ 1/(πn)² beyond the periodic grid
    # DC keeps a small positive value (no cupping); |ν| everywhere else within that tail
    assert float(response[0]) == pytest.approx(truncation, rel=1e-3)
    assert float((response - nu).abs().max()) <= 1.001 * truncation
    high = nu >= 0.05
    assert float(((response - nu)[high] / nu[high]).abs().max()) < 0.02  # measured 0.0063 at L = 64
    if length % 2 == 0:  # Nyquist: 0.5 − the same tail (not exactly 0.5), DC + Nyquist = 2 Σ_even h = 1/2
        assert float(response[-1] + response[0]) == pytest.approx(0.5, abs=1e-12)


def test_radial_falloff_is_imods_gaussian_edge():
    freq = torch.linspace(0.0, 0.5, 501, dtype=torch.float64)
    falloff = radial_falloff(freq, cutoff=0.3, sigma=0.05)
    np.testing.assert_array_equal(falloff[freq <= 0.3].numpy(), 1.0)
    at_sigma = radial_falloff(torch.tensor([0.35], dtype=torch.float64), cutoff=0.3, sigma=0.05)
    assert float(at_sigma[0]) == pytest.approx(math.exp(-0.5), rel=1e-12)
    assert bool((torch.diff(falloff) <= 0).all())
    hard = radial_falloff(freq, cutoff=0.3, sigma=0.0)
    np.testing.assert_array_equal(hard.numpy(), (freq <= 0.3).double().numpy())
    np.testing.assert_array_equal(radial_falloff(freq, cutoff=None).numpy(), 1.0)


def test_hamming_window_runs_from_1_to_0_08_and_stops():
    freq = torch.tensor([0.0, 0.2, 0.4, 0.41, 0.5], dtype=torch.float64)
    window = radial_falloff(freq, cutoff=None, hamming_cutoff=0.4)
    np.testing.assert_allclose(window.numpy(), [0.54 + 0.46, 0.54, 0.54 - 0.46, 0.0, 0.0], atol=1e-12)
    both = radial_falloff(freq, cutoff=0.1, sigma=0.1, hamming_cutoff=0.4)
    assert float(both[1]) == pytest.approx(0.54 * math.exp(-0.5))


def test_weighting_filters_are_angle_times_ramp_times_falloff():
    angles = [-40.0, -20.0, -5.0, 0.0, 30.0]
    filters = weighting_filters(angles, 128, cutoff=0.3, sigma=0.04, hamming_cutoff=0.45)
    freq = torch.fft.rfftfreq(128, dtype=torch.float64)
    expected = (
        angular_weights_rad(angles)[:, None]
        * ramp_response(128)[None, :]
        * radial_falloff(freq, cutoff=0.3, sigma=0.04, hamming_cutoff=0.45)[None, :]
    )
    assert filters.shape == (5, 65) and filters.dtype == torch.float32
    np.testing.assert_allclose(filters.numpy(), expected.numpy(), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="thickness"):
        weighting_filters(angles, 128, sirt_like_iterations=10)


# --- weighting the rows ---------------------------------------------------------------------------------------


def test_weighting_is_a_periodic_convolution_with_the_ram_lak_kernel_of_the_edge_padded_row():
    generator = torch.Generator().manual_seed(1)
    angles = [-30.0, 0.0, 30.0]
    width, padded = 40, 96
    rows = torch.randn(3, 2, width, generator=generator, dtype=torch.float64).float()
    out = weight_projections(rows, weighting_filters(angles, padded, cutoff=None), padded)
    # direct convolution in real space: h[0] = 1/4, h[n] = −1/(πn)² for odd n (periodic distance)
    n = np.arange(padded)
    distance = np.minimum(n, padded - n)
    kernel = np.where(distance % 2 == 1, -1.0 / (np.pi * np.maximum(distance, 1)) ** 2, 0.0)
    kernel[0] = 0.25
    left = (padded - width) // 2
    padded_rows = np.pad(rows.double().numpy(), ((0, 0), (0, 0), (left, padded - width - left)), mode="edge")
    direct = np.zeros_like(padded_rows)
    for shift in range(padded):
        direct += kernel[shift] * np.roll(padded_rows, shift, axis=-1)
    direct *= angular_weights_rad(angles).numpy()[:, None, None]
    np.testing.assert_allclose(out.numpy(), direct[..., left : left + width], atol=1e-5)


def test_a_constant_row_stays_constant_without_edge_overshoot():
    angles = torch.arange(-60.0, 61.0, 3.0)
    width, padded = 100, 256
    rows = torch.full((len(angles), 1, width), 7.0)
    filters = weighting_filters(angles, padded, cutoff=None)
    out = weight_projections(rows, filters, padded)
    dc = 7.0 * filters[:, 0, None, None]  # Δθ × the ramp's small DC value
    assert float(dc.max()) < 7.0 * math.radians(3.0) * 1e-3
    np.testing.assert_allclose(out.numpy(), dc.expand_as(out).numpy(), rtol=1e-4, atol=1e-6)
    # control: zero padding instead of the edge values gives an edge overshoot of the order of the row / π²
    zero_padded = torch.nn.functional.pad(
        rows, ((padded - width) // 2, padded - width - (padded - width) // 2)
    )
    ringing = torch.fft.irfft(torch.fft.rfft(zero_padded) * filters[:, None, :], n=padded)
    assert float(ringing.abs().max()) > 100 * float(dc.max())
    with pytest.raises(ValueError, match="smaller than the rows"):
        weight_projections(rows, filters, 64)


# --- SIRT-like factor ---------------------------------------------------------------------------------------


def test_sirt_like_factor_limits_and_monotony():
    freq = torch.fft.rfftfreq(256, dtype=torch.float64)
    thickness, span = 64.0, math.radians(120.0)
    eigen_at = 1.0 / (thickness * span)  # λ(ν) = 1 / (T Θ ν) reaches 1 below ν = 1/(TΘ)
    factors = [
        sirt_like_factor(freq, n, thickness_px=thickness, angular_range_rad=span) for n in (1, 5, 20, 80)
    ]
    for factor in factors:
        np.testing.assert_allclose(factor[freq <= eigen_at].numpy(), 1.0)  # converged at low frequency
        assert bool((torch.diff(factor) <= 1e-15).all())  # less and less converged towards Nyquist
    for fewer, more in zip(factors[:-1], factors[1:], strict=True):
        unconverged = fewer < 0.99
        assert bool((more >= fewer).all()) and bool((more[unconverged] > fewer[unconverged]).all())
    # high frequency: N·λ, to second order
    for n, factor in zip((1, 5, 20), factors[:3], strict=True):
        eigen = eigen_at / float(freq[-1])
        assert float(factor[-1]) == pytest.approx(n * eigen, rel=(n - 1) * eigen / 2 + 1e-9)
    relaxed = sirt_like_factor(freq, 5, thickness_px=thickness, angular_range_rad=span, relaxation=0.5)
    assert float(relaxed[-1]) == pytest.approx(1 - (1 - 0.5 / (thickness * span * 0.5)) ** 5)
    with pytest.raises(ValueError, match="at least 1 iteration"):
        sirt_like_factor(freq, 0, thickness_px=thickness, angular_range_rad=span)


# --- SIRT-like WBP against SIRT, and SIRT against WBP on noisy data -----------------------------------------

SHAPE = (32, 16, 64)
WIDTH = 96
PADDED = 256
ANGLES = torch.arange(-60.0, 61.0, 3.0)


def bead_views(beads_xyz: torch.Tensor, sigma: float, height: int) -> torch.Tensor:
    """Exact projections of unit Gaussian beads (a 3D Gaussian projects to σ√(2π) times a 2D one)."""
    centres = project_points(beads_xyz.double(), projection_matrices(ANGLES.double(), 0.0))
    y = torch.arange(height, dtype=torch.float64) - height // 2
    x = torch.arange(WIDTH, dtype=torch.float64) - WIDTH // 2
    d2 = (x[None, None, None, :] - centres[:, :, 0, None, None]) ** 2 + (
        y[None, None, :, None] - centres[:, :, 1, None, None]
    ) ** 2
    return (sigma * math.sqrt(2 * math.pi) * torch.exp(-d2 / (2 * sigma**2))).sum(1).float()


def reconstruct(views: torch.Tensor, method: str, iterations: int = 10, **filter_options) -> torch.Tensor:
    """WBP on the tomogram, or SIRT on a slab wide enough for every ray (cropped), as the step does."""
    nz, _, nx = SHAPE
    if method == "wbp":
        matrix = single_axis_matrix(ANGLES, detector_width=WIDTH, volume_width=nx, thickness=nz)
        filters = weighting_filters(ANGLES, PADDED, **filter_options)
        return backproject_single_axis(matrix, weight_projections(views, filters, PADDED), nz, nx)
    wide = full_ray_width(ANGLES, detector_width=WIDTH, thickness=nz, volume_width=nx)
    matrix = single_axis_matrix(ANGLES, detector_width=WIDTH, volume_width=wide, thickness=nz)
    crop = wide // 2 - nx // 2
    slab = sirt_slab(
        matrix, transpose_matrix(matrix), views, thickness=nz, volume_width=wide, iterations=iterations
    )
    return slab[..., crop : crop + nx]


BANDS = torch.tensor([0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5])


def band_amplitudes(volume: torch.Tensor) -> torch.Tensor:
    """Root of the radially averaged power of the XZ planes in bands of |(kx, kz)| (cycles/voxel)."""
    power = (torch.fft.fft2(volume.double().permute(1, 0, 2)).abs() ** 2).mean(0)
    kz = torch.fft.fftfreq(volume.shape[0], dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(volume.shape[2], dtype=torch.float64)[None, :]
    rho = torch.sqrt(kz**2 + kx**2)
    return torch.stack(
        [power[(rho >= a) & (rho < b)].mean() for a, b in zip(BANDS[:-1], BANDS[1:], strict=True)]
    ).sqrt()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double() - a.double().mean()
    b = b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def noisy_blobs() -> torch.Tensor:
    """Views of 14 random blobs (σ = 2 px) plus white noise of the signal's standard deviation."""
    generator = torch.Generator().manual_seed(7)
    n = 14
    beads = torch.stack(
        [(torch.rand(n, generator=generator) - 0.5) * s for s in (48.0, 12.0, 20.0)], dim=1
    ).double()
    clean = bead_views(beads, 2.0, SHAPE[1])
    return clean + clean.std() * torch.randn(clean.shape, generator=generator)


def test_sirt_like_wbp_has_the_spectrum_and_look_of_sirt(noisy_blobs):
    sirt = reconstruct(noisy_blobs, "sirt", iterations=10)
    reference = band_amplitudes(sirt)

    def compare(**options) -> tuple[np.ndarray, float]:
        rec = reconstruct(noisy_blobs, "wbp", cutoff=None, **options)
        return (band_amplitudes(rec) / reference).numpy(), correlation(rec, sirt)

    mimic, cc_mimic = compare(sirt_like_iterations=10, thickness_px=float(SHAPE[0]))
    # measured: amplitude ratio 0.99–1.10 in every band from 0.02 to 0.5 cycles/voxel, cc 0.985
    assert np.all((mimic > 0.85) & (mimic < 1.25)), mimic
    assert cc_mimic > 0.97
    # controls: plain WBP, and the filter for 3 or 30 iterations, are far from 10 SIRT iterations
    plain, cc_plain = compare()
    assert plain[4:].min() > 2.0 and cc_plain < 0.93, (plain, cc_plain)  # measured 2.2–3.9, cc 0.869
    too_few, _ = compare(sirt_like_iterations=3, thickness_px=float(SHAPE[0]))
    too_many, _ = compare(sirt_like_iterations=30, thickness_px=float(SHAPE[0]))
    assert too_few[3:].max() < 0.6 and too_many[4:].min() > 1.5, (too_few, too_many)


BEADS = torch.tensor([(-24, -4, 6), (-8, 3, -8), (8, -2, 4), (24, 5, -4), (0, 0, 0)], dtype=torch.float64)


def bead_snr(volume: torch.Tensor) -> float:
    """(mean at the bead voxels − background mean) / background standard deviation."""
    nz, ny, nx = volume.shape
    centres = [(int(z) + nz // 2, int(y) + ny // 2, int(x) + nx // 2) for x, y, z in BEADS.tolist()]
    peak = torch.stack([volume[c] for c in centres]).mean()
    zz, yy, xx = torch.meshgrid(torch.arange(nz), torch.arange(ny), torch.arange(nx), indexing="ij")
    background = torch.ones(volume.shape, dtype=torch.bool)
    for k, j, i in centres:  # away from each bead and its elongation along z
        background &= ((zz - k) / 4) ** 2 + (yy - j) ** 2 + ((xx - i) / 2) ** 2 > 36
    values = volume[background]
    return float((peak - values.mean()) / values.std())


def test_sirt_has_the_contrast_and_wbp_the_resolution():
    generator = torch.Generator().manual_seed(3)
    clean = bead_views(BEADS, 1.5, SHAPE[1])
    noisy = clean + clean.std() * torch.randn(clean.shape, generator=generator)
    snr = {
        "wbp ramp": bead_snr(reconstruct(noisy, "wbp", cutoff=None)),
        "wbp 0.35": bead_snr(reconstruct(noisy, "wbp")),
        "sirt 10": bead_snr(reconstruct(noisy, "sirt", iterations=10)),
        "sirt-like 10": bead_snr(
            reconstruct(noisy, "wbp", cutoff=None, sirt_like_iterations=10, thickness_px=float(SHAPE[0]))
        ),
    }
    # measured: wbp ramp 17.0, wbp with IMOD's default fall-off 22.1, sirt 10 29.1, sirt-like 10 28.2
    assert snr["sirt 10"] > 1.4 * snr["wbp ramp"], snr
    assert snr["sirt 10"] > 1.15 * snr["wbp 0.35"], snr
    assert snr["sirt-like 10"] > 1.15 * snr["wbp 0.35"], snr
    assert snr["sirt-like 10"] == pytest.approx(snr["sirt 10"], rel=0.1), snr
    # noise-free: WBP keeps 1.5–2.2× SIRT's amplitude from 0.1 to 0.3 cycles/voxel
    ratio = (
        band_amplitudes(reconstruct(clean, "wbp", cutoff=None))
        / band_amplitudes(reconstruct(clean, "sirt", iterations=10))
    ).numpy()
    assert ratio[2:6].min() > 1.35, ratio
