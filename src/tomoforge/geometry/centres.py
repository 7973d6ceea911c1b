"""Image and volume centres, and the conversion of IMOD ``.xf`` shifts to the tomoforge centre.

tomoforge puts the centre of an axis of ``N`` samples at index ``N // 2`` (0-based), which is where the DC term of an
``fftshift``-ed spectrum sits and RELION's ``int(N/2)``. IMOD rotates and shifts about ``(N − 1) / 2``: for an even
``N`` the two centres are half a pixel apart, so an IMOD transform must have its shift adjusted when it is read
(CONVENTIONS.md §2, §6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tomoforge.geometry._tensors import as_float_tensor


def centre_index(size: int) -> int:
    """tomoforge centre of an axis of ``size`` samples: ``size // 2`` (0-based index)."""
    return size // 2


def relion_centre(size: int) -> int:
    """RELION's centre of an axis of ``size`` samples, ``int(size / 2)`` (equal to :func:`centre_index`)."""
    return int(size / 2)


def imod_centre(size: int) -> float:
    """IMOD's centre of rotation of an axis of ``size`` samples, ``(size − 1) / 2`` in 0-based pixel indices."""
    return (size - 1) / 2.0


def _offset_xy(size_xy: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``tomoforge centre − IMOD centre`` per axis: 0.5 for even sizes, 0 for odd; shape ``(2,)``."""
    return torch.tensor(
        [centre_index(n) - imod_centre(n) for n in size_xy], dtype=like.dtype, device=like.device
    )


def imod_to_tomoforge_xf_shift_px(
    matrices: torch.Tensor,
    shifts_xy_px: torch.Tensor,
    input_size_xy: Sequence[int],
    output_size_xy: Sequence[int] | None = None,
) -> torch.Tensor:
    """Shift of an IMOD ``.xf`` transform expressed about tomoforge centres.

    IMOD maps ``x' − c_out = A·(x − c_in) + d`` with ``c = (N − 1)/2``. About tomoforge centres ``N // 2`` the same
    mapping reads ``x' − c'_out = A·(x − c'_in) + d'`` with ``d' = d + A·δ_in − δ_out`` and ``δ = N//2 − (N − 1)/2``.

    Parameters
    ----------
    matrices
        ``(..., 2, 2)`` the ``[[A11, A12], [A21, A22]]`` part of the transforms.
    shifts_xy_px
        ``(..., 2)`` IMOD ``(DX, DY)`` in pixels.
    input_size_xy, output_size_xy
        ``(nx, ny)`` of the raw (input) and aligned (output) images; output defaults to the input size.

    Returns
    -------
    torch.Tensor
        ``(..., 2)`` shifts ``d'`` in pixels about tomoforge centres.
    """
    a = as_float_tensor(matrices)
    d = as_float_tensor(shifts_xy_px, like=a)
    d_in = _offset_xy(input_size_xy, a)
    d_out = _offset_xy(output_size_xy if output_size_xy is not None else input_size_xy, a)
    return d + (a @ d_in.unsqueeze(-1)).squeeze(-1) - d_out


def tomoforge_to_imod_xf_shift_px(
    matrices: torch.Tensor,
    shifts_xy_px: torch.Tensor,
    input_size_xy: Sequence[int],
    output_size_xy: Sequence[int] | None = None,
) -> torch.Tensor:
    """Inverse of :func:`imod_to_tomoforge_xf_shift_px`: ``d = d' − A·δ_in + δ_out``; shapes as there."""
    a = as_float_tensor(matrices)
    d = as_float_tensor(shifts_xy_px, like=a)
    d_in = _offset_xy(input_size_xy, a)
    d_out = _offset_xy(output_size_xy if output_size_xy is not None else input_size_xy, a)
    return d - (a @ d_in.unsqueeze(-1)).squeeze(-1) + d_out
