"""Post-processing kernels against known answers: phase randomisation keeps amplitudes and kills correlation, the
Guinier fit recovers an applied B-factor, the phase-randomisation correction recovers the FSC a mask inflates, and
sharpening undoes a blur.

The synthetic half maps are stationary Gaussian fields: a signal whose power per shell ``S(r)`` is known, plus
independent white noise of unit power in each half, so the expected FSC is ``S / (1 + S)`` in every shell; a mask
that cuts through such a map spreads the strong low-resolution signal into the high-resolution shells of both
halves alike and inflates their FSC there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from tomoforge.averaging import fourier_shell_correlation, fsc_resolution_angstrom, soft_sphere_mask
from tomoforge.averaging.postprocess import (
    corrected_fsc,
    fsc_weights,
    guinier_b_factor,
    phase_randomise,
    postprocess,
    randomisation_shell,
    sharpen,
    threshold_mask,
)
from tomoforge.fourier import fftfreq_grid

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N = 48


def _shells(n: int = N) -> torch.Tensor:
    """Continuous shell radius ``|k|·N`` of every rfft sample."""
    return fftfreq_grid((n, n, n), rfft=True, dtype=torch.float64).norm(dim=-1) * n


def _field(amplitude: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A real Gaussian field whose expected power per sample is ``N³ · amplitude²``."""
    noise = torch.randn(N, N, N, generator=generator, dtype=torch.float64)
    return torch.fft.irfftn(torch.fft.rfftn(noise) * amplitude, s=(N, N, N))


def _shell_mean_amplitude(volume: torch.Tensor) -> torch.Tensor:
    shells = torch.round(_shells()).long().reshape(-1)
    keep = shells <= N // 2
    amplitude = torch.fft.rfftn(volume.cpu().double()).abs().reshape(-1)
    total = torch.bincount(shells[keep], weights=amplitude[keep], minlength=N // 2 + 1)
    return total / torch.bincount(shells[keep], minlength=N // 2 + 1)


@pytest.mark.parametrize("device", DEVICES)
def test_phase_randomisation_keeps_amplitudes_and_kills_correlation_beyond_the_cut(device: str) -> None:
    generator = torch.Generator().manual_seed(1)
    volume = sharpen(
        torch.randn(N, N, N, generator=generator, dtype=torch.float64), 1.0, b_factor_angstrom2=20.0
    )
    volume = volume.to(device)
    cut = 10
    randomised = phase_randomise(volume, cut, seed=3)
    assert randomised.dtype == volume.dtype and randomised.device == volume.device
    before, after = torch.fft.rfftn(volume).cpu(), torch.fft.rfftn(randomised).cpu()
    scale = float(before.abs().max())
    assert float(((after.abs() - before.abs()).abs() / before.abs().clamp_min(1e-9 * scale)).max()) < 1e-6
    below = torch.round(_shells()) < cut
    assert float((after[below] - before[below]).abs().max()) < 1e-9 * scale
    fsc = fourier_shell_correlation(volume, randomised).cpu()
    assert float(fsc[:cut].min()) > 1 - 1e-9, fsc
    assert float(fsc[cut + 2 :].abs().max()) < 0.15, fsc
    # Random, but reproducible: the same seed gives the same map, another seed other phases.
    assert torch.equal(phase_randomise(volume, cut, seed=3), randomised)
    other = fourier_shell_correlation(randomised, phase_randomise(volume, cut, seed=4)).cpu()
    assert float(other[cut + 2 :].abs().max()) < 0.15, other


def test_guinier_fit_recovers_an_applied_b_factor_and_sharpening_flattens_it() -> None:
    pixel, b_applied = 2.0, 120.0
    generator = torch.Generator().manual_seed(2)
    spectrum = torch.fft.rfftn(torch.randn(N, N, N, generator=generator, dtype=torch.float64))
    flat = torch.fft.irfftn(spectrum / spectrum.abs(), s=(N, N, N))  # random phases, amplitude 1 everywhere
    blurred = sharpen(flat, pixel, b_factor_angstrom2=b_applied)  # amplitudes exp(−120 s²/4)
    fit = guinier_b_factor(blurred, pixel, low_angstrom=10.0, high_angstrom=4.5)
    # RELION's sign: the map's amplitudes fall off as exp(B s²/4), so B = −120 Å².
    assert fit.b_factor_angstrom2 == pytest.approx(-b_applied, abs=10.0)
    assert int(fit.in_fit.sum()) == 12  # shells 10 … 21 of a 96 Å box lie between 10 and 4.5 Å
    resolution = 1 / fit.s2_per_angstrom2[fit.in_fit].sqrt()
    assert float(resolution.max()) <= 10.0 and float(resolution.min()) >= 4.5
    assert fit.intercept == pytest.approx(0.0, abs=0.1)  # amplitude 1 at s = 0
    # Applying the fitted B-factor flattens the Guinier plot again.
    flattened = guinier_b_factor(
        sharpen(blurred, pixel, b_factor_angstrom2=fit.b_factor_angstrom2), pixel, high_angstrom=4.5
    )
    assert abs(flattened.b_factor_angstrom2) < 3.0
    with pytest.raises(ValueError, match="at least 3"):
        guinier_b_factor(blurred, pixel, low_angstrom=10.0, high_angstrom=9.0)


def _designed_half_maps(seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half maps with signal power ``S(r) = 10⁵·exp(−(r/2.5)²) + 18·exp(−r/4)`` per shell ``r`` and unit noise,
    and the expected FSC ``S / (1 + S)`` per shell."""

    def signal_power(r: torch.Tensor) -> torch.Tensor:
        return 1e5 * torch.exp(-((r / 2.5) ** 2)) + 18.0 * torch.exp(-r / 4.0)

    generator = torch.Generator().manual_seed(seed)
    signal = _field(signal_power(_shells()).sqrt(), generator)
    ones = torch.ones_like(_shells())
    half1 = signal + _field(ones, generator)
    half2 = signal + _field(ones, generator)
    power = signal_power(torch.arange(N // 2 + 1, dtype=torch.float64))
    return half1.to(device), half2.to(device), power / (1 + power)


@pytest.mark.parametrize("device", DEVICES)
def test_phase_randomisation_removes_the_fsc_a_tight_mask_adds(device: str) -> None:
    half1, half2, truth = _designed_half_maps(0, device)
    mask = soft_sphere_mask(N, radius_px=18.0, edge_px=3.0, dtype=torch.float64).to(device)
    result = postprocess(half1, half2, mask, 1.0, b_factor_angstrom2=0.0)
    fsc_unmasked = result.fsc_unmasked.cpu()
    shell = result.randomise_from_shell
    assert (
        shell == randomisation_shell(fsc_unmasked)
        and fsc_unmasked[shell] < 0.8 <= fsc_unmasked[1:shell].min()
    )
    beyond = slice(shell + 2, None)  # where the correction applies (RELION's two-shell guard)
    masked_error = (result.fsc_masked.cpu() - truth)[beyond]
    corrected_error = (result.fsc_corrected.cpu() - truth)[beyond]
    assert float(masked_error.mean()) > 0.15 and float(masked_error.max()) > 0.3, masked_error
    assert float(corrected_error.abs().max()) < 0.1, corrected_error
    # Below the guard the corrected FSC is the masked one; below the cut the randomised FSC is the masked one
    # but for what the mask mixes in from the randomised shells.
    assert torch.equal(result.fsc_corrected[: shell + 2], result.fsc_masked[: shell + 2])
    assert torch.allclose(result.fsc_randomised[:shell], result.fsc_masked[:shell], atol=0.01)
    frequencies = result.frequencies_per_angstrom
    designed = fsc_resolution_angstrom(truth, frequencies, 0.143)
    assert result.resolution_angstrom == pytest.approx(designed, rel=0.12)
    assert torch.allclose(result.sharpened_masked, result.sharpened * mask)
    assert result.low_pass_angstrom == result.resolution_angstrom


def test_corrected_fsc_formula_and_fsc_weights() -> None:
    masked = torch.tensor([1.0, 0.9, 0.8, 0.6, 0.5])
    randomised = torch.tensor([1.0, 0.9, 0.5, 0.2, 0.6])
    corrected = corrected_fsc(masked, randomised, 2)
    expected = torch.tensor([1.0, 0.9, 0.6, 0.5, -0.25], dtype=torch.float64)
    assert torch.allclose(corrected, expected)
    weights = fsc_weights(torch.tensor([1.0, 0.143, 0.5, 0.3, 5e-5, 0.4], dtype=torch.float64))
    assert weights[0] == 1.0 and weights[1] == pytest.approx(0.5, abs=1e-3)
    assert weights[2] == pytest.approx(math.sqrt(2 / 3)) and weights[3] > 0
    assert torch.equal(weights[4:], torch.zeros(2, dtype=torch.float64))  # zero from the first FSC < 1e-4 on
    assert torch.equal(fsc_weights(torch.tensor([1.0, -0.2, 0.5]))[1:], torch.zeros(2, dtype=torch.float64))


def test_sharpening_undoes_a_blur_below_the_low_pass() -> None:
    pixel, b_applied, low_pass = 2.0, 150.0, 6.0
    generator = torch.Generator().manual_seed(5)
    original = torch.randn(N, N, N, generator=generator, dtype=torch.float64)
    blurred = sharpen(original, pixel, b_factor_angstrom2=b_applied)
    restored = sharpen(blurred, pixel, b_factor_angstrom2=-b_applied, low_pass_angstrom=low_pass)
    ratio = _shell_mean_amplitude(restored) / _shell_mean_amplitude(original)
    blurred_ratio = _shell_mean_amplitude(blurred) / _shell_mean_amplitude(original)
    edge = N * pixel / low_pass  # shell 16, with a raised-cosine edge from 15 to 17
    assert float((ratio[1:15] - 1).abs().max()) < 0.05, ratio
    assert float(blurred_ratio[14]) < 0.5  # the blur was real
    assert float(ratio[18:].max()) < 1e-12
    assert 0.1 < float(ratio[round(edge)]) < 0.9
    # An FSC weight multiplies each shell by sqrt(2F/(1+F)).
    fsc = torch.linspace(1.0, 0.0, N // 2 + 1, dtype=torch.float64)
    weighted = sharpen(original, pixel, fsc=fsc)
    ratio = _shell_mean_amplitude(weighted) / _shell_mean_amplitude(original)
    assert torch.allclose(ratio[:-1], fsc_weights(fsc)[:-1], atol=1e-9)


def test_threshold_mask_grows_the_thresholded_map_and_softens_its_edge() -> None:
    axis = torch.arange(N, dtype=torch.float64) - N // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = torch.sqrt(x * x + y * y + z * z)
    blob = torch.exp(-(r**2) / (2 * 6.0**2))
    threshold, extend, soft = 0.5, 3.0, 6.0
    edge_of_blob = 6.0 * math.sqrt(2 * math.log(2))  # where the blob is 0.5: 7.06 px
    mask = threshold_mask(blob, threshold, extend_px=extend, soft_edge_px=soft)
    assert mask.shape == blob.shape and float(mask.min()) >= 0.0 and float(mask.max()) == 1.0
    inner = 7.0  # the farthest voxel above the threshold along an axis
    assert bool((mask[r <= inner + extend - 1] == 1.0).all())  # (the thresholded voxels are a lattice ball)
    assert bool((mask[r > edge_of_blob + extend + soft + 0.5] == 0.0).all())
    ray = mask[N // 2, N // 2, N // 2 :]
    assert bool((ray[1:] <= ray[:-1]).all())
    cosine: Callable[[float], float] = lambda d: 0.5 + 0.5 * math.cos(math.pi * min(max(d, 0.0), soft) / soft)  # noqa: E731
    for i in range(int(inner + extend) + 1, int(inner + extend + soft) + 1):
        assert float(ray[i]) == pytest.approx(cosine(i - inner - extend), abs=0.07), (i, ray)
    with pytest.raises(ValueError, match="no voxel"):
        threshold_mask(blob, 2.0)


def test_postprocess_names_bad_shapes_and_honours_a_randomisation_resolution() -> None:
    half1, half2, _ = _designed_half_maps(1, "cpu")
    mask = soft_sphere_mask(N, radius_px=18.0, edge_px=3.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="one shape"):
        postprocess(half1, half2[:-1], mask, 1.0)
    result = postprocess(half1, half2, mask, 2.0, randomise_from_angstrom=8.0, b_factor_angstrom2=-50.0)
    assert result.randomise_from_shell == 12  # int(48 · 2 Å / 8 Å), as RELION's --randomize_at_A
    assert result.b_factor_angstrom2 == -50.0
