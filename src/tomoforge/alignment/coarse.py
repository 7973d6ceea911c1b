"""Coarse (translational) alignment of a tilt series by cross-correlation, as IMOD's ``tiltxcorr`` + ``xftoxg``.

The views are sorted by tilt angle. Starting at the reference view (the one of smallest ``|θ|``), each view ``i``
is cross-correlated with its neighbour ``j`` one step closer to the reference (or, with a cumulative reference, with
the sum of all views aligned so far, brought into the geometry of ``j``), after stretching view ``i``
perpendicular to the tilt axis by ``cos θ_j / cos θ_i`` about the image centre (cosine stretch). The correlation is
band-pass filtered with IMOD's ``FilterSigma1``/``FilterRadius2``/``FilterSigma2`` filter, the images are tapered
to their mean at the edges and padded, and the sub-pixel peak gives the relative shift.

Geometry. With the projection model (CONVENTIONS.md §7) a specimen point at height 0 lands in raw view ``i`` at
``rᵢ = R(α)·(x cos θᵢ, y) + sᵢ``, where ``R(α)`` turns image +x onto the direction perpendicular to the tilt axis,
``(cos α, sin α)``, and ``sᵢ`` is where the tomogram centre projects. The stretch ``S = R(α)·diag(k, 1)·R(α)ᵀ``,
``k = cos θ_j / cos θ_i``, maps view ``i``'s height-0 content onto view ``j``'s up to the translation
``p = s_j − S·sᵢ`` measured by the correlation, hence ``sᵢ = S⁻¹·(s_j − p)``: chaining outwards from
``s_ref = 0`` (the tilt axis through the centre of the reference view, as tiltxcorr assumes) gives every ``sᵢ``
exactly, including tiltxcorr's correction for stretching about the image centre rather than about the tilt axis.
The transform of view ``i`` is the pure translation ``d = −sᵢ`` (``A = I``, like IMOD's ``.prexg``): applying it
brings the tilt axis to the image centre in every view and every view onto the reference view.

Two options go beyond tiltxcorr, for thick specimens, where material at different heights has different parallax
between neighbouring views and the correlation locks onto whichever layer dominates (often a surface crowded with
gold), so that the registered height wanders from view to view: ``specimen_thickness_px`` smooths each correlation
across the tilt axis by the expected parallax spread, and ``erase_outliers_sd`` replaces gold beads and X-rays by
the median before correlating. Both are off by default.

References
----------
Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011

Guckenberger, R. (1982). Determination of a common origin in the micrographs of tilt series in three-dimensional
electron microscopy. Ultramicroscopy 9, 167–173 (correlation of cosine-stretched neighbouring views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tomoforge.alignment.transform import transform_images
from tomoforge.fourier import fast_fft_size, fourier_bin_2d
from tomoforge.geometry import rotation_2d
from tomoforge.motion import find_peak_2d

__all__ = ["CoarseAlignment", "coarse_align", "imod_filter"]

_MAX_STRETCH_TILT_DEG = 82.0  # tiltxcorr refuses cosine stretching beyond this tilt
_MAX_CORRELATION_SIZE = 1180  # tiltxcorr bins images whose padded size exceeds this
_MAX_AUTO_BINNING = 8
_CENTRAL_PEAK_RADIUS_PX = 1.1  # tiltxcorr -ExcludeCentralPeak


@dataclass(frozen=True)
class CoarseAlignment:
    """Result of :func:`coarse_align`; tensors are in stack order (``n`` views)."""

    xf: torch.Tensor
    """``(n, 2, 3)`` raw → aligned transforms about centres ``N // 2`` (``A = I``), shifts in input pixels."""
    relative_shifts_xy_px: torch.Tensor
    """``(n, 2)`` measured shift that moves view ``i``, stretched by ``stretch_factors[i]``, onto its reference
    (the neighbour, or the cumulative sum in the neighbour's geometry), in input pixels; 0 for the reference view
    (when the neighbour was stretched instead of view ``i``, the shift moves view ``i`` onto the stretched
    neighbour)."""
    peak_values: torch.Tensor
    """``(n,)`` normalised (filtered) cross-correlation coefficient at the peak; NaN for the reference view."""
    neighbour_index: torch.Tensor
    """``(n,)`` stack index of the view each view was aligned to (``-1`` for the reference view)."""
    stretch_factors: torch.Tensor
    """``(n,)`` cosine stretch ``cos θ_j / cos θ_i`` used for each view (1 for the reference view)."""
    reference_index: int
    """Stack index of the reference (zero-tilt) view, whose transform is the identity unless ``zero_mean``."""
    binning: int
    """Binning at which the correlations were computed."""
    pixel_size_angstrom: float | None = None
    """Pixel size of the input, if given."""

    @property
    def shifts_xy_px(self) -> torch.Tensor:
        """``(n, 2)`` translations ``d`` of :attr:`xf` in input pixels."""
        return self.xf[:, :, 2]

    @property
    def shifts_xy_angstrom(self) -> torch.Tensor:
        """``(n, 2)`` translations ``d`` of :attr:`xf` in Å (needs ``pixel_size_angstrom``)."""
        if self.pixel_size_angstrom is None:
            raise ValueError("coarse_align was called without pixel_size_angstrom")
        return self.xf[:, :, 2] * self.pixel_size_angstrom


def imod_filter(
    frequencies_per_px: torch.Tensor,
    *,
    sigma1: float,
    sigma2: float,
    radius1: float = 0.0,
    radius2: float,
) -> torch.Tensor:
    """IMOD's band-pass filter of the four parameters Sigma1, Sigma2, Radius1, Radius2 (``filterplot``).

    The product of a Gaussian high-pass ``1 − exp(−r²/2σ₁²)`` and a Gaussian-edged band pass that is 1 between
    ``radius1`` and ``radius2`` and falls off as ``exp(−(r − radius)²/2σ₂²)`` outside; a sigma of 0 removes its part.

    Parameters
    ----------
    frequencies_per_px
        ``(...)`` spatial frequency magnitudes ``r`` in cycles/pixel.
    sigma1, sigma2, radius1, radius2
        IMOD's parameters in cycles/pixel, all ≥ 0 (IMOD's negative variants are not supported).

    Returns
    -------
    torch.Tensor
        ``(...)`` filter values in ``[0, 1]``.
    """
    for name, value in (("sigma1", sigma1), ("sigma2", sigma2), ("radius1", radius1), ("radius2", radius2)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite value ≥ 0 (cycles/pixel), got {value}")
    r = frequencies_per_px
    out = torch.ones_like(r)
    if sigma1 > 0:
        out = out * (1.0 - torch.exp(-(r * r) / (2.0 * sigma1 * sigma1)))
    if sigma2 > 0:
        below = torch.exp(-((r - radius1) ** 2) / (2.0 * sigma2 * sigma2))
        above = torch.exp(-((r - radius2) ** 2) / (2.0 * sigma2 * sigma2))
        out = out * torch.where(r < radius1, below, torch.where(r > radius2, above, torch.ones_like(r)))
    return out


def _working_region(size: int, trim: int, binning: int) -> tuple[int, int]:
    """Start and binned length ``M`` (even) of the region whose binned centre ``M // 2`` is pixel ``size // 2``."""
    half = (size // 2 - trim) // binning
    return size // 2 - binning * half, 2 * half


def _taper_weights(length: int, taper: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(length,)`` linear ramp from the edges over ``taper`` samples (1 inside)."""
    i = torch.arange(length, dtype=dtype, device=device)
    distance = torch.minimum(i, length - 1 - i)
    return ((distance + 1.0) / (taper + 1.0)).clamp(max=1.0) if taper > 0 else torch.ones_like(i)


def _erase_outliers(images: torch.Tensor, sd: float) -> torch.Tensor:
    """Replace pixels beyond ``sd`` robust SDs from each image's median (dilated by 2 px) with the median."""
    flat = images.flatten(-2)
    median = flat.median(dim=-1).values[..., None, None]
    spread = 1.4826 * (images - median).abs().flatten(-2).median(dim=-1).values[..., None, None]
    outlier = ((images - median).abs() > sd * spread).to(images.dtype)
    grown = torch.nn.functional.max_pool2d(outlier[:, None], kernel_size=5, stride=1, padding=2)[:, 0] > 0
    return torch.where(grown, median.expand_as(images), images)


def _checked_tilts(
    stack: torch.Tensor, tilt_angles_deg: torch.Tensor | list[float], stretch: bool
) -> torch.Tensor:
    """Validate the stack and tilt angles; return the angles as a float64 CPU tensor."""
    if stack.dim() != 3:
        raise ValueError(f"stack must have shape (n, h, w), got {tuple(stack.shape)}")
    n = stack.shape[0]
    if n < 2:
        raise ValueError("a tilt series needs at least 2 views")
    tilts = torch.as_tensor(tilt_angles_deg, dtype=torch.float64).to("cpu").reshape(-1)
    if tilts.numel() != n:
        raise ValueError(f"got {tilts.numel()} tilt angles for {n} views")
    if not bool(torch.isfinite(tilts).all()):
        raise ValueError("tilt angles must be finite")
    if stretch and float(tilts.abs().max()) > _MAX_STRETCH_TILT_DEG:
        raise ValueError(
            f"cosine stretching needs |tilt| ≤ {_MAX_STRETCH_TILT_DEG}°, got {float(tilts.abs().max()):.1f}°; "
            "leave out those views or pass stretch=False"
        )
    return tilts


def _stretch_matrices(factors: torch.Tensor, tilt_axis_deg: float) -> torch.Tensor:
    """``(..., 2, 2)`` stretches by ``factors`` perpendicular to the tilt axis: ``R(α)·diag(k, 1)·R(α)ᵀ``."""
    rot = rotation_2d(torch.tensor(tilt_axis_deg, dtype=torch.float64)).to(factors.device)
    diag = torch.zeros((*factors.shape, 2, 2), dtype=torch.float64, device=factors.device)
    diag[..., 0, 0] = factors
    diag[..., 1, 1] = 1.0
    return rot @ diag @ rot.T


def _as_xf(linear: torch.Tensor, shift_xy: torch.Tensor) -> torch.Tensor:
    return torch.cat([linear, shift_xy.reshape(2, 1)], dim=-1)


class _Correlator:
    """Tapers, pads, filters and correlates working images (binned pixels) of one shape."""

    def __init__(
        self,
        shape_yx: tuple[int, int],
        padded_yx: tuple[int, int],
        taper_yx: tuple[int, int],
        filter_params: dict[str, float],
        max_shift_px: float | None,
        exclude_central_peak: bool,
        tilt_axis_deg: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.shape = shape_yx
        self.padded = padded_yx
        self.offset = ((padded_yx[0] - shape_yx[0]) // 2, (padded_yx[1] - shape_yx[1]) // 2)
        wy = _taper_weights(shape_yx[0], taper_yx[0], dtype=dtype, device=device)
        wx = _taper_weights(shape_yx[1], taper_yx[1], dtype=dtype, device=device)
        self.taper = wy[:, None] * wx[None, :]
        fy = torch.fft.fftfreq(padded_yx[0], dtype=dtype, device=device)
        fx = torch.fft.rfftfreq(padded_yx[1], dtype=dtype, device=device)
        radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        self.filter = imod_filter(radius, **filter_params)
        alpha = math.radians(tilt_axis_deg)
        self.across_axis = fx[None, :] * math.cos(alpha) + fy[:, None] * math.sin(alpha)  # f · (cos α, sin α)
        # Weights of the half spectrum in sums over the full spectrum (Parseval).
        column_weight = torch.full_like(fx, 2.0)
        column_weight[0] = 1.0
        if padded_yx[1] % 2 == 0:
            column_weight[-1] = 1.0
        self.parseval = self.filter * column_weight[None, :]
        self.max_shift_px = max_shift_px
        lag_y = torch.fft.fftfreq(padded_yx[0], d=1.0 / padded_yx[0], dtype=dtype, device=device)
        lag_x = torch.fft.fftfreq(padded_yx[1], d=1.0 / padded_yx[1], dtype=dtype, device=device)
        lag = torch.sqrt(lag_y[:, None] ** 2 + lag_x[None, :] ** 2)
        self.central = lag <= _CENTRAL_PEAK_RADIUS_PX if exclude_central_peak else None

    def spectrum(self, image: torch.Tensor) -> torch.Tensor:
        """rfft of the image with its mean removed, tapered to 0 at the edges and zero-padded."""
        centred = (image - image.mean()) * self.taper
        padded = centred.new_zeros(self.padded)
        oy, ox = self.offset
        padded[oy : oy + self.shape[0], ox : ox + self.shape[1]] = centred
        return torch.fft.rfftn(padded, dim=(-2, -1))

    def peak(
        self, reference: torch.Tensor, moving: torch.Tensor, parallax_sigma_px: float = 0.0
    ) -> tuple[torch.Tensor, float]:
        """Shift ``(x, y)`` (binned px) moving ``moving`` onto ``reference``, and the normalised peak value.

        ``parallax_sigma_px`` > 0 smooths the correlation across the tilt axis by a Gaussian of that SD.
        """
        weight = self.parseval
        product = reference * moving.conj() * self.filter
        if parallax_sigma_px > 0:
            smoothing = torch.exp(-2.0 * (math.pi * parallax_sigma_px * self.across_axis) ** 2)
            product = product * smoothing
            weight = weight * smoothing
        cc = torch.fft.irfftn(product, s=self.padded, dim=(-2, -1))
        if self.central is not None:
            cc = torch.where(self.central, cc.min(), cc)
        shift = find_peak_2d(cc, max_shift_px=self.max_shift_px)
        iy = int(torch.round(shift[1])) % self.padded[0]
        ix = int(torch.round(shift[0])) % self.padded[1]
        norm = torch.sqrt((weight * reference.abs().square()).sum() * (weight * moving.abs().square()).sum())
        value = float(cc[iy, ix] * (self.padded[0] * self.padded[1]) / norm) if float(norm) > 0 else 0.0
        return shift, value


def _widths_yx(
    given: tuple[int, int] | None, used_yx: tuple[int, int], fraction: float, upper: int
) -> tuple[int, int]:
    """Pad/taper widths as ``(y, x)``: ``given`` ``(x, y)``, or tiltxcorr's ``max(5, min(upper, fraction·size))``."""
    if given is not None:
        if len(given) != 2 or min(given) < 0:
            raise ValueError(f"pad and taper widths must be two integers ≥ 0 (x, y), got {given}")
        return int(given[1]), int(given[0])
    return max(5, min(upper, round(fraction * used_yx[0]))), max(5, min(upper, round(fraction * used_yx[1])))


def coarse_align(
    stack: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    tilt_axis_deg: float,
    *,
    pixel_size_angstrom: float | None = None,
    sigma1: float = 0.03,
    sigma2: float = 0.05,
    radius1: float = 0.0,
    radius2: float = 0.25,
    cumulative_reference: bool = False,
    stretch: bool = True,
    binning: int | None = None,
    trim_px: tuple[int, int] = (0, 0),
    pad_px: tuple[int, int] | None = None,
    taper_px: tuple[int, int] | None = None,
    max_shift_px: float | None = None,
    exclude_central_peak: bool = False,
    reference_index: int | None = None,
    zero_mean: bool = False,
    specimen_thickness_px: float | None = None,
    erase_outliers_sd: float | None = None,
) -> CoarseAlignment:
    """Translational alignment of a tilt series by cosine-stretched cross-correlation (IMOD ``tiltxcorr``).

    Parameters
    ----------
    stack
        ``(n, h, w)`` raw tilt images, any order (sorted internally by tilt angle).
    tilt_angles_deg
        ``(n,)`` tilt angles θ in degrees.
    tilt_axis_deg
        Tilt-axis angle α of the raw images in degrees (from +Y, counter-clockwise; IMOD ``RotationAngle``).
    pixel_size_angstrom
        Pixel size of ``stack``; only recorded in the result (for :attr:`CoarseAlignment.shifts_xy_angstrom`).
    sigma1, sigma2, radius1, radius2
        IMOD filter of the correlation (:func:`imod_filter`), in cycles per pixel **of the binned images the
        correlation runs on** (as tiltxcorr). Defaults: the tutorial's 0.03, 0.05, 0, 0.25.
    cumulative_reference
        Correlate each view with the sum of all views aligned so far (``-CumulativeCorrelation``), each brought into
        the geometry of the neighbour by its alignment and cosine stretch; the sum is normalised by how many views
        cover each pixel.
    stretch
        Apply the cosine stretch (``False``: ``-NoCosineStretch``).
    binning
        Binning for the correlation (Fourier cropping); default as tiltxcorr, the smallest factor that brings the
        padded image to ≤ 1180 pixels (at most 8).
    trim_px
        Pixels ``(x, y)`` left out on each side (``-BordersInXandY``).
    pad_px, taper_px
        Padding and taper widths ``(x, y)`` in unbinned pixels; defaults as tiltxcorr: 5 % of the used size (5 to
        20 px) and 10 % (5 to 100 px).
    max_shift_px
        Largest relative shift between neighbours searched, per axis, in input pixels (``-ShiftLimitsXandY``); the
        integer peak is searched within it, the sub-pixel fit may move it by less than a pixel more.
    exclude_central_peak
        Ignore correlation peaks within 1.1 binned pixels of zero shift (fixed-pattern noise, ``-ExcludeCentralPeak``).
    reference_index
        Stack index of the reference view; default the view of smallest ``|θ|``.
    zero_mean
        Move the tilt axis within the specimen so that the shifts average to zero over the views, as tiltxcorr's
        output after ``xftoxg -NumberToFit 0``; default: the reference view keeps the identity.
    specimen_thickness_px
        Not in tiltxcorr. Thickness ``T`` of the specimen in input pixels: each correlation is smoothed across the
        tilt axis by a Gaussian of SD ``(T/2)·|sin(θᵢ − θ_j)| / cos θᵢ``, the parallax between the two views of
        material at ``±T/2``, so that the peak is the centre of all layers, not the single strongest one (e.g. a
        surface crowded with gold). Thick specimens drift much less view to view with it.
    erase_outliers_sd
        Not in tiltxcorr. Before correlating, pixels of the binned images further than this many robust SDs
        (1.4826 · median absolute deviation) from the median, and their 2-pixel neighbourhood, are replaced by the
        median: gold beads and X-rays then no longer dominate the correlation (4 is a good value).

    Returns
    -------
    CoarseAlignment
        Per-view transforms ``xf`` (``aligned − c = raw − c + d``, ``c = N // 2``; applying them with
        :func:`tomoforge.alignment.transform.transform_images` aligns the views), measured relative shifts, peak
        values, neighbours and stretch factors, all in stack order.

    Raises
    ------
    ValueError
        For malformed input, a tilt beyond ±82° with cosine stretching, or a trim that leaves too little image.

    Notes
    -----
    The shifts are exact for a specimen layer at the height of the tomogram centre; material at other heights moves
    by its parallax, so a thick specimen is registered at the height of whatever dominates each correlation
    (``specimen_thickness_px`` and ``erase_outliers_sd`` make that height consistent from view to view). When the
    reference is a neighbour of higher ``|θ|`` (a custom ``reference_index``), the neighbour is stretched by
    ``1/k`` instead, as tiltxcorr does, except with a cumulative reference.
    """
    tilts = _checked_tilts(stack, tilt_angles_deg, stretch)
    n, h, w = stack.shape
    if not math.isfinite(tilt_axis_deg):
        raise ValueError(f"tilt_axis_deg must be finite, got {tilt_axis_deg}")
    for name, value in (("pixel_size_angstrom", pixel_size_angstrom), ("max_shift_px", max_shift_px)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if specimen_thickness_px is not None and not specimen_thickness_px >= 0:
        raise ValueError(f"specimen_thickness_px must be ≥ 0, got {specimen_thickness_px}")
    if erase_outliers_sd is not None and not erase_outliers_sd > 0:
        raise ValueError(f"erase_outliers_sd must be positive, got {erase_outliers_sd}")
    filter_params = {"sigma1": sigma1, "sigma2": sigma2, "radius1": radius1, "radius2": radius2}
    imod_filter(torch.zeros(1), **filter_params)  # validates
    if len(trim_px) != 2 or min(trim_px) < 0:
        raise ValueError(f"trim_px must be two integers ≥ 0 (x, y), got {trim_px}")
    trim_y, trim_x = int(trim_px[1]), int(trim_px[0])
    used_yx = (h - 2 * trim_y, w - 2 * trim_x)
    if min(used_yx) < 24:
        raise ValueError(f"trim_px {trim_px} leaves {used_yx[::-1]} pixels (x, y); at least 24 are needed")
    pad_yx = _widths_yx(pad_px, used_yx, 0.05, 20)
    taper_yx = _widths_yx(taper_px, used_yx, 0.1, 100)
    if binning is None:
        largest = max(used_yx[0] + 2 * pad_yx[0], used_yx[1] + 2 * pad_yx[1])
        binning = min(_MAX_AUTO_BINNING, -(-largest // _MAX_CORRELATION_SIZE))
    if isinstance(binning, bool) or int(binning) != binning or binning < 1:
        raise ValueError(f"binning must be a positive integer, not {binning!r}")
    binning = int(binning)
    ref = int(torch.argmin(tilts.abs())) if reference_index is None else int(reference_index)
    if not 0 <= ref < n:
        raise ValueError(f"reference_index {reference_index} is outside the stack of {n} views")

    # Working images: the central region whose binned centre is the image centre N // 2, binned.
    y0, m_h = _working_region(h, trim_y, binning)
    x0, m_w = _working_region(w, trim_x, binning)
    if min(m_h, m_w) < 16:
        raise ValueError(f"binning {binning} leaves fewer than 16 pixels to correlate")
    real = stack if stack.is_floating_point() else stack.to(torch.float32)
    work = fourier_bin_2d(real[:, y0 : y0 + binning * m_h, x0 : x0 + binning * m_w], binning)
    if erase_outliers_sd is not None:
        work = _erase_outliers(work, erase_outliers_sd)
    device, dtype = work.device, work.dtype
    padded_yx = (
        fast_fft_size(-(-(binning * m_h + 2 * pad_yx[0]) // binning)),
        fast_fft_size(-(-(binning * m_w + 2 * pad_yx[1]) // binning)),
    )
    correlator = _Correlator(
        (m_h, m_w),
        padded_yx,
        (taper_yx[0] // binning, taper_yx[1] // binning),
        filter_params,
        None if max_shift_px is None else max_shift_px / binning,
        exclude_central_peak,
        tilt_axis_deg,
        dtype,
        device,
    )

    cosines = torch.cos(torch.deg2rad(tilts))
    order = torch.argsort(tilts, stable=True).tolist()
    ref_pos = order.index(ref)
    # Shifts s (where the tomogram centre projects, input px), gauge s_ref = 0; float64 on the CPU.
    centre_shift = torch.zeros((n, 2), dtype=torch.float64)
    relative = torch.zeros((n, 2), dtype=torch.float64)
    peaks = torch.full((n,), float("nan"), dtype=torch.float64)
    neighbours = torch.full((n,), -1, dtype=torch.long)
    factors = torch.ones(n, dtype=torch.float64)

    for step in (1, -1):
        positions = range(ref_pos + step, n if step > 0 else -1, step)
        total = work[ref].clone()
        coverage = torch.ones_like(total)
        for pos in positions:
            i, j = order[pos], order[pos - step]
            k = float(cosines[j] / cosines[i]) if stretch else 1.0
            s_matrix = _stretch_matrices(torch.tensor(k, dtype=torch.float64), tilt_axis_deg)
            reference_image = total / coverage if cumulative_reference else work[j]
            zero = torch.zeros(2, dtype=torch.float64)
            blur = 0.0
            if specimen_thickness_px:
                dtheta = math.radians(float(tilts[i] - tilts[j]))
                blur = 0.5 * specimen_thickness_px * abs(math.sin(dtheta)) / max(abs(float(cosines[i])), 0.05)
                blur /= binning
            if k >= 1.0 or cumulative_reference:
                moving = transform_images(work[i], _as_xf(s_matrix, zero)) if k != 1.0 else work[i]
                spectra = correlator.spectrum(reference_image), correlator.spectrum(moving)
                shift, value = correlator.peak(*spectra, blur)
                p = shift.to(torch.float64).cpu() * binning
                centre_shift[i] = torch.linalg.solve(s_matrix, centre_shift[j] - p)
            else:  # stretch the neighbour by 1/k (> 1) instead, as tiltxcorr
                inverse = torch.linalg.inv(s_matrix)
                stretched = transform_images(reference_image, _as_xf(inverse, zero))
                spectra = correlator.spectrum(stretched), correlator.spectrum(work[i])
                shift, value = correlator.peak(*spectra, blur)
                p = shift.to(torch.float64).cpu() * binning
                centre_shift[i] = inverse @ centre_shift[j] - p
            relative[i], peaks[i], neighbours[i], factors[i] = p, value, j, k
            if cumulative_reference:
                # Bring the running sum from view j's geometry into view i's: r_i = s_i + T·(r_j − s_j).
                t_matrix = _stretch_matrices(
                    torch.tensor(1.0 / k if stretch else 1.0, dtype=torch.float64), tilt_axis_deg
                )
                t_shift = (centre_shift[i] - t_matrix @ centre_shift[j]) / binning
                xf_ji = _as_xf(t_matrix, t_shift)
                total = transform_images(total, xf_ji, fill=0.0) + work[i]
                coverage = transform_images(coverage, xf_ji, fill=0.0).clamp_min(0.0) + 1.0

    if zero_mean and stretch:
        rot = rotation_2d(torch.tensor(tilt_axis_deg, dtype=torch.float64))
        in_axis_frame = centre_shift @ rot  # rows Rᵀ·s: (across the axis, along the axis)
        delta_across = -float(in_axis_frame[:, 0].mean() / cosines.mean())
        delta_along = -float(in_axis_frame[:, 1].mean())
        move = torch.stack([delta_across * cosines, torch.full_like(cosines, delta_along)], dim=-1)
        centre_shift = centre_shift + move @ rot.T
    elif zero_mean:
        centre_shift = centre_shift - centre_shift.mean(dim=0)

    xf = torch.zeros((n, 2, 3), dtype=torch.float64)
    xf[:, 0, 0] = 1.0
    xf[:, 1, 1] = 1.0
    xf[:, :, 2] = -centre_shift
    return CoarseAlignment(
        xf=xf.to(device),
        relative_shifts_xy_px=relative.to(device),
        peak_values=peaks.to(device),
        neighbour_index=neighbours.to(device),
        stretch_factors=factors.to(device),
        reference_index=ref,
        binning=binning,
        pixel_size_angstrom=pixel_size_angstrom,
    )
