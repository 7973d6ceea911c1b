"""CTF correction of tilted images strip by strip, as IMOD's ``ctfphaseflip`` does it.

On a tilted view the defocus changes across the image: the specimen mid-plane (``z = 0`` of the tomogram) lies at
``depth = g·x`` under aligned-image column ``x`` (``g = −tan θ`` without x-tilt; :func:`tomoforge.geometry.plane_depth_px`
on the projection model of CONVENTIONS.md §7 with the tilt axis on Y), so its defocus is
``Δf(x) = Δf_view − h·g·x·pixel`` (CONVENTIONS.md §8, handedness ``h``): on a positively tilted view it grows
towards ``+x``. The aligned image (tilt axis vertical) is cut into strips parallel to the axis, each narrow enough
that the defocus changes by at most ``defocus_tolerance_angstrom`` across it; every strip is corrected with the
defocus at its centre column and neighbouring strips are blended linearly over ``interpolation_width_px`` columns
around their common edge.

Correction of one strip: a window holding the strip's columns plus a margin on both sides (the delocalisation of
the CTF at Nyquist plus a taper, so no content wraps around into the strip) is cut out, its mean removed, tapered
to zero at the window's ends (cosine), extended beyond the image's own edges by its edge values fading to the mean,
zero-padded to a fast FFT size, Fourier transformed, multiplied by the correction filter of the strip's defocus,
transformed back, and the strip's columns are kept. Only one window is in memory at a time.

Filters (``CTF`` with CTFFIND's sign, CONVENTIONS.md §8, so that ``CTF(0) = −A < 0``):

* ``"flip"`` (phase flipping, ctfphaseflip): ``sign(−CTF)``. Frequencies transferred with the sign of the lowest
  ones are kept and the others negated, so the corrected image keeps the contrast of the input at low frequency
  (dark protein stays dark) and its transfer of the projected potential is ``−|CTF|`` everywhere. This is the sign
  of RELION's CTF, which RELION multiplies into its (contrast-inverted) images.
* ``"wiener"``: ``(1 + 1/SNR)·(−CTF)/(CTF² + 1/SNR)``, a Wiener filter with a constant spectral signal-to-noise
  ratio, scaled so that the corrected transfer ``−(1 + 1/SNR)·CTF²/(CTF² + 1/SNR)`` is −1 where ``|CTF| = 1``: it
  never changes the sign that phase flipping gives and tends to the inverse filter (unit gain) where the CTF is
  strong, and falls to zero at the CTF's zeros.

The image mean passes unchanged in both modes.

Differences from ctfphaseflip: IMOD places strip centres ``InterpolationWidth`` pixels apart and uses the tolerance
for the width of each strip's FFT window, so its defocus error per column is about ``InterpolationWidth·pixel·|tan θ|``;
here the strips tile the image, so the error is at most half the tolerance (100 nm by default), for a tenth to a
hundredth of the FFTs. The x-axis tilt enters the defocus at each strip's centre (row of the image centre); the
defocus change along a strip that an x-tilt causes is ignored, as in ctfphaseflip. Per-depth (3D-CTF) correction
is not done.

References
----------
Xiong, Q., Morphew, M. K., Schwartz, C. L., Hoenger, A. H. & Mastronarde, D. N. (2009). CTF determination and
correction for low dose tomographic tilt series. J. Struct. Biol. 168, 378–387. doi:10.1016/j.jsb.2009.08.016
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from tomoforge.ctf.ctf2d import ctf_2d, electron_wavelength_angstrom
from tomoforge.fourier import fast_fft_size
from tomoforge.geometry.projection import plane_depth_px, projection_matrices

__all__ = ["StripLayout", "correction_filter", "phase_flip_tilted", "strip_layout"]

_TAPER_PX = 16
"""Width in pixels of the cosine tapers at the ends of a strip's window and beyond the image's edges."""
_MIN_STRIP_PX = 8
"""Narrowest strip (pixels), whatever the tolerance asks."""


@dataclass(frozen=True)
class StripLayout:
    """How an aligned image of ``width_px`` columns is cut into strips parallel to the tilt axis (image Y).

    Strip ``k`` owns the columns ``bounds_px[k] … bounds_px[k + 1] − 1``; it is corrected with the defocus at
    ``centres_px[k]`` and blended with its neighbours over ``interpolation_width_px`` columns centred on their
    common edge (:meth:`column_weights`).
    """

    width_px: int
    """Number of columns of the image."""
    bounds_px: tuple[int, ...]
    """``(n + 1,)`` column boundaries, ``0 = b_0 < b_1 < … < b_n = width_px``."""
    centres_px: tuple[float, ...]
    """``(n,)`` centre column of each strip, in pixels from the image centre ``width_px // 2`` (0 for one strip)."""
    interpolation_width_px: int
    """Width of the linear blend between neighbouring strips, pixels."""
    depth_gradient: float
    """Depth (pixels) of the specimen mid-plane per pixel along image x, at the image centre's row."""

    @property
    def n_strips(self) -> int:
        """Number of strips."""
        return len(self.centres_px)

    @property
    def widths_px(self) -> tuple[int, ...]:
        """Width of each strip in pixels."""
        return tuple(b - a for a, b in zip(self.bounds_px[:-1], self.bounds_px[1:], strict=True))

    def column_weights(
        self, index: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> tuple[int, int, torch.Tensor]:
        """Columns strip ``index`` contributes to and its blending weights there.

        Parameters
        ----------
        index
            Strip number, ``0 ≤ index < n_strips``.
        dtype, device
            Of the returned weights.

        Returns
        -------
        tuple
            ``(start, stop, weights)``: the strip contributes to columns ``start … stop − 1`` with ``weights``
            ``(stop − start,)`` in [0, 1]. The weights of all strips sum to 1 in every column: at a common edge
            ``b`` the left strip falls linearly from 1 to 0 over ``b ± interpolation_width_px / 2`` while the right
            one rises; the image's own edges have no ramp.
        """
        if not 0 <= index < self.n_strips:
            raise ValueError(f"strip index {index} is outside 0..{self.n_strips - 1}")
        left, right = self.bounds_px[index], self.bounds_px[index + 1]
        half = (self.interpolation_width_px + 1) // 2
        start = left if index == 0 else max(0, left - half)
        stop = right if index == self.n_strips - 1 else min(self.width_px, right + half)
        centres = torch.arange(start, stop, dtype=torch.float64, device=device) + 0.5
        width = float(self.interpolation_width_px)
        weights = torch.ones_like(centres)
        if index > 0:
            weights = weights * ((centres - left) / width + 0.5).clamp(0.0, 1.0)
        if index < self.n_strips - 1:
            weights = weights * ((right - centres) / width + 0.5).clamp(0.0, 1.0)
        return start, stop, weights.to(dtype)


def _depth_gradient(tilt_angle_deg: float, x_tilt_angle_deg: float) -> float:
    """Depth (px) of the mid-plane per px along aligned x at the centre row (projection model, axis on Y)."""
    matrix = projection_matrices(float(tilt_angle_deg), 0.0, None, float(x_tilt_angle_deg))
    points = torch.tensor([[-0.5, 0.0], [0.5, 0.0]], dtype=torch.float64)
    depth = plane_depth_px(points, matrix.to(torch.float64))
    return float(depth[1] - depth[0])


def strip_layout(
    width_px: int,
    *,
    tilt_angle_deg: float,
    pixel_size_angstrom: float,
    x_tilt_angle_deg: float = 0.0,
    defocus_tolerance_angstrom: float = 2000.0,
    interpolation_width_px: int = 15,
) -> StripLayout:
    """Cut an aligned tilted image into strips along the tilt axis, each with at most a given defocus range.

    Parameters
    ----------
    width_px
        Number of columns of the aligned image (tilt axis along Y).
    tilt_angle_deg
        Tilt angle θ of the view in degrees, ``|θ| < 90``.
    pixel_size_angstrom
        Pixel size of the image in Å.
    x_tilt_angle_deg
        X-axis tilt φ in degrees (CONVENTIONS.md §7).
    defocus_tolerance_angstrom
        Largest defocus change across one strip, Å (ctfphaseflip ``-DefocusTol``, 200 nm by default).
    interpolation_width_px
        Width of the linear blend between neighbouring strips in pixels (ctfphaseflip ``-InterpolationWidth``); 1
        means no blending.

    Returns
    -------
    StripLayout
        ``n = ceil(width / w_max)`` strips of (nearly) equal width, ``w_max = tolerance / (pixel·|g|)`` with ``g``
        the mid-plane's depth gradient along x (``−tan θ`` without x-tilt), but never narrower than
        ``max(interpolation_width_px, 8)`` pixels; an untilted image is one strip.

    Raises
    ------
    ValueError
        For a non-positive width, pixel size or tolerance, an interpolation width below 1, or ``|θ| ≥ 90°``.
    """
    if width_px < 1:
        raise ValueError(f"width_px must be positive, got {width_px}")
    if not pixel_size_angstrom > 0.0:
        raise ValueError(f"pixel_size_angstrom must be positive, got {pixel_size_angstrom}")
    if not defocus_tolerance_angstrom > 0.0:
        raise ValueError(f"defocus_tolerance_angstrom must be positive, got {defocus_tolerance_angstrom}")
    if interpolation_width_px < 1:
        raise ValueError(f"interpolation_width_px must be at least 1, got {interpolation_width_px}")
    if not abs(tilt_angle_deg) < 90.0:
        raise ValueError(f"tilt_angle_deg must lie strictly between -90 and 90, got {tilt_angle_deg}")
    gradient = _depth_gradient(tilt_angle_deg, x_tilt_angle_deg)
    slope_angstrom_per_px = abs(gradient) * pixel_size_angstrom
    if slope_angstrom_per_px * width_px <= defocus_tolerance_angstrom:
        n = 1
    else:
        widest = max(
            defocus_tolerance_angstrom / slope_angstrom_per_px, _MIN_STRIP_PX, interpolation_width_px
        )
        n = max(1, min(math.ceil(width_px / widest), width_px // max(_MIN_STRIP_PX, interpolation_width_px)))
    bounds = tuple(round(k * width_px / n) for k in range(n + 1))
    centres = tuple(0.5 * (a + b - 1) - width_px // 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    if n == 1:
        centres = (0.0,)  # one strip: the view's own defocus, defined at the image centre
    return StripLayout(
        width_px=int(width_px),
        bounds_px=bounds,
        centres_px=centres,
        interpolation_width_px=int(interpolation_width_px),
        depth_gradient=gradient,
    )


def correction_filter(
    ctf: torch.Tensor, *, mode: Literal["flip", "wiener"] = "flip", wiener_snr: float = 10.0
) -> torch.Tensor:
    """The multiplicative Fourier filter that corrects images for a CTF (see the module docstring).

    Parameters
    ----------
    ctf
        ``(...)`` CTF values with CTFFIND's sign (:func:`tomoforge.ctf.ctf_2d`).
    mode
        ``"flip"``: ``sign(−CTF)`` (a CTF of exactly 0 counts as negative, so DC passes when ``A = 0``);
        ``"wiener"``: ``(1 + 1/SNR)·(−CTF)/(CTF² + 1/SNR)``.
    wiener_snr
        Constant spectral signal-to-noise ratio of the Wiener filter (> 0).

    Returns
    -------
    torch.Tensor
        ``(...)`` real filter, same dtype and device as ``ctf``.
    """
    if mode == "flip":
        return torch.where(ctf > 0, -torch.ones_like(ctf), torch.ones_like(ctf))
    if mode == "wiener":
        if not wiener_snr > 0.0:
            raise ValueError(f"wiener_snr must be positive, got {wiener_snr}")
        inverse_snr = 1.0 / float(wiener_snr)
        return (1.0 + inverse_snr) * (-ctf) / (ctf * ctf + inverse_snr)
    raise ValueError(f"mode must be 'flip' or 'wiener', got {mode!r}")


def _delocalisation_px(
    defocus_angstrom: float, pixel_size_angstrom: float, voltage_kv: float, spherical_aberration_mm: float
) -> float:
    """Largest lateral displacement (px) the CTF gives to frequencies up to Nyquist: ``max |dχ/dk| / 2π``."""
    lam = float(electron_wavelength_angstrom(float(voltage_kv)))
    cs = spherical_aberration_mm * 1e7
    k = torch.linspace(0.0, 0.5 / pixel_size_angstrom, 65, dtype=torch.float64)
    shift = (lam * defocus_angstrom * k - cs * lam**3 * k**3).abs().max()
    return float(shift) / pixel_size_angstrom


def _taper(
    n_total: int, first: int, stop: int, fade: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``(n_total,)`` weights: 1 on ``first … stop − 1``, a cosine fade to 0 over ``fade`` samples on either side."""
    index = torch.arange(n_total, dtype=torch.float64, device=device)
    distance = torch.clamp(first - index, min=0.0) + torch.clamp(index - (stop - 1), min=0.0)
    weights = 0.5 * (1.0 + torch.cos(math.pi * (distance / max(fade, 1)).clamp(max=1.0)))
    return weights.to(dtype)


def phase_flip_tilted(
    images: torch.Tensor,
    *,
    defocus_u_angstrom: float,
    defocus_v_angstrom: float,
    astigmatism_angle_deg: float,
    tilt_angle_deg: float,
    pixel_size_angstrom: float,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
    x_tilt_angle_deg: float = 0.0,
    handedness: int = 1,
    phase_shift_deg: float = 0.0,
    defocus_tolerance_angstrom: float = 2000.0,
    interpolation_width_px: int = 15,
    mode: Literal["flip", "wiener"] = "flip",
    wiener_snr: float = 10.0,
) -> torch.Tensor:
    """Correct aligned tilted images for the CTF strip by strip (IMOD ``ctfphaseflip``; module docstring).

    Parameters
    ----------
    images
        ``(..., h, w)`` aligned images of one view (tilt axis along Y, image centre at ``(h // 2, w // 2)`` being
        the projection of the tomogram centre), e.g. one image or its even/odd halves; all share the parameters.
    defocus_u_angstrom, defocus_v_angstrom
        Defocus of the view at the tomogram centre's height (depth 0), Å, positive underfocus.
    astigmatism_angle_deg
        Angle of the ``u`` direction from **aligned-image** +x, counter-clockwise, degrees.
    tilt_angle_deg
        Tilt angle θ of the view (refined if available), degrees, ``|θ| < 90``.
    pixel_size_angstrom
        Pixel size of ``images`` in Å.
    voltage_kv, spherical_aberration_mm, amplitude_contrast, phase_shift_deg
        Microscope constants and phase-plate shift, as in :func:`tomoforge.ctf.ctf_2d`.
    x_tilt_angle_deg
        X-axis tilt φ, degrees (CONVENTIONS.md §7).
    handedness
        ``h`` of ``Δf = Δf_view − h·depth·pixel`` (CONVENTIONS.md §8): +1 or −1.
    defocus_tolerance_angstrom
        Largest defocus change across a strip, Å (ctfphaseflip ``-DefocusTol``; 2000 Å = 200 nm).
    interpolation_width_px
        Columns over which neighbouring strips are blended (ctfphaseflip ``-InterpolationWidth``; 15).
    mode
        ``"flip"`` (phase flipping) or ``"wiener"`` (see :func:`correction_filter`).
    wiener_snr
        Spectral SNR of the Wiener filter.

    Returns
    -------
    torch.Tensor
        ``(..., h, w)`` corrected images, floating dtype of ``images`` (float32 for integer input), on its device.

    Raises
    ------
    ValueError
        For images smaller than 2 × 2, ``handedness`` not ±1, or invalid values of the other options.

    Notes
    -----
    Strip ``k`` (:func:`strip_layout`) is corrected with ``Δf_k = Δf_view − h·g·c_k·pixel`` added to both ``u``
    and ``v``, ``c_k`` its centre column from the image centre and ``g`` the mid-plane's depth gradient
    (:func:`tomoforge.geometry.plane_depth_px`). Its window spans the columns it contributes to plus a margin of
    the CTF's delocalisation at Nyquist (for the largest defocus of the view) and a 16-pixel taper on each side;
    rows are padded the same way, so the image's top and bottom do not wrap around either.

    References
    ----------
    Xiong, Q., Morphew, M. K., Schwartz, C. L., Hoenger, A. H. & Mastronarde, D. N. (2009). CTF determination and
    correction for low dose tomographic tilt series. J. Struct. Biol. 168, 378–387. doi:10.1016/j.jsb.2009.08.016
    """
    if images.dim() < 2 or images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(f"images must have shape (..., h, w) with h, w >= 2, got {tuple(images.shape)}")
    if handedness not in (1, -1):
        raise ValueError(f"handedness must be +1 or -1, got {handedness}")
    if mode not in ("flip", "wiener"):
        raise ValueError(f"mode must be 'flip' or 'wiener', got {mode!r}")
    if mode == "wiener" and not wiener_snr > 0.0:
        raise ValueError(f"wiener_snr must be positive, got {wiener_snr}")
    real = images if images.is_floating_point() else images.to(torch.float32)
    dtype, device = real.dtype, real.device
    h, w = int(real.shape[-2]), int(real.shape[-1])
    layout = strip_layout(
        w,
        tilt_angle_deg=tilt_angle_deg,
        pixel_size_angstrom=pixel_size_angstrom,
        x_tilt_angle_deg=x_tilt_angle_deg,
        defocus_tolerance_angstrom=defocus_tolerance_angstrom,
        interpolation_width_px=interpolation_width_px,
    )
    offsets = [-handedness * layout.depth_gradient * c * pixel_size_angstrom for c in layout.centres_px]
    largest_defocus = max(abs(defocus_u_angstrom), abs(defocus_v_angstrom)) + max(abs(o) for o in offsets)
    reach = _delocalisation_px(largest_defocus, pixel_size_angstrom, voltage_kv, spherical_aberration_mm)
    margin = min(math.ceil(reach) + _TAPER_PX, 4 * max(h, w))

    mean = real.mean(dim=(-2, -1), keepdim=True)
    rows = torch.arange(-margin, h + margin, device=device)
    row_weights = _taper(h + 2 * margin, margin, margin + h, margin, dtype=dtype, device=device)
    ranges = [layout.column_weights(k, dtype=dtype, device=device) for k in range(layout.n_strips)]
    fft_h = fast_fft_size(h + 2 * margin)
    fft_w = fast_fft_size(max(stop - start for start, stop, _ in ranges) + 2 * margin)

    out = torch.zeros_like(real)
    for (start, stop, weights), offset in zip(ranges, offsets, strict=True):
        columns = torch.arange(start - margin, stop + margin, device=device)
        n_cols = columns.numel()
        column_weights = _taper(n_cols, _TAPER_PX, n_cols - _TAPER_PX, _TAPER_PX, dtype=dtype, device=device)
        outside = _taper(n_cols, -(start - margin), w - (start - margin), margin, dtype=dtype, device=device)
        window = real[..., columns.clamp(0, w - 1)][..., rows.clamp(0, h - 1), :] - mean
        window = window * row_weights[:, None] * (column_weights * outside)[None, :]
        window = F.pad(window, (0, fft_w - n_cols, 0, fft_h - rows.numel()))
        ctf = ctf_2d(
            defocus_u_angstrom=defocus_u_angstrom + offset,
            defocus_v_angstrom=defocus_v_angstrom + offset,
            astigmatism_angle_deg=astigmatism_angle_deg,
            voltage_kv=voltage_kv,
            spherical_aberration_mm=spherical_aberration_mm,
            amplitude_contrast=amplitude_contrast,
            phase_shift_deg=phase_shift_deg,
            pixel_size_angstrom=pixel_size_angstrom,
            shape_yx=(fft_h, fft_w),
            dtype=dtype,
            device=device,
        )
        flt = correction_filter(ctf, mode=mode, wiener_snr=wiener_snr)
        corrected = torch.fft.irfft2(torch.fft.rfft2(window) * flt, s=(fft_h, fft_w))
        out[..., start:stop] += corrected[..., margin : margin + h, margin : margin + stop - start] * weights
    return out + mean
