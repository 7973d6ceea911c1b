"""Post-processing of gold-standard half maps, as RELION's ``relion_postprocess``: the FSC within a mask corrected
for the mask by phase randomisation, a B-factor from a Guinier plot, sharpening, FSC weighting and a low-pass at the
resolution found.

The steps, in RELION's order (:func:`postprocess`):

1. FSC of the unmasked half maps, and of the half maps times the mask.
2. Both half maps get random phases from shell ``r`` outwards (by default the first shell where the unmasked FSC
   falls below 0.8), each its own, and their masked FSC is the FSC the mask alone brings about; the corrected FSC
   is ``(FSC_t − FSC_n) / (1 − FSC_n)`` from shell ``r + 2`` outwards (RELION skips two shells past the cut, where
   the mask's convolution mixes randomised and intact shells) and the masked FSC below (Chen et al. 2013).
3. The resolution is where the corrected FSC falls below 0.143 (Rosenthal & Henderson 2003).
4. The average of the half maps is weighted per shell by ``sqrt(2·FSC / (1 + FSC))`` of the corrected FSC
   (zero from the first shell where it is below 1e-4), and a straight line fitted to its Guinier plot,
   ``ln`` of the mean Fourier amplitude in each shell against ``s² = 1/d²``, between 10 Å and the resolution.
5. The weighted average is multiplied by ``exp(−B·s²/4)`` and low-passed at the resolution with a raised-cosine
   edge two shells wide.

Sign of the B-factor (RELION's): a map whose amplitudes fall off as ``exp(B·s²/4)`` has B-factor ``B``, negative
for every real map; the Guinier fit returns ``B = 4 × slope``; :func:`sharpen` multiplies the amplitudes by
``exp(−B·s²/4)``, so the fitted B flattens the fall-off and a negative B sharpens (e.g. ``−85 Å²``). A map blurred by
a temperature factor ``exp(−120·s²/4)`` has B-factor −120 Å² here.

Shells are ``round(|k|·N)`` (``k`` in cycles/pixel, ``N`` the largest edge), as in :mod:`tomoforge.averaging.fsc`.

References
----------
Chen, S., McMullan, G., Faruqi, A. R., Murshudov, G. N., Short, J. M., Scheres, S. H. W. & Henderson, R. (2013).
High-resolution noise substitution to measure overfitting and validate resolution in 3D structure determination by
single particle electron cryomicroscopy. Ultramicroscopy 135, 24–35. doi:10.1016/j.ultramic.2013.06.004

Rosenthal, P. B. & Henderson, R. (2003). Optimal determination of particle orientation, absolute hand, and contrast
loss in single-particle electron cryomicroscopy. J. Mol. Biol. 333, 721–745. doi:10.1016/j.jmb.2003.07.013
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.averaging.fsc import (
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
    shell_index,
)
from tomoforge.fourier import fftfreq_grid

__all__ = [
    "GuinierFit",
    "PostprocessResult",
    "corrected_fsc",
    "fsc_weights",
    "guinier_b_factor",
    "phase_randomise",
    "postprocess",
    "randomisation_shell",
    "sharpen",
    "threshold_mask",
]

_DIMS = (-3, -2, -1)
# RELION applies the correction only from two shells past the randomisation shell.
_GUARD_SHELLS = 2


class GuinierFit(NamedTuple):
    """A straight line through a map's Guinier plot.

    Attributes
    ----------
    b_factor_angstrom2
        ``4 × slope`` in Å² (RELION's sign: negative for a map whose amplitudes fall off); NaN when not fitted.
    intercept
        ``ln`` amplitude of the line at ``s² = 0``; NaN when not fitted.
    s2_per_angstrom2
        ``(N // 2,)`` float64 ``1/d²`` of shells 1 … N // 2, in 1/Å².
    ln_amplitude
        ``(N // 2,)`` float64 ``ln`` of the mean Fourier amplitude in each shell (NaN where it is zero).
    in_fit
        ``(N // 2,)`` bool, the shells the line was fitted to.
    """

    b_factor_angstrom2: float
    intercept: float
    s2_per_angstrom2: torch.Tensor
    ln_amplitude: torch.Tensor
    in_fit: torch.Tensor


class PostprocessResult(NamedTuple):
    """What :func:`postprocess` finds and makes.

    Attributes
    ----------
    frequencies_per_angstrom
        ``(N // 2 + 1,)`` float64 shell frequencies, 1/Å.
    fsc_unmasked, fsc_masked, fsc_randomised, fsc_corrected
        ``(N // 2 + 1,)`` float64 FSC of the half maps, of the masked half maps, of the masked phase-randomised
        half maps, and the masked FSC corrected for the mask.
    resolution_angstrom
        Where the corrected FSC falls below 0.143 (Nyquist when it never does).
    randomise_from_shell
        The first shell whose phases were randomised.
    b_factor_angstrom2
        The B-factor applied (fitted or given; RELION's sign, negative to sharpen).
    guinier
        The Guinier plot of the FSC-weighted average, with its fit (NaN B when the B-factor was given and no fit
        was possible).
    low_pass_angstrom
        Resolution of the low-pass applied.
    sharpened
        ``(z, y, x)`` the average of the half maps, FSC-weighted, sharpened and low-passed (RELION's
        ``postprocess.mrc``).
    sharpened_masked
        ``sharpened × mask`` (``postprocess_masked.mrc``).
    """

    frequencies_per_angstrom: torch.Tensor
    fsc_unmasked: torch.Tensor
    fsc_masked: torch.Tensor
    fsc_randomised: torch.Tensor
    fsc_corrected: torch.Tensor
    resolution_angstrom: float
    randomise_from_shell: int
    b_factor_angstrom2: float
    guinier: GuinierFit
    low_pass_angstrom: float
    sharpened: torch.Tensor
    sharpened_masked: torch.Tensor


def phase_randomise(volume: torch.Tensor, from_shell: int, *, seed: int = 0) -> torch.Tensor:
    """Give every Fourier sample at shell ``from_shell`` or beyond a random phase, keeping its amplitude.

    The random phases are those of the transform of real Gaussian noise, which are Hermitian like the map's, so the
    result is real and its amplitudes are exactly the map's; samples below ``from_shell`` are left as they are.

    Parameters
    ----------
    volume
        ``(..., z, y, x)`` real volumes.
    from_shell
        First shell ``round(|k|·N)`` to randomise.
    seed
        Of the random phases (on the CPU, so that every device gives the same map); give each half map its own.

    Returns
    -------
    torch.Tensor
        ``(..., z, y, x)`` in the volume's dtype and device.
    """
    shape = tuple(volume.shape[-3:])
    spectrum = torch.fft.rfftn(volume.to(torch.float64), dim=_DIMS)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(tuple(volume.shape), generator=generator, dtype=torch.float64).to(volume.device)
    phases = torch.fft.rfftn(noise, dim=_DIMS)
    rotor = phases / phases.abs().clamp_min(1e-300)
    outside = shell_index(shape, volume.device) >= from_shell
    spectrum = torch.where(outside, spectrum * rotor, spectrum)
    return torch.fft.irfftn(spectrum, s=shape, dim=_DIMS).to(volume.dtype)


def randomisation_shell(fsc_unmasked: torch.Tensor, below: float = 0.8) -> int:
    """RELION's default shell to randomise phases from: the first shell past DC where the FSC is below ``below``.

    Parameters
    ----------
    fsc_unmasked
        ``(n,)`` FSC of the unmasked half maps, shell 0 (DC) first.
    below
        RELION's ``--randomize_at_fsc`` (0.8).

    Returns
    -------
    int
        The shell; the last one (Nyquist) when the FSC never falls below ``below``.
    """
    low = (fsc_unmasked[1:] < below).nonzero()
    return int(low[0, 0]) + 1 if len(low) else len(fsc_unmasked) - 1


def corrected_fsc(
    fsc_masked: torch.Tensor, fsc_randomised_masked: torch.Tensor, from_shell: int
) -> torch.Tensor:
    """The masked FSC corrected for the mask: ``(FSC_t − FSC_n) / (1 − FSC_n)`` from ``from_shell`` on.

    Parameters
    ----------
    fsc_masked
        ``(..., n)`` FSC of the masked half maps (``FSC_t``).
    fsc_randomised_masked
        ``(..., n)`` FSC of the masked half maps after phase randomisation (``FSC_n``).
    from_shell
        First shell corrected; below it the masked FSC is kept (:func:`postprocess` passes the randomisation shell
        plus two, as RELION does).

    Returns
    -------
    torch.Tensor
        ``(..., n)`` float64.
    """
    fsc_t = fsc_masked.to(torch.float64)
    fsc_n = fsc_randomised_masked.to(torch.float64)
    true = (fsc_t - fsc_n) / (1.0 - fsc_n).clamp_min(1e-12)
    shells = torch.arange(fsc_t.shape[-1], device=fsc_t.device)
    return torch.where(shells >= from_shell, true, fsc_t)


def fsc_weights(fsc: torch.Tensor) -> torch.Tensor:
    """Per-shell weight ``sqrt(2·FSC / (1 + FSC))`` (Rosenthal & Henderson 2003), as RELION applies it.

    Zero where the FSC is not positive, and for every shell from the first one whose FSC is below 1e-4 outwards.

    Parameters
    ----------
    fsc
        ``(n,)`` FSC, shell 0 (DC) first.

    Returns
    -------
    torch.Tensor
        ``(n,)`` float64 weights in ``[0, 1]``.
    """
    values = fsc.to(torch.float64)
    weights = torch.sqrt(2.0 * values.clamp_min(0.0) / (1.0 + values.clamp_min(0.0)))
    low = (values < 1e-4).nonzero()
    if len(low):
        weights[int(low[0, 0]) :] = 0.0
    return weights


def sharpen(
    volume: torch.Tensor,
    pixel_size_angstrom: float,
    *,
    b_factor_angstrom2: float = 0.0,
    fsc: torch.Tensor | None = None,
    low_pass_angstrom: float | None = None,
    low_pass_edge_shells: float = 2.0,
) -> torch.Tensor:
    """Multiply a map's Fourier amplitudes by a B-factor, an FSC weight and a low-pass.

    Parameters
    ----------
    volume
        ``(..., z, y, x)`` real volumes.
    pixel_size_angstrom
        Voxel edge in Å.
    b_factor_angstrom2
        Every sample is multiplied by ``exp(−B·s²/4)`` (``s`` in 1/Å): a negative B boosts high frequencies
        (sharpens), a positive one blurs.
    fsc
        ``(N // 2 + 1,)`` FSC per shell; when given, each shell is weighted by :func:`fsc_weights` and the samples
        beyond shell ``N // 2`` (the corners) are set to zero.
    low_pass_angstrom
        Resolution of a low-pass with a raised-cosine edge ``low_pass_edge_shells`` shells wide centred on it
        (RELION's ``lowPassFilterMap``); none when None.
    low_pass_edge_shells
        Width of the low-pass edge in shells (RELION's ``--filter_edge_width``, 2).

    Returns
    -------
    torch.Tensor
        ``(..., z, y, x)`` in the volume's dtype and device.
    """
    shape = tuple(volume.shape[-3:])
    size = max(shape)
    spectrum = torch.fft.rfftn(volume.to(torch.float64), dim=_DIMS)
    k = fftfreq_grid(shape, rfft=True, device=volume.device, dtype=torch.float64).norm(dim=-1)  # cycles/px
    s2 = (k / pixel_size_angstrom) ** 2
    gain = torch.exp(-0.25 * b_factor_angstrom2 * s2)
    if fsc is not None:
        weights = fsc_weights(fsc.to(volume.device))
        shells = torch.round(k * size).to(torch.long)
        padded = torch.cat([weights, weights.new_zeros(1)])
        gain = gain * padded[shells.clamp(max=len(weights))]
    if low_pass_angstrom is not None:
        radius = k * size  # in shells, continuous
        centre = size * pixel_size_angstrom / low_pass_angstrom
        lo = max(centre - 0.5 * low_pass_edge_shells, 0.0)
        hi = centre + 0.5 * low_pass_edge_shells
        ramp = 0.5 + 0.5 * torch.cos(math.pi * (radius - lo) / max(hi - lo, 1e-9))
        gain = gain * torch.where(radius < lo, 1.0, torch.where(radius > hi, 0.0, ramp))
    return torch.fft.irfftn(spectrum * gain, s=shape, dim=_DIMS).to(volume.dtype)


def _shell_mean_amplitude(volume: torch.Tensor) -> torch.Tensor:
    """``(N // 2 + 1,)`` float64 mean Fourier amplitude over the rfft samples of each shell."""
    shape = tuple(volume.shape[-3:])
    n_shells = max(shape) // 2 + 1
    amplitude = torch.fft.rfftn(volume.to(torch.float64), dim=_DIMS).abs().reshape(-1)
    shells = shell_index(shape, volume.device).reshape(-1)
    keep = shells < n_shells
    total = torch.bincount(shells[keep], weights=amplitude[keep], minlength=n_shells)
    count = torch.bincount(shells[keep], minlength=n_shells).to(torch.float64)
    return total / count.clamp_min(1.0)


def _guinier_plot(volume: torch.Tensor, pixel_size_angstrom: float) -> GuinierFit:
    """A map's Guinier plot for shells 1 … N // 2, without a fit (NaN B-factor and intercept)."""
    mean = _shell_mean_amplitude(volume)[1:]
    s = shell_frequencies_per_angstrom(max(volume.shape[-3:]), pixel_size_angstrom)[1:].to(mean.device)
    ln_amplitude = torch.where(mean > 0, torch.log(mean.clamp_min(1e-300)), torch.nan)
    return GuinierFit(math.nan, math.nan, s * s, ln_amplitude, torch.zeros_like(mean, dtype=torch.bool))


def guinier_b_factor(
    volume: torch.Tensor,
    pixel_size_angstrom: float,
    *,
    low_angstrom: float = 10.0,
    high_angstrom: float,
) -> GuinierFit:
    """B-factor of a map from a straight line through its Guinier plot (RELION's ``--autob``).

    The plot is ``ln`` of the mean Fourier amplitude of each shell against ``s² = 1/d²``, for shells 1 … N // 2;
    the line is fitted by least squares to the shells whose resolution ``d`` lies in
    ``[high_angstrom, low_angstrom]``, and ``B = 4 × slope``: a map whose amplitudes fall off as
    ``exp(B·s²/4)`` gives ``B`` (negative), which :func:`sharpen` undoes.

    Parameters
    ----------
    volume
        ``(z, y, x)`` map.
    pixel_size_angstrom
        Voxel edge in Å.
    low_angstrom
        Lowest resolution fitted (RELION's ``--autob_lowres``, 10 Å).
    high_angstrom
        Highest resolution fitted (RELION: the resolution found).

    Returns
    -------
    GuinierFit
        The B-factor in Å², the intercept and the plot.

    Raises
    ------
    ValueError
        When fewer than three shells with a non-zero amplitude lie in the range.
    """
    size = max(volume.shape[-3:])
    plot = _guinier_plot(volume, pixel_size_angstrom)
    s2, ln_amplitude = plot.s2_per_angstrom2, plot.ln_amplitude
    resolution = 1.0 / s2.sqrt()
    in_fit = (resolution <= low_angstrom) & (resolution >= high_angstrom) & ln_amplitude.isfinite()
    if int(in_fit.sum()) < 3:
        raise ValueError(
            f"the Guinier plot has {int(in_fit.sum())} shells between {low_angstrom:g} Å and "
            f"{high_angstrom:.3g} Å (pixel {pixel_size_angstrom:g} Å, box {size}); at least 3 are needed to fit a "
            "B-factor: give the B-factor, or a lower resolution limit for the fit"
        )
    x, y = s2[in_fit], ln_amplitude[in_fit]
    design = torch.stack([x, torch.ones_like(x)], dim=1)
    slope, intercept = torch.linalg.lstsq(design, y.unsqueeze(1)).solution[:, 0].tolist()
    return GuinierFit(4.0 * slope, intercept, s2, ln_amplitude, in_fit)


def threshold_mask(
    volume: torch.Tensor, threshold: float, *, extend_px: float = 3.0, soft_edge_px: float = 6.0
) -> torch.Tensor:
    """A mask from a map, as ``relion_mask_create``: the voxels at or above a threshold, grown, with a soft edge.

    The mask is 1 within ``extend_px`` of a voxel at or above ``threshold`` and falls as a raised cosine,
    ``0.5 + 0.5·cos(π·d / soft_edge_px)``, over the next ``soft_edge_px`` voxels (``d`` the distance beyond the
    grown region). Distances are those of Euclidean balls, found by FFT dilations of the thresholded map at radii
    ``extend_px + j·δ`` (``δ`` at most half a voxel), with the map zero-padded so that nothing wraps round.

    Parameters
    ----------
    volume
        ``(z, y, x)`` map.
    threshold
        Density at which the map is cut (RELION's ``--ini_threshold``).
    extend_px
        Grow the thresholded region by this many voxels (``--extend_inimask``, ≥ 0).
    soft_edge_px
        Width of the raised-cosine edge in voxels (``--width_soft_edge``, ≥ 0).

    Returns
    -------
    torch.Tensor
        ``(z, y, x)`` mask in ``[0, 1]`` in the volume's floating dtype (float32 for integer maps) and device.

    Raises
    ------
    ValueError
        When no voxel reaches the threshold, or ``extend_px`` or ``soft_edge_px`` is negative.
    """
    if extend_px < 0 or soft_edge_px < 0:
        raise ValueError(f"extend_px ({extend_px}) and soft_edge_px ({soft_edge_px}) must not be negative")
    binary = (volume >= threshold).to(torch.float32)
    if not bool(binary.any()):
        raise ValueError(
            f"no voxel of the map reaches the mask threshold {threshold:g} (its maximum is {float(volume.max()):g})"
        )
    steps = max(math.ceil(2.0 * soft_edge_px), 1) if soft_edge_px > 0 else 0
    reach = extend_px + soft_edge_px
    pad = math.ceil(reach) + 1
    padded = torch.nn.functional.pad(binary, (pad,) * 6)
    shape = tuple(padded.shape)
    spectrum = torch.fft.rfftn(padded)
    offsets = [torch.fft.fftfreq(n, d=1.0 / n, device=volume.device) for n in shape]  # integer offsets
    zz, yy, xx = torch.meshgrid(*offsets, indexing="ij")
    distance = torch.sqrt(zz * zz + yy * yy + xx * xx)

    def covered(radius: float) -> torch.Tensor:
        ball = (distance <= radius + 1e-6).to(torch.float32)
        return torch.fft.irfftn(spectrum * torch.fft.rfftn(ball), s=shape) > 0.5

    mask = covered(extend_px).to(torch.float32)
    if steps:
        delta = soft_edge_px / steps
        inside = mask > 0
        for j in range(1, steps + 1):
            reached = covered(extend_px + j * delta) & ~inside
            d = (j - 0.5) * delta
            mask[reached] = 0.5 + 0.5 * math.cos(math.pi * d / soft_edge_px)
            inside |= reached
    crop = tuple(slice(pad, pad + n) for n in volume.shape)
    dtype = volume.dtype if volume.is_floating_point() else torch.float32
    return mask[crop].to(dtype)


def postprocess(
    half1: torch.Tensor,
    half2: torch.Tensor,
    mask: torch.Tensor,
    pixel_size_angstrom: float,
    *,
    b_factor_angstrom2: float | None = None,
    randomise_from_angstrom: float | None = None,
    randomise_below_fsc: float = 0.8,
    guinier_low_angstrom: float = 10.0,
    low_pass_angstrom: float | None = None,
    fsc_weighting: bool = True,
    seed: int = 0,
) -> PostprocessResult:
    """Masked, phase-randomisation-corrected FSC, B-factor, sharpening and low-pass of two half maps (RELION's).

    See the module docstring for the steps and the B-factor's sign.

    Parameters
    ----------
    half1, half2
        ``(z, y, x)`` independent half maps of one shape.
    mask
        ``(z, y, x)`` mask in ``[0, 1]``.
    pixel_size_angstrom
        Voxel edge in Å.
    b_factor_angstrom2
        B-factor to apply (negative sharpens); fitted to the Guinier plot when None.
    randomise_from_angstrom
        Randomise phases from this resolution on (the shell ``int(N·pixel / d)``, as RELION's
        ``--randomize_at_A``); by default from the first shell where the unmasked FSC is below
        ``randomise_below_fsc``.
    randomise_below_fsc
        RELION's ``--randomize_at_fsc`` (0.8).
    guinier_low_angstrom
        Lowest resolution of the Guinier fit (10 Å); the highest is the resolution found.
    low_pass_angstrom
        Low-pass the sharpened map here instead of at the resolution found.
    fsc_weighting
        Weight the shells by ``sqrt(2·FSC / (1 + FSC))`` of the corrected FSC (RELION does unless
        ``--skip_fsc_weighting``).
    seed
        Of the random phases (half 1 uses ``seed``, half 2 ``seed + 1``).

    Returns
    -------
    PostprocessResult
        The FSC curves, the resolution, the B-factor, the Guinier plot and the sharpened maps.

    Raises
    ------
    ValueError
        For half maps or a mask of different shapes, a corrected FSC below 0.143 already at the first shell, or an
        automatic B-factor with too few shells to fit (:func:`guinier_b_factor`).
    """
    if half1.ndim != 3 or half1.shape != half2.shape or mask.shape != half1.shape:
        raise ValueError(
            f"the half maps and the mask must be volumes of one shape, not {tuple(half1.shape)}, "
            f"{tuple(half2.shape)} and {tuple(mask.shape)}"
        )
    size = max(half1.shape)
    frequencies = shell_frequencies_per_angstrom(size, pixel_size_angstrom)
    fsc_unmasked = fourier_shell_correlation(half1, half2)
    fsc_masked = fourier_shell_correlation(half1, half2, mask=mask)
    if randomise_from_angstrom is not None:
        shell = min(max(int(size * pixel_size_angstrom / randomise_from_angstrom), 1), size // 2)
    else:
        shell = randomisation_shell(fsc_unmasked, randomise_below_fsc)
    fsc_randomised = fourier_shell_correlation(
        phase_randomise(half1, shell, seed=seed), phase_randomise(half2, shell, seed=seed + 1), mask=mask
    )
    fsc_true = corrected_fsc(fsc_masked, fsc_randomised, shell + _GUARD_SHELLS)
    resolution = fsc_resolution_angstrom(fsc_true.cpu(), frequencies, 0.143)
    if not math.isfinite(resolution):
        raise ValueError(
            "the corrected FSC of the half maps is below 0.143 already at the first shell; the half maps do not "
            "agree (or the mask cuts them off)"
        )
    average = 0.5 * (half1.to(torch.float64) + half2.to(torch.float64))
    weighted = sharpen(average, pixel_size_angstrom, fsc=fsc_true) if fsc_weighting else average
    try:
        guinier = guinier_b_factor(
            weighted, pixel_size_angstrom, low_angstrom=guinier_low_angstrom, high_angstrom=resolution
        )
    except ValueError:
        if b_factor_angstrom2 is None:
            raise
        guinier = _guinier_plot(weighted, pixel_size_angstrom)
    b_factor = guinier.b_factor_angstrom2 if b_factor_angstrom2 is None else b_factor_angstrom2
    low_pass = resolution if low_pass_angstrom is None else low_pass_angstrom
    sharpened = sharpen(
        average,
        pixel_size_angstrom,
        b_factor_angstrom2=b_factor,
        fsc=fsc_true if fsc_weighting else None,
        low_pass_angstrom=low_pass,
    ).to(half1.dtype)
    return PostprocessResult(
        frequencies_per_angstrom=frequencies,
        fsc_unmasked=fsc_unmasked,
        fsc_masked=fsc_masked,
        fsc_randomised=fsc_randomised,
        fsc_corrected=fsc_true,
        resolution_angstrom=resolution,
        randomise_from_shell=shell,
        b_factor_angstrom2=b_factor,
        guinier=guinier,
        low_pass_angstrom=low_pass,
        sharpened=sharpened,
        sharpened_masked=sharpened * mask.to(sharpened.dtype),
    )
