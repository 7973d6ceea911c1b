"""Ellipsoidal surfaces: the closest point, a fit to sparse points, and oriented points on the fitted surface.

The tutorial picks the CA-SP1 lattice of HIV as points on each virus membrane (Dynamo's "ellipsoidal vesicle"
model, ``../shared/docs/tutorial-steps.md`` §14): a few clicked points per virus → a fitted ellipsoid → points at a
chosen spacing on it, each with its z axis along the surface normal and a free spin about it.

An ellipsoid is ``(centre, radii, rotation)``: a point ``p`` of its own frame (axes along x, y, z, semi-axes
``radii``) sits at ``centre + rotation @ p`` in the tomogram (all in Å, CONVENTIONS.md §1–§4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "EllipsoidFit",
    "ellipsoid_area",
    "ellipsoid_closest_point",
    "ellipsoid_normal_field",
    "ellipsoid_surface_points",
    "fit_ellipsoid",
    "orientations_along_normals",
]


class EllipsoidFit(NamedTuple):
    """A fitted ellipsoid (float64 tensors)."""

    centre_xyz: torch.Tensor
    """``(3,)`` centre in the points' units."""
    radii: torch.Tensor
    """``(3,)`` semi-axes, along the columns of ``rotation``."""
    rotation: torch.Tensor
    """``(3, 3)`` ellipsoid frame → tomogram (columns are the axes)."""
    rms_distance: float
    """Root-mean-square orthogonal distance of the points to the surface."""


def ellipsoid_closest_point(
    points_local: torch.Tensor,
    radii: torch.Tensor | np.ndarray | Sequence[float],
    *,
    tolerance: float = 1e-10,
    max_iterations: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest point on an axis-aligned ellipsoid and the exact signed distance to it.

    For ``q`` and semi-axes ``a`` the closest point is ``xᵢ = aᵢ² qᵢ / (t + aᵢ²)`` where ``t`` is the root of
    ``F(t) = Σ (aᵢ qᵢ / (t + aᵢ²))² − 1`` on ``t > −min aᵢ²``; ``t > 0`` outside, ``t < 0`` inside. ``F`` is convex
    and decreasing there, so Newton's method started left of the root (``t₀ = maxᵢ(aᵢ|qᵢ| − aᵢ²)``, where
    ``F(t₀) ≥ 0``) converges monotonically. Points inside deeper than the smallest radius of curvature
    (``min a² / max a``) or on a symmetry plane of a very flat ellipsoid can have several normals through them; the
    largest root gives the nearest one.

    Parameters
    ----------
    points_local
        ``(..., 3)`` points ``(x, y, z)`` in the ellipsoid's own frame (centred, axes along x, y, z), in Å.
    radii
        ``(3,)`` semi-axes in Å.
    tolerance
        Relative convergence tolerance on ``t`` (in units of ``min a²``).
    max_iterations
        Newton iterations at most.

    Returns
    -------
    closest : torch.Tensor
        ``(..., 3)`` closest points on the ellipsoid (float64, device of the input).
    signed_distance : torch.Tensor
        ``(...)`` distances in Å, positive outside, negative inside.

    References
    ----------
    .. [1] D. Eberly (2013). Distance from a point to an ellipse, an ellipsoid, or a hyperellipsoid. Geometric Tools.
    """
    q = torch.as_tensor(points_local).to(torch.float64)
    a = torch.as_tensor(radii, dtype=torch.float64, device=q.device)
    a2 = a * a
    aq = (a * q).abs()
    t_floor = -a2.detach().min() * (1.0 - 1e-12)
    t = torch.clamp((aq - a2).amax(dim=-1), min=float(t_floor)).detach()
    scale = float(a2.detach().min())
    for _ in range(max_iterations):
        ratio = aq / (t.unsqueeze(-1) + a2)
        f = (ratio * ratio).sum(-1) - 1.0
        df = -2.0 * (ratio * ratio / (t.unsqueeze(-1) + a2)).sum(-1)
        step = f / torch.clamp(df, max=-1e-300)
        t = torch.clamp(t - step, min=float(t_floor))
        if bool((step.abs() <= tolerance * scale).all()):
            break
    closest = a2 * q / (t.unsqueeze(-1) + a2)
    distance = torch.linalg.vector_norm(q - closest, dim=-1)
    return closest, torch.where(t >= 0, distance, -distance)


def ellipsoid_area(radii: torch.Tensor) -> float:
    """Surface area of an ellipsoid (Knud Thomsen's formula, relative error < 1.1 %)."""
    p = 1.6075
    a, b, c = (float(r) ** p for r in torch.as_tensor(radii, dtype=torch.float64))
    return 4.0 * math.pi * ((a * b + a * c + b * c) / 3.0) ** (1.0 / p)


def _sphere_fit(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Algebraic sphere: ``|p|² = 2 c·p + (r² − |c|²)`` by linear least squares."""
    design = torch.cat([2.0 * points, torch.ones_like(points[:, :1])], dim=1)
    target = (points * points).sum(1, keepdim=True)
    solution = torch.linalg.lstsq(design, target).solution[:, 0]
    centre = solution[:3]
    radius = torch.sqrt((solution[3] + (centre * centre).sum()).clamp(min=1e-12))
    return centre, radius


def _quadric_start(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Algebraic ellipsoid ``pᵀAp + bᵀp = 1`` (9 unknowns) as a starting point, or None if it is no ellipsoid."""
    if points.shape[0] < 9:
        return None
    shift = points.mean(0)
    q = points - shift
    scale = q.abs().max().clamp(min=1e-12)
    q = q / scale
    x, y, z = q.unbind(1)
    design = torch.stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z, x, y, z], dim=1)
    solution = torch.linalg.lstsq(design, torch.ones_like(x)[:, None]).solution[:, 0]
    a = torch.tensor(
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=points.dtype, device=points.device
    )
    a[0, 0], a[1, 1], a[2, 2] = solution[0], solution[1], solution[2]
    a[0, 1] = a[1, 0] = solution[3]
    a[0, 2] = a[2, 0] = solution[4]
    a[1, 2] = a[2, 1] = solution[5]
    b = solution[6:]
    try:
        centre = -0.5 * torch.linalg.solve(a, b)
    except RuntimeError:
        return None
    k = 1.0 + centre @ a @ centre
    eigenvalues, vectors = torch.linalg.eigh(a / k)
    if bool((eigenvalues <= 0).any()) or not bool(torch.isfinite(eigenvalues).all()):
        return None
    if torch.linalg.det(vectors) < 0:
        vectors = vectors * torch.tensor([1.0, 1.0, -1.0], dtype=points.dtype, device=points.device)
    return centre * scale + shift, scale / torch.sqrt(eigenvalues), vectors


def _rotation(vector: torch.Tensor) -> torch.Tensor:
    k = torch.zeros((3, 3), dtype=vector.dtype, device=vector.device)
    k[0, 1], k[0, 2], k[1, 2] = -vector[2], vector[1], -vector[0]
    k = k - k.T
    return torch.linalg.matrix_exp(k)


def fit_ellipsoid(
    points_xyz: torch.Tensor,
    *,
    shape: str = "ellipsoid",
    roundness_prior: float | None = None,
    max_iterations: int = 200,
) -> EllipsoidFit:
    """Fit an ellipsoid (or a sphere) to points on its surface by orthogonal-distance least squares.

    Start: the algebraic sphere, or for an ellipsoid the algebraic quadric when it is one (at least 9 points);
    then L-BFGS on the mean squared exact orthogonal distance (:func:`ellipsoid_closest_point`) over the centre,
    log radii and a rotation vector. Dynamo's ``approximateGeometryFromPoints`` fits the same model.

    Parameters
    ----------
    points_xyz
        ``(n, 3)`` points on the surface (x, y, z), any length unit; at least 4 for a sphere, 6 for an ellipsoid.
    shape
        ``"ellipsoid"`` (9 parameters) or ``"sphere"`` (4).
    roundness_prior
        For an ellipsoid from few points: a Gaussian prior on the log radii about their mean with this standard
        deviation (0.1 ≈ radii within 10 % of each other), weighted against the data as a residual of the sphere
        fit's RMS distance per point; None for no prior.
    max_iterations
        L-BFGS iterations at most.

    Returns
    -------
    EllipsoidFit
        Centre, radii (sorted as the columns of ``rotation``), rotation and the RMS orthogonal distance.

    Notes
    -----
    Nine parameters from a handful of noisy points are poorly determined: with 10 points and 2 nm noise on a
    50 nm virus the free fit can run off to a flat or huge ellipsoid that passes near all of them. Use
    ``roundness_prior`` (e.g. 0.1) below about 20 points, or ``shape="sphere"``.

    Raises
    ------
    ValueError
        For too few points, non-finite points or an unknown shape.
    """
    points = torch.as_tensor(points_xyz).to(torch.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (n, 3), got {tuple(points.shape)}")
    if shape not in ("ellipsoid", "sphere"):
        raise ValueError(f"shape must be 'ellipsoid' or 'sphere', not {shape!r}")
    needed = 4 if shape == "sphere" else 6
    if points.shape[0] < needed:
        raise ValueError(f"a {shape} needs at least {needed} points, got {points.shape[0]}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("the points hold NaN or infinite values")
    centre0, radius0 = _sphere_fit(points)
    noise_scale = float(
        (torch.linalg.vector_norm(points - centre0, dim=1) - radius0).square().mean().sqrt().clamp(min=1e-6)
    )
    if shape == "sphere":
        centre = centre0.clone().requires_grad_(True)
        log_radius = torch.log(radius0).clone().requires_grad_(True)
        variables = [centre, log_radius]

        def loss() -> torch.Tensor:
            distance = torch.linalg.vector_norm(points - centre, dim=1) - torch.exp(log_radius)
            return (distance * distance).mean()

    else:
        start = _quadric_start(points)
        if start is not None and bool((start[1] < 10 * radius0).all()):
            c0, r0, rot0 = start
        else:
            c0, r0, rot0 = centre0, radius0.expand(3), torch.eye(3, dtype=points.dtype, device=points.device)
        centre = c0.clone().requires_grad_(True)
        log_radii = torch.log(r0).clone().requires_grad_(True)
        spin = torch.zeros(3, dtype=points.dtype, device=points.device, requires_grad=True)
        variables = [centre, log_radii, spin]

        def loss() -> torch.Tensor:
            rotation = rot0 @ _rotation(spin)
            local = (points - centre) @ rotation
            _, distance = ellipsoid_closest_point(local, torch.exp(log_radii))
            value = (distance * distance).mean()
            if roundness_prior:
                spread = log_radii - log_radii.mean()
                value = value + noise_scale**2 * (spread * spread).sum() / (roundness_prior**2 * len(points))
            return value

    optimiser = torch.optim.LBFGS(variables, max_iter=max_iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = loss()
        value.backward()
        return value

    optimiser.step(closure)
    with torch.no_grad():
        rms = math.sqrt(max(float(loss()), 0.0))
        if shape == "sphere":
            radii = torch.exp(log_radius).expand(3).clone()
            rotation = torch.eye(3, dtype=points.dtype, device=points.device)
        else:
            radii = torch.exp(log_radii).clone()
            rotation = rot0 @ _rotation(spin)
    return EllipsoidFit(centre.detach().clone(), radii, rotation, rms)


def _fibonacci_directions(n: int, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    """``(n, 3)`` unit vectors of the Fibonacci sphere (near-uniform, near-hexagonal)."""
    k = torch.arange(n, dtype=dtype, device=device) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    rho = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=1)


def ellipsoid_surface_points(
    centre_xyz: torch.Tensor,
    radii: torch.Tensor,
    rotation: torch.Tensor,
    *,
    spacing: float,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points about ``spacing`` apart on an ellipsoid (or its parallel surface), with outward normals.

    The number of points is the area over a hexagonal cell, ``A / (√3/2 · spacing²)`` (Thomsen's area of the
    offset surface). They are the Fibonacci sphere's near-hexagonal points mapped radially onto the ellipsoid, so
    on the near-spherical viruses of the tutorial (axes within 30 % of each other) nearest neighbours are
    0.85–0.95 × ``spacing`` apart and every surface point is within 0.7 × ``spacing`` of one; an elongated
    ellipsoid is sampled less evenly (denser near the ends of its long axis). A point ``s`` of the mid-surface
    then moves by ``offset`` along its outward normal ``n``: ``s + offset·n`` (negative = inside, e.g. the
    lattice under a membrane). Dynamo puts its crop points at the centres of a triangulated crop mesh instead.

    Parameters
    ----------
    centre_xyz, radii, rotation
        The ellipsoid (:class:`EllipsoidFit`'s fields).
    spacing
        Distance between neighbouring points, in the units of the ellipsoid.
    offset
        Signed distance of the output surface from the ellipsoid along the outward normal.

    Returns
    -------
    positions : torch.Tensor
        ``(n, 3)`` points in the tomogram frame (float64).
    normals : torch.Tensor
        ``(n, 3)`` unit outward normals there.
    """
    c = torch.as_tensor(centre_xyz, dtype=torch.float64)
    a = torch.as_tensor(radii, dtype=torch.float64, device=c.device)
    r = torch.as_tensor(rotation, dtype=torch.float64, device=c.device)
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    if bool((a <= 0).any()) or bool((a + offset <= 0).any()):
        raise ValueError(f"radii {a.tolist()} with offset {offset} leave no surface")
    n = max(4, round(ellipsoid_area(a + offset) / (math.sqrt(3.0) / 2.0 * spacing * spacing)))
    if n > 10**6:
        raise ValueError(
            f"an ellipsoid of radii {[round(float(x)) for x in a]} sampled every {spacing:g} needs {n} points; "
            "is the model (or the spacing's unit) right?"
        )
    directions = _fibonacci_directions(n, torch.float64, c.device)
    surface = directions / torch.linalg.vector_norm(directions / a, dim=1, keepdim=True)
    normals_local = _local_normals(surface, a)
    positions = (surface + offset * normals_local) @ r.T + c
    return positions, normals_local @ r.T


def _local_normals(surface: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    g = surface / (radii * radii)
    return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)


def orientations_along_normals(
    normals_xyz: torch.Tensor, *, spin_deg: torch.Tensor | float = 0.0, inward: bool = False
) -> torch.Tensor:
    """Rotations ``R`` (reference → tomogram, CONVENTIONS.md §4) whose z axis is each normal (or its opposite).

    ``R·x̂`` is the normal's "east" direction (``ẑ × n``, or ``x̂`` where the normal is along z) turned by ``spin``
    about the normal: Dynamo's narot, the free in-plane angle.

    Parameters
    ----------
    normals_xyz
        ``(n, 3)`` unit normals.
    spin_deg
        ``(n,)`` or one angle in degrees.
    inward
        Point z against the normals.

    Returns
    -------
    torch.Tensor
        ``(n, 3, 3)`` rotation matrices.
    """
    z = torch.as_tensor(normals_xyz, dtype=torch.float64)
    z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    if inward:
        z = -z
    up = torch.zeros_like(z)
    up[:, 2] = 1.0
    east = torch.linalg.cross(up, z)
    flat = torch.linalg.vector_norm(east, dim=-1) < 1e-8
    east[flat] = torch.tensor([1.0, 0.0, 0.0], dtype=z.dtype, device=z.device)
    east = east / torch.linalg.vector_norm(east, dim=-1, keepdim=True)
    north = torch.linalg.cross(z, east)
    spin = torch.deg2rad(torch.as_tensor(spin_deg, dtype=z.dtype, device=z.device)).expand(z.shape[0])
    x = torch.cos(spin)[:, None] * east + torch.sin(spin)[:, None] * north
    y = torch.linalg.cross(z, x)
    return torch.stack([x, y, z], dim=-1)


def ellipsoid_normal_field(
    shape_zyx: tuple[int, int, int],
    voxel_size: float,
    ellipsoids: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    max_distance: float,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outward unit normals ``(3, z, y, x)`` (x, y, z components) of the nearest of several ellipsoids, at the voxels
    within ``max_distance`` of its surface moved by ``offset`` along the normal (zero elsewhere), and the index of
    that ellipsoid ``(z, y, x)`` (−1 elsewhere).

    Voxel ``(k, j, i)`` sits at ``((i, j, k) − N // 2) · voxel_size`` (positions from the centre voxel, as the
    ellipsoids' centres). The distance is the first-order one, ``F / |∇F|`` for ``F = Σ (pᵢ/aᵢ)² − 1`` in the
    ellipsoid's frame: exact on the surface and close to it within a fraction of the smallest radius.

    Parameters
    ----------
    ellipsoids
        ``(centre (3,), radii (3,), rotation (3, 3))`` each, in the units of ``voxel_size``.
    """
    nz, ny, nx = shape_zyx
    axes = [(torch.arange(n, dtype=torch.float32) - n // 2) * voxel_size for n in (nz, ny, nx)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([xx, yy, zz], dim=-1)
    normals = torch.zeros(3, nz, ny, nx, dtype=torch.float32)
    nearest = torch.full((nz, ny, nx), math.inf, dtype=torch.float32)
    which = torch.full((nz, ny, nx), -1, dtype=torch.int64)
    for k, (centre, radii, rotation) in enumerate(ellipsoids):
        r = torch.as_tensor(rotation, dtype=torch.float32)
        a = torch.as_tensor(radii, dtype=torch.float32)
        local = (points - torch.as_tensor(centre, dtype=torch.float32)) @ r
        gradient = 2 * local / a**2
        size = torch.linalg.vector_norm(gradient, dim=-1).clamp(min=1e-12)
        distance = (((local / a) ** 2).sum(-1) - 1.0) / size - offset
        closer = (distance.abs() <= max_distance) & (distance.abs() < nearest)
        nearest = torch.where(closer, distance.abs(), nearest)
        outward = (gradient / size[..., None]) @ r.T
        normals = torch.where(closer[None], outward.permute(3, 0, 1, 2), normals)
        which = torch.where(closer, torch.full_like(which, k), which)
    return normals, which
