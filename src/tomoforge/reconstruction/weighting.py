"""The weighting of weighted back-projection: a ramp per view, its fall-off, and a SIRT-like variant.

Filtered back-projection recovers a slice from its projections as ``f = Σᵢ Δθᵢ · BPᵢ(h ∗ pᵢ)``: each projection row
``pᵢ`` is convolved with the ramp ``h`` (frequency response ``|ν|``, ν in cycles per pixel), smeared back along its
rays (``BPᵢ``) and weighted by the angle ``Δθᵢ`` (radians) it stands for. With these units a uniform slab of
value 1 comes back as 1 (a projection is a line integral in voxels).

* The ramp is the discrete Ram-Lak kernel sampled in real space (``h[0] = ¼``, ``h[n] = −1/(π n)²`` for odd ``n``,
  0 for even ``n``; Kak & Slaney 1988, eq. 61) and transformed on the padded length, which avoids the DC offset
  ("cupping") of a ramp sampled in frequency.
* ``Δθᵢ`` is half the gap between the neighbouring tilts (one-sided at the ends): the "exact" weighting for uneven
  spacing, as IMOD tilt's default density weighting.
* Fall-off: IMOD's ``RADIAL cutoff sigma`` (1 below ``cutoff``, a Gaussian of standard deviation ``sigma`` above,
  both in cycles/pixel), or tomo3d's Hamming window ``0.54 + 0.46 cos(π ν / ν_H)`` up to ``ν_H``.
* SIRT-like weighting (Zeng 2012, doi:10.1118/1.3697736; IMOD's ``FakeSIRTiterations``): ``N`` iterations of SIRT
  (Landweber with SIRT's normalisations) converge at frequency ν as ``1 − (1 − λ(ν))^N`` with the eigenvalue
  ``λ(ν) = min(1, r / (T · Θ · |ν|))`` of the normalised operator (``T`` the thickness along the rays in voxels,
  ``Θ`` the angular range in radians, ``r`` the relaxation). Multiplying the ramp by that factor gives WBP the
  contrast of ``N`` SIRT iterations; ``tests/reconstruction`` compares it with :func:`sirt_slab` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "angular_weights_rad",
    "ramp_response",
    "radial_falloff",
    "sirt_like_factor",
    "weighting_filters",
    "weight_projections",
]


def angular_weights_rad(tilt_angles_deg: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The angle each view stands for: half the gap to its neighbours, in radians (input order kept).

    Parameters
    ----------
    tilt_angles_deg
        ``(m,)`` tilt angles in any order (at least 2 distinct values).

    Returns
    -------
    torch.Tensor
        ``(m,)`` float64 weights; they sum to the angular range plus half of each end gap.
    """
    angles = torch.as_tensor(tilt_angles_deg, dtype=torch.float64).reshape(-1)
    if angles.numel() < 2:
        raise ValueError("weighted back-projection needs at least 2 views")
    order = torch.argsort(angles)
    sorted_rad = torch.deg2rad(angles[order])
    gaps = torch.diff(sorted_rad)
    if bool((gaps <= 0).any()):
        raise ValueError(f"two views have the same tilt angle: {sorted(angles.tolist())}")
    left = torch.cat([gaps[:1], gaps])
    right = torch.cat([gaps, gaps[-1:]])
    weights = torch.empty_like(sorted_rad)
    weights[order] = 0.5 * (left + right)
    return weights


def ramp_response(padded_width: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real-FFT response ``(L//2 + 1,)`` of the real-space Ram-Lak kernel on a periodic grid of ``L`` samples.

    Close to ``|ν|`` (cycles/pixel) except at the lowest frequencies, where the truncated kernel keeps a small
    positive value at DC instead of 0; sampling the kernel in real space keeps back-projections free of the DC
    offset a ramp sampled in frequency gives.
    """
    n = torch.arange(padded_width, dtype=dtype)
    distance = torch.minimum(n, padded_width - n)
    kernel = torch.zeros(padded_width, dtype=dtype)
    kernel[0] = 0.25
    odd = distance % 2 == 1
    kernel[odd] = -1.0 / (math.pi * distance[odd]) ** 2
    return torch.fft.rfft(kernel).real


def radial_falloff(
    freq: torch.Tensor,
    *,
    cutoff: float | None = 0.35,
    sigma: float = 0.035,
    hamming_cutoff: float | None = None,
) -> torch.Tensor:
    """Low-pass applied with the ramp: IMOD's radial Gaussian fall-off and/or tomo3d's Hamming window.

    Parameters
    ----------
    freq
        Frequencies in cycles per pixel (≥ 0).
    cutoff, sigma
        1 below ``cutoff``, ``exp(−(ν − cutoff)² / 2σ²)`` above (IMOD ``RADIAL``); None for no cutoff.
    hamming_cutoff
        Multiply by ``0.54 + 0.46 cos(π ν / ν_H)`` below ``ν_H`` and 0 above; None for no Hamming window.
    """
    out = torch.ones_like(freq)
    if cutoff is not None:
        if sigma > 0:
            above = (freq - cutoff).clamp(min=0.0)
            out = out * torch.exp(-(above**2) / (2.0 * sigma**2))
        else:
            out = out * (freq <= cutoff).to(freq.dtype)
    if hamming_cutoff is not None:
        window = 0.54 + 0.46 * torch.cos(math.pi * freq / hamming_cutoff)
        out = out * torch.where(freq <= hamming_cutoff, window, torch.zeros_like(window))
    return out


def sirt_like_factor(
    freq: torch.Tensor,
    iterations: int,
    *,
    thickness_px: float,
    angular_range_rad: float,
    relaxation: float = 1.0,
) -> torch.Tensor:
    """How far ``iterations`` of SIRT have converged at each frequency: ``1 − (1 − λ(ν))^N`` (module docstring)."""
    if iterations < 1:
        raise ValueError(f"the SIRT-like filter needs at least 1 iteration, got {iterations}")
    scale = relaxation / max(thickness_px * angular_range_rad, 1e-12)
    eigen = torch.where(freq > 0, scale / freq.clamp(min=1e-12), torch.ones_like(freq)).clamp(max=1.0)
    return 1.0 - (1.0 - eigen) ** iterations


def weighting_filters(
    tilt_angles_deg: Sequence[float] | torch.Tensor,
    padded_width: int,
    *,
    cutoff: float | None = 0.35,
    sigma: float = 0.035,
    hamming_cutoff: float | None = None,
    sirt_like_iterations: int | None = None,
    thickness_px: float | None = None,
    relaxation: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-view real-FFT filters ``(m, L//2 + 1)`` (float32): ``Δθᵢ`` × ramp × fall-off [× SIRT-like factor].

    ``thickness_px`` is needed for the SIRT-like factor (the thickness of the reconstructed slab).
    """
    weights = angular_weights_rad(tilt_angles_deg)
    freq = torch.fft.rfftfreq(padded_width, dtype=torch.float64)
    response = ramp_response(padded_width) * radial_falloff(
        freq, cutoff=cutoff, sigma=sigma, hamming_cutoff=hamming_cutoff
    )
    if sirt_like_iterations:
        if thickness_px is None:
            raise ValueError("the SIRT-like filter needs the thickness of the reconstruction")
        angles = torch.deg2rad(torch.as_tensor(tilt_angles_deg, dtype=torch.float64))
        span = float(angles.max() - angles.min()) + float(weights.min())
        response = response * sirt_like_factor(
            freq,
            sirt_like_iterations,
            thickness_px=thickness_px,
            angular_range_rad=span,
            relaxation=relaxation,
        )
    return (weights[:, None] * response[None, :]).to(torch.float32).to(device)


def weight_projections(rows: torch.Tensor, filters: torch.Tensor, padded_width: int) -> torch.Tensor:
    """Convolve projection rows with per-view filters along x, with edge-replicating padding.

    Parameters
    ----------
    rows
        ``(m, r, w)`` rows of the aligned views (tilt axis along y), ``w ≤ padded_width``.
    filters
        ``(m, padded_width//2 + 1)`` from :func:`weighting_filters`.
    padded_width
        FFT length; the rows are centred in it and padded with their edge values, as if the specimen went on.

    Returns
    -------
    torch.Tensor
        ``(m, r, w)`` weighted rows.
    """
    m, r, w = rows.shape
    if padded_width < w:
        raise ValueError(f"padded width {padded_width} is smaller than the rows ({w})")
    left = (padded_width - w) // 2
    padded = torch.nn.functional.pad(
        rows.reshape(m * r, 1, w), (left, padded_width - w - left), mode="replicate"
    ).reshape(m, r, padded_width)
    spectrum = torch.fft.rfft(padded, dim=-1)
    spectrum *= filters[:, None, :].to(spectrum.device)
    return torch.fft.irfft(spectrum, n=padded_width, dim=-1)[..., left : left + w].contiguous()
