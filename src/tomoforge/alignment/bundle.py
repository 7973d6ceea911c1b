"""Fiducial bundle adjustment: the tilt geometry and 3D bead positions from tracked gold beads (tiltalign class).

Observation of bead ``b`` in view ``i``, in raw-image pixels relative to the image centre ``N // 2``
(CONVENTIONS.md §2, §7 with a per-view magnification as in IMOD's tiltalign)::

    u_bi = m_i · [Rz(α_i) · Ry(θ_i) · X_b]_xy + s_i

Unknowns: in-plane rotation (tilt-axis angle) ``α_i``, tilt angle ``θ_i``, magnification ``m_i``, shift ``s_i`` and
the bead positions ``X_b`` (pixels from the tomogram centre). Rotation, tilt and magnification may each be fixed,
solved per view, or solved at group centres every ``group_size`` views (in order of tilt angle, one centre on the
reference view) with linear interpolation between centres, as tiltalign's grouping; rotation may also be one value
for the whole series.

Gauges (the motions of the solution that leave every projection unchanged) are fixed as tiltalign does for
rotation and scale: the reference view (by default the one nearest zero tilt) keeps its input tilt angle and
magnification 1. The translation gauge puts the tomogram centre on the fiducials' centroid in z (tiltalign's
default, ``AxisZShift 0``) and, in x and y, on the point that projects to the raw image centre of the reference
view (``s_ref = 0``), so that the tomogram covers the field of view of that view (tiltalign reports its bead
coordinates about their centroid in x and y too). During the fit the translation is held by ``s_ref`` and one
more shift component; the solution is moved to the gauge above at the end (an exact invariance).

The solver is Levenberg-Marquardt on the analytic Jacobian in float64, with the bead positions eliminated by the
Schur complement (each bead is a 3×3 block), so one iteration costs ``O(views × beads)``. It starts from the input
angles with the linear least-squares solution for the positions and shifts (the model is linear in ``X`` and
``s`` for fixed angles). Robust fitting then reweights the points with Tukey's bisquare as tiltalign's
``-RobustFitting``: each point's residual is divided by the (smoothed) median residual of its view, the median and
normalised MAD of these ratios are taken over groups of views holding at least 100 points, and a point
``dev = (r − median) / (K · MADN)`` above the median gets ``(1 − dev²)²`` (0 beyond ``dev = 1``), with
``K = 4.685 · k_factor_scaling``; reweighting repeats until the weights settle.

References
----------
Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011

Lawrence, M. F. (1992). Least-squares method of alignment using markers. In *Electron Tomography* (ed. Frank, J.),
Plenum, 197–204. doi:10.1007/978-1-4757-2163-8_9

Triggs, B., McLauchlan, P. F., Hartley, R. I. & Fitzgibbon, A. W. (2000). Bundle adjustment — a modern synthesis.
Vision Algorithms: Theory and Practice, LNCS 1883, 298–372. doi:10.1007/3-540-44480-7_21

Beaton, A. E. & Tukey, J. W. (1974). The fitting of power series, meaning polynomials, illustrated on
band-spectroscopic data. Technometrics 16, 147–185. doi:10.1080/00401706.1974.10489171
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

__all__ = ["FiducialAlignment", "fiducial_align"]

_ROTATION_OPTIONS = ("fixed", "one", "all", "grouped")
_TILT_OPTIONS = ("fixed", "all", "grouped")
_MAG_OPTIONS = ("fixed", "all", "grouped")

_MIN_VIEWS_PER_BEAD = 3
"""Beads seen in fewer views are left out of the fit (position NaN)."""
_TUKEY_K = 4.685
"""Bisquare tuning constant (95 % efficiency for Gaussian errors); tiltalign's ``kfacRobust``."""
_MIN_POINTS_PER_WEIGHT_GROUP = 100
"""Fewest residuals over which the robust median and MADN are taken (tiltalign's ``minResRobust``)."""
_MEDIAN_SMOOTHING_VIEWS = 5
"""Views (by tilt angle) over which the per-view median residual is smoothed by a running median."""
_MIN_WEIGHTED_POINTS_PER_BEAD = 4
_WEIGHT_DELTA = 0.02
"""A bead left with fewer than 4 weights above 0.02 gets 0.02 added to all its weights (as tiltalign)."""
_WEIGHT_CHANGE_MEAN = 0.001
_WEIGHT_CHANGE_MAX = 0.01
_ROUNDS_BELOW_CRITERION = 4
"""Reweighting stops when the weights change by less than these (mean over points below 0.5, and maximum), or
when one of the two holds in 4 successive rounds (tiltalign's criteria)."""
_LM_RELATIVE_TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class FiducialAlignment:
    """Solved tilt geometry of :func:`fiducial_align` (all tensors float64, on the input's device).

    ``n`` views in stack order, ``b`` beads in input order.
    """

    tilt_axis_angles_deg: torch.Tensor
    """``(n,)`` in-plane rotation α (tilt-axis angle from +Y, counter-clockwise), degrees."""
    tilt_angles_deg: torch.Tensor
    """``(n,)`` tilt angles θ, degrees."""
    magnifications: torch.Tensor
    """``(n,)`` magnification relative to the reference view."""
    shifts_xy_px: torch.Tensor
    """``(n, 2)`` raw-image position of the tomogram centre, pixels from the image centre ``N // 2``."""
    positions_xyz_px: torch.Tensor
    """``(b, 3)`` bead positions, pixels from the tomogram centre; NaN for beads left out."""
    residuals_xy_px: torch.Tensor
    """``(b, n, 2)`` measured − projected, pixels; NaN where a bead is missing or left out."""
    weights: torch.Tensor
    """``(b, n)`` robust weights in [0, 1] of the final solution (1 without robust fitting; 0 where missing)."""
    mean_residual_px: float
    """Mean residual length over all measured points, pixels (IMOD's "residual error mean")."""
    weighted_mean_residual_px: float
    """Mean residual length weighted by the robust weights, pixels."""
    view_mean_residual_px: torch.Tensor
    """``(n,)`` mean residual length of each view, pixels."""
    beads_used: torch.Tensor
    """``(b,)`` bool: beads seen in enough views to be solved."""
    reference_view: int
    """Index of the view whose tilt angle and magnification fix the gauge."""
    image_size_xy: tuple[int, int]
    """``(nx, ny)`` of the raw images, pixels."""
    iterations: int
    """Levenberg-Marquardt iterations, all fits together."""
    robust_rounds: int
    """Reweighting rounds (0 without robust fitting)."""
    converged: bool
    """Whether the last fit converged and, with robust fitting, the weights settled."""

    def projection_matrices(self) -> torch.Tensor:
        """``(n, 3, 4)`` matrices ``[m·Rz(α)·Ry(θ) | s]`` (xy rows scaled by m, depth row unscaled).

        Used with :func:`tomoforge.geometry.project_points` they give the solved raw-image positions (relative to
        the image centre) and the depth; they equal
        ``projection_matrices_from_xf(xf[..., :2], xf[..., 2], tilt_angles_deg)`` with ``xf = self.to_xf()``.
        """
        rot = _rotation_zy(torch.deg2rad(self.tilt_axis_angles_deg), torch.deg2rad(self.tilt_angles_deg))
        out = torch.zeros((*rot.shape[:-2], 3, 4), dtype=rot.dtype, device=rot.device)
        out[..., :3, :3] = rot
        out[..., :2, :3] *= self.magnifications[:, None, None]
        out[..., :2, 3] = self.shifts_xy_px
        return out

    def to_xf(self) -> torch.Tensor:
        """IMOD-meaning raw → aligned transforms about the centres ``N // 2`` (CONVENTIONS.md §6).

        ``aligned − c = A·(raw − c) + d`` with ``A = Rz(−α)/m`` and ``d = −A·s``, so that the aligned image is the
        projection with the tilt axis on Y at unit magnification, ``[Ry(θ)·X]_xy``.

        Returns
        -------
        torch.Tensor
            ``(n, 2, 3)`` ``[[A11, A12, DX], [A21, A22, DY]]`` with shifts in pixels about tomoforge centres
            (convert with :func:`tomoforge.geometry.tomoforge_to_imod_xf_shift_px` before writing a ``.xf``).
        """
        a = torch.deg2rad(self.tilt_axis_angles_deg)
        c, s = torch.cos(a), torch.sin(a)
        mat = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
        mat = mat / self.magnifications[:, None, None]
        d = -(mat @ self.shifts_xy_px.unsqueeze(-1)).squeeze(-1)
        return torch.cat([mat, d.unsqueeze(-1)], dim=-1)


class _State(NamedTuple):
    alpha: torch.Tensor  # (n,) rad
    theta: torch.Tensor  # (n,) rad
    mag: torch.Tensor  # (n,)
    shifts: torch.Tensor  # (n, 2)
    points: torch.Tensor  # (b, 3)


def _rotation_zy(alpha: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``(n, 3, 3)`` ``Rz(α)·Ry(θ)`` from radians."""
    ca, sa, ct, st = torch.cos(alpha), torch.sin(alpha), torch.cos(theta), torch.sin(theta)
    z = torch.zeros_like(ca)
    rows = [
        torch.stack([ca * ct, -sa, ca * st], -1),
        torch.stack([sa * ct, ca, sa * st], -1),
        torch.stack([-st, z, ct], -1),
    ]
    return torch.stack(rows, -2)


def _interpolation_matrix(sorted_pos: list[int], group_size: int, anchor: int) -> tuple[torch.Tensor, int]:
    """Linear interpolation from group centres to views.

    Centres sit every ``group_size`` positions (in order of tilt angle) on both sides of ``anchor``; an end of the
    series becomes a centre too when it lies at least half a group beyond the last one, otherwise the end views
    take the value of the nearest centre.

    Returns the ``(n, g)`` matrix in stack order and the column of the anchor's centre.
    """
    n = len(sorted_pos)
    centres = list(range(anchor % group_size, n, group_size))
    if centres[0] > 0 and centres[0] >= group_size / 2:
        centres.insert(0, 0)
    if centres[-1] < n - 1 and n - 1 - centres[-1] >= group_size / 2:
        centres.append(n - 1)
    by_pos = torch.zeros((n, len(centres)), dtype=torch.float64)
    for p in range(n):
        if p <= centres[0]:
            by_pos[p, 0] = 1.0
        elif p >= centres[-1]:
            by_pos[p, -1] = 1.0
        else:
            j = bisect_right(centres, p) - 1
            c0, c1 = centres[j], centres[j + 1]
            t = (p - c0) / (c1 - c0)
            by_pos[p, j] = 1.0 - t
            by_pos[p, j + 1] = t
    return by_pos[sorted_pos], centres.index(anchor)


def _parameter_map(
    option: str, group_size: int, sorted_pos: list[int], ref_pos: int, *, fix_reference: bool
) -> torch.Tensor:
    """``(n, g)`` map from solved parameters to per-view increments of one quantity."""
    n = len(sorted_pos)
    if option == "fixed":
        return torch.zeros((n, 0), dtype=torch.float64)
    if option == "one":
        return torch.ones((n, 1), dtype=torch.float64)
    matrix, anchor_col = _interpolation_matrix(sorted_pos, 1 if option == "all" else group_size, ref_pos)
    if fix_reference:
        matrix = torch.cat([matrix[:, :anchor_col], matrix[:, anchor_col + 1 :]], dim=1)
    return matrix


def _shift_gauge(theta: torch.Tensor, alpha: torch.Tensor, ref: int) -> tuple[int, int]:
    """A view and image axis whose shift component, held with ``s_ref``, fixes the specimen's translation.

    Holding ``s_ref`` leaves the translation ``t ∝ (−tan θ_ref, 0, 1)`` free; it moves view ``j`` along
    ``Rz(α_j)·x̂`` by ``∝ sin(θ_j − θ_ref)``, so the view with the largest ``|sin(θ_j − θ_ref)|`` is held along the
    image axis nearest that direction.
    """
    lever = torch.sin(theta - theta[ref]).abs()
    j = int(torch.argmax(lever))
    if float(lever[j]) < 1e-3:
        raise ValueError("the tilt angles span less than 0.06°: the bead heights (z) cannot be solved")
    axis = 0 if abs(math.cos(float(alpha[j]))) >= abs(math.sin(float(alpha[j]))) else 1
    return j, axis


def _linearise(
    state: _State, observed_uv: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residuals ``projected − measured`` ``(b, n, 2)``, Jacobians ``(b, n, 2, 5)`` and ``(n, 2, 3)``, cost.

    The 5 per-view columns are ``(α, θ, m, s_x, s_y)`` with angles in radians.
    """
    ca, sa = torch.cos(state.alpha), torch.sin(state.alpha)
    ct, st = torch.cos(state.theta), torch.sin(state.theta)
    x, y, z = state.points[:, 0:1], state.points[:, 1:2], state.points[:, 2:3]  # (b, 1)
    yx = x * ct + z * st  # (b, n): Ry(θ)·X
    yy = y.expand_as(yx)
    yz = -x * st + z * ct
    qx = ca * yx - sa * yy
    qy = sa * yx + ca * yy
    m = state.mag
    pred = torch.stack([m * qx + state.shifts[:, 0], m * qy + state.shifts[:, 1]], dim=-1)
    res = pred - observed_uv  # meaningless where a bead is missing; such points have weight 0
    one, zero = torch.ones_like(qx), torch.zeros_like(qx)
    jac_x_row = torch.stack([-m * qy, m * ca * yz, qx, one, zero], dim=-1)
    jac_y_row = torch.stack([m * qx, m * sa * yz, qy, zero, one], dim=-1)
    jac_view = torch.stack([jac_x_row, jac_y_row], dim=-2)
    jac_points = m[:, None, None] * _rotation_zy(state.alpha, state.theta)[:, :2, :]
    cost = (weights * res.square().sum(-1)).sum()
    return res, jac_view, jac_points, cost


def _normal_equations(
    res: torch.Tensor,
    jac_view: torch.Tensor,
    jac_points: torch.Tensor,
    weights: torch.Tensor,
    cmap: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blocks of ``JᵀWJ`` and ``JᵀWr``: camera ``(P, P)``, camera-bead ``(P, b, 3)``, bead ``(b, 3, 3)``."""
    h_vv = torch.einsum("bn,bnka,bnkc->nac", weights, jac_view, jac_view)
    h_vx = torch.einsum("bn,bnka,nkc->nbac", weights, jac_view, jac_points)
    h_xx = torch.einsum("bn,nka,nkc->bac", weights, jac_points, jac_points)
    g_v = torch.einsum("bn,bnka,bnk->na", weights, jac_view, res)
    g_x = torch.einsum("bn,nka,bnk->ba", weights, jac_points, res)
    h_pp = torch.einsum("nap,nac,ncq->pq", cmap, h_vv, cmap)
    h_px = torch.einsum("nap,nbac->pbc", cmap, h_vx)
    g_p = torch.einsum("nap,na->p", cmap, g_v)
    return h_pp, h_px, h_xx, g_p, g_x


def _damped_step(blocks: tuple[torch.Tensor, ...], damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the damped normal equations by eliminating the beads (Schur complement)."""
    h_pp, h_px, h_xx, g_p, g_x = blocks
    d_p = h_pp.diagonal()
    d_x = h_xx.diagonal(dim1=-2, dim2=-1)
    scale = max(float(d_p.max()) if d_p.numel() else 0.0, float(d_x.max()), 1e-300)
    d_p = d_p.clamp_min(1e-12 * scale)
    d_x = d_x.clamp_min(1e-12 * scale)
    a_x = h_xx + torch.diag_embed(damping * d_x)
    a_x_inv = torch.linalg.inv(a_x)
    if h_pp.shape[0] == 0:
        return g_p.new_zeros(0), -(a_x_inv @ g_x.unsqueeze(-1)).squeeze(-1)
    t = torch.einsum("pbc,bcd->pbd", h_px, a_x_inv)
    schur = h_pp + torch.diag(damping * d_p) - torch.einsum("pbd,qbd->pq", t, h_px)
    rhs = -g_p + torch.einsum("pbd,bd->p", t, g_x)
    step_p = torch.linalg.solve(schur, rhs)
    step_x = -(a_x_inv @ (g_x + torch.einsum("pbc,p->bc", h_px, step_p)).unsqueeze(-1)).squeeze(-1)
    return step_p, step_x


def _apply_step(state: _State, cmap: torch.Tensor, step_p: torch.Tensor, step_x: torch.Tensor) -> _State:
    per_view = torch.einsum("nap,p->na", cmap, step_p)
    return _State(
        alpha=state.alpha + per_view[:, 0],
        theta=state.theta + per_view[:, 1],
        mag=state.mag + per_view[:, 2],
        shifts=state.shifts + per_view[:, 3:5],
        points=state.points + step_x,
    )


def _levenberg_marquardt(
    state: _State, observed_uv: torch.Tensor, weights: torch.Tensor, cmap: torch.Tensor, max_iterations: int
) -> tuple[_State, int, bool]:
    """Minimise ``Σ w·‖projected − measured‖²``; returns the state, iterations and whether it converged."""
    res, jac_view, jac_points, cost_t = _linearise(state, observed_uv, weights)
    cost = float(cost_t)
    damping = 1e-3
    for iteration in range(1, max_iterations + 1):
        blocks = _normal_equations(res, jac_view, jac_points, weights, cmap)
        while True:
            step_p, step_x = _damped_step(blocks, damping)
            candidate = _apply_step(state, cmap, step_p, step_x)
            c_res, c_jv, c_jp, c_cost_t = _linearise(candidate, observed_uv, weights)
            c_cost = float(c_cost_t)
            if math.isfinite(c_cost) and c_cost <= cost:
                break
            damping *= 10.0
            if damping > 1e12:
                return state, iteration, True  # no descent direction left: at the minimum
        decrease = cost - c_cost
        state, res, jac_view, jac_points, cost = candidate, c_res, c_jv, c_jp, c_cost
        damping = max(damping / 10.0, 1e-12)
        if decrease <= _LM_RELATIVE_TOLERANCE * max(cost, 1e-300) or cost < 1e-24:
            return state, iteration, True
    return state, max_iterations, False


def _running_median(values: torch.Tensor, order: torch.Tensor, width: int) -> torch.Tensor:
    """Running median of per-view values over ``width`` neighbours in ``order`` (NaN-aware)."""
    ordered = values[order]
    n = ordered.shape[0]
    half = width // 2
    idx = torch.arange(n, device=values.device)[:, None] + torch.arange(-half, half + 1, device=values.device)
    windows = ordered[idx.clamp(0, n - 1)]
    smoothed = torch.nanmedian(windows, dim=1).values
    out = torch.empty_like(values)
    out[order] = smoothed
    return out


def _tukey_weights(
    distances: torch.Tensor, observed: torch.Tensor, order: torch.Tensor, k_factor: float
) -> torch.Tensor:
    """tiltalign-style robust weights ``(b, n)`` from residual lengths ``(b, n)``."""
    dist = torch.where(observed, distances, torch.full_like(distances, math.nan))
    view_median = torch.nanmedian(dist, dim=0).values
    view_median = _running_median(view_median, order, _MEDIAN_SMOOTHING_VIEWS)
    positive = view_median[torch.isfinite(view_median) & (view_median > 0)]
    floor = float(positive.median()) * 1e-3 if positive.numel() else 1e-12
    ratio = dist / view_median.nan_to_num(floor).clamp_min(max(floor, 1e-12))
    weights = torch.zeros_like(distances)
    counts = observed.sum(0).tolist()
    groups: list[list[int]] = [[]]
    group_count = 0
    for v in order.tolist():
        groups[-1].append(v)
        group_count += counts[v]
        if group_count >= _MIN_POINTS_PER_WEIGHT_GROUP:
            groups.append([])
            group_count = 0
    if not groups[-1]:
        groups.pop()
    elif len(groups) > 1 and group_count < _MIN_POINTS_PER_WEIGHT_GROUP:
        groups[-2].extend(groups.pop())
    for views in groups:
        cols = torch.tensor(views, device=distances.device)
        values = ratio[:, cols]
        finite = values[observed[:, cols]]
        if finite.numel() == 0:
            continue
        median = finite.median()
        madn = (finite - median).abs().median() / 0.6745
        dev = (values - median) / (k_factor * _TUKEY_K * madn.clamp_min(1e-12))
        w = torch.where(dev <= 0, torch.ones_like(dev), (1.0 - dev.clamp(0.0, 1.0).square()).square())
        weights[:, cols] = torch.where(observed[:, cols], w, torch.zeros_like(w))
    few = ((weights > _WEIGHT_DELTA).sum(1) < _MIN_WEIGHTED_POINTS_PER_BEAD).unsqueeze(1)
    bumped = torch.where(observed, (weights + _WEIGHT_DELTA).clamp_max(1.0), weights)
    return torch.where(few, bumped, weights)


def _regauge(state: _State, ref: int) -> _State:
    """Move the tomogram centre to the beads' z centroid and to the point projecting to the reference centre."""
    rot = _rotation_zy(state.alpha, state.theta)
    lhs = torch.zeros((3, 3), dtype=rot.dtype, device=rot.device)
    lhs[:2] = state.mag[ref] * rot[ref, :2]
    lhs[2, 2] = 1.0
    rhs = torch.cat([state.shifts[ref], -state.points[:, 2].mean().reshape(1)])
    t = torch.linalg.solve(lhs, rhs)
    shifts = state.shifts - state.mag[:, None] * (rot[:, :2] @ t)
    return state._replace(points=state.points + t, shifts=shifts)


def _parameter_layout(
    state: _State, order: torch.Tensor, ref: int, options: tuple[tuple[str, int], ...]
) -> tuple[torch.Tensor, int]:
    """``(n, 5, P)`` map from the solved parameters to per-view ``(α, θ, m, s_x, s_y)`` increments.

    Columns: rotation, tilt and magnification parameters (``options`` in that order, the reference view's tilt
    and magnification held), then every shift component but the gauge's (``s_ref`` and one component of the
    view chosen by :func:`_shift_gauge`). Also returns the number of angle/magnification columns.
    """
    n_views = order.shape[0]
    sorted_pos_t = torch.empty_like(order)
    sorted_pos_t[order] = torch.arange(n_views, device=order.device)
    sorted_pos = sorted_pos_t.tolist()
    maps = [
        _parameter_map(option, size, sorted_pos, sorted_pos[ref], fix_reference=k > 0)
        for k, (option, size) in enumerate(options)
    ]
    gauge_view, gauge_axis = _shift_gauge(state.theta, state.alpha, ref)
    free_shift = torch.ones((n_views, 2), dtype=torch.bool)
    free_shift[ref] = False
    free_shift[gauge_view, gauge_axis] = False
    shift_cols = free_shift.flatten().nonzero().flatten()
    n_angle = sum(m.shape[1] for m in maps)
    cmap = torch.zeros((n_views, 5, n_angle + len(shift_cols)), dtype=torch.float64)
    col = 0
    for row, m in enumerate(maps):
        cmap[:, row, col : col + m.shape[1]] = m
        col += m.shape[1]
    shift_block = torch.zeros((2 * n_views, len(shift_cols)), dtype=torch.float64)
    shift_block[shift_cols, torch.arange(len(shift_cols))] = 1.0
    cmap[:, 3:5, n_angle:] = shift_block.reshape(n_views, 2, -1)
    return cmap.to(state.alpha.device), n_angle


def _robust_fit(
    state: _State,
    uv: torch.Tensor,
    observed: torch.Tensor,
    order: torch.Tensor,
    cmap: torch.Tensor,
    k_factor: float,
    max_iterations: int,
    max_rounds: int,
) -> tuple[_State, torch.Tensor, int, int, bool]:
    """Iteratively reweighted fits; returns state, weights, iterations, rounds and convergence."""
    weights = observed.to(torch.float64)
    settled, converged, below, iterations, rounds = False, False, 0, 0, 0
    for rounds in range(1, max_rounds + 1):
        res, _, _, _ = _linearise(state, uv, weights)
        new = _tukey_weights(res.norm(dim=-1), observed, order, k_factor)
        change = (new - weights).abs()
        low = observed & (new < 0.5)
        mean_change = float(change[low].mean()) if bool(low.any()) else 0.0
        small_max, small_mean = float(change.max()) < _WEIGHT_CHANGE_MAX, mean_change < _WEIGHT_CHANGE_MEAN
        below = below + 1 if small_max or small_mean else 0
        settled = (small_max and small_mean) or below >= _ROUNDS_BELOW_CRITERION
        # After two plain rounds, relax: the mean of the old and new weights damps points that swing around
        # the cutoff as the solution moves (tiltalign also averages weights when they oscillate).
        weights = new if rounds <= 2 else 0.5 * (weights + new)
        state, its, converged = _levenberg_marquardt(state, uv, weights, cmap, max_iterations)
        iterations += its
        if settled:
            break
    return state, weights, iterations, rounds, converged and settled


def _as_tensor(value: Any, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    device = like.device if like is not None else None
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__} ({exc})") from None


def _check_option(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


def _check_group(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def fiducial_align(
    points_xy_px: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    tilt_axis_deg: torch.Tensor | list[float] | float,
    *,
    image_size_xy: tuple[int, int],
    rotation: str = "one",
    rotation_group_size: int = 5,
    tilt: str = "fixed",
    tilt_group_size: int = 5,
    magnification: str = "fixed",
    mag_group_size: int = 4,
    reference_view: int | None = None,
    robust: bool = True,
    k_factor_scaling: float = 1.0,
    max_iterations: int = 200,
    max_robust_rounds: int = 100,
) -> FiducialAlignment:
    """Solve the tilt geometry and 3D bead positions from tracked beads (tiltalign-class bundle adjustment).

    Parameters
    ----------
    points_xy_px
        ``(b, n, 2)`` bead positions ``(x, y)`` in ``n`` raw tilt images, 0-based pixel coordinates (column,
        row); NaN where a bead was not found. Beads seen in fewer than 3 views are left out.
    tilt_angles_deg
        ``(n,)`` nominal tilt angles θ (starting values; kept for fixed tilts and for the reference view).
    tilt_axis_deg
        Tilt-axis angle α (from +Y, counter-clockwise), degrees: the starting value, one or ``(n,)``.
    image_size_xy
        ``(nx, ny)`` of the raw images; coordinates are taken relative to ``(nx // 2, ny // 2)``.
    rotation
        ``"fixed"`` (keep ``tilt_axis_deg``), ``"one"`` (one α for all views), ``"all"`` (per view) or
        ``"grouped"`` (every ``rotation_group_size`` views, linearly interpolated).
    rotation_group_size, tilt_group_size, mag_group_size
        Views per group for the ``"grouped"`` options (in order of tilt angle).
    tilt
        ``"fixed"``, ``"all"`` (every view but the reference) or ``"grouped"``.
    magnification
        ``"fixed"`` (all 1), ``"all"`` or ``"grouped"``; the reference view keeps magnification 1.
    reference_view
        View whose tilt angle and magnification are held (tiltalign's reference); default the view with the
        smallest ``|θ|``.
    robust
        Down-weight outliers with Tukey's bisquare after the least-squares fit (tiltalign ``-RobustFitting``).
    k_factor_scaling
        Scales the bisquare constant ``K = 4.685``: smaller values down-weight more points.
    max_iterations
        Most Levenberg-Marquardt iterations per fit.
    max_robust_rounds
        Most reweighting rounds.

    Returns
    -------
    FiducialAlignment
        Angles in degrees, shifts and positions in pixels, residuals, weights and :meth:`~FiducialAlignment.to_xf`.

    Raises
    ------
    ValueError
        On malformed input, an unknown option, a view without any bead, or too few beads.
    """
    pts = _as_tensor(points_xy_px, "points_xy_px")
    if pts.dim() != 3 or pts.shape[-1] != 2:
        raise ValueError(f"points_xy_px must have shape (n_beads, n_views, 2), got {tuple(pts.shape)}")
    n_views = pts.shape[1]
    theta_deg = _as_tensor(tilt_angles_deg, "tilt_angles_deg", pts)
    if theta_deg.shape != (n_views,):
        raise ValueError(f"tilt_angles_deg must have shape ({n_views},), got {tuple(theta_deg.shape)}")
    alpha_deg = _as_tensor(tilt_axis_deg, "tilt_axis_deg", pts)
    if alpha_deg.dim() > 1 or (alpha_deg.dim() == 1 and alpha_deg.shape[0] not in (1, n_views)):
        raise ValueError(f"tilt_axis_deg must be one angle or ({n_views},), got {tuple(alpha_deg.shape)}")
    if not (torch.isfinite(theta_deg).all() and torch.isfinite(alpha_deg).all()):
        raise ValueError("tilt_angles_deg and tilt_axis_deg must be finite")
    if len(image_size_xy) != 2 or any(int(v) != v or v < 1 for v in image_size_xy):
        raise ValueError(f"image_size_xy must be two positive integers (nx, ny), got {image_size_xy!r}")
    _check_option("rotation", rotation, _ROTATION_OPTIONS)
    _check_option("tilt", tilt, _TILT_OPTIONS)
    _check_option("magnification", magnification, _MAG_OPTIONS)
    for name, size in (
        ("rotation_group_size", rotation_group_size),
        ("tilt_group_size", tilt_group_size),
        ("mag_group_size", mag_group_size),
        ("max_iterations", max_iterations),
    ):
        _check_group(name, size)
    if not k_factor_scaling > 0:
        raise ValueError(f"k_factor_scaling must be positive, got {k_factor_scaling}")
    ref = int(torch.argmin(theta_deg.abs())) if reference_view is None else reference_view
    if not 0 <= ref < n_views:
        raise ValueError(f"reference_view must be in [0, {n_views}), got {reference_view}")

    centre = torch.tensor(
        [image_size_xy[0] // 2, image_size_xy[1] // 2], dtype=torch.float64, device=pts.device
    )
    observed_all = torch.isfinite(pts).all(-1)
    used = observed_all.sum(1) >= _MIN_VIEWS_PER_BEAD
    if int(used.sum()) < 2:
        raise ValueError(f"at least 2 beads seen in {_MIN_VIEWS_PER_BEAD} or more views are needed")
    observed = observed_all[used]
    empty = (~observed.any(0)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"views {empty} have no bead (seen in >= {_MIN_VIEWS_PER_BEAD} views): exclude them")
    uv = torch.where(observed.unsqueeze(-1), pts[used] - centre, torch.zeros_like(pts[used]))

    order = torch.sort(theta_deg, stable=True).indices
    state = _State(
        alpha=torch.deg2rad(alpha_deg.expand(n_views)).clone(),
        theta=torch.deg2rad(theta_deg).clone(),
        mag=torch.ones(n_views, dtype=torch.float64, device=pts.device),
        shifts=torch.zeros((n_views, 2), dtype=torch.float64, device=pts.device),
        points=torch.zeros((int(used.sum()), 3), dtype=torch.float64, device=pts.device),
    )
    options = ((rotation, rotation_group_size), (tilt, tilt_group_size), (magnification, mag_group_size))
    cmap, n_angle = _parameter_layout(state, order, ref, options)

    weights = observed.to(torch.float64)
    # Linear start: positions and shifts at the input angles (one Gauss-Newton step solves it exactly).
    state, iterations, _ = _levenberg_marquardt(state, uv, weights, cmap[:, :, n_angle:], max_iterations)
    state, its, converged = _levenberg_marquardt(state, uv, weights, cmap, max_iterations)
    iterations += its
    rounds = 0
    if robust:
        state, weights, its, rounds, converged = _robust_fit(
            state, uv, observed, order, cmap, k_factor_scaling, max_iterations, max_robust_rounds
        )
        iterations += its
    state = _regauge(state, ref)
    # Angles leave as input + change, so that held angles come back bit for bit.
    alpha_out = alpha_deg.expand(n_views) + torch.rad2deg(
        state.alpha - torch.deg2rad(alpha_deg.expand(n_views))
    )
    theta_out = theta_deg + torch.rad2deg(state.theta - torch.deg2rad(theta_deg))
    return _result(
        state,
        (alpha_out, theta_out),
        uv,
        observed,
        used,
        weights,
        ref,
        image_size_xy,
        (iterations, rounds),
        converged,
    )


def _result(
    state: _State,
    angles_deg: tuple[torch.Tensor, torch.Tensor],
    uv: torch.Tensor,
    observed: torch.Tensor,
    used: torch.Tensor,
    weights: torch.Tensor,
    ref: int,
    image_size_xy: tuple[int, int],
    counts: tuple[int, int],
    converged: bool,
) -> FiducialAlignment:
    res, _, _, _ = _linearise(state, uv, observed.to(torch.float64))
    nan = math.nan
    n_beads, n_views = used.shape[0], uv.shape[1]
    residuals = torch.full((n_beads, n_views, 2), nan, dtype=torch.float64, device=uv.device)
    residuals[used] = torch.where(observed.unsqueeze(-1), -res, torch.full_like(res, nan))
    positions = torch.full((n_beads, 3), nan, dtype=torch.float64, device=uv.device)
    positions[used] = state.points
    all_weights = torch.zeros((n_beads, n_views), dtype=torch.float64, device=uv.device)
    all_weights[used] = weights
    lengths = res.norm(dim=-1)
    obs = observed.to(torch.float64)
    return FiducialAlignment(
        tilt_axis_angles_deg=angles_deg[0],
        tilt_angles_deg=angles_deg[1],
        magnifications=state.mag,
        shifts_xy_px=state.shifts,
        positions_xyz_px=positions,
        residuals_xy_px=residuals,
        weights=all_weights,
        mean_residual_px=float((lengths * obs).sum() / obs.sum()),
        weighted_mean_residual_px=float((lengths * weights).sum() / weights.sum().clamp_min(1e-300)),
        view_mean_residual_px=(lengths * obs).sum(0) / obs.sum(0),
        beads_used=used,
        reference_view=ref,
        image_size_xy=(int(image_size_xy[0]), int(image_size_xy[1])),
        iterations=counts[0],
        robust_rounds=counts[1],
        converged=converged,
    )
