"""X-ray (hot pixel / zinger) and dead-pixel detection and erasure with the semantics of IMOD's ``ccderaser``.

Detection (:func:`find_xrays`) follows ``ccderaser -FindPeaks``, which finds peaks "a criterion # of SDs above or
below background": robust statistics in scan boxes, candidate local extrema of either polarity, a peak test of
``|peak − annulus mean|`` against the annulus SD with growth of the erased patch over pixels of the peak's
polarity, a retry of strongly deviating failed candidates as "giant" peaks with a larger radius and an
edge-sharpness test, and, on the image with those peaks already replaced, a difference test on
``|pixel − neighbour mean|`` for isolated hot and dead pixels. Replacement (:func:`erase_xrays`) fits a 2-D
polynomial by least squares to a ring of pixels around each connected patch and replaces the patch by the fit.

Everything runs batched on tensors (leading ``...`` dims are images, e.g. the tilts of a series) on the device of
the input; only the list of found objects is assembled on the host.

References
----------
Kremer, J. R., Mastronarde, D. N. & McIntosh, J. R. (1996). Computer visualization of three-dimensional image data
using IMOD. *J. Struct. Biol.* 116, 71–76. https://doi.org/10.1006/jsbi.1996.0013 (``ccderaser`` is part of IMOD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["XrayObject", "erase_xrays", "find_xrays", "label_patches"]


@dataclass(frozen=True)
class XrayObject:
    """One erased patch (a connected group of mask pixels, 8-connectivity).

    Attributes
    ----------
    image_index
        Index of the image in the leading dims of the input (``()`` for a single 2-D image).
    y_px, x_px
        Centroid of the patch in array indices (pixels).
    radius_px
        Largest distance of a patch pixel centre from the centroid (0 for a single pixel).
    n_pixels
        Number of pixels in the patch.
    polarity
        ``+1`` for a bright patch (X-ray, hot pixel), ``-1`` for a dark one (dead or cold pixels): the polarity of
        the majority of its pixels.
    """

    image_index: tuple[int, ...]
    y_px: float
    x_px: float
    radius_px: float
    n_pixels: int
    polarity: int = 1


# --------------------------------------------------------------------------------------------------------------
# helpers


@dataclass(frozen=True)
class _Boxes:
    """Scan boxes tiling the non-edge area: ``n`` boxes of ``size`` pixels per axis starting at ``start``."""

    start_y: int
    start_x: int
    n_y: int
    n_x: int
    size_y: int
    size_x: int

    @staticmethod
    def make(h: int, w: int, *, box_px: int, edge_px: int) -> _Boxes:
        inner_h, inner_w = max(h - 2 * edge_px, 1), max(w - 2 * edge_px, 1)
        ny, nx = max(1, round(inner_h / box_px)), max(1, round(inner_w / box_px))
        sy, sx = min(edge_px, h - 1), min(edge_px, w - 1)
        return _Boxes(sy, sx, ny, nx, -(-min(inner_h, h - sy) // ny), -(-min(inner_w, w - sx) // nx))

    def index(self, n: int, start: int, n_box: int, size: int, device: torch.device) -> torch.Tensor:
        return ((torch.arange(n, device=device) - start).clamp(min=0) // size).clamp(max=n_box - 1)


def _box_stats(
    values: torch.Tensor, valid: torch.Tensor, boxes: _Boxes, *, clip_sd: float = 3.0, rounds: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigma-clipped mean and SD of ``values`` ``(B, h, w)`` per scan box, expanded back to ``(B, h, w)``.

    Rounds of symmetric clipping at ``clip_sd`` SDs make the statistics insensitive to the X-rays (and gold beads)
    inside a box, so that they describe the noise and the smooth specimen. Pixels outside the tiled area (the edge
    band) take the statistics of the nearest box.
    """
    nb, h, w = values.shape
    bx = boxes
    full_h, full_w = bx.n_y * bx.size_y, bx.n_x * bx.size_x
    v = values[:, bx.start_y : bx.start_y + full_h, bx.start_x : bx.start_x + full_w]
    ok = valid[:, bx.start_y : bx.start_y + full_h, bx.start_x : bx.start_x + full_w]
    ph, pw = full_h - v.shape[1], full_w - v.shape[2]
    v = F.pad(v, (0, pw, 0, ph))
    ok = F.pad(ok, (0, pw, 0, ph), value=False)
    offset = (v * ok).sum(dim=(1, 2), keepdim=True) / ok.sum(dim=(1, 2), keepdim=True).clamp(min=1)
    v = (v - offset).reshape(nb, bx.n_y, bx.size_y, bx.n_x, bx.size_x)
    ok = ok.reshape(v.shape)
    keep = ok.to(v.dtype)
    for _ in range(rounds + 1):
        n = keep.sum(dim=(2, 4), keepdim=True).clamp(min=1.0)
        mean = (keep * v).sum(dim=(2, 4), keepdim=True) / n
        var = (keep * (v - mean) ** 2).sum(dim=(2, 4), keepdim=True) / n
        sd = var.sqrt()
        keep = (ok & ((v - mean).abs() <= clip_sd * sd)).to(v.dtype)
    mean = mean[:, :, 0, :, 0] + offset
    sd = sd[:, :, 0, :, 0]
    iy = bx.index(h, bx.start_y, bx.n_y, bx.size_y, values.device)
    ix = bx.index(w, bx.start_x, bx.n_x, bx.size_x, values.device)
    return mean[:, iy][:, :, ix], sd[:, iy][:, :, ix]


def _windows(padded: torch.Tensor, pad: int, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, r: int):
    """Gather ``(K, 2r+1, 2r+1)`` windows centred on ``(b, y, x)`` from an image padded by ``pad >= r``.

    Returns the windows and their flat indices into ``padded``.
    """
    hp, wp = padded.shape[-2:]
    off = torch.arange(-r, r + 1, device=padded.device)
    rows = (y + pad)[:, None, None] + off[None, :, None]
    cols = (x + pad)[:, None, None] + off[None, None, :]
    flat = (b[:, None, None] * hp + rows) * wp + cols
    return padded.reshape(-1)[flat], flat


def _grow(seed: torch.Tensor, allowed: torch.Tensor, steps: int) -> torch.Tensor:
    """Connected growth (8-connectivity) of boolean ``seed`` ``(K, n, n)`` inside ``allowed``."""
    region = seed & allowed
    for _ in range(steps):
        grown = F.max_pool2d(region[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        grown &= allowed
        if torch.equal(grown, region):
            break
        region = grown
    return region


def _disk_distance(r: int, device: torch.device) -> torch.Tensor:
    off = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    return torch.sqrt(off[:, None] ** 2 + off[None, :] ** 2)


def _nan_mean_sd(values: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and SD over the last two dims of ``values`` ``(K, n, n)`` at ``where`` and not NaN."""
    ok = where & ~torch.isnan(values)
    v = torch.where(ok, values, torch.zeros_like(values))
    n = ok.sum(dim=(-2, -1)).clamp(min=1).to(values.dtype)
    mean = v.sum(dim=(-2, -1)) / n
    var = (torch.where(ok, (values - mean[:, None, None]) ** 2, torch.zeros_like(values))).sum(
        dim=(-2, -1)
    ) / n
    return mean, var.sqrt()


def label_patches(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Connected components (8-connectivity) of a boolean mask ``(B, h, w)``.

    Returns
    -------
    coords, labels, n
        ``(M, 3)`` long ``(b, y, x)`` of every mask pixel, ``(M,)`` component label in ``[0, n)``, and ``n``.
    """
    coords = mask.nonzero()
    m = coords.shape[0]
    if m == 0:
        return coords, torch.zeros(0, dtype=torch.long, device=mask.device), 0
    b, y, x = coords.unbind(1)
    index = torch.full(
        (mask.shape[0], mask.shape[1] + 2, mask.shape[2] + 2), -1, dtype=torch.long, device=mask.device
    )
    index[b, y + 1, x + 1] = torch.arange(m, device=mask.device)
    neighbours = torch.stack(
        [index[b, y + 1 + dy, x + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], dim=1
    )
    has = neighbours >= 0
    neighbours = neighbours.clamp(min=0)
    labels = torch.arange(m, device=mask.device)
    while True:
        new = torch.where(has, labels[neighbours], labels[:, None]).amin(dim=1).minimum(labels)
        new = new[new]  # pointer jumping
        if torch.equal(new, labels):
            break
        labels = new
    _, labels = torch.unique(labels, return_inverse=True)
    return coords, labels, int(labels.max()) + 1


# --------------------------------------------------------------------------------------------------------------
# detection


def find_xrays(
    image: torch.Tensor,
    *,
    peak_criterion_sd: float = 8.0,
    difference_criterion_sd: float = 6.0,
    grow_criterion_sd: float = 4.0,
    scan_criterion_sd: float = 3.0,
    max_radius_px: float = 4.2,
    giant_criterion_sd: float = 12.0,
    extra_large_radius_px: float = 8.0,
    big_difference_criterion_sd: float = 19.0,
    annulus_width_px: float = 2.0,
    scan_box_px: int = 100,
    edge_exclusion_px: int = 4,
    max_pixels_in_diff_patch: int = 2,
    include_dark: bool = True,
    border_px: int = 2,
    polynomial_order: int = 2,
) -> tuple[torch.Tensor, list[XrayObject]]:
    """Find X-rays and dead pixels (bright and dark outliers) in images, as IMOD ``ccderaser -FindPeaks`` does.

    Every criterion acts on the absolute deviation, as in ``ccderaser``: a candidate's polarity is the sign of its
    deviation from the scan-box mean, and its patch grows only over pixels deviating the same way. All SD
    criteria below are therefore "above or below".

    Parameters
    ----------
    image
        ``(..., h, w)`` images (counts; any real dtype). Leading dims are independent images.
    peak_criterion_sd
        A candidate peak is erased if it differs from the mean of the annulus around it by more than this many
        SDs of that annulus (``-PeakCriterion``; Scipion 8, IMOD 10).
    difference_criterion_sd
        A pixel whose difference from the mean of its 8 neighbours deviates from the scan-box mean of that
        difference by more than this many scan-box SDs of the difference seeds a difference patch
        (``-DiffCriterion``). The differences are taken after the peaks found by the peak tests are replaced.
    grow_criterion_sd
        The erased patch grows (8-connected, from the peak) over pixels that deviate from the annulus mean in the
        peak's direction by more than this many annulus SDs (difference patches: from the difference mean by this
        many difference SDs) (``-GrowCriterion``).
    scan_criterion_sd
        Pixels more than this many SDs above (below) their scan-box mean are candidates; the local maxima
        (minima) (3×3) among them are the peaks tested (``-ScanCriterion``).
    max_radius_px
        Patches grow only within this distance of the peak; the annulus starts here (``-MaximumRadius``).
    giant_criterion_sd, extra_large_radius_px, big_difference_criterion_sd
        A candidate that fails the peak test but deviates from its box mean by ``scan + 1`` SDs is retried as a
        giant peak: annulus from ``extra_large_radius_px``, criterion ``giant_criterion_sd``, growth within the
        larger radius; it is accepted only if the mean of the largest quarter of the absolute adjacent-pixel
        differences touching the patch exceeds ``big_difference_criterion_sd`` times the scan-box SD of
        adjacent-pixel differences (sharp edges: an X-ray, not a specimen feature) (``-GiantCriterion``,
        ``-ExtraLargeRadius``, ``-BigDiffCriterion``).
    annulus_width_px
        Width of the annulus (``-AnnulusWidth``).
    scan_box_px
        Approximate size of the scan boxes for the local statistics (``-XYScanSize``).
    edge_exclusion_px
        Peaks and difference seeds within this many pixels of an edge are ignored (``-EdgeExclusionWidth``);
        patches of accepted peaks may still extend into the band.
    max_pixels_in_diff_patch
        Difference patches larger than this are rejected (``-MaxPixelsInDiffPatch``).
    include_dark
        Also find dark outliers (``ccderaser`` always does; ``False`` restricts every test to bright peaks, which
        ``ccderaser`` has no option for).
    border_px, polynomial_order
        Replacement settings (as :func:`erase_xrays`) used when the peaks found are erased before the difference
        test; pass the values the image will be erased with.

    Returns
    -------
    mask, objects
        ``(..., h, w)`` boolean mask of the pixels to erase, and one :class:`XrayObject` per connected patch.

    Notes
    -----
    Dark features of the specimen (gold beads) are spared for the same reasons as bright ones: they are wider
    than the annulus radius or not deep enough in annulus SDs, and a giant candidate needs sharp edges. In images
    with little noise, small dark beads can pass these SD criteria, as with ``ccderaser`` (its manual says so of
    ``-BigDiffCriterion``); in a noiseless image they always do.
    Statistics are iteratively sigma-clipped (3 SD) per scan box; annulus statistics ignore pixels outside the
    image.
    """
    if image.dim() < 2:
        raise ValueError("image must have at least 2 dimensions (..., h, w)")
    lead, (h, w) = image.shape[:-2], image.shape[-2:]
    dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    x = image.reshape(-1, h, w).to(dtype)
    nb, dev = x.shape[0], x.device
    edge = max(int(edge_exclusion_px), 0)
    inner = torch.zeros(h, w, dtype=torch.bool, device=dev)
    inner[edge : h - edge, edge : w - edge] = True
    inner_b = inner.expand(nb, h, w)
    boxes = _Boxes.make(h, w, box_px=int(scan_box_px), edge_px=edge)
    box_mean, box_sd = _box_stats(x, inner_b, boxes)

    r_small = int(math.ceil(max_radius_px + annulus_width_px))
    r_large = int(math.ceil(extra_large_radius_px + annulus_width_px))
    r_diff = int(math.ceil(2 * max_radius_px))
    pad = max(r_small, r_large, r_diff) + 1
    xpad = F.pad(x[:, None], (pad, pad, pad, pad), value=float("nan"))[:, 0]
    mask_pad = torch.zeros_like(xpad, dtype=torch.bool)
    dark_pad = torch.zeros_like(mask_pad)  # pixels erased as part of a dark (negative) peak

    # peak search: candidates beyond the scan criterion that are 3×3 local maxima (bright) or minima (dark)
    local_max = F.max_pool2d(x[:, None], 3, stride=1, padding=1)[:, 0]
    deviation = x - box_mean
    candidate = inner_b & (deviation > scan_criterion_sd * box_sd) & (x >= local_max)
    if include_dark:
        local_min = -F.max_pool2d(-x[:, None], 3, stride=1, padding=1)[:, 0]
        candidate |= inner_b & (-deviation > scan_criterion_sd * box_sd) & (x <= local_min)
    cb, cy, cx = candidate.nonzero().unbind(1)
    peak = x[cb, cy, cx]
    polarity = torch.where(deviation[cb, cy, cx] > 0, 1.0, -1.0).to(dtype)

    def _mark(flat: torch.Tensor, patch: torch.Tensor, sign: torch.Tensor) -> None:
        """Mark ``patch`` ``(K, n, n)`` of windows at padded flat indices ``flat``; ``sign`` ``(K,)``."""
        mask_pad.reshape(-1)[flat[patch]] = True
        dark_pad.reshape(-1)[flat[patch & (sign < 0)[:, None, None]]] = True

    def _peak_test(r_win: int, radius: float, criterion: float, sel: torch.Tensor):
        win, flat = _windows(xpad, pad, cb[sel], cy[sel], cx[sel], r_win)
        dist = _disk_distance(r_win, dev)
        ring = (dist > radius) & (dist <= radius + annulus_width_px)
        ring_mean, ring_sd = _nan_mean_sd(win, ring.expand_as(win))
        sign = polarity[sel]
        accept = sign * (peak[sel] - ring_mean) > criterion * ring_sd
        allowed = (
            sign[:, None, None] * (win - ring_mean[:, None, None])
            > grow_criterion_sd * ring_sd[:, None, None]
        ) & (dist <= radius)
        seed = torch.zeros_like(allowed)
        seed[:, r_win, r_win] = True
        patch = _grow(seed, allowed, 2 * int(math.ceil(radius)) + 2)
        return accept, patch, win, flat

    sel_all = torch.ones_like(peak, dtype=torch.bool)
    accept, patch, _, flat = _peak_test(r_small, max_radius_px, peak_criterion_sd, sel_all)
    _mark(flat[accept], patch[accept], polarity[accept])

    # giant peaks: strongly deviating candidates that failed, retried with the large radius and the
    # big-difference test
    strong = polarity * (peak - box_mean[cb, cy, cx]) > (scan_criterion_sd + 1.0) * box_sd[cb, cy, cx]
    giant_sel = ~accept & strong
    if bool(giant_sel.any()):
        adjacent = F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 1))
        valid_d = inner_b.clone()
        valid_d[:, :, -1] = False
        _, d_sd = _box_stats(adjacent, valid_d, boxes)
        d_sd_px = d_sd[cb[giant_sel], cy[giant_sel], cx[giant_sel]]
        g_accept, g_patch, g_win, g_flat = _peak_test(
            r_large, extra_large_radius_px, giant_criterion_sd, giant_sel
        )
        # adjacent-pixel differences (horizontal and vertical) with at least one end in the patch
        dh = (g_win[:, :, 1:] - g_win[:, :, :-1]).abs()
        dv = (g_win[:, 1:, :] - g_win[:, :-1, :]).abs()
        th = (g_patch[:, :, 1:] | g_patch[:, :, :-1]) & ~torch.isnan(dh)
        tv = (g_patch[:, 1:, :] | g_patch[:, :-1, :]) & ~torch.isnan(dv)
        diffs = torch.cat([torch.where(th, dh, -1.0).flatten(1), torch.where(tv, dv, -1.0).flatten(1)], dim=1)
        n_touch = torch.cat([th.flatten(1), tv.flatten(1)], dim=1).sum(1)
        k_top = (n_touch // 4).clamp(min=1)
        ordered = diffs.sort(dim=1, descending=True).values
        rank = torch.arange(ordered.shape[1], device=dev)[None, :]
        top_mean = torch.where(rank < k_top[:, None], ordered, 0.0).sum(1) / k_top
        g_accept &= top_mean > big_difference_criterion_sd * d_sd_px
        g_sign = polarity[giant_sel]
        _mark(g_flat[g_accept], g_patch[g_accept], g_sign[g_accept])

    # difference test: isolated hot and dead pixels relative to the mean of their 8 neighbours, on the image
    # with the peaks found so far replaced (ccderaser recomputes the differences after each replacement), so
    # that the neighbours of an erased peak do not look like outliers of the other polarity
    already = mask_pad[:, pad : pad + h, pad : pad + w]
    y = (
        erase_xrays(x, already, border_px=border_px, polynomial_order=polynomial_order)
        if bool(already.any())
        else x
    )
    neighbour_mean = (
        9.0 * F.avg_pool2d(F.pad(y[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1) - y[:, None]
    )[:, 0] / 8.0
    diff = y - neighbour_mean
    d_mean, d_sd = _box_stats(diff, inner_b, boxes)
    dz = (diff - d_mean) / d_sd.clamp(min=torch.finfo(dtype).tiny)
    if include_dark:  # a seed is the most extreme difference of its 3×3 neighbourhood, of either polarity
        extreme = dz.abs() >= F.max_pool2d(dz.abs()[:, None], 3, stride=1, padding=1)[:, 0]
        outlier = dz.abs() > difference_criterion_sd
    else:
        extreme = dz >= F.max_pool2d(dz[:, None], 3, stride=1, padding=1)[:, 0]
        outlier = dz > difference_criterion_sd
    seeds = inner_b & outlier & extreme & ~already
    sb, sy, sx = seeds.nonzero().unbind(1)
    if sb.numel():
        sign = torch.where(dz[sb, sy, sx] > 0, 1.0, -1.0).to(dtype)
        dz_pad = F.pad(dz[:, None], (pad, pad, pad, pad), value=float("nan"))[:, 0]
        win, flat_d = _windows(dz_pad, pad, sb, sy, sx, r_diff)
        dist = _disk_distance(r_diff, dev)
        allowed = (sign[:, None, None] * win > grow_criterion_sd) & (dist <= 2 * max_radius_px)
        seed = torch.zeros_like(allowed)
        seed[:, r_diff, r_diff] = True
        patch = _grow(seed, allowed, 2 * r_diff)
        keep = patch.sum(dim=(-2, -1)) <= max_pixels_in_diff_patch
        _mark(flat_d[keep], patch[keep], sign[keep])

    mask = mask_pad[:, pad : pad + h, pad : pad + w].contiguous()
    dark = dark_pad[:, pad : pad + h, pad : pad + w]
    return mask.reshape(*lead, h, w), _objects(mask, dark, lead)


def _objects(mask: torch.Tensor, dark: torch.Tensor, lead: torch.Size) -> list[XrayObject]:
    """One :class:`XrayObject` per connected patch of ``mask`` ``(B, h, w)``; ``dark`` marks dark pixels."""
    coords, labels, n = label_patches(mask)
    if n == 0:
        return []
    c = coords.double()
    count = torch.bincount(labels, minlength=n).double()
    is_dark = dark[coords[:, 0], coords[:, 1], coords[:, 2]].double()
    n_dark = torch.bincount(labels, weights=is_dark, minlength=n)
    cy = torch.bincount(labels, weights=c[:, 1], minlength=n) / count
    cx = torch.bincount(labels, weights=c[:, 2], minlength=n) / count
    d = torch.sqrt((c[:, 1] - cy[labels]) ** 2 + (c[:, 2] - cx[labels]) ** 2)
    radius = torch.zeros(n, dtype=torch.float64, device=mask.device).scatter_reduce(0, labels, d, "amax")
    image_of = torch.zeros(n, dtype=torch.long, device=mask.device).scatter_reduce(
        0, labels, coords[:, 0], "amax", include_self=False
    )
    shape = tuple(lead)
    out = []
    polarity = torch.where(2 * n_dark > count, -1, 1)
    for b, y, xx, r, k, p in zip(
        image_of.tolist(),
        cy.tolist(),
        cx.tolist(),
        radius.tolist(),
        count.tolist(),
        polarity.tolist(),
        strict=True,
    ):
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(b), shape)) if shape else ()
        out.append(XrayObject(image_index=index, y_px=y, x_px=xx, radius_px=r, n_pixels=int(k), polarity=p))
    out.sort(key=lambda o: (o.image_index, o.y_px, o.x_px))
    return out


# --------------------------------------------------------------------------------------------------------------
# replacement


def _monomials(order: int) -> list[tuple[int, int]]:
    return [(p, t - p) for t in range(order + 1) for p in range(t, -1, -1)]


def erase_xrays(
    image: torch.Tensor, mask: torch.Tensor, *, border_px: int = 2, polynomial_order: int = 2
) -> torch.Tensor:
    """Replace every connected patch of ``mask`` by a polynomial fitted to a border ring around it.

    Parameters
    ----------
    image
        ``(..., h, w)`` images.
    mask
        ``(..., h, w)`` boolean mask of the pixels to replace (e.g. from :func:`find_xrays`).
    border_px
        Width of the ring (pixels within this Chebyshev distance of the patch, outside every patch and inside the
        image) whose values are fitted (``-BorderSize``).
    polynomial_order
        Order of the 2-D polynomial in ``x, y`` (0: ring mean; 2: ``1, x, y, x², xy, y²``) (``-PolynomialOrder``).
        Patches whose ring has fewer than twice as many pixels as terms are filled with the ring mean.

    Returns
    -------
    torch.Tensor
        A new tensor like ``image`` (same dtype; rounded for integer images); pixels outside ``mask`` are exactly
        unchanged. All patches are fitted together in one batched least-squares solve.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in shape")
    if border_px < 1 or polynomial_order < 0:
        raise ValueError("border_px must be >= 1 and polynomial_order >= 0")
    h, w = image.shape[-2:]
    out = image.clone(memory_format=torch.contiguous_format)
    m = mask.reshape(-1, h, w).to(torch.bool)
    coords, labels, n = label_patches(m)
    if n == 0:
        return out
    dev = image.device
    b, y, x = coords.unbind(1)
    big = torch.iinfo(torch.long).max
    ymin = torch.full((n,), big, device=dev).scatter_reduce(0, labels, y, "amin")
    xmin = torch.full((n,), big, device=dev).scatter_reduce(0, labels, x, "amin")
    ymax = torch.zeros(n, dtype=torch.long, device=dev).scatter_reduce(0, labels, y, "amax")
    xmax = torch.zeros(n, dtype=torch.long, device=dev).scatter_reduce(0, labels, x, "amax")
    bimg = torch.zeros(n, dtype=torch.long, device=dev).scatter_reduce(
        0, labels, b, "amax", include_self=False
    )
    size = int(torch.maximum(ymax - ymin, xmax - xmin).max()) + 1 + 2 * border_px
    pad = size
    work = out.reshape(-1, h, w).to(torch.float64)
    vpad = F.pad(work[:, None], (pad, pad, pad, pad), value=float("nan"))[:, 0]
    label_map = torch.full((m.shape[0], h, w), -1, dtype=torch.long, device=dev)
    label_map[b, y, x] = labels
    lpad = F.pad(label_map, (pad, pad, pad, pad), value=-1)
    hp, wp = vpad.shape[-2:]
    off = torch.arange(size, device=dev)
    rows = (ymin - border_px + pad)[:, None, None] + off[None, :, None]
    cols = (xmin - border_px + pad)[:, None, None] + off[None, None, :]
    flat = (bimg[:, None, None] * hp + rows) * wp + cols
    win = vpad.reshape(-1)[flat]
    lab = lpad.reshape(-1)[flat]
    own = lab == torch.arange(n, device=dev)[:, None, None]
    k = 2 * border_px + 1
    near = F.max_pool2d(own[:, None].double(), k, stride=1, padding=border_px)[:, 0] > 0
    ring = near & (lab < 0) & ~torch.isnan(win)

    # batched weighted least squares on normalised coordinates
    terms = _monomials(polynomial_order)
    u = (off.double() - (size - 1) / 2) / max(size / 2, 1.0)
    uu, vv = u[None, :].expand(size, size), u[:, None].expand(size, size)
    design = torch.stack([uu**p * vv**q for p, q in terms], dim=-1).reshape(size * size, len(terms))
    wgt = ring.reshape(n, -1).double()
    z = torch.nan_to_num(win).reshape(n, -1)
    n_ring = wgt.sum(1)
    use_full = n_ring >= 2 * len(terms)
    term_on = torch.ones(n, len(terms), dtype=torch.float64, device=dev)
    term_on[~use_full, 1:] = 0.0
    gram = torch.einsum("ns,st,su->ntu", wgt, design, design) * term_on[:, :, None] * term_on[:, None, :]
    gram = (
        gram
        + torch.diag_embed(1.0 - term_on)
        + 1e-10 * torch.eye(len(terms), dtype=torch.float64, device=dev)
    )
    rhs = torch.einsum("ns,st,ns->nt", wgt, design, z) * term_on
    coef = torch.linalg.solve(gram, rhs[..., None])[..., 0]
    fit = (coef @ design.T).reshape(n, size, size)
    fit = torch.where((n_ring > 0)[:, None, None], fit, torch.nan_to_num(win))  # no ring at all: leave as is

    flat_out = out.reshape(-1)
    target = flat[own]
    # translate padded flat indices back to indices of the unpadded (B, h, w) image
    bb = target // (hp * wp)
    rem = target % (hp * wp)
    yy, xx = rem // wp - pad, rem % wp - pad
    values = fit[own]
    if not (out.is_floating_point() or out.is_complex()):
        values = values.round()
    flat_out[(bb * h + yy) * w + xx] = values.to(out.dtype)
    return out
