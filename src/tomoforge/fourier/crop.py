"""Binning by Fourier cropping: keep the lowest frequencies of a spectrum (an ideal low-pass), then decimate.

Along an axis of ``N = factor·M`` samples the ``M`` lowest frequencies are kept; the new Nyquist coefficient of an
even ``M`` is set to 0 (it cannot be represented by a real image without aliasing the ``±`` pair). Output sample
``m`` is the low-passed input at sample ``factor·m``, so the centres ``N // 2`` and ``M // 2`` coincide for even
``M`` (CONVENTIONS.md §2); means are preserved. This is how MotionCor2 (``-FtBin``) and RELION bin
super-resolution movies.
"""

from __future__ import annotations

import torch

__all__ = ["fourier_bin_2d", "fourier_crop_rfft_2d"]


def _crop_rows(spectrum: torch.Tensor, m: int) -> torch.Tensor:
    """Keep the ``m`` lowest frequencies along the full axis ``-2`` of an rfft (Nyquist of even ``m`` zeroed)."""
    if m == spectrum.shape[-2]:
        return spectrum
    positive = (m + 1) // 2
    negative = (m - 1) // 2
    out = spectrum.new_zeros((*spectrum.shape[:-2], m, spectrum.shape[-1]))
    out[..., :positive, :] = spectrum[..., :positive, :]
    if negative:
        out[..., m - negative :, :] = spectrum[..., spectrum.shape[-2] - negative :, :]
    return out


def fourier_crop_rfft_2d(spectrum: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """Crop the rfft of images to the spectrum of smaller images with the same pixel frequencies.

    Parameters
    ----------
    spectrum
        ``(..., h, w // 2 + 1)`` complex rfft (unshifted, DC at index 0) of real ``(h, w)`` images.
    shape_yx
        Target real-space shape ``(m_h, m_w)``, each at most the original.

    Returns
    -------
    torch.Tensor
        ``(..., m_h, m_w // 2 + 1)`` spectrum holding the coefficients of the ``m_h × m_w`` lowest frequencies
        (in cycles per *original* pixel: ``|f| < ½ · m / n``), the Nyquist row/column of an even target size set
        to 0. Values are not rescaled: ``irfftn(…, s=(m_h, m_w))`` of it is ``(m_h·m_w)/(h·w)`` times the
        low-passed, decimated images (see :func:`fourier_bin_2d`).
    """
    m_h, m_w = shape_yx
    h = spectrum.shape[-2]
    w_half = spectrum.shape[-1]
    if m_h > h or m_w // 2 + 1 > w_half:
        raise ValueError(f"cannot crop a spectrum of {h} rows × {w_half} columns to images of {shape_yx}")
    out = _crop_rows(spectrum, m_h)[..., : m_w // 2 + 1].clone()
    if m_w % 2 == 0 and m_w // 2 + 1 < w_half:
        out[..., m_w // 2] = 0
    return out


def fourier_bin_2d(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Bin images by an integer factor by Fourier cropping.

    Parameters
    ----------
    images
        ``(..., h, w)`` real images; ``h`` and ``w`` must be multiples of ``factor``.
    factor
        Binning factor ≥ 1 (2 turns super-resolution frames into physical-pixel images).

    Returns
    -------
    torch.Tensor
        ``(..., h / factor, w / factor)`` images with the same mean, float dtype of ``images`` (float32 for integer
        input); sample ``m`` is the ideally low-passed input at sample ``factor·m``.

    References
    ----------
    Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
    microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193 (``-FtBin``).
    """
    if images.dim() < 2:
        raise ValueError("images must have at least 2 dimensions (..., h, w)")
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, not {factor!r}")
    real = images if images.is_floating_point() else images.to(torch.float32)
    if factor == 1:
        return real
    h, w = real.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image shape {(h, w)} is not a multiple of the factor {factor}")
    m_h, m_w = h // factor, w // factor
    spectrum = fourier_crop_rfft_2d(torch.fft.rfftn(real, dim=(-2, -1)), (m_h, m_w))
    return torch.fft.irfftn(spectrum, s=(m_h, m_w), dim=(-2, -1)) / (factor * factor)
