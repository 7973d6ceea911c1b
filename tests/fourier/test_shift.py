"""Sub-pixel Fourier shifts: direction, exactness for integers, reversibility, centroid, Nyquist."""

import math

import numpy as np
import pytest
import torch

from tomoforge.fourier import fourier_shift_2d


@pytest.mark.parametrize("shape", [(8, 10), (9, 7), (6, 6)])
def test_integer_shifts_equal_roll(shape):
    g = torch.Generator().manual_seed(0)
    images = torch.randn((3, *shape), generator=g, dtype=torch.float64)
    shifts = torch.tensor([[1.0, 2.0], [-3.0, 1.0], [4.0, -5.0]], dtype=torch.float64)
    out = fourier_shift_2d(images, shifts)
    for i in range(3):
        sx, sy = (int(v) for v in shifts[i])
        np.testing.assert_allclose(
            out[i].numpy(), torch.roll(images[i], (sy, sx), (-2, -1)).numpy(), atol=1e-12
        )


def test_a_delta_moves_towards_plus_shift():
    image = torch.zeros(16, 16)
    image[5, 3] = 1.0  # (x0, y0) = (3, 5)
    out = fourier_shift_2d(image, (2.0, 4.0))
    assert tuple(int(i) for i in torch.nonzero(out > 0.5)[0]) == (9, 5)  # row y0 + sy, column x0 + sx


def _band_limited(shape, generator):
    image = torch.randn(shape, generator=generator, dtype=torch.float64)
    spectrum = torch.fft.rfftn(image)
    h, w = shape
    if h % 2 == 0:
        spectrum[h // 2, :] = 0
    if w % 2 == 0:
        spectrum[:, w // 2] = 0
    return torch.fft.irfftn(spectrum, s=shape)


@pytest.mark.parametrize("shape", [(32, 24), (17, 15)])
def test_sub_pixel_shift_and_back_is_identity(shape):
    g = torch.Generator().manual_seed(1)
    image = _band_limited(shape, g)
    shift = torch.tensor([0.37, -1.61], dtype=torch.float64)
    back = fourier_shift_2d(fourier_shift_2d(image, shift), -shift)
    np.testing.assert_allclose(back.numpy(), image.numpy(), atol=1e-12)


def test_only_the_nyquist_component_is_lost():
    # A cosine at Nyquist along x cannot move by half a pixel; it vanishes, and moving it by 1 px flips it.
    x = torch.arange(8, dtype=torch.float64)
    nyquist = torch.cos(math.pi * x)[None, :].expand(4, 8)
    np.testing.assert_allclose(fourier_shift_2d(nyquist, (0.5, 0.0)).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(fourier_shift_2d(nyquist, (1.0, 0.0)).numpy(), -nyquist.numpy(), atol=1e-12)
    # the output of an arbitrary even-sized image with arbitrary shifts is real and has the same mean
    g = torch.Generator().manual_seed(2)
    image = torch.randn(10, 12, generator=g, dtype=torch.float64)
    out = fourier_shift_2d(image, (0.3, 0.8))
    assert out.dtype == torch.float64 and out.shape == image.shape
    assert out.mean().item() == pytest.approx(image.mean().item(), abs=1e-12)


def test_centroid_moves_by_the_shift():
    n = 64
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    blob = torch.exp(-((yy - 30.0) ** 2 + (xx - 33.0) ** 2) / (2 * 2.5**2))
    shifts = torch.tensor([[0.25, -0.4], [1.7, 2.3], [-3.15, 0.05]], dtype=torch.float64)
    out = fourier_shift_2d(blob, shifts)
    assert out.shape == (3, n, n)
    for i in range(3):
        total = out[i].sum()
        cx, cy = (out[i] * xx).sum() / total, (out[i] * yy).sum() / total
        assert cx.item() == pytest.approx(33.0 + shifts[i, 0].item(), abs=1e-3)
        assert cy.item() == pytest.approx(30.0 + shifts[i, 1].item(), abs=1e-3)


def test_float32_and_integer_input():
    image = torch.zeros(8, 8, dtype=torch.int32)
    image[2, 2] = 10
    out = fourier_shift_2d(image, torch.tensor([1.0, 1.0]))
    assert out.dtype == torch.float32
    assert out[3, 3].item() == pytest.approx(10.0, abs=1e-5)
    with pytest.raises(ValueError, match="sx, sy"):
        fourier_shift_2d(image.float(), torch.tensor([1.0, 2.0, 3.0]))
