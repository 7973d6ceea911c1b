"""Grant & Grigorieff exposure filter: critical exposure, weights and image filtering."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from tomoforge.fourier import (
    critical_exposure,
    dose_filter_image,
    dose_weights,
    fftfreq_grid,
    frame_dose_weights,
)


def test_critical_exposure_values():
    k = torch.tensor([0.1, 0.25, 0.5], dtype=torch.float64)
    ne = critical_exposure(k)
    assert ne[0].item() == pytest.approx(14.1383, abs=1e-3)
    np.testing.assert_allclose(ne.numpy(), 0.245 * k.numpy() ** -1.665 + 2.81, rtol=1e-12)
    np.testing.assert_allclose(critical_exposure(k, voltage_kv=200.0).numpy(), 0.8 * ne.numpy(), rtol=1e-12)
    assert math.isinf(critical_exposure(torch.zeros(1)).item())
    with pytest.raises(ValueError, match="200 and 300 kV"):
        critical_exposure(k, voltage_kv=120.0)


@pytest.mark.parametrize("k", [0.02, 0.1, 0.3])
@pytest.mark.parametrize(("prior", "dose"), [(0.0, 3.0), (57.0, 3.0), (10.0, 40.0)])
def test_mean_weight_equals_numerical_integration(k, prior, dose):
    ne = 0.245 * k**-1.665 + 2.81
    integral, _ = quad(lambda n: math.exp(-n / (2.0 * ne)), prior, prior + dose)
    got = dose_weights(
        torch.tensor([k], dtype=torch.float64), prior_dose_e_per_angstrom2=prior, dose_e_per_angstrom2=dose
    )
    assert got.item() == pytest.approx(integral / dose, rel=1e-10)


def test_modes_dc_and_ordering():
    k = torch.linspace(0.0, 0.35, 50, dtype=torch.float64)
    kwargs = {"prior_dose_e_per_angstrom2": 20.0, "dose_e_per_angstrom2": 3.0}
    start = dose_weights(k, mode="start", **kwargs)
    mean = dose_weights(k, **kwargs)
    end = dose_weights(k, mode="end", **kwargs)
    for w in (start, mean, end):
        assert w[0].item() == 1.0
        assert torch.all(w[1:] < w[:-1])  # more damage at higher resolution
    assert torch.all(end[1:] < mean[1:]) and torch.all(mean[1:] < start[1:])
    np.testing.assert_allclose(end.numpy(), np.exp(-23.0 / (2 * critical_exposure(k).numpy())), rtol=1e-12)
    # a vanishing exposure interval gives the point value
    tiny = dose_weights(k, prior_dose_e_per_angstrom2=20.0, dose_e_per_angstrom2=1e-9)
    np.testing.assert_allclose(tiny.numpy(), start.numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="mode"):
        dose_weights(k, mode="middle", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        dose_weights(k, prior_dose_e_per_angstrom2=-1.0, dose_e_per_angstrom2=3.0)


def test_per_tilt_doses_broadcast():
    k = torch.tensor([0.0, 0.1, 0.2])
    prior = torch.tensor([0.0, 3.0, 6.0, 9.0])
    w = dose_weights(k, prior_dose_e_per_angstrom2=prior, dose_e_per_angstrom2=3.0)
    assert w.shape == (4, 3) and w.dtype == torch.float32
    assert torch.all(w[1:, 1:] < w[:-1, 1:])


def test_dose_filter_attenuates_a_cosine_by_its_weight_and_keeps_the_mean():
    n, pixel = 64, 2.0
    x = torch.arange(n, dtype=torch.float64)
    cycles = 8  # frequency 8 / (64 · 2 Å) = 0.0625 Å⁻¹
    image = 5.0 + torch.cos(2 * math.pi * cycles * x / n)[None, :].expand(n, n)
    stack = torch.stack([image, image])
    prior = torch.tensor([0.0, 60.0])
    out = dose_filter_image(
        stack, pixel_size_angstrom=pixel, prior_dose_e_per_angstrom2=prior, dose_e_per_angstrom2=3.0
    )
    expected_weight = dose_weights(
        torch.tensor([cycles / (n * pixel)], dtype=torch.float64),
        prior_dose_e_per_angstrom2=prior,
        dose_e_per_angstrom2=3.0,
    )[:, 0]
    for i in range(2):
        assert out[i].mean().item() == pytest.approx(5.0, abs=1e-12)
        np.testing.assert_allclose(
            (out[i] - 5.0).numpy(), (expected_weight[i] * (image - 5.0)).numpy(), atol=1e-12
        )
    assert expected_weight[1] < expected_weight[0] < 1.0


def test_weights_on_a_grid_match_radial_frequency():
    grid = torch.linalg.vector_norm(fftfreq_grid((16, 16), spacing_angstrom=1.5), dim=-1)
    w = dose_weights(grid, prior_dose_e_per_angstrom2=10.0, dose_e_per_angstrom2=2.0, voltage_kv=200.0)
    assert w.shape == (16, 9) and w[0, 0].item() == 1.0
    assert torch.all((w > 0) & (w <= 1))


def test_filtered_white_noise_has_the_power_spectrum_the_formula_predicts():
    # White noise has a flat expected power spectrum, so after filtering the shell-averaged power must follow the
    # squared weights (issue 5's dose-filter target), here for a tilt at 60 e⁻/Å² prior dose.
    generator = torch.Generator().manual_seed(5)
    shape, pixel, prior, dose = (512, 512), 1.35, 60.0, 3.0
    noise = torch.randn((8, *shape), generator=generator, dtype=torch.float64)
    filtered = dose_filter_image(
        noise,
        pixel_size_angstrom=pixel,
        prior_dose_e_per_angstrom2=prior,
        dose_e_per_angstrom2=dose,
        voltage_kv=300,
    )
    power_in = torch.fft.rfftn(noise, dim=(-2, -1)).abs().square().mean(0)
    power_out = torch.fft.rfftn(filtered, dim=(-2, -1)).abs().square().mean(0)
    k = fftfreq_grid(shape, spacing_angstrom=pixel, dtype=torch.float64).norm(dim=-1)
    expected = (
        dose_weights(k, prior_dose_e_per_angstrom2=prior, dose_e_per_angstrom2=dose, voltage_kv=300) ** 2
    )
    shells = (k / k.max() * 40).long().clamp(max=39)
    for shell in range(2, 38):
        sel = shells == shell
        # the filter multiplies every coefficient by exactly its weight …
        exact = float((expected[sel] * power_in[sel]).sum() / power_in[sel].sum())
        assert float(power_out[sel].sum() / power_in[sel].sum()) == pytest.approx(exact, rel=1e-6), shell
        # … so the filtered noise's shell power matches the formula within the noise of the estimate
        n_samples = int(sel.sum()) * noise.shape[0]
        measured = float(power_out[sel].mean() / power_in.mean())
        assert measured == pytest.approx(float(expected[sel].mean()), rel=5 / math.sqrt(n_samples)), shell
    # and the prediction itself is far from flat: strong attenuation at high frequency
    assert float(expected[shells == 37].mean()) < 0.05 * float(expected[shells == 2].mean())


def test_frame_dose_weights_follow_each_frames_exposure_interval():
    k = torch.linspace(0.0, 0.3, 50, dtype=torch.float64)
    a = frame_dose_weights(
        k, n_frames=8, prior_dose_e_per_angstrom2=30.0, dose_per_frame_e_per_angstrom2=0.375, voltage_kv=300
    )
    assert a.shape == (8, 50)
    for f in (0, 3, 7):
        expected = dose_weights(
            k, prior_dose_e_per_angstrom2=30.0 + 0.375 * f, dose_e_per_angstrom2=0.375, voltage_kv=300
        )
        torch.testing.assert_close(a[f], expected)
    assert torch.all(a[1:] <= a[:-1])  # later frames are more damaged
