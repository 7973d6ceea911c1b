"""Seeding and tracking gold beads through a tilt series (IMOD autofidseed + beadtrack semantics).

**The model.** With fixed nominal tilt angles ``θᵢ`` and tilt axis ``α``, the projection model of CONVENTIONS.md §7,
``(x, y)ᵢ = [Rz(α)·Ry(θᵢ)·X_b]_xy + sᵢ``, is *linear* in the bead positions ``X_b`` and the view shifts ``sᵢ``; the
tracker solves it by linear least squares (normal equations assembled per bead and per view). Its gauge (a 3D
translation along the seed view's beam, which the shifts absorb) is fixed by holding the seed view's shift at its
coarse value and making the beads' mean depth in the seed view zero; a weak ridge on every bead's depth keeps the
solution defined while only the seed view is known (it then predicts the cosine-stretched seed position).

**Tracking** goes outwards from the seed view (the one nearest zero tilt), alternating between the positive and
negative sides of the tilt-sorted views. For each new view: the view shift is predicted from the last tracked view on
that side plus the change of the coarse shifts; every bead's position is predicted from the model; the summed
matched-filter scores around all predictions give a common correction (a coarse-shift error,
:func:`tomoforge.alignment.beads.common_offset`); each bead is then found as the strongest local maximum of the
score map within a small radius (a bead seen in one view only, whose depth is unknown, along the segment it moves on
with depth) and centred to sub-pixel precision (:func:`tomoforge.alignment.beads.search_beads`); one peak serves one
bead. The model is refitted, points whose residual exceeds the threshold are removed, and the missing beads are
searched again at the refitted prediction. When the tracked tilt range passes 10°, 25° and 45° the tilt-axis
angle is re-estimated by minimising the model's residuals over the angle (so that an axis a few degrees off does
not spoil the predictions). After all views, ``rescue_rounds`` passes search every missing point (lost beads, gaps)
at the full model's prediction with relaxed criteria, followed by the same rejection; last, points where another
tracked bead's model position is closer than 0.9 diameters are left out, as overlap biases their centres.

**Seeding** detects beads in the seed view, keeps isolated ones, tracks the strongest through the views within
``seed_tilt_range_deg`` to confirm them and measure their heights, and picks the target number spread over the field
by farthest-point selection; with two surfaces the heights are split into two clusters and the selection balanced.

Positions are ``(x, y)`` in 0-based pixel coordinates of the raw images (x = column); model positions and shifts
are relative to the image centre ``N // 2``.

References
----------
Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011

Mastronarde, D. N. (2007). Fiducial marker and hybrid alignment methods for single- and double-axis tomography.
In: Frank, J. (ed.) Electron Tomography, 2nd ed., Springer, 163–185. doi:10.1007/978-0-387-69008-7_7
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.alignment.beads import BeadMaps, bead_score_maps, common_offset, detect_beads, search_beads
from tomoforge.geometry import projection_matrices

__all__ = ["BeadSeeds", "BeadTracks", "seed_beads", "track_beads"]


class BeadTracks(NamedTuple):
    """Result of :func:`track_beads` (``b`` beads, ``n`` views)."""

    positions_xy_px: torch.Tensor
    """``(b, n, 2)`` measured centres in 0-based raw pixel coordinates; NaN where the bead was not found."""
    scores: torch.Tensor
    """``(b, n)`` matched-filter peak height in robust noise SDs; NaN where not found."""
    residuals_px: torch.Tensor
    """``(b, n)`` distance between the measured and the model position in pixels; NaN where not found."""
    predicted_xy_px: torch.Tensor
    """``(b, n, 2)`` model positions in 0-based raw pixel coordinates (also where not found)."""
    points_xyz_px: torch.Tensor
    """``(b, 3)`` fitted bead positions relative to the tomogram centre (mean depth in the seed view 0)."""
    shifts_xy_px: torch.Tensor
    """``(n, 2)`` fitted view shifts ``sᵢ`` of the projection model, pixels from the image centre."""
    tilt_axis_deg: float
    """Tilt-axis angle of the model (refined from the tracks unless ``refine_axis=False``), degrees."""


class BeadSeeds(NamedTuple):
    """Result of :func:`seed_beads` (``k`` seeds)."""

    positions_xy_px: torch.Tensor
    """``(k, 2)`` centres in the seed view, 0-based raw pixel coordinates."""
    view_index: int
    """Index of the seed view in the stack."""
    scores: torch.Tensor
    """``(k,)`` matched-filter peak heights in the seed view (robust noise SDs)."""
    heights_px: torch.Tensor
    """``(k,)`` depth in the seed view relative to the seeds' mean, pixels (positive towards the source)."""
    surfaces: torch.Tensor
    """``(k,)`` int64: 1 on the top surface, 0 on the bottom one (all 0 when one surface is used or found)."""


class _Settings(NamedTuple):
    diameter: float
    search_radius: float
    depth_cap: float
    local_radius: float
    rescue_radius: float
    residual_floor: float
    min_score: float
    min_correlation: float
    min_fraction: float
    margin: float
    overlap: float


def _imod_scaling(bead_diameter_px: float) -> float:
    """IMOD beadtrack's distance scaling ``s = d / 12.5`` for beads above 12.5 px, else 1."""
    return max(1.0, bead_diameter_px / 12.5)


def _settings(
    bead_diameter_px: float,
    search_radius_px: float | None,
    max_residual_px: float | None,
    min_score_sd: float,
    min_correlation: float,
    overlap_diameters: float = 0.9,
) -> _Settings:
    if not bead_diameter_px >= 2.0:
        raise ValueError(f"bead_diameter_px must be at least 2 pixels, got {bead_diameter_px}")
    if max_residual_px is not None and not max_residual_px > 0:
        raise ValueError(f"max_residual_px must be positive, got {max_residual_px}")
    s = _imod_scaling(bead_diameter_px)
    d = float(bead_diameter_px)
    return _Settings(
        diameter=d,
        search_radius=max(2.0 * d, 10.0 * s) if search_radius_px is None else float(search_radius_px),
        depth_cap=max(2.0 * d, 10.0 * s),
        local_radius=max(0.6 * d, 2.5 * s),
        rescue_radius=max(0.5 * d, 2.5 * s),
        residual_floor=1.0 * s if max_residual_px is None else float(max_residual_px),
        min_score=float(min_score_sd),
        min_correlation=float(min_correlation),
        min_fraction=0.5,
        margin=0.5 * d,
        overlap=d * overlap_diameters,
    )


def _search_radius(
    search_radius_px: float | None,
    bead_diameter_px: float,
    coarse_xf: torch.Tensor | None,
    shape_yx: tuple[int, int],
) -> float:
    """Common-shift search radius: given, or ``max(2d, 10 s)``, or a sixth of the image without coarse shifts."""
    if search_radius_px is not None:
        if search_radius_px <= 0:
            raise ValueError(f"search_radius_px must be positive, got {search_radius_px}")
        return float(search_radius_px)
    radius = max(2.0 * bead_diameter_px, 10.0 * _imod_scaling(bead_diameter_px))
    return radius if coarse_xf is not None else max(radius, min(shape_yx) / 6.0)


def _check_series(stack: torch.Tensor, tilt_angles_deg: torch.Tensor | list[float]) -> torch.Tensor:
    if not isinstance(stack, torch.Tensor) or stack.dim() != 3 or not stack.is_floating_point():
        raise ValueError("stack must be a floating-point tensor of shape (n, h, w)")
    tilts = torch.as_tensor(tilt_angles_deg, dtype=torch.float64).to(stack.device)
    if tilts.shape != (stack.shape[0],):
        raise ValueError(f"tilt_angles_deg must have shape ({stack.shape[0]},), got {tuple(tilts.shape)}")
    if not torch.isfinite(tilts).all():
        raise ValueError("tilt_angles_deg must be finite")
    return tilts


def _coarse_shifts(coarse_xf: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Projection-model shifts ``−A⁻¹·d`` implied by coarse raw→aligned transforms (CONVENTIONS.md §7)."""
    if coarse_xf is None:
        return torch.zeros((n, 2), dtype=torch.float64, device=device)
    xf = torch.as_tensor(coarse_xf, dtype=torch.float64).to(device)
    if xf.shape != (n, 2, 3):
        raise ValueError(f"coarse_xf must have shape ({n}, 2, 3), got {tuple(xf.shape)}")
    return -(torch.linalg.inv(xf[:, :, :2]) @ xf[:, :, 2:]).squeeze(-1)


def _maps(stack: torch.Tensor, bead_diameter_px: float, polarity: str, views: list[int]) -> BeadMaps:
    """Score maps of the listed views (others zero), a few views at a time."""
    scores = torch.zeros_like(stack)
    corr = torch.zeros_like(stack)
    for start in range(0, len(views), 8):
        chunk = views[start : start + 8]
        m = bead_score_maps(stack[chunk], bead_diameter_px=bead_diameter_px, polarity=polarity)
        scores[chunk] = m.scores
        corr[chunk] = m.correlations
    return BeadMaps(scores=scores, correlations=corr)


def _fit(
    obs: torch.Tensor, weights: torch.Tensor, proj: torch.Tensor, gauge_view: int, gauge_shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``X_b`` ``(b, 3)`` and ``sᵢ`` ``(n, 2)`` of ``obs ≈ Pᵢ X_b + sᵢ`` (NaN where unobserved).

    ``obs`` ``(b, n, 2)`` is centre-relative (NaN where missing), ``weights`` ``(b, n)``, ``proj`` ``(n, 3, 3)`` the
    rotations ``Rz(α)Ry(θᵢ)`` (rows x, y, depth). Gauge: ``s_g`` fixed, ``Σ_b depth_g(X_b) = 0``; a weak ridge on
    every depth in the gauge view keeps the system regular.
    """
    b, n, _ = obs.shape
    dtype, device = torch.float64, obs.device
    w = torch.where(torch.isfinite(obs).all(-1), weights, torch.zeros_like(weights)).to(dtype)
    u = torch.nan_to_num(obs.to(dtype))
    p = proj[:, :2, :]  # (n, 2, 3)
    beam = proj[gauge_view, 2, :]  # depth direction of the gauge view
    ptp = p.transpose(-1, -2) @ p  # (n, 3, 3)
    scale = float(w.sum().clamp_min(1.0)) / max(b, 1)
    ridge = 1e-8 * scale * torch.outer(beam, beam)
    nxx = torch.einsum("bi,ijk->bjk", w, ptp) + ridge
    nxs = torch.einsum("bi,ikj->bijk", w, p)  # (b, n, 3, 2): w Pᵢᵀ
    nss = w.sum(0)  # (n,)
    rhs_x = torch.einsum("bi,ikj,bik->bj", w, p, u)
    rhs_s = torch.einsum("bi,bik->ik", w, u)
    beads_seen = w.sum(1) > 0
    views_seen = nss > 0
    nxx = nxx + (~beads_seen).to(dtype)[:, None, None] * torch.eye(3, dtype=dtype, device=device)
    nss = torch.where(views_seen, nss, torch.ones_like(nss))
    # Gauge: s_g fixed (moved to the right-hand side), the mean depth in the gauge view zero.
    rhs_x = rhs_x - nxs[:, gauge_view] @ gauge_shift
    nxs[:, gauge_view] = 0.0
    size = 3 * b + 2 * n
    m = torch.zeros((size, size), dtype=dtype, device=device)
    idx = torch.arange(b, device=device)
    m[: 3 * b, : 3 * b].view(b, 3, b, 3)[idx, :, idx, :] = nxx  # the 3×3 blocks on the diagonal
    m[: 3 * b, 3 * b :] = nxs.permute(0, 2, 1, 3).reshape(3 * b, 2 * n)
    m[3 * b :, : 3 * b] = m[: 3 * b, 3 * b :].T
    m[3 * b :, 3 * b :] = torch.diag(nss.repeat_interleave(2))
    g = 3 * b + 2 * gauge_view
    m[g : g + 2, g : g + 2] = torch.eye(2, dtype=dtype, device=device)
    gauge_row = (beads_seen.to(dtype)[:, None] * beam).reshape(-1)
    m[: 3 * b, : 3 * b] += scale * torch.outer(gauge_row, gauge_row)
    rhs = torch.cat([rhs_x.reshape(-1), rhs_s.reshape(-1)])
    rhs[g : g + 2] = gauge_shift
    sol = torch.linalg.solve(m, rhs)
    x = sol[: 3 * b].reshape(b, 3)
    s = sol[3 * b :].reshape(n, 2)
    x = torch.where(beads_seen[:, None], x, torch.full_like(x, math.nan))
    s = torch.where(
        views_seen[:, None] | (torch.arange(n, device=device) == gauge_view)[:, None], s, math.nan
    )
    return x, s


class _State(NamedTuple):
    obs: torch.Tensor  # (b, n, 2) centre-relative, NaN where missing
    scores: torch.Tensor  # (b, n)


def _residuals(obs: torch.Tensor, x: torch.Tensor, s: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    model = torch.einsum("nij,bj->bni", proj[:, :2, :], x) + s[None]
    return (obs - model).norm(dim=-1)


def _threshold(res: torch.Tensor, floor: float) -> float:
    """Residual limit: the floor, or 4.5 robust SDs (per axis) of the radial residuals if larger."""
    finite = res[torch.isfinite(res)]
    if finite.numel() < 8:
        return floor
    sigma = float(finite.median()) / 1.1774  # median of a 2D Gaussian's radius is 1.1774 σ
    return max(floor, 4.5 * sigma)


def _inside(xy: torch.Tensor, shape_yx: tuple[int, int], margin: float) -> torch.Tensor:
    h, w = shape_yx
    finite = torch.isfinite(xy).all(-1)
    xy = torch.nan_to_num(xy, nan=-1e9)
    ok = (xy[..., 0] >= margin) & (xy[..., 0] <= w - 1 - margin) & (xy[..., 1] >= margin)
    return finite & ok & (xy[..., 1] <= h - 1 - margin)


def _accept(
    state: _State,
    maps: BeadMaps,
    view: int,
    beads: torch.Tensor,
    predicted_xy: torch.Tensor,
    radius: float,
    cfg: _Settings,
    relax: float,
    centre: torch.Tensor,
    direction_xy: torch.Tensor | None = None,
    half_length_px: torch.Tensor | None = None,
) -> None:
    """Search ``beads`` in ``view`` around their predictions; record those that pass the score criteria."""
    if beads.numel() == 0:
        return
    pos, score, corr, is_max = search_beads(
        maps, view, predicted_xy, radius_px=radius, direction_xy=direction_xy, half_length_px=half_length_px
    )
    history = state.scores[beads]
    typical = torch.nanmedian(history, dim=1).values
    typical = torch.nan_to_num(typical, nan=0.0)
    ok = is_max & (score >= relax * cfg.min_score) & (score >= relax * cfg.min_fraction * typical)
    ok &= corr >= relax * cfg.min_correlation
    # One bead per peak: a point within half a diameter of one already in the view, or of a new one closer to its
    # own prediction, is another bead's.
    near = 0.5 * cfg.diameter
    existing = state.obs[torch.isfinite(state.obs[:, view, 0]), view] + centre
    if existing.numel():
        ok &= torch.cdist(pos, existing).min(dim=1).values >= near
    off = (pos - predicted_xy).norm(dim=-1)
    rank = torch.argsort(torch.argsort(off, stable=True), stable=True)  # 0 = closest to its prediction
    clash = (torch.cdist(pos, pos) < near) & ok[None, :] & (rank[None, :] < rank[:, None])
    ok &= ~clash.any(dim=1)
    chosen = beads[ok]
    state.obs[chosen, view] = pos[ok] - centre
    state.scores[chosen, view] = score[ok]


def _reject(
    state: _State, proj: torch.Tensor, views: torch.Tensor, gauge: tuple[int, torch.Tensor], cfg: _Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit, drop points in ``views`` above the residual limit, refit; returns the final ``(X, s)``."""
    weights = torch.ones(state.scores.shape, dtype=torch.float64, device=proj.device)
    x, s = _fit(state.obs, weights, proj, *gauge)
    res = _residuals(state.obs, x, s, proj)
    limit = _threshold(res, cfg.residual_floor)
    bad = torch.zeros_like(res, dtype=torch.bool)
    bad[:, views] = torch.nan_to_num(res[:, views], nan=0.0) > limit
    # Never drop the seed observations (they define the beads).
    bad[:, gauge[0]] = False
    if bad.any():
        state.obs[bad] = math.nan
        state.scores[bad] = math.nan
        x, s = _fit(state.obs, weights, proj, *gauge)
    return x, s


def _depth_paths(
    state: _State, x: torch.Tensor, proj: torch.Tensor, view: int, beam: torch.Tensor, cfg: _Settings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where beads of still unknown depth can be in ``view``: direction ``(b, 2)`` and half-length ``(b,)``.

    A bead seen in one view only has an unknown depth along that view's beam; in ``view`` it lies on a segment
    through its depth-0 prediction along ``proj[view] · beam``, as long as the largest depth of the beads already
    located (plus a diameter), capped at ``max(2d, 10 s)``. Beads seen in two or more views get half-length 0.
    Also returns the mask of located beads.
    """
    located = torch.isfinite(state.obs[..., 0]).sum(1) >= 2
    motion = proj[view, :2] @ beam
    speed = float(motion.norm())
    direction = (motion / max(speed, 1e-12)).expand(x.shape[0], 2)
    if located.any():
        depth_max = float((x[located] @ beam).abs().max()) + cfg.diameter
        half = min(depth_max * speed, cfg.depth_cap)
    else:
        half = cfg.depth_cap
    half_lengths = torch.where(located, 0.0, half).to(torch.float64)
    return direction, half_lengths, located


def _rotations(tilts: torch.Tensor, tilt_axis_deg: float) -> torch.Tensor:
    """``(n, 3, 3)`` rotations ``Rz(α)·Ry(θᵢ)`` of the projection model."""
    return projection_matrices(tilts, tilt_axis_deg)[..., :3]


def _axis_cost(
    state: _State, tilts: torch.Tensor, alpha: float, gauge: tuple[int, torch.Tensor], cap: float
) -> float:
    """Truncated sum of squared residuals of the linear model with tilt axis ``alpha``."""
    proj = _rotations(tilts, alpha)
    x, s = _fit(state.obs, torch.ones_like(state.scores), proj, *gauge)
    res = _residuals(state.obs, x, s, proj)
    return float(torch.nan_to_num(res, nan=0.0).clamp_max(cap).pow(2).sum())


def _refine_axis(
    state: _State,
    tilts: torch.Tensor,
    alpha: float,
    gauge: tuple[int, torch.Tensor],
    span_deg: float,
    cap: float,
) -> float:
    """Tilt-axis angle minimising the model's residuals: a 1° grid over ``alpha ± span_deg``, then golden section."""
    located = torch.isfinite(state.obs[..., 0]).sum(1) >= 3
    if int(located.sum()) < 4:
        return alpha  # too few beads to tell the axis from the per-view shifts
    grid = [alpha + k for k in range(-int(span_deg), int(span_deg) + 1)]
    costs = [_axis_cost(state, tilts, a, gauge, cap) for a in grid]
    if max(costs) - min(costs) <= 1e-9 * (1.0 + min(costs)):
        return alpha
    best = grid[min(range(len(grid)), key=lambda k: (costs[k], abs(grid[k] - alpha)))]
    lo, hi = best - 1.0, best + 1.0
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _axis_cost(state, tilts, a, gauge, cap), _axis_cost(state, tilts, b, gauge, cap)
    while hi - lo > 0.02:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _axis_cost(state, tilts, a, gauge, cap)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _axis_cost(state, tilts, b, gauge, cap)
    return 0.5 * (lo + hi)


def _track(
    maps: BeadMaps,
    tilt_axis_deg: float,
    coarse: torch.Tensor,
    tilts: torch.Tensor,
    seeds_xy: torch.Tensor,
    seed_view: int,
    views: list[int],
    cfg: _Settings,
    rescue_rounds: int,
    refine_axis: bool,
) -> tuple[_State, torch.Tensor, torch.Tensor, float]:
    """Track seeds through ``views`` (which include the seed view).

    Returns the state, the last fit ``(X, s)`` and the tilt-axis angle (refined when ``refine_axis``: whenever the
    tracked tilt range passes 10°, 25° and 45° from the seed view, and before the rescue passes).
    """
    device = maps.scores.device
    alpha = float(tilt_axis_deg)
    proj = _rotations(tilts, alpha).to(device)
    milestones = [10.0, 25.0, 45.0]
    milestones_done = 0
    reached = 0.0
    n, h, w = maps.scores.shape
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float64, device=device)
    b = seeds_xy.shape[0]
    state = _State(
        obs=torch.full((b, n, 2), math.nan, dtype=torch.float64, device=device),
        scores=torch.full((b, n), math.nan, dtype=torch.float64, device=device),
    )
    seeds = seeds_xy.to(device=device, dtype=torch.float64)
    # Re-centre the seeds on the seed view; keep the given position where no peak is near.
    pos, score, _, is_max = search_beads(maps, seed_view, seeds, radius_px=max(2.0, 0.25 * cfg.diameter))
    state.obs[:, seed_view] = torch.where(is_max[:, None], pos, seeds) - centre
    state.scores[:, seed_view] = torch.where(is_max, score, torch.full_like(score, math.nan))
    gauge = (seed_view, coarse[seed_view])
    beam = proj[seed_view, 2]
    order = sorted(views, key=lambda v: (float(tilts[v]), v))
    start = order.index(seed_view)
    sequence: list[tuple[int, int]] = []  # (view, side: +1 towards higher tilt)
    for step in range(1, len(order)):
        for side in (1, -1):
            k = start + side * step
            if 0 <= k < len(order):
                sequence.append((order[k], side))
    all_beads = torch.arange(b, device=device)
    x, s = _fit(state.obs, torch.ones((b, n), dtype=torch.float64, device=device), proj, *gauge)

    def search_view(view: int, predicted: torch.Tensor, radius: float, relax: float) -> None:
        """Search the beads missing in ``view`` (disc or depth path) and record what passes."""
        missing = ~torch.isfinite(state.obs[:, view, 0]) & _inside(predicted, (h, w), cfg.margin)
        missing &= torch.isfinite(x).all(-1)
        if missing.any():
            direction, half, _ = _depth_paths(state, x, proj, view, beam, cfg)
            _accept(
                state, maps, view, all_beads[missing], predicted[missing], radius, cfg, relax, centre,
                direction[missing], half[missing],
            )  # fmt: skip

    last = {1: seed_view, -1: seed_view}  # per side, the last view whose shift is known
    one_view = torch.zeros(1, dtype=torch.long, device=device)
    for view, side in sequence:
        ref = last[side]
        s_guess = s[ref] + coarse[view] - coarse[ref]
        predicted = torch.einsum("ij,bj->bi", proj[view, :2], x) + s_guess + centre
        live = _inside(predicted, (h, w), cfg.margin) & torch.isfinite(x).all(-1)
        if not live.any():
            continue
        # The common offset (coarse-shift error) from the beads whose depth is known, or from all at first (the
        # depth paths of the others then cover their spread).
        _, _, located = _depth_paths(state, x, proj, view, beam, cfg)
        use = live & located if (live & located).any() else live
        predicted = predicted + common_offset(maps.scores[view], predicted[use], radius_px=cfg.search_radius)
        search_view(view, predicted, cfg.local_radius, 1.0)
        one_view[0] = view
        x, s = _reject(state, proj, one_view, gauge, cfg)
        # Search the missing beads again at the refitted prediction (shift of this view now known).
        if torch.isfinite(s[view]).all():
            predicted = torch.einsum("ij,bj->bi", proj[view, :2], x) + s[view] + centre
            search_view(view, predicted, cfg.rescue_radius, 1.0)
            x, s = _reject(state, proj, one_view, gauge, cfg)
            last[side] = view
        reached = max(reached, abs(float(tilts[view] - tilts[seed_view])))
        if refine_axis and milestones and reached >= milestones[0]:
            while milestones and reached >= milestones[0]:
                milestones.pop(0)
            span = 10.0 if milestones_done == 0 else 2.0  # later refinements only polish the first
            alpha = _refine_axis(state, tilts, alpha, gauge, span, 3.0 * cfg.residual_floor)
            milestones_done += 1
            proj = _rotations(tilts, alpha)
            x, s = _reject(state, proj, one_view, gauge, cfg)
    if refine_axis and reached >= 10.0:
        alpha = _refine_axis(state, tilts, alpha, gauge, 2.0, 3.0 * cfg.residual_floor)
        proj = _rotations(tilts, alpha)
        x, s = _fit(state.obs, torch.ones_like(state.scores), proj, *gauge)
    view_list = torch.tensor(views, device=device)
    for _ in range(rescue_rounds):
        predicted = torch.einsum("nij,bj->bni", proj[:, :2], x) + s[None] + centre
        for view in views:
            if torch.isfinite(s[view]).all():
                search_view(view, predicted[:, view], cfg.rescue_radius, 0.7)
        x, s = _reject(state, proj, view_list, gauge, cfg)
    if cfg.overlap > 0:
        # Points where another tracked bead's model position is within the overlap distance are biased by it.
        # Only beads located in two or more views have a model position to trust.
        model = torch.einsum("nij,bj->bni", proj[:, :2], x) + s[None]
        gap = torch.nan_to_num((model[:, None] - model[None, :]).norm(dim=-1), nan=math.inf)  # (b, b, n)
        located = torch.isfinite(state.obs[..., 0]).sum(1) >= 2
        ignore = torch.eye(b, dtype=torch.bool, device=device) | ~located[None, :]
        gap = gap.masked_fill(ignore[:, :, None], math.inf)
        crowded = gap.min(dim=1).values < cfg.overlap
        crowded[:, seed_view] = False
        if crowded.any():
            state.obs[crowded] = math.nan
            state.scores[crowded] = math.nan
            x, s = _fit(state.obs, torch.ones((b, n), dtype=torch.float64, device=device), proj, *gauge)
    return state, x, s, alpha


def track_beads(
    stack: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    tilt_axis_deg: float,
    *,
    seeds_xy_px: torch.Tensor,
    bead_diameter_px: float,
    seed_view: int | None = None,
    coarse_xf: torch.Tensor | None = None,
    polarity: str = "dark",
    search_radius_px: float | None = None,
    max_residual_px: float | None = None,
    min_score_sd: float = 3.0,
    min_correlation: float = 0.3,
    rescue_rounds: int = 2,
    refine_axis: bool = True,
    maps: BeadMaps | None = None,
) -> BeadTracks:
    """Track seeded gold beads through a tilt series with a linear 3D model (IMOD beadtrack semantics).

    Parameters
    ----------
    stack
        ``(n, h, w)`` raw (unaligned) tilt images.
    tilt_angles_deg
        ``(n,)`` nominal tilt angles θ in degrees (any order; tracking follows increasing ``|θ − θ_seed|``).
    tilt_axis_deg
        Tilt-axis angle α in degrees (CONVENTIONS.md §6).
    seeds_xy_px
        ``(b, 2)`` bead centres in the seed view, 0-based pixel coordinates.
    bead_diameter_px
        Bead diameter ``d`` in pixels.
    seed_view
        View holding the seeds; default the one nearest zero tilt.
    coarse_xf
        ``(n, 2, 3)`` coarse raw→aligned transforms ``[A | d]`` about centres ``N // 2`` (IMOD ``.prexg`` meaning,
        CONVENTIONS.md §6), or None (no shifts known).
    polarity
        ``"dark"`` or ``"bright"`` beads.
    search_radius_px
        Radius of the common-shift search around the predictions; default ``max(2d, 10 s)`` with IMOD's scaling
        ``s = max(1, d / 12.5)`` (IMOD's DistanceRescueCriterion), and at least a sixth of the image without
        ``coarse_xf``. Individual beads are then searched within ``max(0.6 d, 2.5 s)`` (beads of unknown depth
        along their parallax path, up to ``max(2d, 10 s)`` long), rescued within ``max(0.5 d, 2.5 s)``.
    max_residual_px
        Residual (pixels) above which a point is removed, unless 4.5 robust SDs of all residuals is larger; default
        ``s`` (IMOD's post-fit rescue residual is ``2.5 s``; the adaptive part makes a tighter floor safe, and the
        overlapping beads it removes are off by 1–3 px).
    min_score_sd
        Smallest accepted peak (robust noise SDs of the view's score map); a point must also reach half of its
        bead's median score so far. Rescue passes relax both by 0.7.
    min_correlation
        Smallest local normalised correlation with the bead template.
    rescue_rounds
        Passes over all missing points at the full model's prediction (IMOD RoundsOfTracking).
    refine_axis
        Re-estimate the tilt-axis angle (within ±10° of the given one) from the tracks as they grow, so that an
        axis a few degrees off does not spoil the predictions at high tilt.
    maps
        Precomputed :func:`tomoforge.alignment.beads.bead_score_maps` of ``stack`` (computed when None).

    Returns
    -------
    BeadTracks
        Measured positions ``(b, n, 2)`` with NaN where lost, scores, residuals to the final model, the model
        positions of every bead in every view, the fitted 3D positions ``(b, 3)``, view shifts ``(n, 2)`` and the
        model's tilt-axis angle. Points where another tracked bead's model position is within 0.9 diameters
        are left out (their centres are biased by the overlap).
    """
    tilts = _check_series(stack, tilt_angles_deg)
    n, h, w = stack.shape
    seeds = torch.as_tensor(seeds_xy_px, dtype=torch.float64).to(stack.device)
    if seeds.dim() != 2 or seeds.shape[-1] != 2 or not torch.isfinite(seeds).all():
        raise ValueError(f"seeds_xy_px must be a finite (b, 2) tensor, got shape {tuple(seeds.shape)}")
    if rescue_rounds < 0:
        raise ValueError(f"rescue_rounds must be non-negative, got {rescue_rounds}")
    g = int(torch.argmin(tilts.abs())) if seed_view is None else int(seed_view)
    if not 0 <= g < n:
        raise ValueError(f"seed_view {g} is outside the stack of {n} views")
    radius = _search_radius(search_radius_px, bead_diameter_px, coarse_xf, (h, w))
    cfg = _settings(bead_diameter_px, radius, max_residual_px, min_score_sd, min_correlation)
    coarse = _coarse_shifts(coarse_xf, n, stack.device)
    if maps is None:
        maps = _maps(stack, bead_diameter_px, polarity, list(range(n)))
    elif maps.scores.shape != stack.shape:
        raise ValueError("maps must have the shape of the stack")
    b = seeds.shape[0]
    if b == 0:
        empty = torch.zeros((0, n), dtype=torch.float64, device=stack.device)
        return BeadTracks(
            positions_xy_px=empty[..., None].expand(0, n, 2),
            scores=empty,
            residuals_px=empty,
            predicted_xy_px=empty[..., None].expand(0, n, 2),
            points_xyz_px=torch.zeros((0, 3), dtype=torch.float64, device=stack.device),
            shifts_xy_px=torch.full((n, 2), math.nan, dtype=torch.float64, device=stack.device),
            tilt_axis_deg=float(tilt_axis_deg),
        )
    state, x, s, alpha = _track(
        maps, float(tilt_axis_deg), coarse, tilts, seeds, g, list(range(n)), cfg, rescue_rounds, refine_axis
    )
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float64, device=stack.device)
    model = torch.einsum("nij,bj->bni", _rotations(tilts, alpha)[:, :2], x) + s[None]
    return BeadTracks(
        positions_xy_px=state.obs + centre,
        scores=state.scores,
        residuals_px=(state.obs - model).norm(dim=-1),
        predicted_xy_px=model + centre,
        points_xyz_px=x,
        shifts_xy_px=s,
        tilt_axis_deg=alpha,
    )


def _two_clusters(heights: torch.Tensor, min_separation: float) -> torch.Tensor:
    """1D 2-means labels (1 = upper cluster); all 0 when the clusters are closer than ``min_separation``."""
    lo, hi = float(heights.min()), float(heights.max())
    labels = torch.zeros_like(heights, dtype=torch.long)
    if hi - lo < min_separation:
        return labels
    for _ in range(50):
        new = (heights - lo).abs() > (heights - hi).abs()
        if new.all() or not new.any():
            return torch.zeros_like(labels)
        labels = new.long()
        lo, hi = float(heights[~new].mean()), float(heights[new].mean())
    return labels if hi - lo >= min_separation else torch.zeros_like(labels)


def _spread(positions: torch.Tensor, groups: torch.Tensor, quotas: list[int]) -> list[int]:
    """Farthest-point selection with per-group quotas; the first pick is index 0 of its group (the strongest)."""
    chosen: list[int] = []
    taken = [0] * len(quotas)
    available = torch.ones(positions.shape[0], dtype=torch.bool, device=positions.device)
    mind = torch.full((positions.shape[0],), math.inf, dtype=torch.float64, device=positions.device)
    while True:
        open_groups = [k for k in range(len(quotas)) if taken[k] < quotas[k]]
        if not open_groups:
            return chosen
        group = min(open_groups, key=lambda k: taken[k] / quotas[k])  # the group furthest below its quota
        candidates = (groups == group) & available
        if not candidates.any():
            quotas[group] = taken[group]
            continue
        ranked = torch.where(candidates, mind, torch.full_like(mind, -1.0))
        pick = int(torch.nonzero(candidates)[0]) if not chosen else int(ranked.argmax())
        chosen.append(pick)
        taken[group] += 1
        available[pick] = False
        mind = torch.minimum(mind, (positions - positions[pick]).norm(dim=-1))


def seed_beads(
    stack: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    tilt_axis_deg: float,
    *,
    bead_diameter_px: float,
    target_number: int = 25,
    two_surfaces: bool = False,
    coarse_xf: torch.Tensor | None = None,
    polarity: str = "dark",
    seed_view: int | None = None,
    threshold_sd: float = 6.0,
    min_correlation: float = 0.5,
    isolation_diameters: float = 1.5,
    seed_tilt_range_deg: float = 20.0,
    min_tracked_fraction: float = 0.7,
    maps: BeadMaps | None = None,
) -> BeadSeeds:
    """Choose beads to track: confirmed by short tracks around the seed view, spread over the field.

    Parameters
    ----------
    stack
        ``(n, h, w)`` raw tilt images.
    tilt_angles_deg, tilt_axis_deg
        Nominal tilt angles ``(n,)`` and tilt-axis angle in degrees.
    bead_diameter_px
        Bead diameter ``d`` in pixels.
    target_number
        Number of seeds wanted (IMOD autofidseed ``-TargetNumberOfBeads``; the Scipion protocol asks 10 by
        default). Fewer are returned when fewer good beads exist.
    two_surfaces
        Balance the seeds between the two surfaces of the specimen (autofidseed ``-TwoSurfaces``), told apart by
        the heights the short tracks give. When the heights do not form two clusters more than ``d`` apart, all
        seeds are on one surface (``surfaces`` all 0).
    coarse_xf
        ``(n, 2, 3)`` coarse raw→aligned transforms about ``N // 2``, or None.
    polarity
        ``"dark"`` or ``"bright"`` beads.
    seed_view
        View to seed in; default the one nearest zero tilt.
    threshold_sd, min_correlation
        Detection criteria in the seed view (see :func:`tomoforge.alignment.beads.detect_beads`).
    isolation_diameters
        Candidates with another candidate closer than this many diameters are not used.
    seed_tilt_range_deg
        Candidates are tracked through the views within this angle of the seed view.
    min_tracked_fraction
        Fraction of those views a candidate must be found in to be kept.
    maps
        Precomputed :func:`tomoforge.alignment.beads.bead_score_maps` of ``stack``.

    Returns
    -------
    BeadSeeds
        The chosen seeds in the order they were picked (the first is the strongest); empty (``k = 0``) when no
        bead is found, which callers should report as a failure of fiducial tracking (suggesting patch tracking).
    """
    tilts = _check_series(stack, tilt_angles_deg)
    if target_number < 1:
        raise ValueError(f"target_number must be at least 1, got {target_number}")
    if not 0.0 < min_tracked_fraction <= 1.0:
        raise ValueError(f"min_tracked_fraction must be in (0, 1], got {min_tracked_fraction}")
    n, h, w = stack.shape
    device = stack.device
    g = int(torch.argmin(tilts.abs())) if seed_view is None else int(seed_view)
    if not 0 <= g < n:
        raise ValueError(f"seed_view {g} is outside the stack of {n} views")
    found = detect_beads(
        stack[g],
        bead_diameter_px=bead_diameter_px,
        polarity=polarity,
        threshold_sd=threshold_sd,
        min_correlation=min_correlation,
        border_px=bead_diameter_px,
    )
    empty = BeadSeeds(
        positions_xy_px=torch.zeros((0, 2), dtype=torch.float64, device=device),
        view_index=g,
        scores=torch.zeros(0, dtype=torch.float64, device=device),
        heights_px=torch.zeros(0, dtype=torch.float64, device=device),
        surfaces=torch.zeros(0, dtype=torch.long, device=device),
    )
    if found.scores.numel() == 0:
        return empty
    pos = found.positions_xy_px.to(torch.float64)
    dist = torch.cdist(pos, pos) + torch.eye(pos.shape[0], dtype=torch.float64, device=device) * 1e9
    isolated = dist.min(dim=1).values >= isolation_diameters * bead_diameter_px
    pos, scores = pos[isolated], found.scores[isolated].to(torch.float64)
    pos, scores = pos[: max(3 * target_number, 30)], scores[: max(3 * target_number, 30)]
    if scores.numel() == 0:
        return empty
    near = [v for v in range(n) if abs(float(tilts[v] - tilts[g])) <= seed_tilt_range_deg]
    if maps is None:
        maps = _maps(stack, bead_diameter_px, polarity, near)
    radius = _search_radius(None, bead_diameter_px, coarse_xf, (h, w))
    cfg = _settings(bead_diameter_px, radius, None, 3.0, 0.3)
    coarse = _coarse_shifts(coarse_xf, n, device)
    state, x, s, alpha = _track(
        maps, float(tilt_axis_deg), coarse, tilts, pos, g, near, cfg, rescue_rounds=1, refine_axis=True
    )
    proj = _rotations(tilts, alpha)
    # Found in enough of the views where the model puts the bead inside the image.
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float64, device=device)
    model = torch.einsum("nij,bj->bni", proj[near, :2], x) + s[near][None] + centre
    expected = _inside(model, (h, w), cfg.margin)
    seen = torch.isfinite(state.obs[:, near, 0]) & expected
    tracked = seen.sum(1) / expected.sum(1).clamp_min(1)
    good = (tracked >= min_tracked_fraction) & (seen.sum(1) >= 2) & torch.isfinite(x).all(-1)
    if not good.any():
        return empty
    pos = state.obs[good, g] + torch.tensor([w // 2, h // 2], dtype=torch.float64, device=device)
    scores = state.scores[good, g]
    heights = x[good] @ proj[g, 2]
    heights = heights - heights.mean()
    surfaces = (
        _two_clusters(heights, bead_diameter_px)
        if two_surfaces
        else torch.zeros_like(heights, dtype=torch.long)
    )
    order = torch.argsort(torch.nan_to_num(scores, nan=0.0), descending=True)
    pos, scores, heights, surfaces = pos[order], scores[order], heights[order], surfaces[order]
    counts = [int((surfaces == k).sum()) for k in range(2)]
    half = target_number // 2 if counts[1] else 0
    quotas = [min(target_number - half, counts[0]), min(half, counts[1])]
    # Fill from the other surface when one runs short.
    quotas[0] = min(counts[0], target_number - quotas[1])
    quotas[1] = min(counts[1], target_number - quotas[0])
    # Weak candidates (below half the median score) are used only where a surface runs out of strong ones.
    strong = torch.nan_to_num(scores, nan=0.0) >= 0.5 * float(torch.nanmedian(scores))
    keep = torch.ones_like(strong)
    for k in range(2):
        mine = surfaces == k
        if int((strong & mine).sum()) >= quotas[k]:
            keep &= strong | ~mine
    pos, scores, heights, surfaces = pos[keep], scores[keep], heights[keep], surfaces[keep]
    chosen = torch.tensor(_spread(pos, surfaces, quotas), dtype=torch.long, device=device)
    return BeadSeeds(
        positions_xy_px=pos[chosen],
        view_index=g,
        scores=scores[chosen],
        heights_px=heights[chosen],
        surfaces=surfaces[chosen],
    )
