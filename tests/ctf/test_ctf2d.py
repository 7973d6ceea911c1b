"""The CTF kernel: wavelength, zeros, astigmatism convention, sign, dtypes and batching (CONVENTIONS.md §8)."""

import math
import time

import numpy as np
import pytest
import torch

from tomoforge.ctf import ctf_1d, ctf_2d, ctf_zeros_per_angstrom, electron_wavelength_angstrom
from tomoforge.fourier import fftfreq_grid

MICROSCOPE = {"voltage_kv": 300.0, "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.1}


def test_relativistic_wavelength():
    assert electron_wavelength_angstrom(300.0) == pytest.approx(0.019687, rel=1e-4)
    assert electron_wavelength_angstrom(200.0) == pytest.approx(0.025079, rel=1e-4)
    assert electron_wavelength_angstrom(100.0) == pytest.approx(0.037014, rel=1e-4)
    batch = electron_wavelength_angstrom(torch.tensor([300.0, 200.0], dtype=torch.float64))
    assert isinstance(batch, torch.Tensor)
    np.testing.assert_allclose(batch.numpy(), [0.0196875, 0.0250793], rtol=1e-5)


def test_first_zero_at_300kv_3um():
    zeros = ctf_zeros_per_angstrom(3, defocus_angstrom=30000.0, **MICROSCOPE)
    assert zeros[0].item() == pytest.approx(0.040492, rel=1e-4)
    assert torch.all(zeros[1:] > zeros[:-1])
    values = ctf_1d(zeros, defocus_angstrom=30000.0, **MICROSCOPE)
    np.testing.assert_allclose(values.numpy(), 0.0, atol=1e-9)
    # Just inside the first zero the CTF is negative (CTFFIND sign), just outside positive.
    around = ctf_1d(zeros[0] * torch.tensor([0.999, 1.001]), defocus_angstrom=30000.0, **MICROSCOPE)
    assert around[0] < 0 < around[1]


@pytest.mark.parametrize(
    "params",
    [
        {
            "defocus_angstrom": 15000.0,
            "voltage_kv": 200.0,
            "spherical_aberration_mm": 2.0,
            "amplitude_contrast": 0.07,
        },
        {
            "defocus_angstrom": 40000.0,
            "voltage_kv": 300.0,
            "spherical_aberration_mm": 0.0,
            "amplitude_contrast": 0.1,
        },
        {"defocus_angstrom": 5000.0, "phase_shift_deg": 90.0, **MICROSCOPE},
        {"defocus_angstrom": -20000.0, **MICROSCOPE},  # overfocus: χ decreases from the origin
    ],
)
def test_analytic_zeros_are_zeros_of_the_ctf(params):
    zeros = ctf_zeros_per_angstrom(4, **params)
    np.testing.assert_allclose(ctf_1d(zeros, **params).numpy(), 0.0, atol=1e-9)
    # and there is no other zero before the first one
    k = torch.linspace(0.0, zeros[0].item() * 0.999, 2000, dtype=torch.float64)
    signs = torch.sign(ctf_1d(k, **params))
    assert torch.all(signs == signs[0])


def test_zeros_beyond_the_phase_extremum_are_refused():
    with pytest.raises(ValueError, match="extremum"):
        ctf_zeros_per_angstrom(500, defocus_angstrom=5000.0, **MICROSCOPE)


def _ctf_by_azimuth(shape, pixel, du, dv, angle_deg, **micro):
    """Reference: the 1D CTF at |k| with Δf(φ) = ū + δ cos 2(φ − angle), φ = atan2(k_y, k_x) (y along rows)."""
    freq = fftfreq_grid(shape, spacing_angstrom=pixel, dtype=torch.float64)
    fy, fx = freq[..., 0], freq[..., 1]
    phi = torch.atan2(fy, fx)
    defocus = 0.5 * (du + dv) + 0.5 * (du - dv) * torch.cos(2.0 * (phi - math.radians(angle_deg)))
    k = torch.sqrt(fx**2 + fy**2)
    out = torch.empty_like(k)
    for idx in np.ndindex(*k.shape):
        out[idx] = ctf_1d(k[idx].reshape(1), defocus_angstrom=defocus[idx].item(), **micro)[0]
    return out


def test_astigmatism_angle_is_counter_clockwise_from_x():
    shape, pixel = (24, 20), 2.0
    for angle in (0.0, 30.0, 120.0, -75.0):
        got = ctf_2d(
            defocus_u_angstrom=25000.0,
            defocus_v_angstrom=18000.0,
            astigmatism_angle_deg=angle,
            pixel_size_angstrom=pixel,
            shape_yx=shape,
            dtype=torch.float64,
            **MICROSCOPE,
        )
        expected = _ctf_by_azimuth(shape, pixel, 25000.0, 18000.0, angle, **MICROSCOPE)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-10)


def test_astigmatic_zeros_lie_on_the_u_and_v_axes():
    # angle 0: u along +x (first row of the rfft grid), v along +y (first column).
    n, pixel = 2048, 1.0
    du, dv = 25000.0, 18000.0
    ctf = ctf_2d(
        defocus_u_angstrom=du,
        defocus_v_angstrom=dv,
        astigmatism_angle_deg=0.0,
        pixel_size_angstrom=pixel,
        shape_yx=(n, n),
        dtype=torch.float64,
        **MICROSCOPE,
    )
    dk = 1.0 / (n * pixel)
    for profile, defocus in ((ctf[0, :], du), (ctf[: n // 2, 0], dv)):
        first_sign_change = int(torch.nonzero(torch.sign(profile[1:]) != torch.sign(profile[:-1]))[0])
        zero = ctf_zeros_per_angstrom(1, defocus_angstrom=defocus, **MICROSCOPE)[0].item()
        assert first_sign_change * dk <= zero <= (first_sign_change + 1) * dk
    # rotating the astigmatism by 90° swaps the axes
    rotated = ctf_2d(
        defocus_u_angstrom=dv,
        defocus_v_angstrom=du,
        astigmatism_angle_deg=90.0,
        pixel_size_angstrom=pixel,
        shape_yx=(n, n),
        dtype=torch.float64,
        **MICROSCOPE,
    )
    np.testing.assert_allclose(rotated.numpy(), ctf.numpy(), atol=1e-9)


def test_positive_potential_is_dark_in_underfocus():
    # Weak-phase image of a positive Gaussian blob: I = 1 + 2σ·F⁻¹[CTF · F[V]].
    n, pixel = 128, 2.0
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    blob = torch.exp(-((yy - n // 2) ** 2 + (xx - n // 2) ** 2) / (2 * 8.0**2))  # σ = 16 Å
    spectrum = torch.fft.rfftn(blob)
    contrast = {}
    for defocus in (30000.0, -30000.0):
        ctf = ctf_2d(
            defocus_u_angstrom=defocus,
            defocus_v_angstrom=defocus,
            astigmatism_angle_deg=0.0,
            pixel_size_angstrom=pixel,
            shape_yx=(n, n),
            dtype=torch.float64,
            **MICROSCOPE,
        )
        image = 1.0 + 2.0 * 0.01 * torch.fft.irfftn(spectrum * ctf, s=(n, n))
        contrast[defocus] = (image[n // 2, n // 2] - image[0, 0]).item()
    assert contrast[30000.0] < 0.0  # dark blob in underfocus
    assert contrast[-30000.0] > 0.0  # bright in overfocus
    assert ctf_1d(torch.zeros(1), defocus_angstrom=30000.0, **MICROSCOPE).item() == pytest.approx(-0.1)


def test_batch_of_41_defoci_dtypes_and_layouts():
    defoci = torch.linspace(20000.0, 40000.0, 41, dtype=torch.float64)
    common = {
        "defocus_v_angstrom": defoci - 800.0,
        "astigmatism_angle_deg": 35.0,
        "pixel_size_angstrom": 1.35,
        "shape_yx": (64, 48),
        **MICROSCOPE,
    }
    c64 = ctf_2d(defocus_u_angstrom=defoci, **common)
    assert c64.shape == (41, 64, 25) and c64.dtype == torch.float64
    c32 = ctf_2d(
        defocus_u_angstrom=defoci.float(), **{**common, "defocus_v_angstrom": defoci.float() - 800.0}
    )
    assert c32.dtype == torch.float32
    np.testing.assert_allclose(c32.numpy(), c64.numpy(), atol=2e-4)
    single = ctf_2d(
        defocus_u_angstrom=defoci[7].item(),
        **{**common, "defocus_v_angstrom": defoci[7].item() - 800.0},
        dtype=torch.float64,
    )
    np.testing.assert_allclose(c64[7].numpy(), single.numpy(), atol=1e-12)
    full = ctf_2d(defocus_u_angstrom=defoci, rfft=False, **common)
    assert full.shape == (41, 64, 48)
    # The rfft half grid equals the full grid up to Nyquist (column 24 is +½ there, −½ on the full axis).
    np.testing.assert_allclose(full[..., :24].numpy(), c64[..., :24].numpy(), atol=1e-12)
    shifted = ctf_2d(defocus_u_angstrom=defoci, rfft=False, fftshift=True, **common)
    np.testing.assert_allclose(shifted.numpy(), torch.fft.fftshift(full, dim=(-2, -1)).numpy(), atol=1e-12)
    assert torch.allclose(shifted[:, 32, 24], torch.tensor(-0.1, dtype=torch.float64))  # DC at N // 2


def test_b_factor_envelope_and_validation():
    common = {
        "defocus_u_angstrom": 20000.0,
        "defocus_v_angstrom": 20000.0,
        "astigmatism_angle_deg": 0.0,
        "pixel_size_angstrom": 2.0,
        "shape_yx": (32, 32),
        "dtype": torch.float64,
        **MICROSCOPE,
    }
    plain = ctf_2d(**common)
    damped = ctf_2d(b_factor_angstrom2=100.0, **common)
    k2 = (fftfreq_grid((32, 32), spacing_angstrom=2.0, dtype=torch.float64) ** 2).sum(-1)
    np.testing.assert_allclose(damped.numpy(), (plain * torch.exp(-25.0 * k2)).numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="amplitude_contrast"):
        ctf_2d(**{**common, "amplitude_contrast": 1.5})


def test_batched_ctf_is_fast():
    defoci = torch.linspace(20000.0, 40000.0, 41)
    kwargs = {
        "defocus_u_angstrom": defoci,
        "defocus_v_angstrom": defoci - 500.0,
        "astigmatism_angle_deg": 30.0,
        "pixel_size_angstrom": 1.35,
        "shape_yx": (512, 512),
        **MICROSCOPE,
    }
    ctf_2d(**kwargs)  # warm-up
    start = time.perf_counter()
    out = ctf_2d(**kwargs)
    assert out.shape == (41, 512, 257)
    assert time.perf_counter() - start < 0.5
