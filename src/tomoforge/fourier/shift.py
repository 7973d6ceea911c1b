"""Sub-pixel translation of images by a phase ramp in Fourier space."""

from __future__ import annotations

import math

import torch

__all__ = ["fourier_shift_2d", "shift_phase_ramp_2d"]


def _axis_ramp(n: int, shift_px: torch.Tensor, *, half: bool) -> torch.Tensor:
    """``exp(−2πi f s)`` along one axis for shifts ``(...)``; ``(..., n or n // 2 + 1)`` complex.

    At the Nyquist frequency of an even axis the factor is the real ``cos(π s)``: the Nyquist coefficient stands
    for both ``±½`` cycles/pixel, and the average of their two phase factors keeps the spectrum Hermitian, so the
    shifted image is exactly real (and integer shifts are exact, ``cos(π s) = (−1)^s``).
    """
    dtype = shift_px.dtype
    freq = (
        torch.fft.rfftfreq(n, device=shift_px.device, dtype=dtype)
        if half
        else torch.fft.fftfreq(n, device=shift_px.device, dtype=dtype)
    )
    phase = -2.0 * math.pi * shift_px[..., None] * freq
    ramp = torch.polar(torch.ones_like(phase), phase)
    if n % 2 == 0:
        nyquist = n // 2
        ramp[..., nyquist] = torch.cos(math.pi * shift_px).to(ramp.dtype)
    return ramp


def shift_phase_ramp_2d(shifts_xy_px: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """Phase ramp that translates images of ``shape_yx`` by ``shifts_xy_px`` when multiplied onto their rfft.

    Parameters
    ----------
    shifts_xy_px
        ``(..., 2)`` shifts ``(sx, sy)`` in pixels, floating point.
    shape_yx
        Real-space image shape ``(h, w)``.

    Returns
    -------
    torch.Tensor
        ``(..., h, w // 2 + 1)`` complex factors ``exp(−2πi (f_x s_x + f_y s_y))`` (Nyquist handled as in
        :func:`fourier_shift_2d`).
    """
    h, w = shape_yx
    ramp_y = _axis_ramp(h, shifts_xy_px[..., 1], half=False)
    ramp_x = _axis_ramp(w, shifts_xy_px[..., 0], half=True)
    return ramp_y[..., :, None] * ramp_x[..., None, :]


def fourier_shift_2d(images: torch.Tensor, shifts_xy_px: torch.Tensor | tuple[float, float]) -> torch.Tensor:
    """Translate real images by (sub-)pixel shifts with periodic boundaries.

    Content moves towards ``+shift``: a point at ``(x₀, y₀)`` lands at ``(x₀ + s_x, y₀ + s_y)`` (x along columns,
    y along rows), i.e. ``out(r) = in(r − s)``; an integer shift equals ``torch.roll`` by ``(s_y, s_x)`` on the
    last two axes.

    Parameters
    ----------
    images
        ``(..., h, w)`` real images.
    shifts_xy_px
        ``(..., 2)`` shifts ``(s_x, s_y)`` in pixels, broadcasting with ``images.shape[:-2]``.

    Returns
    -------
    torch.Tensor
        ``(*batch, h, w)`` shifted images (``batch`` the broadcast of both leading shapes), floating dtype of
        ``images`` (float32 for integer input).

    Notes
    -----
    The phase ramp ``exp(−2πi (f_x s_x + f_y s_y))`` multiplies the rfft. On even axes the Nyquist coefficient is
    multiplied by ``cos(π s)`` instead, the only choice that keeps the result real: a sampled cosine at Nyquist
    cannot be moved by a fraction of a pixel, so that component is attenuated (removed at half-pixel shifts) and a
    sub-pixel shift followed by its inverse restores the image exactly only when it has no Nyquist content.
    """
    if images.dim() < 2:
        raise ValueError("images must have at least 2 dimensions (..., h, w)")
    real_dtype = images.dtype if images.is_floating_point() else torch.float32
    shifts = torch.as_tensor(shifts_xy_px, device=images.device)
    shifts = shifts.to(torch.float64 if real_dtype == torch.float64 else torch.float32)
    if shifts.shape[-1] != 2:
        raise ValueError(
            f"shifts_xy_px must end in a dimension of 2 (sx, sy), got shape {tuple(shifts.shape)}"
        )
    h, w = images.shape[-2:]
    spectrum = torch.fft.rfftn(images.to(real_dtype), dim=(-2, -1))
    ramp = shift_phase_ramp_2d(shifts, (h, w))
    return torch.fft.irfftn(spectrum * ramp, s=(h, w), dim=(-2, -1))
