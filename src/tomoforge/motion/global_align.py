"""Global (whole-frame) motion correction of movies, as MotionCor2's full-frame alignment.

Every frame is aligned against the sum of all *other* frames at their current shifts (so that a frame's own shot
noise never correlates with its reference), the cross-correlation is B-factor weighted and computed on
Fourier-cropped spectra, and the sub-pixel peak of each map updates that frame's shift; the sum is rebuilt and the
process repeated until no shift changes by more than a tolerance.

Shifts follow CONVENTIONS.md §8: the **specimen displacement of frame t relative to frame 0**, in pixels of the
input frames (frame 0 is exactly 0); correcting frame t shifts it by ``−s(t)``.

References
----------
Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193

Grant, T. & Grigorieff, N. (2015). Measuring the optimal exposure for single particle cryo-EM using a 2.6 Å
reconstruction of rotavirus VP6. eLife 4, e06980. doi:10.7554/eLife.06980
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tomoforge.fourier import fourier_crop_rfft_2d, shift_phase_ramp_2d
from tomoforge.motion.peaks import find_peak_2d

__all__ = ["aligned_shape", "apply_motion", "estimate_global_motion", "motion_sum"]


def aligned_shape(shape_yx: tuple[int, int], binning: int) -> tuple[int, int]:
    """Shape ``(h // binning, w // binning)`` of Fourier-cropped images (both ``h`` and ``w`` multiples required)."""
    if binning < 1 or int(binning) != binning:
        raise ValueError(f"binning must be a positive integer, not {binning!r}")
    h, w = shape_yx
    if h % binning or w % binning:
        raise ValueError(f"frame shape {(h, w)} is not a multiple of the binning {binning}")
    return h // binning, w // binning


def _real(frames: torch.Tensor) -> torch.Tensor:
    if frames.dim() < 3:
        raise ValueError(f"frames must have shape (..., n, h, w), got {tuple(frames.shape)}")
    return frames if frames.is_floating_point() else frames.to(torch.float32)


def _cropped_spectra(real: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """rfft of every frame cropped to ``shape_yx``, one frame at a time (peak memory: one full spectrum per batch)."""
    n = real.shape[-3]
    out = [
        fourier_crop_rfft_2d(torch.fft.rfftn(real[..., i, :, :], dim=(-2, -1)), shape_yx) for i in range(n)
    ]
    return torch.stack(out, dim=-3)


def estimate_global_motion(
    frames: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    b_factor_angstrom2: float = 500.0,
    binning: int = 1,
    max_iterations: int = 10,
    tolerance_px: float = 0.01,
    max_shift_px: float = 40.0,
) -> torch.Tensor:
    """Per-frame whole-frame shifts of movies by iterative alignment to the sum of the other frames.

    Parameters
    ----------
    frames
        ``(..., n, h, w)`` frames of one movie (or of several, e.g. one per tilt, along leading dims); counts or any
        real values, integer input is converted to float32.
    pixel_size_angstrom
        Pixel size of the frames in Å (it only scales the B-factor; pass 1.0 to give the B-factor in px²).
    b_factor_angstrom2
        B-factor ``B`` of the alignment filter in Å² (MotionCor2 ``-Bft``, 500 for its global step): every frame's
        spectrum is weighted by ``exp(−B k²/4)`` (``k`` in cycles/Å), so cross-correlations see
        ``exp(−B k²/2)``; the mean (DC) is removed.
    binning
        Fourier-cropping factor for the alignment (2 for super-resolution frames, MotionCor2 ``-FtBin``); shifts
        are still returned in input pixels.
    max_iterations
        Most alignment passes.
    tolerance_px
        Stop when no shift changed by more than this many input pixels in a pass.
    max_shift_px
        Largest residual shift searched per pass, in input pixels (along x and along y).

    Returns
    -------
    torch.Tensor
        ``(..., n, 2)`` specimen displacement ``(s_x, s_y)`` of each frame relative to frame 0, in input pixels
        (``s[..., 0, :] == 0``), real dtype of the frames, on their device.

    Notes
    -----
    With current shifts ``s`` each aligned spectrum is ``A_t = F_t·exp(+2πi k·s_t)`` and its reference is
    ``Σ_{u≠t} A_u``. The peak of their cross-correlation (3×3 quadratic fit, :func:`find_peak_2d`) is the residual
    displacement ``d_t``. Against the sum of the *others* that residual is ``n/(n − 1)`` times the frame's error
    relative to the mean error, so shifts are updated by ``(n − 1)/n · d_t`` — with a plain ``+d_t`` update two
    frames would swap their errors forever. Sub-pixel bias of the peak fit shrinks as the residuals go to zero, so
    the iterations refine the shifts well below the fit's own accuracy.

    References
    ----------
    Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
    microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193
    """
    real = _real(frames)
    n, h, w = real.shape[-3:]
    if max_iterations < 1:
        raise ValueError("max_iterations must be at least 1")
    if pixel_size_angstrom <= 0:
        raise ValueError("pixel_size_angstrom must be positive")
    shifts = real.new_zeros((*real.shape[:-3], n, 2))
    if n < 2:
        return shifts
    m_h, m_w = aligned_shape((h, w), binning)
    spectra = _cropped_spectra(real, (m_h, m_w))
    # Frequencies of the cropped grid in cycles/Å of the input sampling.
    fy = torch.fft.fftfreq(m_h, d=binning * pixel_size_angstrom, device=real.device, dtype=real.dtype)
    fx = torch.fft.rfftfreq(m_w, d=binning * pixel_size_angstrom, device=real.device, dtype=real.dtype)
    k2 = fy[:, None].square() + fx[None, :].square()
    weight = torch.exp(-0.25 * b_factor_angstrom2 * k2)
    weight[0, 0] = 0.0
    spectra = spectra * weight
    max_lag = max_shift_px / binning
    if max_lag < 1:
        raise ValueError(f"max_shift_px {max_shift_px} is smaller than one aligned pixel ({binning} px)")
    gain = (n - 1) / n
    for _ in range(max_iterations):
        # The sum is built frame by frame and each frame's correlation with the others is computed on its own, so
        # the working memory is the spectra plus a few single-frame maps (not several movie-sized tensors).
        total = torch.zeros_like(spectra[..., 0, :, :])
        for i in range(n):
            total += spectra[..., i, :, :] * shift_phase_ramp_2d(-shifts[..., i, :] / binning, (m_h, m_w))
        residual = torch.empty_like(shifts)
        for i in range(n):
            aligned = spectra[..., i, :, :] * shift_phase_ramp_2d(-shifts[..., i, :] / binning, (m_h, m_w))
            cc = torch.fft.irfftn(aligned * (total - aligned).conj(), s=(m_h, m_w), dim=(-2, -1))
            residual[..., i, :] = find_peak_2d(cc, max_shift_px=max_lag) * binning
        step = gain * residual
        shifts = shifts + step
        if float(step.abs().max()) <= tolerance_px:
            break
    return shifts - shifts[..., :1, :]


def apply_motion(
    frames: torch.Tensor,
    shifts_xy_px: torch.Tensor,
    *,
    binning: int = 1,
    dose_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Motion-corrected sum: shift every frame by ``−s(t)`` and add them up, optionally exposure-weighted.

    Parameters
    ----------
    frames
        ``(..., n, h, w)`` frames.
    shifts_xy_px
        ``(..., n, 2)`` specimen displacement of each frame in input pixels (as :func:`estimate_global_motion`
        returns; any constant offset just moves the sum).
    binning
        Fourier-cropping factor of the output (2 turns super-resolution frames into physical pixels).
    dose_weights
        Optional ``(..., n, h', w' // 2 + 1)`` Fourier weights per frame on the rfft grid of the *output*
        (``(h', w') = (h, w) / binning``), e.g. :func:`tomoforge.fourier.dose_weights` at
        ``fftfreq_grid((h', w'), spacing_angstrom=binning · pixel size)`` with each frame's prior and own exposure.
        The weighted sum is ``Σ_t w_t F_t · √(n / Σ_t w_t²)`` (Grant & Grigorieff 2015): the noise power of the
        plain sum is kept at every frequency, and it equals the plain sum where all weights are 1 (at DC).

    Returns
    -------
    torch.Tensor
        ``(..., h', w')`` summed image; Fourier cropping keeps the mean per pixel, so the sum of ``n`` frames of
        mean ``μ`` has mean ``n·μ`` at any binning. Real dtype of the frames, on their device.

    References
    ----------
    Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
    microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193

    Grant, T. & Grigorieff, N. (2015). eLife 4, e06980. doi:10.7554/eLife.06980
    """
    real = _real(frames)
    n, h, w = real.shape[-3:]
    if shifts_xy_px.shape[-2:] != (n, 2):
        raise ValueError(f"shifts_xy_px must have shape (..., {n}, 2), got {tuple(shifts_xy_px.shape)}")
    m_h, m_w = aligned_shape((h, w), binning)
    shifts = shifts_xy_px.to(device=real.device, dtype=real.dtype)
    return motion_sum(
        lambda i: real[..., i, :, :],
        n,
        (h, w),
        binning=binning,
        dose_weights=dose_weights,
        like=real,
        phase=lambda i: shift_phase_ramp_2d(-shifts[..., i, :] / binning, (m_h, m_w)),
    )


def motion_sum(
    frame: Callable[[int], torch.Tensor],
    n: int,
    shape_yx: tuple[int, int],
    *,
    binning: int,
    dose_weights: torch.Tensor | None,
    like: torch.Tensor,
    phase: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sum of ``n`` frames produced one at a time, Fourier-cropped, optionally phase-shifted and dose-weighted.

    The shared back end of :func:`apply_motion` and :func:`tomoforge.motion.apply_local_motion` (see
    :func:`apply_motion` for the weighting); ``frame(i)`` returns frame ``i`` of shape ``(..., h, w)``,
    ``phase(i)`` an optional factor on its cropped spectrum; ``like`` gives dtype and device.
    """
    h, w = shape_yx
    m_h, m_w = aligned_shape((h, w), binning)
    total: torch.Tensor | None = None
    weight_power: torch.Tensor | None = None
    for i in range(n):
        spectrum = fourier_crop_rfft_2d(torch.fft.rfftn(frame(i), dim=(-2, -1)), (m_h, m_w))
        if phase is not None:
            spectrum = spectrum * phase(i)
        if dose_weights is not None:
            wt = dose_weights[..., i, :, :].to(device=like.device, dtype=like.dtype)
            spectrum = spectrum * wt
            weight_power = wt.square() if weight_power is None else weight_power + wt.square()
        total = spectrum if total is None else total + spectrum
    if total is None:
        raise ValueError("frames must hold at least one frame")
    if weight_power is not None:
        total = total * torch.sqrt(n / weight_power.clamp_min(torch.finfo(like.dtype).tiny))
    scale = (m_h * m_w) / (h * w)
    return torch.fft.irfftn(total, s=(m_h, m_w), dim=(-2, -1)) * scale
