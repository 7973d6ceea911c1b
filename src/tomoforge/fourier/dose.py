"""Radiation damage in Fourier space: Grant & Grigorieff's critical exposure and the exposure filter.

Each Fourier component of the specimen's projected potential fades with the exposure ``N`` it has received as
``exp(−N / (2 Nₑ(k)))`` (amplitude; the power fades as ``exp(−N / Nₑ)``), where the critical exposure
``Nₑ(k) = a·k^b + c`` (k in cycles/Å, ``a = 0.245``, ``b = −1.665``, ``c = 2.81`` e⁻/Å² at 300 kV) was measured on
rotavirus VP6 by Grant & Grigorieff (2015). At 200 kV the critical exposures are 0.8 times those at 300 kV (the
factor in the authors' own code, Unblur/Summovie/cisTEM ``ElectronDose``, also used by Xmipp).

Which exposure an image's weight is evaluated at differs between programs:

* ``"mean"``: the attenuation averaged over the exposure interval ``[N₀, N₀ + ΔN]``; this is what an image
  integrated over that interval records, so the simulator uses it. Closed form
  ``(2Nₑ/ΔN)·(exp(−N₀/2Nₑ) − exp(−(N₀+ΔN)/2Nₑ))`` (cisTEM's "cumulative" dose filter, which however divides by
  the final exposure instead of ``ΔN``).
* ``"end"``: the value at ``N₀ + ΔN``, as in Unblur/Summovie/cisTEM's ``ReturnDoseFilter`` (IMOD's
  ``mtffilter`` says it follows Unblur).
* ``"start"``: the value at ``N₀``, as RELION 5 tomography weights each tilt by its ``rlnMicrographPreExposure``
  (``Damage::weightStack_GG``).
"""

from __future__ import annotations

from typing import Literal

import torch

from tomoforge.fourier.frequencies import fftfreq_grid

__all__ = ["critical_exposure", "dose_filter_image", "dose_weights", "frame_dose_weights"]

GRANT_GRIGORIEFF_A = 0.245
GRANT_GRIGORIEFF_B = -1.665
GRANT_GRIGORIEFF_C = 2.81
_VOLTAGE_SCALING = {300.0: 1.0, 200.0: 0.8}

DoseMode = Literal["mean", "start", "end"]


def _voltage_scaling(voltage_kv: float) -> float:
    for kv, factor in _VOLTAGE_SCALING.items():
        if abs(float(voltage_kv) - kv) < 1.0:
            return factor
    raise ValueError(
        f"the critical exposure is known at 200 and 300 kV only (Grant & Grigorieff 2015), not {voltage_kv} kV"
    )


def _inverse_twice_critical_exposure(freq_per_angstrom: torch.Tensor, voltage_kv: float) -> torch.Tensor:
    """``1 / (2 Nₑ(k))`` written as ``k^−b / (2 s (a + c k^−b))`` so that it is exactly 0 at k = 0."""
    k = freq_per_angstrom.abs()
    scaling = _voltage_scaling(voltage_kv)
    kp = k ** (-GRANT_GRIGORIEFF_B)
    return kp / (2.0 * scaling * (GRANT_GRIGORIEFF_A + GRANT_GRIGORIEFF_C * kp))


def critical_exposure(freq_per_angstrom: torch.Tensor, *, voltage_kv: float = 300.0) -> torch.Tensor:
    """Critical exposure ``Nₑ(k) = s·(a·k^b + c)`` at which a Fourier component's power has fallen to ``1/e``.

    Parameters
    ----------
    freq_per_angstrom
        ``(...)`` spatial frequencies in cycles/Å (the sign is ignored).
    voltage_kv
        Acceleration voltage, 300 (``s = 1``) or 200 kV (``s = 0.8``).

    Returns
    -------
    torch.Tensor
        ``(...)`` critical exposures in e⁻/Å² (``inf`` at k = 0); 14.1383 e⁻/Å² at 0.1 Å⁻¹ and 300 kV.

    References
    ----------
    Grant, T. & Grigorieff, N. (2015). Measuring the optimal exposure for single particle cryo-EM using a 2.6 Å
    reconstruction of rotavirus VP6. eLife 4, e06980. doi:10.7554/eLife.06980
    """
    freq = freq_per_angstrom if freq_per_angstrom.is_floating_point() else freq_per_angstrom.to(torch.float32)
    return _voltage_scaling(voltage_kv) * (
        GRANT_GRIGORIEFF_A * freq.abs() ** GRANT_GRIGORIEFF_B + GRANT_GRIGORIEFF_C
    )


def dose_weights(
    freq_per_angstrom: torch.Tensor,
    *,
    prior_dose_e_per_angstrom2: float | torch.Tensor,
    dose_e_per_angstrom2: float | torch.Tensor,
    voltage_kv: float = 300.0,
    mode: DoseMode = "mean",
) -> torch.Tensor:
    """Amplitude attenuation of Fourier components by radiation damage.

    Parameters
    ----------
    freq_per_angstrom
        ``(*f)`` spatial frequencies in cycles/Å.
    prior_dose_e_per_angstrom2
        ``(...)`` exposure received before the image (or frame) in e⁻/Å².
    dose_e_per_angstrom2
        ``(...)`` exposure of the image itself in e⁻/Å².
    voltage_kv
        300 or 200 kV.
    mode
        ``"mean"`` (default): ``exp(−N/2Nₑ)`` averaged over ``N ∈ [prior, prior + dose]``; ``"end"``: its value
        at ``prior + dose`` (Unblur/cisTEM); ``"start"``: at ``prior`` (RELION 5
        tomography). See the module docstring.

    Returns
    -------
    torch.Tensor
        ``(..., *f)`` weights in (0, 1], exactly 1 at k = 0, in the dtype and on the device of
        ``freq_per_angstrom``.

    References
    ----------
    Grant, T. & Grigorieff, N. (2015). eLife 4, e06980. doi:10.7554/eLife.06980
    """
    freq = freq_per_angstrom if freq_per_angstrom.is_floating_point() else freq_per_angstrom.to(torch.float32)
    prior = torch.as_tensor(prior_dose_e_per_angstrom2, dtype=freq.dtype, device=freq.device)
    dose = torch.as_tensor(dose_e_per_angstrom2, dtype=freq.dtype, device=freq.device)
    if bool((prior < 0).any()) or bool((dose < 0).any()):
        raise ValueError("exposures must be non-negative")
    prior, dose = torch.broadcast_tensors(prior, dose)
    extra = (None,) * freq.dim()
    prior, dose = prior[(..., *extra)], dose[(..., *extra)]
    x = _inverse_twice_critical_exposure(freq, voltage_kv)  # 1 / (2 Nₑ), 0 at DC
    if mode == "start":
        return torch.exp(-prior * x)
    if mode == "end":
        return torch.exp(-(prior + dose) * x)
    if mode != "mean":
        raise ValueError(f"mode must be 'mean', 'start' or 'end', not {mode!r}")
    y = dose * x
    # (1 − e^−y) / y, with its limit 1 − y/2 where y is too small for the quotient to be accurate.
    small = y < 1e-6
    safe_y = torch.where(small, torch.ones_like(y), y)
    average = torch.where(small, 1.0 - 0.5 * y, -torch.expm1(-safe_y) / safe_y)
    return torch.exp(-prior * x) * average


def dose_filter_image(
    images: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    prior_dose_e_per_angstrom2: float | torch.Tensor,
    dose_e_per_angstrom2: float | torch.Tensor,
    voltage_kv: float = 300.0,
    mode: DoseMode = "mean",
) -> torch.Tensor:
    """Apply radiation damage (or exposure weighting) to images in Fourier space.

    Parameters
    ----------
    images
        ``(..., h, w)`` real images.
    pixel_size_angstrom
        Pixel size in Å.
    prior_dose_e_per_angstrom2, dose_e_per_angstrom2
        Exposure before and during each image in e⁻/Å²; scalars or tensors broadcasting with ``images.shape[:-2]``
        (one value per tilt, for instance).
    voltage_kv, mode
        As in :func:`dose_weights`.

    Returns
    -------
    torch.Tensor
        ``(..., h, w)`` filtered images with unchanged mean (the DC weight is 1), dtype of ``images``.

    References
    ----------
    Grant, T. & Grigorieff, N. (2015). eLife 4, e06980. doi:10.7554/eLife.06980
    """
    if images.dim() < 2:
        raise ValueError("images must have at least 2 dimensions (..., h, w)")
    real_dtype = images.dtype if images.is_floating_point() else torch.float32
    h, w = images.shape[-2:]
    freq = fftfreq_grid((h, w), spacing_angstrom=pixel_size_angstrom, device=images.device, dtype=real_dtype)
    k = torch.linalg.vector_norm(freq, dim=-1)
    weights = dose_weights(
        k,
        prior_dose_e_per_angstrom2=prior_dose_e_per_angstrom2,
        dose_e_per_angstrom2=dose_e_per_angstrom2,
        voltage_kv=voltage_kv,
        mode=mode,
    )
    spectrum = torch.fft.rfftn(images.to(real_dtype), dim=(-2, -1))
    return torch.fft.irfftn(spectrum * weights, s=(h, w), dim=(-2, -1))


def frame_dose_weights(
    freq_per_angstrom: torch.Tensor,
    *,
    n_frames: int,
    prior_dose_e_per_angstrom2: float,
    dose_per_frame_e_per_angstrom2: float,
    voltage_kv: float = 300.0,
    mode: DoseMode = "mean",
) -> torch.Tensor:
    """Attenuation of each frame of a movie, frames exposed one after another at a constant dose.

    Parameters
    ----------
    freq_per_angstrom
        ``(*k)`` spatial frequencies in cycles/Å.
    n_frames
        Number of frames; frame ``f`` starts at ``prior + f · dose_per_frame``.
    prior_dose_e_per_angstrom2
        Exposure before the first of these frames, e⁻/Å².
    dose_per_frame_e_per_angstrom2
        Exposure of each frame, e⁻/Å².
    voltage_kv, mode
        As in :func:`dose_weights`.

    Returns
    -------
    torch.Tensor
        ``(n_frames, *k)`` weights, on the device of ``freq_per_angstrom``.
    """
    priors = prior_dose_e_per_angstrom2 + dose_per_frame_e_per_angstrom2 * torch.arange(
        n_frames, dtype=torch.float64, device=freq_per_angstrom.device
    )
    return dose_weights(
        freq_per_angstrom,
        prior_dose_e_per_angstrom2=priors,
        dose_e_per_angstrom2=dose_per_frame_e_per_angstrom2,
        voltage_kv=voltage_kv,
        mode=mode,
    )
