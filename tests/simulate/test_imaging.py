"""Image formation physics on tiny seeded volumes: projection geometry, Thon rings, dose, Poisson noise, motion."""

from __future__ import annotations

import math

import pytest
import torch

from tomoforge.fourier import fftfreq_grid
from tomoforge.geometry import project_points, projection_matrices
from tomoforge.simulate.detector import detector_mtf
from tomoforge.simulate.imaging import (
    ICE_MOLECULES_PER_ANGSTROM3,
    add_ice_texture,
    contrast_spectrum,
    expose,
    fourier_bin,
    fourier_upsample_spectrum,
    frame_intensity,
    image_wave,
    interaction_constant_rad_per_volt_angstrom,
    mtf_transfer,
    project_tilt,
)

OPTICS = {"voltage_kv": 300.0, "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.1}
WAVELENGTH_300KV = 0.0196875


def _gaussian_volume(n: int, centre_xyz_px: tuple[float, float, float], sigma_px: float) -> torch.Tensor:
    axis = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    cx, cy, cz = centre_xyz_px
    r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
    return torch.exp(-r2 / (2.0 * sigma_px**2)).to(torch.float32)


def _project(
    volume: torch.Tensor,
    *,
    voxel: float,
    shape_yx: tuple[int, int],
    n_slabs: int,
    tilt_deg: float = 0.0,
    axis_deg: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project_tilt` with the arguments these tests vary."""
    return project_tilt(
        volume,
        voxel_size_angstrom=voxel,
        tilt_angle_deg=tilt_deg,
        tilt_axis_angle_deg=axis_deg,
        out_shape_yx=shape_yx,
        n_slabs=n_slabs,
        **kwargs,
    )


def _round_spectrum(
    slabs: torch.Tensor, depths: torch.Tensor, *, pixel: float, defocus: float
) -> torch.Tensor:
    """:func:`contrast_spectrum` of a view without astigmatism at the ``OPTICS`` constants."""
    return contrast_spectrum(
        slabs,
        depths,
        pixel_size_angstrom=pixel,
        defocus_u_angstrom=defocus,
        defocus_v_angstrom=defocus,
        astigmatism_angle_deg=0.0,
        **OPTICS,
    )


def _upsample_with_mtf(
    spectrum: torch.Tensor, shape_yx: tuple[int, int], factor: int, detector: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectrum on the super-resolution grid ``factor`` times finer, and the detector's MTF there."""
    fine = fourier_upsample_spectrum(spectrum, shape_yx, factor)
    fine_shape = (factor * shape_yx[0], factor * shape_yx[1])
    mtf = mtf_transfer(fine_shape, detector_mtf(detector), detector_pixels_per_image_pixel=0.5)
    return fine, mtf


def test_interaction_constant_matches_kirkland():
    # σ = 2π m e λ / h²: 0.00065258 rad/(V·Å) at 300 kV and 0.00072884 at 200 kV (Kirkland 2010, table 5.2 numbers)
    assert interaction_constant_rad_per_volt_angstrom(300.0) == pytest.approx(6.5258e-4, rel=2e-4)
    assert interaction_constant_rad_per_volt_angstrom(200.0) == pytest.approx(7.2884e-4, rel=2e-4)


@pytest.mark.parametrize(
    ("theta", "alpha", "phi", "shift"),
    [
        (0.0, 0.0, 0.0, (0.0, 0.0)),
        (30.0, 85.3, 0.0, (3.3, -2.1)),
        (-60.0, -20.0, 4.0, (-5.5, 7.25)),
        (45.0, 130.0, -3.0, (1.0, 1.0)),
    ],
)
def test_bead_projects_where_the_projection_model_says(theta, alpha, phi, shift):
    point = torch.tensor([5.3, -7.2, 9.1], dtype=torch.float64)
    voxel = 2.0
    volume = _gaussian_volume(48, (5.3, -7.2, 9.1), 1.5)
    slabs, depths = project_tilt(
        volume,
        voxel_size_angstrom=voxel,
        tilt_angle_deg=theta,
        tilt_axis_angle_deg=alpha,
        x_tilt_deg=phi,
        shift_xy_px=shift,
        out_shape_yx=(64, 70),
        n_slabs=96,
        lateral_padding="zeros",
    )
    image = slabs.sum(0).to(torch.float64)
    ys, xs = torch.meshgrid(torch.arange(64.0) - 32, torch.arange(70.0) - 35, indexing="ij")
    centroid = torch.stack([(image * xs).sum(), (image * ys).sum()]) / image.sum()
    expected = project_points(point[None], projection_matrices(theta, alpha, torch.tensor(shift), phi))[0]
    assert torch.allclose(centroid, expected[:2], atol=0.1), (centroid, expected)
    # the bead's mass (V·Å³ / pixel area) is conserved, and it sits in the slab of its depth
    assert float(image.sum()) * voxel**2 == pytest.approx(float(volume.sum()) * voxel**3, rel=5e-3)
    mass = slabs.sum(dim=(1, 2)).to(torch.float64)
    slab_width = float(depths[1] - depths[0])
    assert float((mass * depths).sum() / mass.sum()) == pytest.approx(
        float(expected[2]) * voxel, abs=slab_width
    )


def test_border_padding_continues_the_ice_beyond_the_volume():
    volume = torch.zeros(40, 48, 48)
    volume[10:30] = 4.5  # a 20-voxel slab of "ice"
    geometry = {"voxel": 1.0, "tilt_deg": 60.0, "axis_deg": 10.0, "shape_yx": (48, 48), "n_slabs": 4}
    border, _ = _project(volume, **geometry)
    zeros, _ = _project(volume, **geometry, lateral_padding="zeros")
    expected = 4.5 * 20 / math.cos(math.radians(60.0))  # V·Å through the tilted slab
    assert torch.allclose(border.sum(0), torch.full((48, 48), expected), rtol=0.01)
    assert float(zeros.sum(0).min()) < 0.7 * expected  # without it the slab ends at the volume's sides


def test_ice_texture_has_the_poisson_statistics_of_its_molecules():
    volume = torch.zeros(60, 64, 64)
    volume[10:50] = 4.575  # 40 voxels of ice at its mean inner potential
    slabs, depths = _project(volume, voxel=5.0, shape_yx=(64, 64), n_slabs=6)
    textured = add_ice_texture(
        slabs,
        depths,
        pixel_size_angstrom=5.0,
        structure_factor=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    fluctuation = (textured - slabs).sum(0).to(torch.float64)
    path = 40 * 5.0  # Å of ice in every column
    expected = 4.575 * math.sqrt(0.5 * path / (ICE_MOLECULES_PER_ANGSTROM3 * 5.0**2))  # MIP·√(S·L/ρa), V·Å
    assert float(fluctuation.std()) == pytest.approx(expected, rel=0.05)
    assert abs(float(fluctuation.mean())) < 0.05 * expected
    vacuum = add_ice_texture(
        torch.zeros(3, 8, 8),
        depths[:3],
        pixel_size_angstrom=5.0,
        structure_factor=0.5,
        generator=torch.Generator(),
    )
    assert torch.equal(vacuum, torch.zeros(3, 8, 8))  # no ice, no texture


def _radial_average(
    power: torch.Tensor, shape_yx: tuple[int, int], pixel: float
) -> tuple[torch.Tensor, torch.Tensor]:
    n = shape_yx[0]
    k = torch.linalg.vector_norm(
        fftfreq_grid(shape_yx, spacing_angstrom=pixel, rfft=False, dtype=torch.float64), dim=-1
    )
    bins = (k * n * pixel).round().to(torch.int64).clamp(max=n // 2)
    counts = torch.bincount(bins.reshape(-1), minlength=n // 2 + 1).to(torch.float64)
    sums = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(0, bins.reshape(-1), power.reshape(-1))
    return torch.arange(n // 2 + 1, dtype=torch.float64) / (n * pixel), sums / counts


def _fit_defocus(profile: torch.Tensor, k: torch.Tensor, k_range: tuple[float, float]) -> float:
    """Defocus whose CTF² correlates best with the radial power spectrum (a CTFFIND-like 1D scan)."""
    band = (k >= k_range[0]) & (k <= k_range[1])
    best, best_defocus = -2.0, 0.0
    for defocus in torch.arange(12000.0, 18000.0, 5.0, dtype=torch.float64).tolist():
        chi = math.pi * WAVELENGTH_300KV * defocus * k**2 - 0.5 * math.pi * 2.7e7 * WAVELENGTH_300KV**3 * k**4
        model = torch.sin(chi + math.asin(0.1)) ** 2
        cc = float(torch.corrcoef(torch.stack([profile[band], model[band]]))[0, 1])
        if cc > best:
            best, best_defocus = cc, defocus
    return best_defocus


@pytest.mark.parametrize(("tilt_deg", "slab_offset_px"), [(0.0, 16), (30.0, 0)])
def test_thon_ring_zeros_match_the_true_defocus(tilt_deg, slab_offset_px):
    """A noisy simulated tilt of a thin amorphous slab: the defocus fitted to its Thon rings is the truth."""
    voxel, n, defocus = 2.5, 192, 15000.0
    generator = torch.Generator().manual_seed(3)
    volume = torch.zeros(64, n, n)
    z0 = 32 + slab_offset_px
    volume[z0 - 1 : z0 + 2] = 20.0 * torch.randn((3, n, n), generator=generator)
    slabs, depths = _project(
        volume, voxel=voxel, tilt_deg=tilt_deg, axis_deg=85.3, shape_yx=(n, n), n_slabs=24
    )
    spectrum = _round_spectrum(slabs, depths, pixel=voxel, defocus=defocus)
    fine, mtf = _upsample_with_mtf(spectrum, (n, n), 2, "k2_300kv")
    intensity = frame_intensity(
        fine, shape_yx=(2 * n, 2 * n), pixel_size_angstrom=voxel / 2, voltage_kv=300.0, mtf=mtf
    )
    counts, _ = expose(intensity, electrons_per_pixel=40.0, generator=torch.Generator().manual_seed(4))
    image = fourier_bin(counts.to(torch.float64), 2, dims=(0, 1))
    power = torch.fft.fftn(image - image.mean()).abs().square()
    k, profile = _radial_average(power, (n, n), voxel)
    fitted = _fit_defocus(profile, k, (0.04, 0.19))
    expected = defocus - slab_offset_px * voxel  # Δf − depth: the slab is nearer the source by its height
    assert abs(fitted - expected) < 200.0, (fitted, expected)


def test_mean_counts_match_the_dose_and_noise_is_poisson():
    generator = torch.Generator().manual_seed(0)
    volume = torch.zeros(16, 128, 128)
    volume[6:10] = 3.0 * torch.randn((4, 128, 128), generator=generator)
    slabs, depths = _project(volume, voxel=4.0, tilt_deg=20.0, axis_deg=80.0, shape_yx=(128, 128), n_slabs=4)
    intensity = image_wave(
        slabs,
        depths,
        pixel_size_angstrom=4.0,
        defocus_u_angstrom=30000.0,
        defocus_v_angstrom=29000.0,
        astigmatism_angle_deg=30.0,
        b_factor_angstrom2=20.0,
        **OPTICS,
    )
    dose_per_pixel = 0.375 * 4.0**2  # e⁻/Å² per frame × pixel area
    counts, _ = expose(
        intensity, electrons_per_pixel=dose_per_pixel, generator=torch.Generator().manual_seed(1)
    )
    assert float(counts.to(torch.float64).mean()) == pytest.approx(dose_per_pixel, rel=0.01)
    assert counts.dtype == torch.int32 and int(counts.min()) >= 0
    # An empty specimen: a flat expected image, and counts with variance = mean.
    empty = torch.zeros(8, 96, 96)
    slabs, depths = _project(empty, voxel=4.0, shape_yx=(96, 96), n_slabs=2)
    spectrum = _round_spectrum(slabs, depths, pixel=4.0, defocus=3e4)
    fine, mtf = _upsample_with_mtf(spectrum, (96, 96), 4, "k3_300kv")
    flat = frame_intensity(fine, shape_yx=(384, 384), pixel_size_angstrom=1.0, voltage_kv=300.0, mtf=mtf)
    assert torch.allclose(flat, torch.ones_like(flat), atol=1e-5)
    counts, _ = expose(flat, electrons_per_pixel=5.0, generator=torch.Generator().manual_seed(2))
    values = counts.to(torch.float64)
    assert float(values.var() / values.mean()) == pytest.approx(1.0, abs=0.03)


def test_positive_potential_is_dark_in_underfocus_and_dose_damps_high_frequencies():
    volume = _gaussian_volume(32, (0.0, 0.0, 0.0), 2.0) * 5.0
    slabs, depths = _project(volume, voxel=2.0, shape_yx=(64, 64), n_slabs=2)
    common = {
        "pixel_size_angstrom": 2.0,
        "defocus_u_angstrom": 10000.0,
        "defocus_v_angstrom": 10000.0,
        "astigmatism_angle_deg": 0.0,
        **OPTICS,
    }
    fresh = image_wave(slabs, depths, **common)
    assert float(fresh[32, 32]) < float(fresh.mean()) - 0.01  # a blob of positive potential images dark
    damaged = image_wave(slabs, depths, prior_dose_e_per_angstrom2=60.0, dose_e_per_angstrom2=3.0, **common)
    k = torch.linalg.vector_norm(fftfreq_grid((64, 64), spacing_angstrom=2.0), dim=-1)
    high = k > 0.1

    def high_power(image: torch.Tensor) -> float:
        return float(torch.fft.rfftn(image - image.mean()).abs().square()[high].sum())

    assert high_power(damaged) < 0.5 * high_power(fresh)


def _subpixel_peak(correlation: torch.Tensor) -> torch.Tensor:
    """Position (x, y) of the maximum of a circular correlation, refined by a parabola per axis."""
    h, w = correlation.shape
    iy, ix = divmod(int(torch.argmax(correlation)), w)
    position = []
    for index, size, axis in ((ix, w, 1), (iy, h, 0)):
        before = correlation.select(axis, (index - 1) % size).select(0, iy if axis == 1 else ix)
        centre = correlation[iy, ix]
        after = correlation.select(axis, (index + 1) % size).select(0, iy if axis == 1 else ix)
        offset = 0.5 * (before - after) / (before - 2 * centre + after)
        value = index + float(offset)
        position.append(value - size if value > size / 2 else value)
    return torch.tensor(position, dtype=torch.float64)


def test_frame_motion_in_the_movie_equals_the_truth():
    generator = torch.Generator().manual_seed(5)
    volume = torch.zeros(12, 96, 96)
    volume[4:8] = 8.0 * torch.randn((4, 96, 96), generator=generator)
    slabs, depths = _project(volume, voxel=4.0, tilt_deg=10.0, axis_deg=85.0, shape_yx=(96, 96), n_slabs=2)
    spectrum = _round_spectrum(slabs, depths, pixel=4.0, defocus=2e4)
    fine, mtf = _upsample_with_mtf(spectrum, (96, 96), 2, "k2_300kv")
    shifts = torch.tensor([[0.0, 0.0], [1.3, -0.7], [2.45, 0.6], [-3.2, 4.15]], dtype=torch.float64)
    noise = torch.Generator().manual_seed(6)
    frames = []
    for index, shift in enumerate(shifts):
        intensity = frame_intensity(
            fine,
            shape_yx=(192, 192),
            pixel_size_angstrom=2.0,
            voltage_kv=300.0,
            prior_dose_e_per_angstrom2=0.5 * index,
            dose_e_per_angstrom2=0.5,
            shift_xy_px=shift,
            mtf=mtf,
            crop_shape_yx=(160, 160),
        )
        counts, _ = expose(intensity, electrons_per_pixel=2000.0, generator=noise)
        frames.append(counts.to(torch.float64))
    reference = torch.fft.rfftn(frames[0] - frames[0].mean())
    for frame, truth in zip(frames[1:], shifts[1:], strict=True):
        cross = torch.fft.irfftn(torch.fft.rfftn(frame - frame.mean()) * reference.conj(), s=(160, 160))
        assert torch.allclose(_subpixel_peak(cross), truth, atol=0.1), (_subpixel_peak(cross), truth)


def test_fourier_upsampling_and_binning_keep_centres_and_values():
    image = torch.zeros(32, 40, dtype=torch.float64)
    image[16, 20] = 1.0  # the centre N//2
    smooth = fourier_bin(fourier_bin(image, 1, dims=(0, 1)), 1, dims=(0,))
    assert torch.equal(smooth, image)
    spectrum = torch.fft.rfftn(image)
    fine = torch.fft.irfftn(fourier_upsample_spectrum(spectrum, (32, 40), 3), s=(96, 120))
    assert int(torch.argmax(fine)) == 48 * 120 + 60  # the centre stays at the centre
    back = fourier_bin(fine, 3, dims=(0, 1))
    band_limited = torch.fft.irfftn(fourier_upsample_spectrum(spectrum, (32, 40), 1), s=(32, 40))
    assert torch.allclose(back, band_limited, atol=1e-10)
    assert float(back.sum()) == pytest.approx(1.0, abs=1e-9)
