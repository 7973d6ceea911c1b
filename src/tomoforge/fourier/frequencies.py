"""Spatial-frequency grids that follow the project's FFT conventions.

Transforms are ``torch.fft.rfftn``/``fftn`` over the last 2 (images) or 3 (volumes) axes, unnormalised forward
(``norm="backward"``). Unshifted spectra have DC at index 0; ``fftshift``-ed ones (never applied to the half axis of
an rfft) have DC at ``N // 2``, the same index as the real-space centre (CONVENTIONS.md §2, §9).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def dc_index(size: int, fftshifted: bool) -> int:
    """Index of the DC term along an axis of ``size`` samples: ``size // 2`` if fftshift-ed, else 0."""
    return size // 2 if fftshifted else 0


def fftfreq_grid(
    shape: Sequence[int],
    *,
    spacing_angstrom: float = 1.0,
    rfft: bool = True,
    fftshift: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Frequency of every sample of a 2D or 3D discrete Fourier transform.

    Parameters
    ----------
    shape
        Real-space shape in array order, ``(h, w)`` or ``(d, h, w)``.
    spacing_angstrom
        Sampling in Å per pixel; frequencies come out in cycles per Å (1.0 gives cycles per pixel).
    rfft
        Grid of an ``rfftn`` (last axis of length ``w // 2 + 1``, never shifted).
    fftshift
        Shift all full axes so that DC sits at ``N // 2``.
    device, dtype
        Of the returned tensor.

    Returns
    -------
    torch.Tensor
        ``(*fourier_shape, ndim)`` frequencies; the last dimension holds the components in array axis order
        (``(fy, fx)`` or ``(fz, fy, fx)``).
    """
    axes = []
    for i, n in enumerate(shape):
        last = i == len(shape) - 1
        if last and rfft:
            f = torch.fft.rfftfreq(n, d=spacing_angstrom, device=device, dtype=dtype)
        else:
            f = torch.fft.fftfreq(n, d=spacing_angstrom, device=device, dtype=dtype)
            if fftshift:
                f = torch.fft.fftshift(f)
        axes.append(f)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def rfft_multiplicity(
    size: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(size // 2 + 1,)`` how many samples of the full transform each column of an ``rfft`` along an axis of
    ``size`` stands for: 2 (itself and its Hermitian mirror), except the ``k = 0`` column and, for an even size,
    the Nyquist column (1). Sums over the full transform are sums over the rfft weighted by this."""
    weight = torch.full((size // 2 + 1,), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    if size % 2 == 0:
        weight[-1] = 1.0
    return weight
