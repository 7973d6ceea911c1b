"""Patch tracking for tilt series without gold: IMOD's ``tiltxcorr`` patch mode (+ ``imodchopconts``).

A grid of overlapping square patches is laid on the reference (zero-tilt) view inside a border, and each patch
centre is followed outwards through the views sorted by tilt angle, one side of the reference at a time, all
patches of a step as one batch. For the step from view ``j`` (tracked) to its neighbour ``i``:

1. **Prediction.** In the frame of the coarse alignment (tilt axis through the image centre of every view) a
   specimen point ``(x, y, z)`` projects to ``u = x cos θ + z sin θ`` across the axis and ``v = y`` along it
   (CONVENTIONS.md §7). ``x`` and the height ``z`` fitted to the patch's latest positions predict view ``i``,
   parallax included; the coarse transform of view ``i`` maps the prediction to raw pixels.
2. **Correlation.** The patch of view ``j`` is cut around its tracked position and view ``i`` is sampled around
   the prediction on the same grid stretched across the axis by ``cos θᵢ / cos θⱼ`` (tiltxcorr's cosine stretch,
   done by sampling, so both patches cover the same specimen area). Both are tapered, padded and correlated
   through IMOD's band-pass filter (``FilterSigma1``, ``FilterRadius2``, ``FilterSigma2``); the sub-pixel peak
   corrects the position. **Iterating** (``-IterateCorrelations``) samples view ``i`` again at the corrected
   position: a single correlation of windowed patches is pulled towards zero shift (by a few per cent, by up
   to a quarter where part of a patch lies beyond the image).
3. **Ending.** A contour ends (NaN from there outwards) where more than a quarter of its patch leaves the image
   less the border, where the normalised peak is not significant (below ``min_peak_sd`` noise SDs), or, beyond
   tiltxcorr, where the new position strays more than ``max_residual_px`` from the one specimen point fitted to
   all earlier positions of the contour. The median of those deviations over the patches of a view corrects the
   view's coarse shift first, so that the test sees the patch's own motion.

The last test matters on real specimens. The tracked point of a patch is the centre of whatever dominates its
correlations; where that is not a point — the silhouette of a large vesicle or virus slides over its surface as
the tilt changes, a patch switches between layers — the contour is no longer one specimen point. IMOD cuts
contours into short overlapping pieces (``imodchopconts -LengthOfPieces L -MinimumOverlap 4``, available here as
``chunk_views``), but short pieces leave the bundle adjustment free to absorb a smooth sliding into the view
shifts (a drift ``c·(1 − cos θ)`` is locally a height). On the simulator's demo series (512² at 5.4 Å, three
~1200 Å virus particles, gold on both surfaces; coarse alignment alone 1.4 px from the truth) whole contours
without the test gave 9 px, pieces of 8–14 views 2.2–2.6 px, and whole contours ended at the first
inconsistency 0.8 px (0.7 px with ``max_residual_px=4``).

References
----------
Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011 (patch tracking with tiltxcorr, chopped contours).

Guckenberger, R. (1982). Determination of a common origin in the micrographs of tilt series in three-dimensional
electron microscopy. Ultramicroscopy 9, 167–173 (cosine-stretched correlation of neighbouring views).

Keys, R. (1981). Cubic convolution interpolation for digital image processing. IEEE Trans. Acoust. Speech Signal
Process. 29, 1153–1160. doi:10.1109/TASSP.1981.1163711 (the interpolation kernel and its bias for ``a ≠ −½``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from tomoforge.alignment.coarse import _checked_tilts, imod_filter
from tomoforge.fourier import fast_fft_size
from tomoforge.geometry import rotation_2d
from tomoforge.motion import find_peak_2d

__all__ = ["PatchTracks", "chop_contours", "track_patches"]

_IMOD_PATCH_PX = 680
"""tiltxcorr ``-SizeOfPatchesXandY`` of the tutorial (Scipion's default)."""
_IMOD_TRIM_PX = 40
"""tiltxcorr ``-BordersInXandY`` of the tutorial, for patches of ``_IMOD_PATCH_PX``."""
_MAX_PATCH_FRACTION = 0.125
"""Default patches are at most this fraction of the smaller image side, so that small images get a grid."""
_MIN_DEFAULT_PATCH_PX = 64
"""Smallest default patch (smaller patches hold too little signal to correlate reliably)."""
_MIN_PATCH_PX = 16
_FIT_VIEWS = 6
"""Tracked views (the latest ones) to which the position across the axis and the height are fitted."""
_MIN_FIT_SPAN_DEG = 2.0
"""Smallest tilt range of those views for which the height is fitted (below it the height is taken as 0)."""
_TAPER_FRACTION = 0.1
_MIN_SHIFT_VOTERS = 3
"""Fewest consistent patches whose median deviation corrects a view's shift."""
_MAX_OUTSIDE = 0.25
"""Fraction of a patch's side that may lie beyond the image less the border (weighted out of the correlation)."""
_MIN_CHAIN_VIEWS = 3
"""Contours (and pieces) with fewer points give no chain (the bundle adjustment needs 3)."""


@dataclass(frozen=True, eq=False)
class PatchTracks:
    """Result of :func:`track_patches`; ``n`` views in stack order, ``p`` patches, ``c`` chains (pieces)."""

    points_xy_px: torch.Tensor
    """``(c, n, 2)`` chains: tracked positions ``(x, y)`` in raw 0-based pixel coordinates (column, row), NaN where
    a chain has no point; the input of :func:`tomoforge.alignment.bundle.fiducial_align`."""
    peak_values: torch.Tensor
    """``(c, n)`` normalised filtered cross-correlation coefficient that placed each point (NaN where there is no
    point and at the reference view, where contours start)."""
    chain_contour: torch.Tensor
    """``(c,)`` index of the patch contour each chain was cut from."""
    contours_xy_px: torch.Tensor
    """``(p, n, 2)`` whole contours before chopping, NaN where a patch was not tracked."""
    contour_peak_values: torch.Tensor
    """``(p, n)`` peak values of the contours."""
    reference_view: int
    """Stack index of the view the patch grid was laid on."""
    patch_size_xy: tuple[int, int]
    """Patch size ``(x, y)`` in pixels."""
    border_xy: tuple[int, int]
    """Border ``(x, y)`` in pixels that patches were kept out of."""
    noise_peak_sd: float
    """Standard deviation of the peak coefficient between unrelated white-noise patches at one lag."""

    @property
    def n_chains(self) -> int:
        """Number of chains."""
        return int(self.points_xy_px.shape[0])

    def tracked_views(self) -> torch.Tensor:
        """``(p,)`` number of views in which each patch was tracked (the reference included)."""
        return torch.isfinite(self.contours_xy_px[..., 0]).sum(dim=-1)


def _taper_window(size_yx: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(ph, pw)`` separable linear ramp from the edges over ``_TAPER_FRACTION`` of each side (1 inside)."""
    out = []
    for length in size_yx:
        taper = max(2, round(_TAPER_FRACTION * length))
        i = torch.arange(length, dtype=dtype, device=device)
        distance = torch.minimum(i, length - 1 - i)
        out.append(((distance + 1.0) / (taper + 1.0)).clamp(max=1.0))
    return out[0][:, None] * out[1][None, :]


class _PatchCorrelator:
    """Tapers, pads, filters and correlates batches of patches of one size."""

    def __init__(
        self,
        size_yx: tuple[int, int],
        max_shift_px: float,
        filter_params: dict[str, float],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.size = size_yx
        pad = [math.ceil(max_shift_px / 2) + 2 for _ in size_yx]  # linear correlation up to 2·pad lags
        self.padded = (fast_fft_size(size_yx[0] + 2 * pad[0]), fast_fft_size(size_yx[1] + 2 * pad[1]))
        self.offset = ((self.padded[0] - size_yx[0]) // 2, (self.padded[1] - size_yx[1]) // 2)
        self.window = _taper_window(size_yx, dtype=dtype, device=device)
        fy = torch.fft.fftfreq(self.padded[0], dtype=dtype, device=device)
        fx = torch.fft.rfftfreq(self.padded[1], dtype=dtype, device=device)
        self.filter = imod_filter(torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2), **filter_params)
        column_weight = torch.full_like(fx, 2.0)  # half-spectrum weights of sums over the full spectrum
        column_weight[0] = 1.0
        if self.padded[1] % 2 == 0:
            column_weight[-1] = 1.0
        self.parseval = self.filter * column_weight[None, :]
        self.max_shift_px = max_shift_px
        # SD of the coefficient at one lag between independent white-noise patches: √(N·Σf²)/(Σf·√P), with the
        # sums over the full padded spectrum (N samples) and P = (ΣW²)²/ΣW⁴ the effective patch area.
        n_padded = self.padded[0] * self.padded[1]
        area = float(self.window.square().sum() ** 2 / self.window.pow(4).sum())
        sum_f = float((self.filter * column_weight[None, :]).sum())
        sum_f2 = float((self.filter.square() * column_weight[None, :]).sum())
        self.noise_sd = math.sqrt(n_padded * sum_f2) / (sum_f * math.sqrt(area)) if sum_f > 0 else math.inf

    def spectra(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """rfft of ``(q, ph, pw)`` patches and their filtered energies.

        Each patch has its (weighted) mean removed, is multiplied by the taper and the optional ``(q, ph, pw)``
        weights (soft masks of the samples inside the image), and is zero-padded.
        """
        window = self.window if weights is None else self.window * weights
        mean = (patches * window).sum(dim=(-2, -1), keepdim=True) / window.sum(
            dim=(-2, -1), keepdim=True
        ).clamp_min(torch.finfo(patches.dtype).tiny)
        centred = (patches - mean) * window
        oy, ox = self.offset
        padded = F.pad(
            centred,
            (ox, self.padded[1] - self.size[1] - ox, oy, self.padded[0] - self.size[0] - oy),
        )
        spectrum = torch.fft.rfftn(padded, dim=(-2, -1))
        energy = (self.parseval * spectrum.abs().square()).sum(dim=(-2, -1))
        return spectrum, energy

    def peaks(
        self,
        reference: tuple[torch.Tensor, torch.Tensor],
        moving: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift ``t`` ``(q, 2)`` with ``moving(g) ≈ reference(g − t)``, and the normalised peak values ``(q,)``."""
        cc = torch.fft.irfftn(reference[0].conj() * moving[0] * self.filter, s=self.padded, dim=(-2, -1))
        shift = find_peak_2d(cc, max_shift_px=self.max_shift_px)
        iy = torch.round(shift[:, 1]).long() % self.padded[0]
        ix = torch.round(shift[:, 0]).long() % self.padded[1]
        value = cc.flatten(-2).gather(-1, (iy * self.padded[1] + ix)[:, None])[:, 0]
        norm = torch.sqrt(reference[1] * moving[1]).clamp_min(torch.finfo(cc.dtype).tiny)
        return shift, value * (self.padded[0] * self.padded[1]) / norm


def _cubic_bias_free(coordinates: torch.Tensor) -> torch.Tensor:
    """Coordinates at which ``grid_sample``'s bicubic kernel returns the image at ``coordinates``.

    PyTorch's cubic convolution (``a = −¾``) sampled at fractional offset ``t`` returns, for smooth content, the
    image at ``t + e(t)`` with ``e(t) = −½·t·(1 − t)·(2t − 1)`` (up to 0.048 px; Keys' ``a = −½`` has ``e = 0``).
    Solving ``t' + e(t') = t`` by fixed-point iteration removes that bias.
    """
    whole = torch.floor(coordinates)
    t = coordinates - whole
    solved = t
    for _ in range(2):  # leaves < 0.003 px
        solved = t + 0.5 * solved * (1.0 - solved) * (2.0 * solved - 1.0)
    return whole + solved


def _sample_patches(
    image: torch.Tensor,
    centres_xy: torch.Tensor,
    offsets_xy: torch.Tensor,
    region_xy: tuple[float, float, float, float],
    ramp_px: float,
    *,
    integer_offsets: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Samples ``(q, ph, pw)`` of ``image`` ``(h, w)`` at ``centres_xy (q, 2) + offsets_xy (ph, pw, 2)``.

    Bicubic interpolation without the half-pixel-dependent shift of ``grid_sample``'s kernel
    (:func:`_cubic_bias_free`); beyond the image the edge repeats. Also returns ``(q, ph, pw)`` weights that
    fall linearly from 1 at ``ramp_px`` inside ``region_xy = (x_lo, y_lo, x_hi, y_hi)`` to 0 at its edge (None
    when every patch lies that far inside). ``integer_offsets`` says that the offsets are whole pixels (an
    unstretched patch), which makes the correction one per patch.
    """
    h, w = image.shape
    dtype = image.dtype
    if integer_offsets:  # the fractional part, hence the correction, is that of the centre
        pos = _cubic_bias_free(centres_xy).to(dtype)[:, None, None, :] + offsets_xy.to(dtype)[None]
    else:
        pos = _cubic_bias_free(centres_xy.to(dtype)[:, None, None, :] + offsets_xy.to(dtype)[None])
    q, ph, pw = pos.shape[:3]
    low = centres_xy + offsets_xy.flatten(0, 1).amin(dim=0)  # (q, 2) footprint corners
    high = centres_xy + offsets_xy.flatten(0, 1).amax(dim=0)
    bounds = torch.tensor(region_xy, dtype=low.dtype, device=low.device)
    if bool(((low >= bounds[:2] + ramp_px) & (high <= bounds[2:] - ramp_px)).all()):
        weights = None
    else:  # ramps from 0 at the region's edge to 1 at ramp_px inside it
        x, y = pos[..., 0], pos[..., 1]
        weights = (
            ((x - region_xy[0]) / ramp_px).clamp(0.0, 1.0)
            * ((region_xy[2] - x) / ramp_px).clamp(0.0, 1.0)
            * ((y - region_xy[1]) / ramp_px).clamp(0.0, 1.0)
            * ((region_xy[3] - y) / ramp_px).clamp(0.0, 1.0)
        )
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=dtype, device=image.device)
    grid = (pos * scale - 1.0).reshape(1, q * ph, pw, 2)
    out = F.grid_sample(image[None, None], grid, mode="bicubic", padding_mode="border", align_corners=True)
    return out.reshape(q, ph, pw), weights


def _product(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Product of two optional weights (None is all ones)."""
    return b if a is None else a if b is None else a * b


def _inside(centres_xy: torch.Tensor, corners_xy: torch.Tensor, region_xy: tuple[float, ...]) -> torch.Tensor:
    """``(q,)`` whether every corner of each patch footprint lies in ``region_xy = (x_lo, y_lo, x_hi, y_hi)``."""
    pos = centres_xy[:, None, :] + corners_xy[None]
    x, y = pos[..., 0], pos[..., 1]
    ok = (x >= region_xy[0]) & (y >= region_xy[1]) & (x <= region_xy[2]) & (y <= region_xy[3])
    return ok.all(dim=-1)


def _grid_positions(length: int, border: int, patch: int, overlap: float) -> list[int]:
    """Patch centres along one axis: evenly spread, overlapping by at least ``overlap``, inside the border."""
    first = border + patch // 2
    last = length - border - (patch - patch // 2)
    if last < first:
        return []
    step = patch * (1.0 - overlap)
    count = 1 if last == first else math.ceil((last - first) / step - 1e-9) + 1
    if count == 1:
        return [(first + last) // 2]
    return [round(first + k * (last - first) / (count - 1)) for k in range(count)]


def chop_contours(
    points_xy_px: torch.Tensor,
    *,
    length_views: int,
    overlap_views: int = 4,
    view_order: torch.Tensor | list[int] | None = None,
    min_views: int = _MIN_CHAIN_VIEWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut contours into overlapping pieces of equal length (``imodchopconts -LengthOfPieces -MinimumOverlap``).

    A contour of ``N`` points longer than ``length_views`` becomes ``k = ⌈(N − O) / (L − O)⌉`` pieces of
    ``ℓ = ⌈(N + (k − 1)·O) / k⌉ ≤ L`` consecutive points whose starts are spread evenly, so that successive pieces
    share at least ``O`` points; shorter contours stay whole.

    Parameters
    ----------
    points_xy_px
        ``(p, n, 2)`` contours, NaN where a contour has no point.
    length_views
        Largest number of points ``L`` in a piece.
    overlap_views
        Least number of points ``O`` two successive pieces share (``0 ≤ O < L``).
    view_order
        ``(n,)`` view indices in the order along which contours run (tilt angle); default the stack order.
    min_views
        Contours with fewer points are dropped.

    Returns
    -------
    tuple of torch.Tensor
        ``(c,)`` contour index of each piece and ``(c, n)`` bool mask of the views (stack order) it holds.
    """
    if points_xy_px.dim() != 3 or points_xy_px.shape[-1] != 2:
        raise ValueError(f"points_xy_px must have shape (p, n, 2), got {tuple(points_xy_px.shape)}")
    n = points_xy_px.shape[1]
    if int(length_views) != length_views or length_views < 1:
        raise ValueError(f"length_views must be a positive integer, got {length_views}")
    if int(overlap_views) != overlap_views or not 0 <= overlap_views < length_views:
        raise ValueError(f"overlap_views must be an integer in [0, length_views), got {overlap_views}")
    order = list(range(n)) if view_order is None else [int(v) for v in view_order]
    if sorted(order) != list(range(n)):
        raise ValueError(f"view_order must be a permutation of the {n} views")
    valid = torch.isfinite(points_xy_px).all(dim=-1)[:, order].cpu()
    contour_index: list[int] = []
    masks: list[torch.Tensor] = []
    for c in range(points_xy_px.shape[0]):
        present = torch.nonzero(valid[c]).flatten().tolist()
        count = len(present)
        if count < max(1, min_views):
            continue
        if count <= length_views:
            starts, piece = [0], count
        else:
            k = math.ceil((count - overlap_views) / (length_views - overlap_views))
            piece = math.ceil((count + (k - 1) * overlap_views) / k)
            starts = [round(m * (count - piece) / (k - 1)) for m in range(k)]
        for s in starts:
            mask = torch.zeros(n, dtype=torch.bool)
            mask[[order[v] for v in present[s : s + piece]]] = True
            contour_index.append(c)
            masks.append(mask)
    device = points_xy_px.device
    if not masks:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(
            (0, n), dtype=torch.bool, device=device
        )
    return torch.tensor(contour_index, dtype=torch.long, device=device), torch.stack(masks).to(device)


def _checked_inputs(
    stack: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    tilt_axis_deg: float,
    coarse_xf: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate; return the tilt angles (float64, CPU) and the ``(n, 2, 3)`` transforms (float64, CPU)."""
    tilts = _checked_tilts(stack, tilt_angles_deg, True)  # patches are always cosine-stretched
    n = stack.shape[0]
    if not math.isfinite(tilt_axis_deg):
        raise ValueError(f"tilt_axis_deg must be finite, got {tilt_axis_deg}")
    if coarse_xf is None:
        xf = torch.zeros((n, 2, 3), dtype=torch.float64)
        xf[:, 0, 0] = xf[:, 1, 1] = 1.0
    else:
        xf = torch.as_tensor(coarse_xf).to(device="cpu", dtype=torch.float64)
        if xf.shape != (n, 2, 3):
            raise ValueError(f"coarse_xf must have shape ({n}, 2, 3), got {tuple(xf.shape)}")
        if not bool(torch.isfinite(xf).all()) or bool((torch.linalg.det(xf[:, :, :2]).abs() < 1e-6).any()):
            raise ValueError("coarse_xf must hold finite, invertible transforms")
    return tilts, xf


def track_patches(
    stack: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    tilt_axis_deg: float,
    *,
    coarse_xf: torch.Tensor | None = None,
    patch_size_px: tuple[int, int] | int | None = None,
    overlap: float = 0.33,
    trim_px: tuple[int, int] | None = None,
    sigma1: float = 0.03,
    sigma2: float = 0.03,
    radius1: float = 0.0,
    radius2: float = 0.125,
    iterations: int = 2,
    min_peak: float = 0.0,
    min_peak_sd: float = 5.0,
    max_residual_px: float | None = None,
    max_shift_px: float | None = None,
    reference_index: int | None = None,
    chunk_views: int | None = None,
    chunk_overlap_views: int = 4,
) -> PatchTracks:
    """Track a grid of patches through a tilt series and cut the contours into chains (tiltxcorr patch tracking).

    Parameters
    ----------
    stack
        ``(n, h, w)`` raw tilt images in any order (contours run in order of tilt angle).
    tilt_angles_deg
        ``(n,)`` tilt angles θ in degrees (|θ| < 89°).
    tilt_axis_deg
        Tilt-axis angle α of the raw images in degrees (from +Y, counter-clockwise).
    coarse_xf
        ``(n, 2, 3)`` raw → aligned transforms about the centres ``N // 2`` (CONVENTIONS.md §6), e.g.
        :attr:`tomoforge.alignment.coarse.CoarseAlignment.xf`; they predict every view, so the views must be
        registered by them to within ``max_shift_px``. Default: identity (views already registered).
    patch_size_px
        Patch size ``(x, y)`` (or one number) in pixels; default tiltxcorr's 680, but at most an eighth of the
        smaller image side (rounded down to even; at least 64), so that binned images still get a fine grid.
    overlap
        Least fractional overlap of neighbouring patches in the grid (``-OverlapOfPatchesXandY``), in [0, 1).
    trim_px
        Border ``(x, y)`` in pixels that patches stay out of in every view (``-BordersInXandY``); default
        tiltxcorr's 40 scaled by ``patch / 680``.
    sigma1, sigma2, radius1, radius2
        IMOD filter of the correlations (:func:`tomoforge.alignment.coarse.imod_filter`) in cycles/pixel;
        defaults as the tutorial's patch tracking (0.03, 0.03, 0, 0.125).
    iterations
        Correlations per patch and view, each sampling the view again at the corrected position
        (``-IterateCorrelations``); ≥ 1.
    min_peak
        A contour ends where its normalised correlation coefficient falls below this value.
    min_peak_sd
        A contour also ends where the coefficient is below this many standard deviations of the coefficient
        between unrelated noise patches (:attr:`PatchTracks.noise_peak_sd`, from the patch size, taper and
        filter): the best of the ~10³ lags searched between two noise patches rarely exceeds 4.5 of them.
    max_residual_px
        Not in tiltxcorr. A contour also ends where its new position lies further than this from the one
        specimen point (position across the axis and height, position along it) fitted to all its earlier
        positions in the coarse alignment's geometry (once they span 2° of tilt): it stops where its patch's
        content no longer moves as one point, e.g. where it slides along the silhouette of a large sphere or
        switches between layers. Default an eighth of the smaller patch side (at least 2 pixels);
        ``math.inf`` turns the test off.
    max_shift_px
        Largest correction of the predicted position searched, per axis, in pixels; default a quarter of the
        smaller patch side.
    reference_index
        Stack index of the view the grid is laid on; default the view of smallest ``|θ|``.
    chunk_views
        Most points per chain when cutting contours into overlapping pieces (``imodchopconts
        -LengthOfPieces``); default (and any value ≥ ``n``) keeps whole contours, which ``max_residual_px``
        already keeps consistent with one specimen point (see the module notes on why that is preferred).
    chunk_overlap_views
        Points shared by successive chains of a contour (``-MinimumOverlap``).

    Returns
    -------
    PatchTracks
        Chains (raw pixel positions per view, NaN where absent, with their correlation peaks) ready for
        :func:`tomoforge.alignment.bundle.fiducial_align`, and the whole contours.

    Raises
    ------
    ValueError
        For malformed input or options, or an image too small for one patch.

    Notes
    -----
    Chains are raw-image positions (not coarse-aligned ones), so the bundle adjustment solves the whole alignment.
    Patches with nothing to track (empty ice) end at the first view as their peaks are not significant, so on
    sparse specimens many grid patches give no chain at all.
    """
    tilts, xf = _checked_inputs(stack, tilt_angles_deg, tilt_axis_deg, coarse_xf)
    n, h, w = stack.shape
    if patch_size_px is None:
        side = min(_IMOD_PATCH_PX, max(_MIN_DEFAULT_PATCH_PX, int(_MAX_PATCH_FRACTION * min(h, w))))
        patch_xy = (side - side % 2, side - side % 2)
    else:
        size = (patch_size_px,) * 2 if isinstance(patch_size_px, int) else tuple(patch_size_px)
        if len(size) != 2 or any(int(v) != v or v < _MIN_PATCH_PX for v in size):
            raise ValueError(f"patches must be at least {_MIN_PATCH_PX} pixels (x, y), got {patch_size_px!r}")
        patch_xy = (int(size[0]), int(size[1]))
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    default_border = round(_IMOD_TRIM_PX * min(patch_xy) / _IMOD_PATCH_PX)
    border = (default_border, default_border) if trim_px is None else (int(trim_px[0]), int(trim_px[-1]))
    if trim_px is not None and (len(trim_px) != 2 or min(trim_px) < 0):
        raise ValueError(f"trim_px must be two integers ≥ 0 (x, y), got {trim_px}")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not (math.isfinite(min_peak) and math.isfinite(min_peak_sd)):
        raise ValueError(f"min_peak and min_peak_sd must be finite, got {min_peak} and {min_peak_sd}")
    max_shift = min(patch_xy) / 4.0 if max_shift_px is None else float(max_shift_px)
    max_residual = max(2.0, min(patch_xy) / 8.0) if max_residual_px is None else float(max_residual_px)
    for name, value in (("max_shift_px", max_shift), ("max_residual_px", max_residual)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    filter_params = {"sigma1": sigma1, "sigma2": sigma2, "radius1": radius1, "radius2": radius2}
    imod_filter(torch.zeros(1), **filter_params)  # validates
    length = n if chunk_views is None else int(chunk_views)
    if chunk_views is not None and length <= chunk_overlap_views:
        raise ValueError(f"chunk_views ({length}) must exceed chunk_overlap_views ({chunk_overlap_views})")
    ref = int(torch.argmin(tilts.abs())) if reference_index is None else int(reference_index)
    if not 0 <= ref < n:
        raise ValueError(f"reference_index {reference_index} is outside the stack of {n} views")

    xs = _grid_positions(w, border[0], patch_xy[0], overlap)
    ys = _grid_positions(h, border[1], patch_xy[1], overlap)
    if not xs or not ys:
        raise ValueError(f"no patch of {patch_xy} pixels fits in {w}×{h} images with a border of {border}")
    images = stack if stack.dtype in (torch.float32, torch.float64) else stack.to(torch.float32)
    device = images.device
    settings = _Settings(
        patch_xy, border, int(iterations), min_peak, min_peak_sd, max_shift, max_residual, filter_params
    )
    grid_y, grid_x = torch.meshgrid(
        torch.tensor(ys, dtype=torch.float64), torch.tensor(xs, dtype=torch.float64), indexing="ij"
    )
    centres = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1).to(device)
    points, peaks, noise_sd = _track(images, tilts, tilt_axis_deg, xf, ref, centres, settings)
    order = torch.argsort(tilts, stable=True).tolist()
    overlap_views = chunk_overlap_views if length < n else 0
    index, mask = chop_contours(points, length_views=length, overlap_views=overlap_views, view_order=order)
    nan = torch.tensor(float("nan"), dtype=points.dtype, device=device)
    chains = torch.where(mask[..., None], points[index], nan)
    chain_peaks = torch.where(mask, peaks[index], nan)
    return PatchTracks(
        points_xy_px=chains,
        peak_values=chain_peaks,
        chain_contour=index,
        contours_xy_px=points,
        contour_peak_values=peaks,
        reference_view=ref,
        patch_size_xy=patch_xy,
        border_xy=border,
        noise_peak_sd=noise_sd,
    )


class _Settings(NamedTuple):
    """Validated options of :func:`track_patches` (pixels of the stack)."""

    patch_xy: tuple[int, int]
    border: tuple[int, int]
    iterations: int
    min_peak: float
    min_peak_sd: float
    max_shift: float
    max_residual: float
    filter_params: dict[str, float]


class _Geometry:
    """The coarse alignment's view of the specimen: raw pixels ↔ axis frame ``(u across, v along)``.

    In the aligned frame of the transforms a specimen point ``(x, y, z)`` projects to ``u = x cos θ + z sin θ``,
    ``v = y`` (the tilt axis through the image centre, as after ``coarse_align``).
    """

    def __init__(
        self, xf: torch.Tensor, tilts: torch.Tensor, tilt_axis_deg: float, ref: int, size_xy: tuple[int, int]
    ) -> None:
        device = xf.device
        self.centre = torch.tensor([size_xy[0] // 2, size_xy[1] // 2], dtype=torch.float64, device=device)
        self.linear = xf[:, :, :2]
        self.inverse = torch.linalg.inv(self.linear)
        self.shift = xf[:, :, 2].clone()
        # Axis angle β in the aligned frame (α for translations, 0 after a full alignment), from the reference.
        a = math.radians(tilt_axis_deg)
        axis = self.linear[ref] @ torch.tensor(
            [-math.sin(a), math.cos(a)], dtype=torch.float64, device=device
        )
        beta = math.degrees(math.atan2(-float(axis[0]), float(axis[1])))
        self.rot = rotation_2d(torch.tensor(beta, dtype=torch.float64)).to(device)  # columns: across, along
        self.tilts = tilts
        self.cos = torch.cos(torch.deg2rad(tilts)).to(device)
        self.sin = torch.sin(torch.deg2rad(tilts)).to(device)

    def to_axis(self, raw_xy: torch.Tensor) -> torch.Tensor:
        """``(q, n, 2)`` raw positions in all views → ``(u, v)``."""
        aligned = torch.einsum("nij,qnj->qni", self.linear, raw_xy - self.centre) + self.shift
        return aligned @ self.rot

    def view_to_axis(self, raw_xy: torch.Tensor, view: int) -> torch.Tensor:
        """``(q, 2)`` raw positions in one view → ``(u, v)``."""
        return ((raw_xy - self.centre) @ self.linear[view].T + self.shift[view]) @ self.rot

    def to_raw(self, uv: torch.Tensor, view: int) -> torch.Tensor:
        """``(q, 2)`` ``(u, v)`` in one view → raw positions."""
        return (uv @ self.rot.T - self.shift[view]) @ self.inverse[view].T + self.centre

    def local_map(self, i: int, j: int) -> torch.Tensor:
        """``(2, 2)`` map of small raw displacements from view ``j`` to view ``i``: the cosine stretch."""
        factor = self.cos[i] / self.cos[j]
        stretch = torch.diag(torch.stack([factor, torch.ones_like(factor)]))
        return self.inverse[i] @ self.rot @ stretch @ self.rot.T @ self.linear[j]

    def fit(self, uv: torch.Tensor, views: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, v)`` ``(q, 2)`` in view ``target`` of the point fitted to ``uv`` ``(q, n, 2)`` at ``views``.

        ``x`` and the height ``z`` are fitted to ``u`` by least squares and ``v`` is averaged over the views
        (``(q, n)`` bool); with a tilt range below ``_MIN_FIT_SPAN_DEG`` the height is 0. Also returns ``(q,)``
        whether the height was fitted.
        """
        w = views.to(uv.dtype)
        u = torch.where(views, uv[..., 0], 0.0)
        c, s = self.cos, self.sin
        scc, scs, sss = (w * c * c).sum(-1), (w * c * s).sum(-1), (w * s * s).sum(-1)
        bc, bs = (w * c * u).sum(-1), (w * s * u).sum(-1)
        tilt = self.tilts.to(uv.device)
        span = torch.where(views, tilt, -math.inf).amax(-1) - torch.where(views, tilt, math.inf).amin(-1)
        det = scc * sss - scs * scs
        with_height = span >= _MIN_FIT_SPAN_DEG
        safe = torch.where(with_height, det, torch.ones_like(det))
        x = torch.where(with_height, (sss * bc - scs * bs) / safe, bc / scc)
        z = torch.where(with_height, (scc * bs - scs * bc) / safe, torch.zeros_like(x))
        v = torch.where(views, uv[..., 1], 0.0).sum(-1) / w.sum(-1)
        return torch.stack([x * c[target] + z * s[target], v], dim=-1), with_height


def _track(
    images: torch.Tensor,
    tilts: torch.Tensor,
    tilt_axis_deg: float,
    xf: torch.Tensor,
    ref: int,
    centres_xy: torch.Tensor,
    settings: _Settings,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Follow patches from the reference view outwards; ``(p, n, 2)`` positions, ``(p, n)`` peaks, noise SD."""
    n, h, w = images.shape
    patch_xy, border = settings.patch_xy, settings.border
    device, dtype = images.device, images.dtype
    f64 = torch.float64
    geometry = _Geometry(xf.to(device), tilts, tilt_axis_deg, ref, (w, h))
    gy, gx = torch.meshgrid(
        torch.arange(patch_xy[1], dtype=f64, device=device) - patch_xy[1] // 2,
        torch.arange(patch_xy[0], dtype=f64, device=device) - patch_xy[0] // 2,
        indexing="ij",
    )
    offsets = torch.stack([gx, gy], dim=-1)  # (ph, pw, 2), patch centre at index size // 2
    # A contour ends when more than a quarter of its patch (across or along) leaves the image less the border.
    inner = torch.tensor(
        [patch_xy[0] * (0.5 - _MAX_OUTSIDE), patch_xy[1] * (0.5 - _MAX_OUTSIDE)], dtype=f64, device=device
    )
    corners = (
        torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=f64, device=device) * inner
    )  # (4, 2)
    region = (float(border[0]), float(border[1]), w - 1.0 - border[0], h - 1.0 - border[1])
    ramp = max(2.0, _TAPER_FRACTION * min(patch_xy))
    correlator = _PatchCorrelator(
        (patch_xy[1], patch_xy[0]), settings.max_shift, settings.filter_params, dtype, device
    )
    threshold = max(settings.min_peak, settings.min_peak_sd * correlator.noise_sd)

    p = centres_xy.shape[0]
    points = torch.full((p, n, 2), float("nan"), dtype=f64, device=device)
    peaks = torch.full((p, n), float("nan"), dtype=dtype, device=device)
    points[:, ref] = centres_xy.to(device=device, dtype=f64)
    order = torch.argsort(tilts, stable=True).tolist()
    ref_pos = order.index(ref)
    for step in (1, -1):
        active = torch.ones(p, dtype=torch.bool, device=device)
        for pos in range(ref_pos + step, n if step > 0 else -1, step):
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                break
            i, j = order[pos], order[pos - step]
            uv = geometry.to_axis(points[idx])  # (q, n, 2), NaN where not tracked
            tracked = torch.isfinite(uv[..., 0])
            # Prediction from the latest views of this side (follows slow changes of the tracked height).
            recent = torch.zeros(n, dtype=torch.bool, device=device)
            recent[[order[m] for m in range(pos - step, ref_pos - step, -step)][:_FIT_VIEWS]] = True
            predicted = geometry.to_raw(geometry.fit(uv, tracked & recent, i)[0], i)
            local = geometry.local_map(i, j)
            offsets_i, corners_i = offsets @ local.T, corners @ local.T
            fits = _inside(predicted, corners_i, region)
            idx, predicted, uv, tracked = idx[fits], predicted[fits], uv[fits], tracked[fits]
            active[:] = False
            if idx.numel() == 0:
                break
            reference, reference_weights = _sample_patches(
                images[j], points[idx, j], offsets, region, ramp, integer_offsets=True
            )
            plain = None if reference_weights is not None else correlator.spectra(reference)
            current = predicted
            value = torch.zeros(idx.numel(), dtype=dtype, device=device)
            for _ in range(settings.iterations):
                moving, moving_weights = _sample_patches(images[i], current, offsets_i, region, ramp)
                # Both patches are weighted alike by the samples either has inside the image less the border.
                weights = _product(reference_weights, moving_weights)
                correction, value = correlator.peaks(
                    plain
                    if weights is None and plain is not None
                    else correlator.spectra(reference, weights),
                    correlator.spectra(moving, weights),
                )
                current = current + correction.to(torch.float64) @ local.T
            keep = (value >= threshold) & _inside(current, corners_i, region)
            # Consistency: the new point must lie within max_residual of the one 3D point fitted to the contour.
            # The view's shift is corrected by the median deviation of its patches (robust to sliding ones).
            expected, settled = geometry.fit(uv, tracked, i)
            deviation = geometry.view_to_axis(current, i) - expected
            voters = keep & settled
            if int(voters.sum()) >= _MIN_SHIFT_VOTERS:
                correction_uv = deviation[voters].median(dim=0).values
                geometry.shift[i] -= correction_uv @ geometry.rot.T
                deviation = deviation - correction_uv
            keep &= ~settled | (deviation.norm(dim=-1) <= settings.max_residual)
            points[idx[keep], i] = current[keep]
            peaks[idx[keep], i] = value[keep]
            active[idx[keep]] = True
    return points, peaks, correlator.noise_sd
