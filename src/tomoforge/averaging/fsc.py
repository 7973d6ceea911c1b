"""Fourier shell correlation of two volumes, the resolution where it crosses a threshold, and the soft spherical
mask it is usually computed within.

References
----------
Harauz, G. & van Heel, M. (1986). Exact filters for general geometry three dimensional reconstruction. Optik 73,
146–156.

Rosenthal, P. B. & Henderson, R. (2003). Optimal determination of particle orientation, absolute hand, and contrast
loss in single-particle electron cryomicroscopy. J. Mol. Biol. 333, 721–745. doi:10.1016/j.jmb.2003.07.013 (the
0.143 threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tomoforge.fourier import fftfreq_grid

__all__ = [
    "fourier_shell_correlation",
    "fsc_resolution_angstrom",
    "shell_frequencies_per_angstrom",
    "shell_index",
    "centre_crop_or_pad",
    "soft_sphere_mask",
]


def shell_index(
    shape_zyx: Sequence[int], device: torch.device | None = None, *, rfft: bool = True
) -> torch.Tensor:
    """Shell of every sample of the ``rfftn`` (or, with ``rfft=False``, the full ``fftn``, unshifted) of a volume:
    ``round(|k| · N)`` with ``k`` in cycles/pixel and ``N`` the largest edge."""
    f = fftfreq_grid(shape_zyx, rfft=rfft, device=device, dtype=torch.float64)
    return torch.round(f.norm(dim=-1) * max(shape_zyx)).to(torch.long)


def fourier_shell_correlation(
    map1: torch.Tensor, map2: torch.Tensor, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Fourier shell correlation of two volumes.

    ``FSC(s) = Re Σ F1·F2* / sqrt(Σ|F1|² · Σ|F2|²)`` over the rfft samples of shell ``s = round(|k|·N)``
    (``k`` in cycles/pixel), for ``s = 0 … N // 2``, accumulated with ``bincount``.

    Parameters
    ----------
    map1, map2
        ``(..., z, y, x)`` volumes of one shape.
    mask
        ``(z, y, x)`` real-space mask applied to both first.

    Returns
    -------
    torch.Tensor
        ``(..., N // 2 + 1)`` float64 FSC per shell (shell 0 is DC).
    """
    if mask is not None:
        map1, map2 = map1 * mask, map2 * mask
    shape = tuple(map1.shape[-3:])
    f1 = torch.fft.rfftn(map1.to(torch.float64), dim=(-3, -2, -1))
    f2 = torch.fft.rfftn(map2.to(torch.float64), dim=(-3, -2, -1))
    shells = shell_index(shape, map1.device).reshape(-1)
    n_shells = max(shape) // 2 + 1
    keep = shells < n_shells
    idx = shells[keep]
    batch = f1.shape[:-3]
    f1 = f1.reshape(*batch, -1)[..., keep]
    f2 = f2.reshape(*batch, -1)[..., keep]

    def accumulate(values: torch.Tensor) -> torch.Tensor:
        flat = values.reshape(-1, values.shape[-1])
        out = torch.stack([torch.bincount(idx, weights=v, minlength=n_shells) for v in flat])
        return out.reshape(*batch, n_shells)

    cross = accumulate((f1 * f2.conj()).real)
    p1 = accumulate(f1.abs().square())
    p2 = accumulate(f2.abs().square())
    return cross / (p1 * p2).sqrt().clamp_min(1e-300)


def shell_frequencies_per_angstrom(size: int, voxel_size_angstrom: float) -> torch.Tensor:
    """Frequency of each FSC shell of a box of edge ``size``: ``s / (size · voxel)`` cycles/Å, ``(size//2 + 1,)``."""
    return torch.arange(size // 2 + 1, dtype=torch.float64) / (size * voxel_size_angstrom)


def fsc_resolution_angstrom(
    fsc: torch.Tensor, frequencies_per_angstrom: torch.Tensor, threshold: float
) -> float:
    """Resolution where the FSC first falls below ``threshold``, interpolated linearly between shells.

    Parameters
    ----------
    fsc
        ``(n,)`` FSC from shell 0 (DC) outwards.
    frequencies_per_angstrom
        ``(n,)`` shell frequencies.
    threshold
        E.g. 0.143 or 0.5.

    Returns
    -------
    float
        ``1 / f`` in Å at the crossing; the last shell's resolution (Nyquist) when the FSC never crosses, and
        infinity when already shell 1 is below the threshold.
    """
    values = fsc.tolist()
    freqs = frequencies_per_angstrom.tolist()
    for s in range(1, len(values)):
        if values[s] < threshold:
            if s == 1:
                return math.inf
            f0, f1, v0, v1 = freqs[s - 1], freqs[s], values[s - 1], values[s]
            f = f0 + (f1 - f0) * (v0 - threshold) / (v0 - v1)
            return 1.0 / f
    return 1.0 / freqs[-1]


def soft_sphere_mask(
    size: int, *, radius_px: float, edge_px: float = 3.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(size, size, size)`` sphere about the centre, 1 inside ``radius_px`` with a raised-cosine edge."""
    offsets = torch.arange(size, dtype=dtype) - size // 2
    zz, yy, xx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    r = torch.sqrt(xx * xx + yy * yy + zz * zz)
    edge = 0.5 * (1.0 + torch.cos(math.pi * (r - radius_px) / max(edge_px, 1e-6)))
    return torch.where(
        r <= radius_px, torch.ones_like(r), torch.where(r >= radius_px + edge_px, 0.0 * r, edge)
    )


def centre_crop_or_pad(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Cut or zero-pad a cubic volume about its centre voxel ``N // 2`` to edge ``size`` (the centre stays at
    ``size // 2``)."""
    n = volume.shape[-1]
    if size <= n:
        s = n // 2 - size // 2
        return volume[s : s + size, s : s + size, s : s + size]
    out = volume.new_zeros((size, size, size))
    s = size // 2 - n // 2
    out[s : s + n, s : s + n, s : s + n] = volume
    return out
