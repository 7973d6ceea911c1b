"""Windows and sizes for Fourier transforms of finite images: an edge taper and fast FFT lengths."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["edge_taper", "fast_fft_size"]


def edge_taper(
    size_yx: Sequence[int],
    width_px: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Separable raised-cosine edge mask: 1 inside, falling to 0 over ``width_px`` pixels at every border.

    Multiplying an image by it before an FFT removes the jump at the periodic boundary, which would otherwise put a
    cross of power along the axes of its spectrum and wrap content across the edges.

    Parameters
    ----------
    size_yx
        Image shape ``(h, w)``.
    width_px
        Width of the cosine ramp at each edge in pixels (≥ 1).
    dtype, device
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(h, w)`` weights in (0, 1]; pixel ``i`` of a side of length ``n`` has ``½ − ½ cos(π d / width)`` with
        ``d = min(i + ½, n − ½ − i, width)``.
    """
    if width_px < 1:
        raise ValueError(f"width_px must be at least 1, got {width_px}")
    masks = []
    for length in size_yx:
        r = torch.arange(int(length), dtype=dtype, device=device)
        d = torch.minimum(r + 0.5, length - 0.5 - r).clamp(max=width_px) / width_px
        masks.append(0.5 - 0.5 * torch.cos(math.pi * d))
    return masks[0][:, None] * masks[1][None, :]


def fast_fft_size(n: int) -> int:
    """Smallest even length ≥ ``n`` whose prime factors are all ≤ 7 (fast for every FFT library).

    Parameters
    ----------
    n
        Minimum length.

    Returns
    -------
    int
    """
    m = max(2, n + (n % 2))
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2
