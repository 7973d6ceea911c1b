"""FFT centring and frequency units (CONVENTIONS.md §9)."""

import numpy as np
import torch

from tomoforge.fourier import dc_index, fftfreq_grid


def test_rfft_grid_shape_units_and_dc():
    g = fftfreq_grid((6, 8), spacing_angstrom=2.0)
    assert g.shape == (6, 5, 2)
    assert torch.all(g[0, 0] == 0)
    assert g[0, 4, 1].item() == 0.25  # Nyquist in x: 1 / (2 · 2 Å)
    assert g[3, 0, 0].item() == -0.25  # Nyquist in y sits at index N/2, negative as in numpy


def test_fftshifted_full_grid_has_dc_at_centre_index():
    g = fftfreq_grid((5, 6, 7), rfft=False, fftshift=True)
    centre = tuple(dc_index(n, True) for n in (5, 6, 7))
    assert torch.all(g[centre] == 0)
    assert dc_index(7, False) == 0


def test_real_space_centre_has_flat_phase_after_ifftshift():
    # A delta at the real-space centre N//2, ifftshift-ed to the origin, has a purely real, constant spectrum.
    img = torch.zeros(6, 7)
    img[3, 3] = 1.0
    spec = torch.fft.rfftn(torch.fft.ifftshift(img))
    np.testing.assert_allclose(spec.real.numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(spec.imag.numpy(), 0.0, atol=1e-6)
