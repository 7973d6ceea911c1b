"""Two-surface analysis of solved bead positions: specimen thickness and the tilt that makes it flat.

Gold beads usually sit on the two surfaces of the specimen. As tiltalign's surface analysis, the beads are split
into a bottom and a top surface and planes are fitted to them; the distance between the planes gives the specimen
thickness and their slope the tilt-angle change (and x-axis tilt) that would make the specimen lie flat in the
reconstruction. Here the two planes are fitted jointly with a common slope, ``z = a·x + b·y + c_k``, and the split
is the best two-class division (exact 1D 2-means) of the heights above that common slope, iterated until stable.

Angles follow the projection model (CONVENTIONS.md §7): adding ``tilt_angle_offset_deg`` to every tilt angle and
using ``x_axis_tilt_deg`` as φ (applied first) describes the same projections with the specimen rotated by
``Rx(−φ)·Ry(−Δ)``, after which the fitted planes are horizontal.

References
----------
Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SurfaceAnalysis", "two_surface_analysis"]


@dataclass(frozen=True, eq=False)
class SurfaceAnalysis:
    """Result of :func:`two_surface_analysis`; lengths in the pixels of the positions."""

    surface: torch.Tensor
    """``(b,)`` int64: 0 bottom (smaller z), 1 top, −1 for beads with a NaN position."""
    slope_x: float
    """Common slope ``dz/dx`` of the two planes."""
    slope_y: float
    """Common slope ``dz/dy``."""
    bottom_intercept_px: float
    """Height of the bottom plane at ``x = y = 0``."""
    top_intercept_px: float
    """Height of the top plane at ``x = y = 0``."""
    thickness_px: float
    """Distance between the planes along z at ``x = y = 0`` (tiltalign's "thickness at Z intercepts")."""
    thickness_normal_px: float
    """Distance between the planes along their normal."""
    fiducial_range_px: float
    """Range of the beads' heights above the common slope: thickness needed to contain every bead centre."""
    z_centre_px: float
    """Midpoint of the two intercepts: the z shift that would centre the specimen."""
    tilt_angle_offset_deg: float
    """Δ to add to every tilt angle to make the specimen flat (tiltalign's "total tilt angle change")."""
    pretilt_deg: float
    """Tilt angle at which the beam is normal to the specimen, ``−Δ`` (e.g. a lamella's pre-tilt)."""
    x_axis_tilt_deg: float
    """x-axis tilt φ that, with Δ, makes the specimen flat."""
    residual_rms_px: float
    """RMS height of the beads about their plane."""
    n_bottom: int
    """Beads on the bottom surface."""
    n_top: int
    """Beads on the top surface."""


def _best_split(heights: torch.Tensor) -> torch.Tensor:
    """Labels (0 low, 1 high) of the two-class split of 1D values with the least within-class sum of squares."""
    values, order = torch.sort(heights)
    n = values.shape[0]
    k = torch.arange(1, n, device=values.device, dtype=values.dtype)  # size of the low class
    csum = torch.cumsum(values, 0)[:-1]
    total = values.sum()
    # Between-class sum of squares; maximising it minimises the within-class one.
    between = (csum / k - (total - csum) / (n - k)).square() * k * (n - k) / n
    cut = int(torch.argmax(between)) + 1
    labels = torch.ones(n, dtype=torch.int64, device=values.device)
    labels[order[:cut]] = 0
    return labels


def _fit_parallel_planes(points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Least-squares ``(a, b, c_bottom, c_top)`` of ``z = a·x + b·y + c_label``."""
    design = torch.stack(
        [points[:, 0], points[:, 1], (labels == 0).to(points.dtype), (labels == 1).to(points.dtype)], dim=-1
    )
    return torch.linalg.lstsq(design, points[:, 2:3]).solution.squeeze(-1)


def two_surface_analysis(positions_xyz_px: torch.Tensor, *, max_iterations: int = 20) -> SurfaceAnalysis:
    """Split beads into two surfaces, fit parallel planes, and report thickness and the flattening tilt.

    Parameters
    ----------
    positions_xyz_px
        ``(b, 3)`` bead positions ``(x, y, z)`` in pixels from the tomogram centre (e.g.
        ``FiducialAlignment.positions_xyz_px``); rows with NaN are ignored.
    max_iterations
        Most reassignments of beads to surfaces.

    Returns
    -------
    SurfaceAnalysis

    Raises
    ------
    ValueError
        With fewer than 4 finite positions, positions that do not span a plane, or a wrong shape.
    """
    if isinstance(positions_xyz_px, torch.Tensor):
        pos = positions_xyz_px.to(torch.float64)
    else:
        pos = torch.as_tensor(positions_xyz_px, dtype=torch.float64)
    if pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError(f"positions_xyz_px must have shape (n_beads, 3), got {tuple(pos.shape)}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")
    valid = torch.isfinite(pos).all(-1)
    pts = pos[valid]
    if pts.shape[0] < 4:
        raise ValueError(
            f"two-surface analysis needs at least 4 beads with finite positions, got {pts.shape[0]}"
        )
    xy = pts[:, :2] - pts[:, :2].mean(0)
    if int(torch.linalg.matrix_rank(xy)) < 2:
        raise ValueError("the beads lie on a line in x, y: no plane can be fitted")
    ones = torch.ones_like(pts[:, 0])
    plane = torch.linalg.lstsq(torch.stack([pts[:, 0], pts[:, 1], ones], -1), pts[:, 2:3]).solution.squeeze(
        -1
    )
    # Two starts: the split of the raw heights and the split after removing one plane through all beads. When the
    # two surfaces' beads sit in different parts of the field, one tilted plane explains much of the height and
    # the second start alone can settle on a wrong split; the split whose two parallel planes fit best wins.
    best: tuple[float, torch.Tensor] | None = None
    for start in (pts[:, 2], pts[:, 2] - plane[0] * pts[:, 0] - plane[1] * pts[:, 1]):
        labels = _best_split(start)
        for _ in range(max_iterations):
            coef = _fit_parallel_planes(pts, labels)
            heights = pts[:, 2] - coef[0] * pts[:, 0] - coef[1] * pts[:, 1]
            new = _best_split(heights)
            if torch.equal(new, labels):
                break
            labels = new
        coef = _fit_parallel_planes(pts, labels)
        levels = torch.where(labels == 0, coef[2], coef[3])
        cost = float((pts[:, 2] - coef[0] * pts[:, 0] - coef[1] * pts[:, 1] - levels).square().sum())
        if best is None or cost < best[0]:
            best = (cost, labels)
    assert best is not None
    labels = best[1]
    coef = _fit_parallel_planes(pts, labels)
    a, b, c_bottom, c_top = (float(v) for v in coef)
    heights = pts[:, 2] - a * pts[:, 0] - b * pts[:, 1]
    fitted = torch.where(labels == 0, torch.full_like(heights, c_bottom), torch.full_like(heights, c_top))
    norm = math.sqrt(1.0 + a * a + b * b)
    offset = math.degrees(math.atan(-a))
    surface = torch.full((pos.shape[0],), -1, dtype=torch.int64, device=pos.device)
    surface[valid] = labels
    return SurfaceAnalysis(
        surface=surface,
        slope_x=a,
        slope_y=b,
        bottom_intercept_px=c_bottom,
        top_intercept_px=c_top,
        thickness_px=c_top - c_bottom,
        thickness_normal_px=(c_top - c_bottom) / norm,
        fiducial_range_px=float(heights.max() - heights.min()),
        z_centre_px=0.5 * (c_top + c_bottom),
        tilt_angle_offset_deg=offset,
        pretilt_deg=-offset,
        x_axis_tilt_deg=math.degrees(math.atan2(b, math.sqrt(1.0 + a * a))),
        residual_rms_px=float((heights - fitted).square().mean().sqrt()),
        n_bottom=int((labels == 0).sum()),
        n_top=int((labels == 1).sum()),
    )
