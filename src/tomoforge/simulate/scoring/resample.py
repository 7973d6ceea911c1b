"""Resampling of volumes: Fourier cropping and padding, mirroring, and rotation/translation with a cubic B-spline.

Rotating a map for an FSC must not lose high frequencies of its own: :func:`transform_volume` upsamples the volume
2× in Fourier space (exact for a band-limited map), takes cubic B-spline coefficients in the same FFT pass and
interpolates them with eight trilinear fetches per point; it keeps resampling errors below ~1 % of the signal up
to 0.45 of the sampling rate.

References
----------
Unser, M. (1999). Splines: a perfect fit for signal and image processing. IEEE Signal Process. Mag. 16(6), 22–38.
doi:10.1109/79.799930

Sigg, C. & Hadwiger, M. (2005). Fast third-order texture filtering. GPU Gems 2, ch. 20, 313–329.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["Interpolant", "fourier_resize", "mirror_volume", "transform_volume"]


def _resize_axis(spectrum: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Crop or zero-pad one full (unshifted) spectrum axis to ``size``; padding splits an even Nyquist bin."""
    n = spectrum.shape[dim]
    if size == n:
        return spectrum
    s = torch.fft.fftshift(spectrum, dim=dim)
    if size < n:
        s = s.narrow(dim, n // 2 - size // 2, size)
    else:
        if n % 2 == 0:
            nyquist = s.narrow(dim, 0, 1) / 2
            s = torch.cat([nyquist, s.narrow(dim, 1, n - 1), nyquist], dim=dim)
        before = size // 2 - n // 2
        after = size - s.shape[dim] - before
        pad = [0, 0] * (spectrum.ndim - 1 - (dim % spectrum.ndim)) + [before, after]
        s = torch.nn.functional.pad(s, pad)
    return torch.fft.ifftshift(s, dim=dim)


def fourier_resize(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Resample a cubic ``(..., n, n, n)`` volume to ``(..., size, size, size)`` by Fourier cropping or padding.

    Padding (``size > n``) interpolates exactly (band-limited): ``out[f·i] = volume[i]`` for ``size = f·n``.
    The voxel size changes by ``n / size``; centres ``N // 2`` stay on the same point.
    """
    n = volume.shape[-1]
    spec = torch.fft.fftn(volume, dim=(-3, -2, -1))
    for dim in (-3, -2, -1):
        spec = _resize_axis(spec, dim, size)
    return torch.fft.ifftn(spec, dim=(-3, -2, -1)).real * (size / n) ** 3


def mirror_volume(volume: torch.Tensor) -> torch.Tensor:
    """Mirror image ``out(x, y, z) = volume(−x, y, z)`` about the centre ``N // 2``."""
    n = volume.shape[-1]
    flipped = torch.flip(volume, dims=(-1,))
    return torch.roll(flipped, shifts=1, dims=-1) if n % 2 == 0 else flipped


def _centred_positions(shape_zyx: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(z, y, x, 3)`` coordinates ``(x, y, z)`` of every voxel relative to the centre ``N // 2``."""
    axes = [torch.arange(n, dtype=dtype, device=device) - n // 2 for n in shape_zyx]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


_MARGIN = 2
"""Voxels of periodic margin around a volume prepared for interpolation."""


def _bspline_coefficients(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Cubic B-spline coefficients of the band-limited interpolant of ``volume`` resampled to edge ``size``.

    One FFT pass: Fourier resizing (:func:`fourier_resize`) and division by the transfer function of the sampled
    cubic B-spline, ``Π_axes (4 + 2 cos 2πk) / 6`` (Unser 1999).
    """
    n = volume.shape[-1]
    spec = torch.fft.fftn(volume, dim=(-3, -2, -1))
    for dim in (-3, -2, -1):
        spec = _resize_axis(spec, dim, size)
    k = torch.fft.fftfreq(size, dtype=volume.dtype, device=volume.device)
    b = (4.0 + 2.0 * torch.cos(2.0 * math.pi * k)) / 6.0
    spec = spec / (b[:, None, None] * b[None, :, None] * b[None, None, :])
    return torch.fft.ifftn(spec, dim=(-3, -2, -1)).real * (size / n) ** 3


def _linear_taps(
    index: torch.Tensor,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Cubic B-spline weights along one axis folded into two linear fetches (Sigg & Hadwiger 2005).

    Returns ``((g0, h0), (g1, h1))``: weights and fractional positions of the two linear interpolations.
    """
    i = torch.floor(index)
    a = index - i
    w0 = (1.0 - a) ** 3 / 6.0
    w1 = (3.0 * a**3 - 6.0 * a**2 + 4.0) / 6.0
    w3 = a**3 / 6.0
    w2 = 1.0 - w0 - w1 - w3
    g0, g1 = w0 + w1, w2 + w3
    return (g0, i - 1.0 + w1 / g0), (g1, i + 1.0 + w3 / g1)


def transform_volume(
    volume: torch.Tensor,
    matrices: torch.Tensor,
    shifts_xyz_px: torch.Tensor | None = None,
    *,
    output_shape_zyx: Sequence[int] | None = None,
    oversample: int = 2,
    cubic: bool = True,
) -> torch.Tensor:
    """Resample a volume at transformed positions: ``out(x) = volume(M·x + t)``, coordinates from the centres.

    The volume is Fourier-upsampled by ``oversample`` and interpolated with a cubic B-spline (eight trilinear
    fetches per point) or trilinearly; upsampling by 2 with the B-spline keeps resampling errors below 1 % of the
    signal up to 0.45 of the sampling rate.

    Parameters
    ----------
    volume
        ``(z, y, x)`` cubic volume.
    matrices
        ``(3, 3)`` or ``(b, 3, 3)`` linear maps ``M`` acting on ``(x, y, z)`` (a rotation ``Gᵀ`` rotates the content
        by ``G``; a scaled identity changes the sampling).
    shifts_xyz_px
        ``(3,)`` or ``(b, 3)`` translations ``t`` in voxels of ``volume``.
    output_shape_zyx
        Shape of the output (default: the volume's).
    oversample
        Fourier upsampling factor applied first (1: none).
    cubic
        Cubic B-spline interpolation; trilinear when False.

    Returns
    -------
    torch.Tensor
        ``(z', y', x')`` or ``(b, z', y', x')``; zero outside the volume.

    References
    ----------
    Unser, M. (1999). Splines: a perfect fit for signal and image processing. IEEE Signal Process. Mag. 16(6),
    22–38. doi:10.1109/79.799930

    Sigg, C. & Hadwiger, M. (2005). Fast third-order texture filtering. GPU Gems 2, ch. 20, 313–329.
    """
    interpolant = Interpolant(volume, oversample=oversample, cubic=cubic)
    return interpolant.sample(matrices, shifts_xyz_px, output_shape_zyx=output_shape_zyx)


class Interpolant:
    """A volume prepared for resampling (upsampled, B-spline coefficients), reusable for many transforms.

    ``volume`` is ``(z, y, x)`` or ``(c, z, y, x)``: channels are resampled together (one set of positions), and
    the samples are then ``(…, c, z', y', x')``.
    """

    def __init__(self, volume: torch.Tensor, *, oversample: int, cubic: bool) -> None:
        self.n, self.oversample, self.cubic = volume.shape[-1], oversample, cubic
        self.shape, self.dtype, self.device = tuple(volume.shape[-3:]), volume.dtype, volume.device
        self.channels = volume.shape[0] if volume.ndim == 4 else None
        size = oversample * self.n
        source = _bspline_coefficients(volume, size) if cubic else fourier_resize(volume, size)
        # Periodic margin: the interpolant of a Fourier-resampled volume is periodic, so taps just outside the box
        # take the values from the other side; farther out the samples are zero.
        source = source.reshape(1, -1, *source.shape[-3:])
        self.source = torch.nn.functional.pad(source, (_MARGIN,) * 6, mode="circular")[0]

    def sample(
        self,
        matrices: torch.Tensor,
        shifts_xyz_px: torch.Tensor | None = None,
        *,
        output_shape_zyx: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``volume(M·x + t)`` on the output grid; see :func:`transform_volume`."""
        return _sample(self, matrices, shifts_xyz_px, output_shape_zyx)


def _sample(
    interpolant: Interpolant,
    matrices: torch.Tensor,
    shifts_xyz_px: torch.Tensor | None,
    output_shape_zyx: Sequence[int] | None,
) -> torch.Tensor:
    dtype, device = interpolant.dtype, interpolant.device
    oversample, cubic, n, src = interpolant.oversample, interpolant.cubic, interpolant.n, interpolant.source
    size = oversample * n + 2 * _MARGIN
    batched = matrices.ndim == 3
    m = (matrices if batched else matrices.unsqueeze(0)).to(dtype)
    b = m.shape[0]
    t = torch.zeros(b, 3, dtype=dtype, device=device)
    if shifts_xyz_px is not None:
        t = t + shifts_xyz_px.to(dtype).reshape(-1, 3)
    out_shape = tuple(output_shape_zyx) if output_shape_zyx is not None else interpolant.shape
    # One affine map from normalised output coordinates (affine_grid, align_corners) to normalised source ones:
    # output index j = (u + 1)(N' − 1)/2, position x = j − N'//2, source index = os·(M·x + t + n//2) + margin.
    half = torch.tensor([(k - 1) / 2.0 for k in out_shape[::-1]], dtype=dtype, device=device)  # (x, y, z)
    centre = torch.tensor([k // 2 for k in out_shape[::-1]], dtype=dtype, device=device)
    to_index = oversample * m * half[None, None, :]  # source index = to_index·u + offset
    offset = oversample * ((m @ (half - centre)) + t + n // 2) + _MARGIN
    scale = 2.0 / (size - 1.0)
    theta = torch.cat([scale * to_index, (scale * offset - 1.0).unsqueeze(-1)], dim=-1)
    grid = torch.nn.functional.affine_grid(theta, [b, 1, *out_shape], align_corners=True)
    source = src.expand(b, *src.shape)
    channels = src.shape[0]

    def fetch(normalised: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.grid_sample(
            source, normalised, mode="bilinear", padding_mode="zeros", align_corners=True
        )

    if not cubic:
        out = fetch(grid)
    else:
        index = (grid + 1.0) / scale
        taps = [_linear_taps(index[..., axis]) for axis in range(3)]
        out = torch.zeros((b, channels, *out_shape), dtype=dtype, device=device)
        for gx, hx in taps[0]:
            for gy, hy in taps[1]:
                for gz, hz in taps[2]:
                    weight = (gx * gy * gz).unsqueeze(1)
                    out = out + weight * fetch(torch.stack([hx, hy, hz], dim=-1) * scale - 1.0)
    if interpolant.channels is None:
        out = out[:, 0]
    return out if batched else out[0]
