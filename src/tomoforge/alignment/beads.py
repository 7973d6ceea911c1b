"""Gold-bead detection and sub-pixel centring in tilt images (IMOD autofidseed / beadtrack semantics).

A gold bead of diameter ``d`` projects as the projection of a sphere, ``∝ √(r² − ρ²)``. Every image is matched
against that template: the image (inverted for dark beads) is high-pass filtered with a Gaussian of ``σ = d`` pixels
(which removes ice gradients and thickness changes), and cross-correlated with the equally filtered projected-sphere
template, whose transform is known analytically (the central section of a sphere's transform,
``4πr³ (sin x − x cos x) / x³`` with ``x = 2πr|k|``). The correlation is expressed in units of its robust noise level
(``1.4826 × median absolute deviation`` over the image), the **score**; the local normalised correlation with the
template (the correlation divided by the template's norm and the filtered image's energy within ``d`` of the
point) is the **shape correlation**, near 1 for an isolated bead and low for blobs of another size.

Candidates are local maxima of the score at least ``min_spacing_px`` apart (non-maximum suppression), above
``threshold_sd`` and ``min_correlation``. Centring: the score map is a smoothed matched-filter response whose maximum
is the least-squares position of the template, so the sub-pixel centre is the vertex of a least-squares quadratic
``a + b x + c y + d x² + e xy + f y²`` fitted to the ``(2k+1)²`` neighbourhood of the integer maximum (``k = 1`` by
default). This replaces IMOD's Sobel-filtered centring (beadtrack ``-SobelFilterCentering``): both locate the bead
by a fit to its whole profile rather than by its darkest pixel.

:func:`search_beads` finds the strongest maximum near predicted positions (in a disc, or along the segment a
bead of unknown height moves on) and :func:`common_offset` the shift shared by many predictions, for tracking.

Positions are ``(x, y)`` in **0-based pixel coordinates of the image** (``x`` = column index, ``y`` = row index),
as IMOD models are; subtract ``N // 2`` for positions relative to the image centre (CONVENTIONS.md §2).

References
----------
Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011

Turin, G. L. (1960). An introduction to matched filters. IRE Trans. Inf. Theory 6, 311–329.
doi:10.1109/TIT.1960.1057571
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.fourier import fftfreq_grid

__all__ = [
    "BeadCandidates",
    "BeadMaps",
    "bead_score_maps",
    "centre_peaks",
    "common_offset",
    "detect_beads",
    "search_beads",
]

_MAD_TO_SD = 1.4826


class BeadMaps(NamedTuple):
    """Matched-filter maps of a stack (see :func:`bead_score_maps`)."""

    scores: torch.Tensor
    """``(..., h, w)`` matched-filter response in units of its robust noise SD (beads positive)."""
    correlations: torch.Tensor
    """``(..., h, w)`` local normalised correlation with the bead template (≈ 1 on an isolated bead)."""


class BeadCandidates(NamedTuple):
    """Detected beads, strongest first within each image (see :func:`detect_beads`)."""

    positions_xy_px: torch.Tensor
    """``(m, 2)`` sub-pixel centres ``(x, y)`` in 0-based pixel coordinates."""
    scores: torch.Tensor
    """``(m,)`` matched-filter peak height in units of the image's robust noise SD."""
    correlations: torch.Tensor
    """``(m,)`` local normalised correlation with the bead template."""
    view_indices: torch.Tensor
    """``(m,)`` int64 index of the image in the stack (0 for a single image)."""


def _check_images(images: torch.Tensor, bead_diameter_px: float, polarity: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() < 2:
        raise ValueError("images must be a tensor of shape (..., h, w)")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")
    if not (bead_diameter_px >= 2.0):
        raise ValueError(f"bead_diameter_px must be at least 2 pixels, got {bead_diameter_px}")
    h, w = images.shape[-2:]
    if min(h, w) < 2.0 * bead_diameter_px:
        raise ValueError(f"images of {h}×{w} px are too small for beads of {bead_diameter_px} px")
    if polarity not in ("dark", "bright"):
        raise ValueError(f"polarity must be 'dark' or 'bright', got {polarity!r}")


def _sphere_transform(k_cycles_per_px: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Fourier transform of a projected sphere of unit density (its volume at ``k = 0``)."""
    x = 2.0 * math.pi * radius_px * k_cycles_per_px
    small = x < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    ratio = (torch.sin(xs) - xs * torch.cos(xs)) / xs**3
    ratio = torch.where(small, torch.full_like(x, 1.0 / 3.0) - x**2 / 30.0, ratio)
    return 4.0 * math.pi * radius_px**3 * ratio


def _robust_standardise(maps: torch.Tensor) -> torch.Tensor:
    """``(map − median) / (1.4826·MAD)`` per image, statistics from every second pixel (speed)."""
    sample = maps[..., ::2, ::2].flatten(-2)
    med = sample.median(dim=-1).values
    mad = (sample - med.unsqueeze(-1)).abs().median(dim=-1).values
    sd = (_MAD_TO_SD * mad).clamp_min(torch.finfo(maps.dtype).tiny)
    return (maps - med[..., None, None]) / sd[..., None, None]


def bead_score_maps(
    images: torch.Tensor,
    *,
    bead_diameter_px: float,
    polarity: str = "dark",
) -> BeadMaps:
    """Matched-filter score and local shape-correlation maps of images for beads of a given diameter.

    Parameters
    ----------
    images
        ``(..., h, w)`` real images (one tilt image or a stack); the filter is periodic, so content within about
        ``d`` of an edge sees the opposite edge.
    bead_diameter_px
        Bead diameter ``d`` in pixels of the images.
    polarity
        ``"dark"`` (gold in bright-field images, the default) or ``"bright"`` (contrast-inverted images).

    Returns
    -------
    BeadMaps
        ``scores``: ``(..., h, w)`` correlation with the template in units of the image's robust noise SD;
        ``correlations``: ``(..., h, w)`` local normalised correlation (dimensionless, ≤ about 1).
    """
    _check_images(images, bead_diameter_px, polarity)
    h, w = images.shape[-2:]
    signed = -images if polarity == "dark" else images
    k = fftfreq_grid((h, w), rfft=True, device=images.device, dtype=images.dtype).norm(dim=-1)
    sigma_hp = float(bead_diameter_px)
    high_pass = 1.0 - torch.exp(-2.0 * math.pi**2 * sigma_hp**2 * k**2)
    template = _sphere_transform(k, 0.5 * float(bead_diameter_px)) * high_pass
    spectrum = torch.fft.rfftn(signed, dim=(-2, -1))
    # The projected-sphere template is real and even, so its correlation is a product with its transform.
    cc = torch.fft.irfftn(spectrum * (template * high_pass), s=(h, w), dim=(-2, -1))
    filtered = torch.fft.irfftn(spectrum * high_pass, s=(h, w), dim=(-2, -1))
    # Template norm (Parseval over the rfft half grid: interior columns count twice).
    weight = torch.full_like(k, 2.0)
    weight[..., 0] = 1.0
    if w % 2 == 0:
        weight[..., -1] = 1.0
    template_norm = torch.sqrt((weight * template**2).sum() / (h * w))
    # Local energy of the filtered image within d of every point (disc window, periodic).
    yy = torch.fft.fftfreq(h, d=1.0 / h, device=images.device, dtype=images.dtype)
    xx = torch.fft.fftfreq(w, d=1.0 / w, device=images.device, dtype=images.dtype)
    disc = ((yy[:, None] ** 2 + xx[None, :] ** 2) <= float(bead_diameter_px) ** 2).to(images.dtype)
    energy = torch.fft.irfftn(
        torch.fft.rfftn(filtered**2, dim=(-2, -1)) * torch.fft.rfftn(disc), s=(h, w), dim=(-2, -1)
    )
    floor = torch.finfo(images.dtype).eps * energy.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    correlations = cc / (template_norm * torch.sqrt(energy.clamp_min(0.0) + floor))
    return BeadMaps(scores=_robust_standardise(cc), correlations=correlations)


def _quadratic_pinv(half_width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(6, (2k+1)²)`` least-squares operator of the quadratic ``1, x, y, x², xy, y²`` on a ``(2k+1)²`` grid."""
    d = torch.arange(-half_width, half_width + 1, dtype=torch.float64, device=device)
    ys, xs = torch.meshgrid(d, d, indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    design = torch.stack([torch.ones_like(xs), xs, ys, xs**2, xs * ys, ys**2], dim=-1)
    return torch.linalg.pinv(design).to(dtype)


def centre_peaks(
    maps: torch.Tensor,
    peaks_yx: torch.Tensor,
    *,
    view_indices: torch.Tensor | None = None,
    half_width_px: int = 1,
) -> torch.Tensor:
    """Sub-pixel centres of maxima of maps by a least-squares quadratic fit around integer peaks.

    Parameters
    ----------
    maps
        ``(h, w)`` or ``(n, h, w)`` real maps (e.g. :attr:`BeadMaps.scores`).
    peaks_yx
        ``(m, 2)`` integer indices ``(row, column)`` of the maxima.
    view_indices
        ``(m,)`` index into the first dimension of 3D ``maps`` (required for a stack).
    half_width_px
        ``k``: the fit uses the ``(2k+1) × (2k+1)`` neighbourhood (clamped at the image edges).

    Returns
    -------
    torch.Tensor
        ``(m, 2)`` centres ``(x, y)`` in 0-based pixel coordinates, dtype of ``maps``. The vertex is used where the
        fitted quadratic has a maximum within ``k`` pixels of the peak; otherwise separable 1D parabolas through the
        peak row and column (clamped to ±½ pixel) give the offset.
    """
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
        if view_indices is None:
            view_indices = torch.zeros(peaks_yx.shape[0], dtype=torch.long, device=maps.device)
    if maps.dim() != 3 or view_indices is None:
        raise ValueError("maps must be (h, w), or (n, h, w) with view_indices")
    if peaks_yx.dim() != 2 or peaks_yx.shape[-1] != 2:
        raise ValueError(f"peaks_yx must have shape (m, 2), got {tuple(peaks_yx.shape)}")
    if half_width_px < 1:
        raise ValueError(f"half_width_px must be at least 1, got {half_width_px}")
    n, h, w = maps.shape
    k = int(half_width_px)
    dtype, device = maps.dtype, maps.device
    iy = peaks_yx[:, 0].long()
    ix = peaks_yx[:, 1].long()
    offs = torch.arange(-k, k + 1, device=device)
    rows = (iy[:, None] + offs).clamp(0, h - 1)
    cols = (ix[:, None] + offs).clamp(0, w - 1)
    vi = view_indices.long()[:, None, None]
    patch = maps[vi, rows[:, :, None], cols[:, None, :]]  # (m, 2k+1, 2k+1)
    centre_value = patch[:, k : k + 1, k : k + 1]
    values = (patch - centre_value).flatten(1)
    coef = values @ _quadratic_pinv(k, dtype, device).T  # (m, 6)
    gx, gy, hxx, hxy, hyy = coef[:, 1], coef[:, 2], coef[:, 3], coef[:, 4], coef[:, 5]
    det = 4.0 * hxx * hyy - hxy**2
    is_max = (hxx < 0) & (det > 0)
    safe = torch.where(is_max, det, torch.ones_like(det))
    vx = (-2.0 * hyy * gx + hxy * gy) / safe
    vy = (-2.0 * hxx * gy + hxy * gx) / safe
    ok = is_max & (vx.abs() <= k) & (vy.abs() <= k)
    fx = _parabola(patch[:, k, k - 1], patch[:, k, k], patch[:, k, k + 1])
    fy = _parabola(patch[:, k - 1, k], patch[:, k, k], patch[:, k + 1, k])
    x = ix.to(dtype) + torch.where(ok, vx, fx)
    y = iy.to(dtype) + torch.where(ok, vy, fy)
    return torch.stack([x, y], dim=-1)


def _parabola(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """Vertex offset of the parabola through ``(−1, minus), (0, centre), (1, plus)``, clamped to ``[−½, ½]``."""
    curvature = minus - 2.0 * centre + plus
    safe = torch.where(curvature < 0, curvature, -torch.ones_like(curvature))
    return torch.where(curvature < 0, 0.5 * (minus - plus) / safe, torch.zeros_like(curvature)).clamp(
        -0.5, 0.5
    )


def detect_beads(
    images: torch.Tensor,
    *,
    bead_diameter_px: float,
    polarity: str = "dark",
    threshold_sd: float = 6.0,
    min_correlation: float = 0.5,
    min_spacing_px: float | None = None,
    border_px: float | None = None,
    max_beads: int | None = None,
) -> BeadCandidates:
    """Find gold beads in an image or a stack by matched filtering, non-maximum suppression and sub-pixel centring.

    Parameters
    ----------
    images
        ``(h, w)`` image or ``(..., h, w)`` stack, real (leading dimensions are flattened: ``view_indices``
        count images in C order). All score maps are computed at once; pass large stacks in chunks.
    bead_diameter_px
        Bead diameter ``d`` in pixels (IMOD: diameter in nm / pixel size in nm).
    polarity
        ``"dark"`` beads (raw bright-field images) or ``"bright"``.
    threshold_sd
        Smallest matched-filter peak kept, in robust noise SDs of the image's score map.
    min_correlation
        Smallest local normalised correlation with the template (rejects blobs of other sizes and edges).
    min_spacing_px
        Non-maximum suppression distance (the side of the square neighbourhood in which a candidate must be the
        maximum); default ``d``.
    border_px
        Candidates closer than this to an image edge are dropped; default ``d / 2``.
    max_beads
        Keep at most this many per image (the strongest).

    Returns
    -------
    BeadCandidates
        Positions ``(m, 2)`` ``(x, y)`` in 0-based pixel coordinates, scores, shape correlations and image
        indices, sorted by image and, within an image, by decreasing score. Empty when nothing passes.

    Notes
    -----
    The scores are relative to each image's own noise: an image without beads still has its noise peaks at
    2–4 SD, which is why the default threshold is well above that.
    """
    if max_beads is not None and max_beads < 0:
        raise ValueError(f"max_beads must be non-negative, got {max_beads}")
    if threshold_sd <= 0:
        raise ValueError(f"threshold_sd must be positive, got {threshold_sd}")
    _check_images(images, bead_diameter_px, polarity)
    stack = images.unsqueeze(0) if images.dim() == 2 else images.reshape(-1, *images.shape[-2:])
    maps = bead_score_maps(stack, bead_diameter_px=bead_diameter_px, polarity=polarity)
    spacing = float(bead_diameter_px) if min_spacing_px is None else float(min_spacing_px)
    border = 0.5 * float(bead_diameter_px) if border_px is None else float(border_px)
    half = max(1, int(round(spacing / 2.0)))
    pooled = torch.nn.functional.max_pool2d(
        maps.scores.unsqueeze(1), kernel_size=2 * half + 1, stride=1, padding=half
    ).squeeze(1)
    n, h, w = stack.shape
    keep = (maps.scores >= pooled) & (maps.scores >= threshold_sd) & (maps.correlations >= min_correlation)
    rows = torch.arange(h, device=stack.device)[:, None]
    cols = torch.arange(w, device=stack.device)[None, :]
    inside = (rows >= border) & (rows <= h - 1 - border) & (cols >= border) & (cols <= w - 1 - border)
    keep &= inside
    vi, iy, ix = torch.nonzero(keep, as_tuple=True)
    scores = maps.scores[vi, iy, ix]
    # Sort by view, then by decreasing score, and cap per view.
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(vi[order], stable=True)]
    vi, iy, ix, scores = vi[order], iy[order], ix[order], scores[order]
    if max_beads is not None and vi.numel():
        first = torch.searchsorted(vi, vi, right=False)
        rank = torch.arange(vi.numel(), device=vi.device) - first
        sel = rank < max_beads
        vi, iy, ix, scores = vi[sel], iy[sel], ix[sel], scores[sel]
    positions = centre_peaks(maps.scores, torch.stack([iy, ix], dim=-1), view_indices=vi)
    return BeadCandidates(
        positions_xy_px=positions,
        scores=scores,
        correlations=maps.correlations[vi, iy, ix],
        view_indices=vi,
    )


def _patches(image: torch.Tensor, centres_xy: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, 2r+1, 2r+1)`` windows of ``image`` around integer centres ``(x, y)`` and their inside-image mask."""
    h, w = image.shape
    offs = torch.arange(-radius, radius + 1, device=image.device)
    rows = centres_xy[:, 1, None] + offs  # (m, 2r+1)
    cols = centres_xy[:, 0, None] + offs
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    values = image[rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return values, inside


def common_offset(
    score_map: torch.Tensor, predicted_xy_px: torch.Tensor, *, radius_px: float
) -> torch.Tensor:
    """Offset shared by all beads from their predicted positions: the peak of their summed score windows.

    Parameters
    ----------
    score_map
        ``(h, w)`` score map of one image (:attr:`BeadMaps.scores`).
    predicted_xy_px
        ``(m, 2)`` predicted bead centres, 0-based pixel coordinates.
    radius_px
        Largest offset searched along each axis.

    Returns
    -------
    torch.Tensor
        ``(2,)`` float64 offset ``(dx, dy)`` in pixels to add to every prediction; zero when the summed map has
        its maximum on the edge of the window (no common offset within the radius).
    """
    r = int(math.ceil(radius_px))
    predicted = predicted_xy_px.to(torch.float64)
    base = torch.round(predicted)
    values, inside = _patches(score_map, base.long(), r)
    total = torch.where(inside, values, torch.zeros_like(values)).sum(0)
    peak = torch.nonzero(total == total.max())[0]
    if int(peak.min()) == 0 or int(peak.max()) == 2 * r:
        return torch.zeros(2, dtype=torch.float64, device=score_map.device)
    centre = centre_peaks(total, peak[None])[0].to(torch.float64)
    return centre - r - (predicted - base).mean(0)


def search_beads(
    maps: BeadMaps,
    view: int,
    predicted_xy_px: torch.Tensor,
    *,
    radius_px: float,
    direction_xy: torch.Tensor | None = None,
    half_length_px: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The strongest score maximum near each predicted bead position, centred to sub-pixel precision.

    Parameters
    ----------
    maps
        Maps of a stack, ``(n, h, w)`` each (:func:`bead_score_maps`).
    view
        Image of the stack to search.
    predicted_xy_px
        ``(m, 2)`` predicted centres, 0-based pixel coordinates.
    radius_px
        Search radius around the prediction.
    direction_xy, half_length_px
        Optional ``(m, 2)`` unit vectors and ``(m,)`` lengths: the region becomes every point within
        ``radius_px`` of the segment ``prediction ± t·direction``, ``|t| ≤ half_length`` (the path along which a
        bead of unknown height moves with the tilt).

    Returns
    -------
    tuple of torch.Tensor
        Centres ``(m, 2)`` (float64, 0-based pixel coordinates, :func:`centre_peaks`), scores ``(m,)``, shape
        correlations ``(m,)`` at the integer peaks, and ``(m,)`` bool: the peak is a true local maximum inside the
        region (not exceeded by any of its 8 neighbours).
    """
    score_map = maps.scores[view]
    m = predicted_xy_px.shape[0]
    device = score_map.device
    predicted = predicted_xy_px.to(torch.float64)
    if direction_xy is None or half_length_px is None:
        direction_xy = torch.zeros((m, 2), dtype=torch.float64, device=device)
        half_length_px = torch.zeros(m, dtype=torch.float64, device=device)
    r = int(math.ceil(radius_px + (float(half_length_px.max()) if m else 0.0))) + 1
    base = torch.round(predicted).long()
    values, inside = _patches(score_map, base, r)
    offs = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    frac = predicted - base.to(torch.float64)
    dx = offs[None, None, :] - frac[:, 0, None, None]  # (m, 1, 2r+1)
    dy = offs[None, :, None] - frac[:, 1, None, None]  # (m, 2r+1, 1)
    ux, uy = direction_xy[:, 0, None, None], direction_xy[:, 1, None, None]
    t = (dx * ux + dy * uy).clamp(-half_length_px[:, None, None], half_length_px[:, None, None])
    allowed = inside & ((dx - t * ux) ** 2 + (dy - t * uy) ** 2 <= radius_px**2)
    masked = torch.where(allowed, values, torch.full_like(values, -math.inf))
    flat = masked.flatten(1).argmax(1)
    py, px = flat // (2 * r + 1), flat % (2 * r + 1)
    idx = torch.arange(m, device=device)
    peak_value = values[idx, py, px]
    is_max = allowed[idx, py, px]
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            if ox or oy:
                qy, qx = (py + oy).clamp(0, 2 * r), (px + ox).clamp(0, 2 * r)
                is_max &= values[idx, qy, qx] <= peak_value
    h, w = score_map.shape
    peaks_yx = torch.stack(
        [(base[:, 1] + py - r).clamp(0, h - 1), (base[:, 0] + px - r).clamp(0, w - 1)], dim=-1
    )
    positions = centre_peaks(score_map, peaks_yx).to(torch.float64)
    correlations = maps.correlations[view][peaks_yx[:, 0], peaks_yx[:, 1]]
    return positions, peak_value.to(torch.float64), correlations.to(torch.float64), is_max
