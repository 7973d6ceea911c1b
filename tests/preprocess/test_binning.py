"""Antialiased (Lanczos) binning against physics: DC gain, geometry of Fourier cropping, pass and stop bands."""

from __future__ import annotations

import math

import pytest
import torch

from tomoforge.fourier import fourier_bin_2d
from tomoforge.preprocess import antialias_bin_2d
from tomoforge.steps.preprocess import binned_window

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (h, w, factor): odd sizes, sizes that are not multiples of the factor, and exact multiples.
SHAPES = [(96, 96, 3), (97, 100, 2), (101, 83, 3), (130, 97, 4), (155, 149, 6)]


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, x)`` pixel coordinates relative to the centre ``(h // 2, w // 2)``, float64."""
    y = torch.arange(h, dtype=torch.float64) - h // 2
    x = torch.arange(w, dtype=torch.float64) - w // 2
    return torch.meshgrid(y, x, indexing="ij")


def _fourier_binned(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Fourier binning of the centred window the step uses (the geometric reference)."""
    (y0, my), (x0, mx) = binned_window(image.shape[-2], factor), binned_window(image.shape[-1], factor)
    return fourier_bin_2d(image[..., y0 : y0 + factor * my, x0 : x0 + factor * mx], factor)


def _fit_cosine(values: torch.Tensor, freq: float, positions: torch.Tensor) -> tuple[float, float]:
    """Least-squares amplitude and phase of ``A cos(2π·freq·p + φ)`` (plus a constant) through 1-D samples."""
    phase = 2 * math.pi * freq * positions
    design = torch.stack([torch.cos(phase), torch.sin(phase), torch.ones_like(phase)], dim=-1)
    coef = torch.linalg.lstsq(design, values[:, None]).solution[:, 0]
    return float(torch.hypot(coef[0], coef[1])), float(torch.atan2(-coef[1], coef[0]))


def _centroid_yx(image: torch.Tensor) -> tuple[float, float]:
    y = torch.arange(image.shape[-2], dtype=image.dtype)
    x = torch.arange(image.shape[-1], dtype=image.dtype)
    total = image.sum()
    return float((image.sum(-1) * y).sum() / total), float((image.sum(-2) * x).sum() / total)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("h", "w", "factor"), [*SHAPES, (7, 9, 2), (11, 5, 3)])
@pytest.mark.parametrize("lobes", [2, 3])
def test_constant_stays_constant_with_the_shape_and_dtype_of_fourier_binning(
    h: int, w: int, factor: int, lobes: int, dtype: torch.dtype, device: str
) -> None:
    images = torch.full((2, h, w), 3.5, dtype=dtype, device=device)
    binned = antialias_bin_2d(images, factor, lobes=lobes)
    assert binned.dtype == dtype and binned.device == images.device
    assert binned.shape == (2, binned_window(h, factor)[1], binned_window(w, factor)[1])
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert float((binned - 3.5).abs().max()) < tolerance


@pytest.mark.parametrize(("h", "w", "factor"), SHAPES)
def test_blob_lands_where_fourier_binning_puts_it(h: int, w: int, factor: int) -> None:
    g = torch.Generator().manual_seed(h * w + factor)
    y, x = _grid(h, w)
    offset_yx = (
        (torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * 4 * factor
    )  # sub-pixel, near the centre
    sigma = 1.2 * factor  # 1.2 binned px: smooth enough for both methods to keep its shape
    blob = torch.exp(-((y - offset_yx[0]) ** 2 + (x - offset_yx[1]) ** 2) / (2 * sigma**2))
    antialiased, fourier = antialias_bin_2d(blob, factor), _fourier_binned(blob, factor)
    assert antialiased.shape == fourier.shape
    m_h, m_w = antialiased.shape
    truth = (m_h // 2 + float(offset_yx[0]) / factor, m_w // 2 + float(offset_yx[1]) / factor)
    for found in (_centroid_yx(antialiased), _centroid_yx(fourier)):
        assert abs(found[0] - truth[0]) < 0.05 and abs(found[1] - truth[1]) < 0.05, (found, truth)
    a, f = _centroid_yx(antialiased), _centroid_yx(fourier)
    assert abs(a[0] - f[0]) < 0.01 and abs(a[1] - f[1]) < 0.01
    # A delta on the centre pixel stays on the output's centre pixel (its peak, by symmetry of the taps).
    delta = torch.zeros(h, w, dtype=torch.float64)
    delta[h // 2, w // 2] = 1.0
    peak = antialias_bin_2d(delta, factor)
    assert divmod(int(peak.argmax()), m_w) == (m_h // 2, m_w // 2)
    # Its integral is kept only approximately (the Lanczos taps at multiples of N are not a partition of unity):
    # measured within 0.6 % of 1 / N².
    assert float(peak.sum()) == pytest.approx(1.0 / factor**2, rel=0.01)


@pytest.mark.parametrize(("h", "w", "factor"), SHAPES)
def test_sinusoid_below_the_new_nyquist_passes_in_phase(h: int, w: int, factor: int) -> None:
    # Half the new Nyquist along x, 0.3 of it along y: an oblique wave, phase 0.7 rad at the centre pixel.
    fy, fx = 0.3 / (2 * factor), 0.5 / (2 * factor)  # cycles per input pixel
    y, x = _grid(h, w)
    wave = torch.cos(2 * math.pi * (fx * x + fy * y) + 0.7)
    binned = antialias_bin_2d(wave, factor)
    m_h, m_w = binned.shape
    lobes = 3
    row = binned[m_h // 2, lobes : m_w - lobes]  # away from the mirrored edges
    j = torch.arange(lobes, m_w - lobes, dtype=torch.float64) - m_w // 2
    gain, phase = _fit_cosine(row, fx * factor, j)
    # measured 1.0174–1.0178 = H(0.5)·H(0.3) of the separable Lanczos-3 response (overshoot ≤ 1.4 % per axis),
    # phase error < 1e-15 rad
    assert 0.99 < gain < 1.025, gain
    assert abs(phase - 0.7) < 0.01, phase


@pytest.mark.parametrize(("h", "w", "factor"), SHAPES)
@pytest.mark.parametrize("axis", [-1, -2])
def test_sinusoid_above_the_new_nyquist_does_not_alias(h: int, w: int, factor: int, axis: int) -> None:
    # 1.5 times the new Nyquist: plain decimation would fold it onto 0.5 of the new Nyquist with amplitude 1.
    f = 1.5 / (2 * factor)
    y, x = _grid(h, w)
    wave = torch.cos(2 * math.pi * f * (x if axis == -1 else y) + 0.4)
    binned = antialias_bin_2d(wave, factor)
    line = binned[binned.shape[0] // 2] if axis == -1 else binned[:, binned.shape[1] // 2]
    lobes = 3
    m = line.shape[0]
    j = torch.arange(lobes, m - lobes, dtype=torch.float64) - m // 2
    alias, _ = _fit_cosine(line[lobes : m - lobes], 0.25, j)  # the alias: 0.75 − 1 cycles per binned pixel
    assert alias < 0.02, alias  # measured 0.008–0.0094 (the Lanczos-3 stop band is ≤ 0.0115 here)
    # Plain block averaging (IMOD's binning without -antialias) leaves sin(3π/4) / (N sin(3π/(4N))) of it.
    (y0, my), (x0, mx) = binned_window(h, factor), binned_window(w, factor)
    crop = wave[y0 : y0 + factor * my, x0 : x0 + factor * mx]
    block = crop.reshape(my, factor, mx, factor).mean(dim=(1, 3))
    block_line = block[my // 2] if axis == -1 else block[:, mx // 2]
    block_alias, _ = _fit_cosine(block_line[lobes : m - lobes], 0.25, j)
    assert block_alias > 0.2 and alias < 0.1 * block_alias


@pytest.mark.parametrize(("h", "w", "factor"), SHAPES)
def test_agrees_with_fourier_binning_on_band_limited_data(h: int, w: int, factor: int) -> None:
    g = torch.Generator().manual_seed(3 * h + w)
    noise = torch.randn(3, h, w, generator=g, dtype=torch.float64)
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    cutoff = 0.4 / (2 * factor)  # Gaussian low-pass: content mostly below 0.4 of the new Nyquist
    smooth = torch.fft.irfft2(
        torch.fft.rfft2(noise) * torch.exp(-(kx**2 + ky**2) / (2 * cutoff**2)), s=(h, w)
    )
    antialiased, fourier = antialias_bin_2d(smooth, factor), _fourier_binned(smooth, factor)
    for a, f in zip(antialiased, fourier, strict=True):
        a, f = a - a.mean(), f - f.mean()
        correlation = float((a * f).sum() / (a.norm() * f.norm()))
        assert correlation > 0.99, correlation


def test_batches_match_single_images_and_integers_become_float32() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 45, 52, generator=g)
    batched = antialias_bin_2d(images, 3, lobes=2)
    for i in range(2):
        for k in range(3):
            torch.testing.assert_close(batched[i, k], antialias_bin_2d(images[i, k], 3, lobes=2))
    counts = torch.randint(0, 50, (30, 31), generator=g)
    binned = antialias_bin_2d(counts, 2)
    assert binned.dtype == torch.float32
    torch.testing.assert_close(binned, antialias_bin_2d(counts.to(torch.float32), 2))
    same = antialias_bin_2d(images, 1)
    assert same.shape == images.shape and torch.equal(same, images)


def test_more_lobes_suppress_aliasing_more() -> None:
    y, x = _grid(64, 200)
    factor = 4
    wave = torch.cos(2 * math.pi * 1.6 / (2 * factor) * x)  # aliases onto 0.4 of the new Nyquist
    j = torch.arange(4, 46, dtype=torch.float64) - 25
    alias = {
        lobes: _fit_cosine(antialias_bin_2d(wave, factor, lobes=lobes)[8, 4:46], 0.2, j)[0]
        for lobes in (1, 2, 3)
    }
    assert alias[3] < alias[2] < alias[1]


@pytest.mark.parametrize(
    ("shape", "factor", "lobes", "message"),
    [
        ((10,), 2, 3, "at least 2 dimensions"),
        ((10, 10), 0, 3, "factor must be a positive integer"),
        ((10, 10), 1.5, 3, "factor must be a positive integer"),
        ((10, 10), 2, 0, "lobes must be a positive integer"),
        ((10, 4), 3, 3, "side of 4 px cannot be binned by 3"),
    ],
)
def test_bad_input_is_named(shape: tuple[int, ...], factor: float, lobes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        antialias_bin_2d(torch.zeros(shape), factor, lobes=lobes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real"):
        antialias_bin_2d(torch.zeros(8, 8, dtype=torch.complex64), 2)
