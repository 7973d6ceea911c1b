"""Finding vesicles (virus membranes, capsid layers) in a tomogram without clicking: a spherical-shell search,
then the dense layer traced along rays and fitted by an ellipsoid.

1. **Shell search.** The tomogram (contrast made positive for dense matter, pooled to about half the layer's
   width per voxel) is cross-correlated, by FFT, with thin spherical shells of radii over a range: a Gaussian
   profile of the layer's width at radius ``R``, restricted to the band the missing wedge leaves visible (normals
   within ``max_elevation_deg`` of the xy plane: the tops and bottoms of membranes do not show in a tomogram) and
   made zero-mean over the ball at the band's heights, so that flat density and a slab of ice score nothing. The
   best radius at each voxel gives a score map in units of its own robust standard deviation.
2. **Peaks.** Local maxima of the score map, strongest first, at least the smallest radius apart, above
   ``min_score`` robust standard deviations and above ``relative_score`` × the best peak.
3. **Tracing and fitting.** From the peak's sphere, along rays of the visible band, the radial profile is matched
   with one dense layer; each ray's point is its best match within 15 % of the current surface. The weaker half of
   the rays and outliers are dropped, an ellipsoid is fitted (:func:`tomoforge.picking.fit_ellipsoid`, trimming
   points beyond 2.5 × the RMS distance), and the rays are traced again from it (``refinements`` rounds).

The search finds the densest closed layer. On HIV that is the CA-SP1 lattice, about 110 Å inside the membrane
and denser than it in a tomogram: the surface the particles lie on, so picks go at offset 0. On an empty vesicle
it is the membrane.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.fourier.windows import fast_fft_size
from tomoforge.picking.ellipsoid import EllipsoidFit, ellipsoid_closest_point, fit_ellipsoid

__all__ = ["Vesicle", "find_vesicles", "shell_scores", "trace_layer"]


class Vesicle(NamedTuple):
    """One vesicle found in a tomogram (positions in Å from the tomogram's centre voxel)."""

    score: float
    """Shell-search peak in robust standard deviations of the score map."""
    shell_radius_angstrom: float
    """Radius of the best shell."""
    points_xyz_angstrom: torch.Tensor
    """``(n, 3)`` points of the layer traced along rays (Å from the centre voxel)."""
    fit: EllipsoidFit
    """The ellipsoid fitted to them."""


def _grid_xyz(shape_zyx: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    axes = [
        torch.fft.fftfreq(n, 1.0 / n, device=device, dtype=torch.float32) for n in shape_zyx
    ]  # wrapped offsets
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def shell_scores(
    volume: torch.Tensor,
    radii_px: list[float],
    *,
    width_px: float,
    max_elevation_deg: float = 50.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best shell correlation and its radius index at every voxel.

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram with dense matter positive.
    radii_px
        Shell radii to try, in voxels.
    width_px
        Standard deviation of the shell's radial Gaussian profile, in voxels (about half the membrane thickness).
    max_elevation_deg
        Only the part of the shell whose normal is within this angle of the xy plane counts.

    Returns
    -------
    score : torch.Tensor
        ``(z, y, x)`` best response over the radii, divided by the robust standard deviation (1.4826 × median
        absolute deviation) of the response map.
    radius_index : torch.Tensor
        ``(z, y, x)`` index of the best radius.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got {tuple(volume.shape)}")
    shape = tuple(volume.shape)
    data = volume.to(torch.float32)
    data = (data - data.mean()) / data.std().clamp(min=1e-12)
    # Zero padding by the largest shell: the correlation does not wrap around, so opposite faces of the
    # tomogram do not meet as a false edge.
    pad = int(math.ceil(max(radii_px) + 3 * width_px))
    padded = [fast_fft_size(n + 2 * pad) for n in shape]
    data = torch.nn.functional.pad(
        data,
        tuple(v for n, m in zip(reversed(shape), reversed(padded), strict=True) for v in (pad, m - n - pad)),
    )
    spectrum = torch.fft.rfftn(data)
    offsets = _grid_xyz(tuple(data.shape), data.device)  # type: ignore[arg-type]
    r = torch.linalg.vector_norm(offsets, dim=-1)
    elevation_ok = offsets[..., 2].abs() <= r * math.sin(math.radians(max_elevation_deg))
    height = offsets[..., 2].abs()
    best = torch.full(data.shape, -math.inf, device=data.device)
    index = torch.zeros(data.shape, dtype=torch.int64, device=data.device)
    for k, radius in enumerate(radii_px):
        shell = torch.exp(-0.5 * ((r - radius) / width_px) ** 2) * elevation_ok
        shell = torch.where(r <= radius + 3 * width_px, shell, torch.zeros_like(shell))
        # Zero mean over the part of the ball at the band's heights: flat density, and a slab of ice seen from
        # inside it, score 0.
        band = height <= radius * math.sin(math.radians(max_elevation_deg))
        inside = ((r <= radius + 3 * width_px) & band).to(torch.float32)
        shell = shell - inside * (shell.sum() / inside.sum())
        shell = shell / torch.linalg.vector_norm(shell)
        response = torch.fft.irfftn(spectrum * torch.fft.rfftn(shell).conj(), s=data.shape)
        better = response > best
        best = torch.where(better, response, best)
        index = torch.where(better, torch.full_like(index, k), index)
    inner = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]), slice(pad, pad + shape[2]))
    best, index = best[inner], index[inner]
    median = best.median()
    spread = 1.4826 * (best - median).abs().median()
    return (best - median) / spread.clamp(min=1e-12), index


def _band_directions(n: int, max_elevation_deg: float, device: torch.device) -> torch.Tensor:
    """About ``n`` unit vectors evenly spread over the band of elevations within ``max_elevation_deg`` of the xy
    plane (a Fibonacci sphere of ``n / sin(max elevation)`` points, those in the band)."""
    band = math.sin(math.radians(max_elevation_deg))
    total = max(n, int(math.ceil(n / max(band, 1e-3))))
    k = torch.arange(total, dtype=torch.float32, device=device) + 0.5
    zc = 1.0 - 2.0 * k / total
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    rho = torch.sqrt((1.0 - zc * zc).clamp(min=0.0))
    directions = torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), zc], dim=1)
    return directions[directions[:, 2].abs() <= band]


def _layer_template(step_px: float, width_px: float, device: torch.device) -> torch.Tensor:
    """Zero-mean 1D profile of one dense layer of full width ``width`` (Gaussian), sampled every ``step``."""
    sigma = max(0.5, width_px / 2.355)
    half = int(math.ceil(3.0 * sigma / step_px))
    x = torch.arange(-half, half + 1, device=device, dtype=torch.float32) * step_px
    template = torch.exp(-0.5 * (x / sigma) ** 2)
    template = template - template.mean()
    return template / torch.linalg.vector_norm(template)


def _surface_distance_along(
    directions: torch.Tensor, fit: EllipsoidFit, origin: torch.Tensor
) -> torch.Tensor:
    """Distance from ``origin`` (inside the ellipsoid) along unit ``directions`` to its surface."""
    rotation = fit.rotation.to(torch.float32)
    radii = fit.radii.to(torch.float32)
    o = (origin - fit.centre_xyz.to(torch.float32)) @ rotation
    d = directions @ rotation
    a = ((d / radii) ** 2).sum(1)
    b = 2 * ((o * d) / radii**2).sum(1)
    c = ((o / radii) ** 2).sum() - 1.0
    return (-b + torch.sqrt((b * b - 4 * a * c).clamp(min=0.0))) / (2 * a)


def trace_layer(
    volume: torch.Tensor,
    fit: EllipsoidFit,
    *,
    layer_width_px: float,
    n_rays: int = 600,
    max_elevation_deg: float = 50.0,
    window: float = 0.15,
    neighbours: int = 12,
) -> torch.Tensor:
    """Points ``(n, 3)`` (x, y, z voxels) of the dense layer nearest a surface, traced along rays from its centre.

    ``volume`` has dense matter positive and ``fit`` is in voxels. Along each ray of the visible band the profile
    is matched with one dense layer (a Gaussian of full width ``layer_width_px``); the ray's point is its best
    match within ``window`` × the distance to the surface of ``fit``. Rays whose best match is weak (below the
    median match) or whose radius is an outlier (> 3 median absolute deviations) are dropped.
    """
    device = volume.device
    step = 0.5
    directions = _band_directions(n_rays, max_elevation_deg, device)
    origin = fit.centre_xyz.to(torch.float32).to(device)
    reach = _surface_distance_along(directions, fit, origin)
    template = _layer_template(step, layer_width_px, device)
    half = len(template) // 2
    # Samples cover the window and, beyond it, the template's half-length, so every match in the window is whole.
    reach_window = window * float(reach.mean())
    offsets = torch.arange(
        -reach_window - half * step,
        reach_window + half * step + 1e-6,
        step,
        device=device,
        dtype=torch.float32,
    )
    radii = reach[:, None] + offsets[None, :]
    nz, ny, nx = volume.shape
    points = origin + directions[:, None, :] * radii[:, :, None]
    scale = torch.tensor([nx - 1, ny - 1, nz - 1], dtype=torch.float32, device=device)
    grid = (2.0 * points / scale - 1.0)[None, None]
    profiles = torch.nn.functional.grid_sample(
        volume.to(torch.float32)[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[0, 0, 0]
    match = torch.nn.functional.conv1d(profiles[:, None], template[None, None], padding=half)[:, 0]
    # Each ray's match is averaged with its nearest neighbours' (same offset from the current surface): one ray's
    # profile is too noisy to place the layer.
    nearest = torch.topk(directions @ directions.T, min(neighbours, len(directions)), dim=1).indices
    match = match[nearest].mean(dim=1)
    match[:, offsets.abs() > reach_window] = -math.inf
    value, where = match.max(dim=1)
    # Sub-sample peak: the vertex of the parabola through the best sample and its neighbours.
    left = match.gather(1, (where - 1).clamp(min=0)[:, None])[:, 0]
    right = match.gather(1, (where + 1).clamp(max=match.shape[1] - 1)[:, None])[:, 0]
    curvature = left - 2 * value + right
    shift = torch.where(
        torch.isfinite(left) & torch.isfinite(right) & (curvature < 0),
        0.5 * (left - right) / curvature,
        torch.zeros_like(value),
    ).clamp(-0.5, 0.5)
    ray_radius = radii.gather(1, where[:, None])[:, 0] + shift * step
    inside = (points[:, 0] >= 0).all(1) & (points[:, 0] <= scale).all(1) & (points[:, -1] >= 0).all(1)
    inside &= (points[:, -1] <= scale).all(1)
    keep = inside & torch.isfinite(value)
    if int(keep.sum()) < 10:
        return torch.zeros(0, 3, device=device)
    keep &= value >= value[keep].median()
    relative = ray_radius / reach
    median = relative[keep].median()
    spread = (relative[keep] - median).abs().median().clamp(min=0.01)
    keep &= (relative - median).abs() <= 3 * spread
    return origin + directions[keep] * ray_radius[keep, None]


def _local_maxima(score: torch.Tensor, size: int) -> torch.Tensor:
    """Voxels ``(k, 3)`` that are the maximum of the ``size³`` cube around them (separable max filter)."""
    pooled = score[None, None]
    for kernel in ((size, 1, 1), (1, size, 1), (1, 1, size)):
        padding = tuple(k // 2 for k in kernel)
        pooled = torch.nn.functional.max_pool3d(pooled, kernel_size=kernel, stride=1, padding=padding)
    return torch.nonzero(score >= pooled[0, 0])


def _robust_fit(points: torch.Tensor, shape: str, roundness_prior: float, rounds: int = 3) -> EllipsoidFit:
    """Fit, drop points farther than 2.5 × the RMS distance from the surface, refit (``rounds`` times)."""
    keep = torch.ones(len(points), dtype=torch.bool)
    fit = fit_ellipsoid(points, shape=shape, roundness_prior=roundness_prior or None)
    for _ in range(rounds):
        _, distance = ellipsoid_closest_point((points - fit.centre_xyz) @ fit.rotation, fit.radii)
        new_keep = distance.abs() <= 2.5 * max(fit.rms_distance, 1e-6)
        if bool((new_keep == keep).all()) or int(new_keep.sum()) < 10:
            break
        keep = new_keep
        fit = fit_ellipsoid(points[keep], shape=shape, roundness_prior=roundness_prior or None)
    return fit


def find_vesicles(
    volume: torch.Tensor,
    voxel_size_angstrom: float,
    *,
    radius_range_angstrom: tuple[float, float],
    layer_width_angstrom: float = 40.0,
    dense_is_dark: bool = True,
    min_score: float = 6.0,
    relative_score: float = 0.4,
    max_elevation_deg: float = 50.0,
    max_vesicles: int = 50,
    shape: str = "ellipsoid",
    roundness_prior: float = 0.1,
    refinements: int = 3,
    clip: float = 3.0,
) -> list[Vesicle]:
    """Find spherical-ish vesicles in a tomogram and fit the dense layer of each (module docstring).

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram.
    voxel_size_angstrom
        Its voxel size.
    radius_range_angstrom
        Smallest and largest radius of the dense layer to look for, Å.
    layer_width_angstrom
        Thickness of the dense layer (a membrane: about 40 Å), Å.
    dense_is_dark
        Image contrast (reconstructions from images: dense matter dark); False for a density map.
    min_score, relative_score
        A peak must exceed ``min_score`` robust standard deviations and ``relative_score`` × the best peak.
    max_elevation_deg
        Visible band of the surface (the missing wedge hides the rest).
    max_vesicles
        At most this many, strongest first.
    shape, roundness_prior
        The model fitted to the traced points (:func:`tomoforge.picking.fit_ellipsoid`).
    refinements
        Rounds of tracing the layer along rays and refitting.
    clip
        Voxel values are clipped at this many robust standard deviations before the search.

    Returns
    -------
    list of Vesicle
        Strongest first; positions in Å from the tomogram's centre voxel ``N // 2``.
    """
    lo, hi = radius_range_angstrom
    if not 0 < lo <= hi:
        raise ValueError(f"radius range must be 0 < smallest ≤ largest, got {radius_range_angstrom}")
    if volume.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got {tuple(volume.shape)}")
    full = -volume.to(torch.float32) if dense_is_dark else volume.to(torch.float32)
    # Robust standardisation, clipped at ±clip: gold beads and other very dense specks would otherwise outweigh the
    # layers (a few beads on a circle make a false shell).
    median = full.median()
    spread = 1.4826 * (full - median).abs().median()
    full = ((full - median) / spread.clamp(min=1e-12)).clamp(-clip, clip)
    # The search runs at about half the layer's width per voxel, never finer than the tomogram.
    factor = max(1, round(layer_width_angstrom / 2 / voxel_size_angstrom))
    data = torch.nn.functional.avg_pool3d(full[None, None], factor)[0, 0] if factor > 1 else full
    coarse = voxel_size_angstrom * factor
    step = max(1.0, layer_width_angstrom / coarse / 2)
    radii_px = [float(r) for r in torch.arange(lo / coarse, hi / coarse + 1e-6, step)]
    width_px = max(0.75, layer_width_angstrom / coarse / 2.355)
    # High-pass at the smallest radius: slow gradients of the background (SIRT's edges, uneven ice) are not shells.
    size = 2 * int(lo / coarse) + 1
    background = data[None, None]
    for kernel in ((size, 1, 1), (1, size, 1), (1, 1, size)):  # a box mean, separably
        background = torch.nn.functional.avg_pool3d(
            background, kernel, stride=1, padding=tuple(k // 2 for k in kernel), count_include_pad=False
        )
    data = data - background[0, 0]
    score, index = shell_scores(data, radii_px, width_px=width_px, max_elevation_deg=max_elevation_deg)
    size = max(3, int(lo / coarse) | 1)
    candidates = _local_maxima(score, size)
    values = score[tuple(candidates.T)]
    order = torch.argsort(values, descending=True)
    found: list[tuple[torch.Tensor, float, float]] = []
    best = float(values[order[0]]) if len(order) else 0.0
    for i in order.tolist():
        value = float(values[i])
        if value < min_score or value < relative_score * best or len(found) >= max_vesicles:
            break
        centre = candidates[i].to(torch.float32)
        if any(float(torch.linalg.vector_norm(centre - c)) < lo / coarse for c, _, _ in found):
            continue
        found.append((centre, value, radii_px[int(index[tuple(candidates[i])])]))
    nz, ny, nx = volume.shape
    centre_voxel = torch.tensor([nx // 2, ny // 2, nz // 2], dtype=torch.float64)
    vesicles = []
    for centre, value, radius in found:
        # Pooled voxel k covers voxels factor·k … factor·k + factor − 1: its centre is factor·k + (factor−1)/2.
        centre_xyz = (centre * factor + (factor - 1) / 2.0).flip(0).to(torch.float64).cpu()
        eye = torch.eye(3, dtype=torch.float64)
        fit = EllipsoidFit(centre_xyz, torch.full((3,), radius * factor, dtype=torch.float64), eye, 0.0)
        points = torch.zeros(0, 3, dtype=torch.float64)
        for _ in range(max(1, refinements)):
            traced = (
                trace_layer(
                    full,
                    fit,
                    layer_width_px=layer_width_angstrom / voxel_size_angstrom,
                    max_elevation_deg=max_elevation_deg,
                )
                .to(torch.float64)
                .cpu()
            )
            if len(traced) < 10:
                break
            points = traced
            fit = _robust_fit(points, shape, roundness_prior)
        if len(points) < 10:
            continue
        scale = voxel_size_angstrom
        fit_angstrom = EllipsoidFit(
            (fit.centre_xyz - centre_voxel) * scale, fit.radii * scale, fit.rotation, fit.rms_distance * scale
        )
        vesicles.append(Vesicle(value, radius * coarse, (points - centre_voxel) * scale, fit_angstrom))
    return vesicles
