"""Antialiased real-space binning: a Lanczos-windowed sinc low-pass at the new Nyquist, then decimation.

IMOD ``newstack -bin N -antialias k`` reduces images this way (filters 1 box, 2 Blackman, 3 triangle, 4 Mitchell,
5 Lanczos 2 lobes, 6 Lanczos 3 lobes; 6 is IMOD's default since 4.7 and the Scipion protocol's). Here the kernel is
the Lanczos one: along each axis, in input pixels ``t``,

``w(t) = sinc(t / N) · sinc(t / (N·a))`` for ``|t| < N·a``, 0 beyond,

(``sinc(x) = sin(πx)/(πx)``, ``N`` the factor, ``a`` the number of lobes), normalised so that its taps sum to 1 (DC
gain 1). Its cutoff (gain ½) is the new Nyquist ``1 / (2N)`` cycles per input pixel. With 3 lobes the gain lies
within 1.4 % of 1 up to half the new Nyquist and is 0.93 at 0.7 of it; from 1.4 times the new Nyquist on
(frequencies that would alias back below 0.6 of it) its magnitude is below 0.015 (2 lobes: 0.94 at half the new
Nyquist, ≤ 0.05 from 1.5 times it on).

The geometry is that of Fourier cropping (:func:`tomoforge.fourier.fourier_bin_2d` applied to a centred window):
along an axis of ``n`` input pixels the output has ``m`` pixels and output pixel ``j`` is the filtered input *at*
input pixel ``start + N·j``, with ``(start, m)`` the largest window of ``N·m`` pixels for which the centre
``n // 2`` lands exactly on output pixel ``m // 2`` (CONVENTIONS.md §2; the same rule as the step's
``binned_window``). The filter is symmetric and sampled at integer offsets, so nothing is shifted. Unlike Fourier
cropping, pixels outside the window still contribute as neighbours; beyond the image edges the input is extended by
mirror reflection about the edge pixel (``… x2 x1 | x0 x1 x2 …``, numpy's ``"reflect"``), folded as often as the
kernel needs, so constants stay constant up to the edge.
"""

from __future__ import annotations

import torch

__all__ = ["antialias_bin_2d"]


def _centred_window(n: int, factor: int) -> tuple[int, int]:
    """Return ``(start, m)`` with ``start + factor·(m // 2) == n // 2`` and ``m`` as large as fits in ``n``."""
    m = n // factor
    while m > 0:
        start = n // 2 - factor * (m // 2)
        if start >= 0 and start + factor * m <= n:
            return start, m
        m -= 1
    raise ValueError(
        f"an image side of {n} px cannot be binned by {factor} about its centre pixel "
        f"(at least {2 * factor - 1} px are needed)"
    )


def _reflect(indices: torch.Tensor, n: int) -> torch.Tensor:
    """Fold integer indices into ``[0, n)`` by mirror reflection about the edge pixels (period ``2(n − 1)``)."""
    if n == 1:
        return torch.zeros_like(indices)
    period = 2 * (n - 1)
    folded = torch.remainder(indices, period)
    return torch.where(folded >= n, period - folded, folded)


def _lanczos_taps(factor: int, lobes: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(2·factor·lobes − 1,)`` taps of the stretched Lanczos kernel at offsets ``−(N·a − 1) … N·a − 1``, sum 1."""
    radius = factor * lobes - 1
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    taps = torch.sinc(offsets / factor) * torch.sinc(offsets / (factor * lobes))
    return (taps / taps.sum()).to(dtype)


def _reduce_last_axis(
    images: torch.Tensor, factor: int, taps: torch.Tensor, window: tuple[int, int]
) -> torch.Tensor:
    """Filter and decimate along the last axis: output ``j`` is the filtered input at ``start + factor·j``."""
    n = images.shape[-1]
    start, m = window
    radius = (taps.numel() - 1) // 2
    span = factor * (m - 1) + 1
    needed = torch.arange(start - radius, start + span + radius, device=images.device)
    padded = images.index_select(-1, _reflect(needed, n))
    # Symmetric taps: pair offsets ±t so that each strided slice is read once per pair.
    out = taps[radius] * padded[..., radius : radius + span : factor]
    for t in range(1, radius + 1):
        left = padded[..., radius - t : radius - t + span : factor]
        right = padded[..., radius + t : radius + t + span : factor]
        out = out + taps[radius + t] * (left + right)
    return out


def antialias_bin_2d(images: torch.Tensor, factor: int, *, lobes: int = 3) -> torch.Tensor:
    """Bin images by an integer factor with a separable Lanczos-windowed sinc antialiasing filter.

        Parameters
        ----------
        images
            ``(..., h, w)`` real images, any size ≥ ``factor`` (odd sizes and sizes that are not multiples of
            ``factor`` included).
        factor
            Binning factor ≥ 1 (``1`` returns the images unchanged, converted to a float dtype).
        lobes
            Number of lobes ``a`` ≥ 1 of the Lanczos window (IMOD ``-antialias 6`` is 3 lobes, ``5`` is 2 lobes).
            The kernel spans ``2·factor·lobes − 1`` input pixels per axis.

        Returns
        -------
        torch.Tensor
            ``(..., m_h, m_w)`` binned images on the device of ``images``, in their float dtype (float32 for integer
            input). Output pixel ``(i, j)`` is the low-passed input at pixel ``(y0 + factor·i, x0 + factor·j)``, with
            ``(y0, m_h)`` and ``(x0, m_w)`` the centred windows of the module docstring, so the input's centre pixel
            ``(h // 2, w // 2)`` is output pixel ``(m_h // 2, m_w // 2)`` and positions relative to the centre scale
            by exactly ``1 / factor``, as with Fourier cropping. The filter has DC gain 1 (means are kept).

        Notes
        -----
        The filter is applied separably, first along x on all rows, then along y on the reduced columns, and only at
        the output samples (pairing the symmetric taps), so the cost is about ``lobes·h·w·(1 + 1 / factor)``
    multiplications per image. The
        edges are extended by mirror reflection about the edge pixel.

        References
        ----------
        Duchon, C. E. (1979). Lanczos filtering in one and two dimensions. J. Appl. Meteorol. 18, 1016–1022.
        doi:10.1175/1520-0450(1979)018<1016:LFIOAT>2.0.CO;2

        Kremer, J. R., Mastronarde, D. N. & McIntosh, J. R. (1996). Computer visualization of three-dimensional image
        data using IMOD. J. Struct. Biol. 116, 71–76. doi:10.1006/jsbi.1996.0013 (``newstack -antialias``).
    """
    if images.dim() < 2:
        raise ValueError("images must have at least 2 dimensions (..., h, w)")
    if images.is_complex():
        raise ValueError("images must be real, not complex")
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, not {factor!r}")
    if isinstance(lobes, bool) or int(lobes) != lobes or lobes < 1:
        raise ValueError(f"lobes must be a positive integer, not {lobes!r}")
    factor, lobes = int(factor), int(lobes)
    real = images if images.is_floating_point() else images.to(torch.float32)
    h, w = real.shape[-2:]
    if factor == 1:
        return real
    window_y, window_x = _centred_window(h, factor), _centred_window(w, factor)
    work = real if real.dtype in (torch.float32, torch.float64) else real.to(torch.float32)
    taps = _lanczos_taps(factor, lobes, dtype=work.dtype, device=work.device)
    rows = _reduce_last_axis(work, factor, taps, window_x)
    binned = _reduce_last_axis(rows.transpose(-1, -2), factor, taps, window_y).transpose(-1, -2).contiguous()
    return binned.to(real.dtype)
