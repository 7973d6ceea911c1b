"""Rendering a :class:`~tomoforge.simulate.specimen.Specimen` into an electrostatic potential volume (volts).

Volumes are ``(z, y, x)`` tensors; a point at ``p`` Å (``(x, y, z)``, relative to the tomogram centre) sits at
index ``p / voxel_size + N // 2`` of each axis (CONVENTIONS.md §2), x along the last axis. Every renderer *adds* to
the volume it is given, in place, and returns it; work is done in chunks so memory stays bounded (a few tens of MB
beyond the volume itself).

Potential model
---------------
The ice slab carries the absolute potential of vitreous ice (:func:`render_ice`); everything else is rendered as
its **excess over the ice it displaces**:

* particles: the map given to :func:`render_particles` should be the protein's contrast against ice, e.g.
  ``atoms_to_potential(...) + solvent_potential(..., positions_xyz_angstrom=...) − ICE_MEAN_INNER_POTENTIAL_VOLT``
  (:mod:`tomoforge.simulate.potential`), which removes the displaced solvent atom by atom;
* membranes: a bilayer profile of excess potential, two Gaussian headgroup layers denser than water and a
  hydrocarbon core less dense than water (:func:`bilayer_profile`);
* gold: ``(V_gold − V_ice)`` times the fraction of each voxel inside the bead.

A gold bead that pokes out of a rough ice surface still has ice subtracted where there is none (a few Å at most).

Numbers
-------
* Vitreous ice (0.94 g/cm³): 4.57 V and gold (19.32 g/cm³, 0.0591 atoms/Å³): 29.9 V, both in the
  independent-atom model of :mod:`tomoforge.simulate.scattering` (Peng et al. 1996), the model the protein
  potential uses, so that contrasts are consistent; bonding lowers real values by ~10 % (liquid water measures
  4.48 V, Yesibolati et al. 2020).
* Bilayer: headgroup electron density ≈ 0.45 e/Å³, hydrocarbon core ≈ 0.30 e/Å³ against 0.33 e/Å³ for water
  (Nagle & Tristram-Nagle 2000); scaled to the ice potential this is +1.6 V at the headgroup peaks and −0.4 V in the
  core.

References
----------
.. [1] L.-M. Peng, G. Ren, S. L. Dudarev & M. J. Whelan (1996). Robust parameterization of elastic and absorptive
   electron atomic scattering factors. Acta Cryst. A52, 257–276. doi:10.1107/S0108767395014371
.. [2] N. Yesibolati et al. (2020). Mean inner potential of liquid water. Phys. Rev. Lett. 124, 065502.
   doi:10.1103/PhysRevLett.124.065502
.. [3] J. F. Nagle & S. Tristram-Nagle (2000). Structure of lipid bilayers. Biochim. Biophys. Acta 1469, 159–195.
   doi:10.1016/S0304-4157(00)00016-2
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tomoforge.simulate.potential import ICE_MEAN_INNER_POTENTIAL_VOLT
from tomoforge.simulate.scattering import mean_inner_potential_volt
from tomoforge.simulate.specimen import GoldBeads, Specimen, Virus, ellipsoid_closest_point

__all__ = [
    "GOLD_MEAN_INNER_POTENTIAL_VOLT",
    "HEADGROUP_EXCESS_POTENTIAL_VOLT",
    "LIPID_CORE_EXCESS_POTENTIAL_VOLT",
    "bilayer_profile",
    "render_gold",
    "render_ice",
    "render_membranes",
    "render_particles",
    "render_specimen",
    "volume_shape_zyx",
]

_GOLD_ATOMS_PER_ANGSTROM3 = 19.32 / 196.96657 * 6.02214076e23 * 1e-24
GOLD_MEAN_INNER_POTENTIAL_VOLT = mean_inner_potential_volt({"AU": 1}, _GOLD_ATOMS_PER_ANGSTROM3)
_WATER_ELECTRONS_PER_ANGSTROM3 = 0.33
HEADGROUP_EXCESS_POTENTIAL_VOLT = ICE_MEAN_INNER_POTENTIAL_VOLT * (
    0.45 / _WATER_ELECTRONS_PER_ANGSTROM3 - 1.0
)
LIPID_CORE_EXCESS_POTENTIAL_VOLT = ICE_MEAN_INNER_POTENTIAL_VOLT * (
    0.30 / _WATER_ELECTRONS_PER_ANGSTROM3 - 1.0
)
_CHUNK_SAMPLES = 1 << 21  # points evaluated at once (≈ 50 MB of coordinates and indices)


def _centre_xyz(shape_zyx: Sequence[int]) -> list[int]:
    return [int(shape_zyx[2]) // 2, int(shape_zyx[1]) // 2, int(shape_zyx[0]) // 2]


def volume_shape_zyx(field_xyz_angstrom: Sequence[float], voxel_size_angstrom: float) -> tuple[int, int, int]:
    """``(z, y, x)`` shape of a volume covering a field ``(x, y, z)`` Å at a voxel size (rounded up)."""
    nx, ny, nz = (int(math.ceil(float(f) / voxel_size_angstrom - 1e-9)) for f in field_xyz_angstrom)
    return nz, ny, nx


def _check_volume(volume: torch.Tensor) -> None:
    if volume.ndim != 3 or not volume.is_floating_point() or not volume.is_contiguous():
        raise ValueError("volume must be a contiguous floating (z, y, x) tensor")


# ------------------------------------------------------------------------------------------------------------
# Particles
# ------------------------------------------------------------------------------------------------------------


def _support_radius_px(particle_map: torch.Tensor, relative_threshold: float = 1e-6) -> float:
    """Largest distance (map voxels) from the map centre of a voxel with ``|v| > threshold · max|v|``, plus 1."""
    mag = particle_map.abs()
    peak = float(mag.max())
    if peak == 0.0:
        return 0.0
    idx = torch.nonzero(mag > relative_threshold * peak).to(torch.float64)
    centre = torch.tensor([n // 2 for n in particle_map.shape], dtype=torch.float64, device=idx.device)
    return float(torch.linalg.vector_norm(idx - centre, dim=-1).max()) + 1.0


def render_particles(
    volume: torch.Tensor,
    particle_map: torch.Tensor,
    positions_xyz_angstrom: torch.Tensor | np.ndarray,
    rotations: torch.Tensor | np.ndarray,
    *,
    voxel_size_angstrom: float,
    map_voxel_size_angstrom: float | None = None,
) -> torch.Tensor:
    """Add a rotated, translated copy of a map at every particle (trilinear resampling).

    The volume voxel at ``x`` (Å from the tomogram centre) receives ``map(Rᵀ·(x − p))`` for each particle at ``p``
    with rotation ``R`` (reference → tomogram, CONVENTIONS.md §4): a feature at ``r`` in the map (Å from its centre
    voxel ``N//2``) lands at ``p + R·r``. Positions may be anywhere (sub-voxel). The map is sampled trilinearly,
    zero outside its box; each particle touches only the voxels within the map's support radius (voxels with
    ``|v| > 10⁻⁶·max|v|``) of its centre. Values are potentials (intensive): with equal voxel sizes a pure
    translation conserves the map's sum exactly, and a rotation approximately; with a coarser volume the map should
    be low-pass filtered to the volume's Nyquist first (trilinear sampling does not filter).

    Parameters
    ----------
    volume
        ``(z, y, x)`` float tensor, added to in place.
    particle_map
        ``(d, h, w)`` map (any floating dtype); its centre is voxel ``(d//2, h//2, w//2)``.
    positions_xyz_angstrom
        ``(N, 3)`` particle centres in Å relative to the tomogram centre.
    rotations
        ``(N, 3, 3)`` rotations reference → tomogram.
    voxel_size_angstrom
        Voxel size of the volume (Å).
    map_voxel_size_angstrom
        Voxel size of the map (Å); the volume's by default.

    Returns
    -------
    torch.Tensor
        ``volume``, with the particles added.
    """
    _check_volume(volume)
    if particle_map.ndim != 3:
        raise ValueError("particle_map must be a (d, h, w) tensor")
    device, dtype = volume.device, volume.dtype
    vs = float(voxel_size_angstrom)
    vm = float(map_voxel_size_angstrom) if map_voxel_size_angstrom is not None else vs
    pos = torch.as_tensor(positions_xyz_angstrom, dtype=torch.float64, device=device).reshape(-1, 3)
    rot = torch.as_tensor(rotations, dtype=torch.float64, device=device).reshape(-1, 3, 3)
    if pos.shape[0] != rot.shape[0]:
        raise ValueError(f"{pos.shape[0]} positions but {rot.shape[0]} rotations")
    n = pos.shape[0]
    radius_px = _support_radius_px(particle_map) * vm / vs
    if n == 0 or radius_px == 0.0:
        return volume
    half = int(math.ceil(radius_px)) + 1
    side = 2 * half + 1
    d, h, w = particle_map.shape
    source = particle_map.to(device=device, dtype=dtype)[None, None]
    map_centre = torch.tensor([w // 2, h // 2, d // 2], dtype=dtype, device=device)
    map_norm = torch.tensor(
        [2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)], dtype=dtype, device=device
    )
    shape = volume.shape
    vol_centre = torch.tensor(_centre_xyz(shape), dtype=torch.float64, device=device)
    r = torch.arange(-half, half + 1, device=device)
    oz, oy, ox = torch.meshgrid(r, r, r, indexing="ij")
    offsets = torch.stack([ox, oy, oz], dim=-1).reshape(-1, 3)  # (side³, 3) integer xyz offsets, zyx layout
    offsets_f = offsets.to(dtype)
    offsets_linear = (oz * shape[1] + oy) * shape[2] + ox  # (side, side, side) → flat-index offsets
    offsets_linear = offsets_linear.reshape(-1)
    flat = volume.view(-1)
    limits = torch.tensor([shape[2], shape[1], shape[0]], device=device)
    scale = vs / vm
    chunk = max(1, _CHUNK_SAMPLES // side**3)
    for start in range(0, n, chunk):
        p_px = pos[start : start + chunk] / vs + vol_centre  # (c, 3) continuous voxel index, xyz
        c = p_px.shape[0]
        base = torch.round(p_px).to(torch.int64)
        frac = base.to(torch.float64) - p_px  # grid voxel (offset 0) minus particle centre, px
        r_chunk = rot[start : start + chunk]
        # Normalised map coordinate of voxel base + o: [Rᵀ·(o + frac)·vs/vm + centre]·norm − 1, as row vectors
        # (o + frac) @ R: one batched multiply-add per chunk.
        a = (r_chunk * (scale * map_norm.to(torch.float64))[None, None, :]).to(dtype)
        const = ((frac[:, None, :] @ r_chunk)[:, 0] * scale + map_centre.to(torch.float64)) * map_norm.to(
            torch.float64
        ) - 1.0
        grid = torch.baddbmm(const.to(dtype)[:, None, :], offsets_f.expand(c, -1, -1), a)
        values = F.grid_sample(
            source,
            grid.reshape(1, -1, side, side, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        ).reshape(c, -1)
        base_linear = (base[:, 2] * shape[1] + base[:, 1]) * shape[2] + base[:, 0]
        whole = ((base - half >= 0) & (base + half < limits)).all(-1)  # box entirely inside the volume
        if bool(whole.all()):
            flat.index_add_(0, (base_linear[:, None] + offsets_linear[None]).reshape(-1), values.reshape(-1))
            continue
        if bool(whole.any()):
            lin = (base_linear[whole][:, None] + offsets_linear[None]).reshape(-1)
            flat.index_add_(0, lin, values[whole].reshape(-1))
        for k in torch.nonzero(~whole).reshape(-1).tolist():
            index = base[k] + offsets  # (side³, 3) xyz
            inside = ((index >= 0) & (index < limits)).all(-1)
            flat.index_add_(0, base_linear[k] + offsets_linear[inside], values[k][inside])
    return volume


# ------------------------------------------------------------------------------------------------------------
# Membranes
# ------------------------------------------------------------------------------------------------------------


def bilayer_profile(
    distance_angstrom: torch.Tensor,
    *,
    thickness_angstrom: float = 40.0,
    headgroup_potential_v: float = HEADGROUP_EXCESS_POTENTIAL_VOLT,
    core_potential_v: float = LIPID_CORE_EXCESS_POTENTIAL_VOLT,
    headgroup_sigma_angstrom: float = 4.0,
    core_edge_sigma_angstrom: float = 3.0,
    blur_sigma_angstrom: float = 0.0,
) -> torch.Tensor:
    """Excess potential (over ice) of a lipid bilayer across its mid-plane.

    ``V(d) = Vₕ Σ± exp(−(d ∓ D/2)² / 2σₕ²) + V_c · box(|d| < D/2 − 2σₕ)`` with the core's edges smoothed by
    ``core_edge_sigma``. The profile is convolved with a Gaussian of ``blur_sigma`` (for sampling on a grid of voxel
    ``a``, ``a/√12``: the variance of a voxel-wide box), which keeps its integral exact.

    Parameters
    ----------
    distance_angstrom
        ``(...)`` signed distances from the mid-plane in Å.
    thickness_angstrom
        Distance ``D`` between the two headgroup peaks.
    headgroup_potential_v, core_potential_v
        Unblurred peak excess potential of the headgroups and of the hydrocarbon core (V; the core is negative).
    headgroup_sigma_angstrom
        Standard deviation of each headgroup layer.
    core_edge_sigma_angstrom
        Smoothing of the core's edges.
    blur_sigma_angstrom
        Extra Gaussian blur of the whole profile.

    Returns
    -------
    torch.Tensor
        ``(...)`` excess potential in V, same dtype as the input.
    """
    d = distance_angstrom
    sh = math.hypot(headgroup_sigma_angstrom, blur_sigma_angstrom)
    se = math.hypot(core_edge_sigma_angstrom, blur_sigma_angstrom)
    half = thickness_angstrom / 2.0
    amp = headgroup_potential_v * headgroup_sigma_angstrom / sh
    heads = amp * (torch.exp(-0.5 * ((d - half) / sh) ** 2) + torch.exp(-0.5 * ((d + half) / sh) ** 2))
    core_half = max(half - 2.0 * headgroup_sigma_angstrom, 0.0)
    s2 = se * math.sqrt(2.0)
    core = 0.5 * core_potential_v * (torch.erf((core_half - d) / s2) + torch.erf((core_half + d) / s2))
    return heads + core


def render_membranes(
    volume: torch.Tensor,
    viruses: Sequence[Virus],
    *,
    voxel_size_angstrom: float,
    headgroup_potential_v: float = HEADGROUP_EXCESS_POTENTIAL_VOLT,
    core_potential_v: float = LIPID_CORE_EXCESS_POTENTIAL_VOLT,
    headgroup_sigma_angstrom: float = 4.0,
) -> torch.Tensor:
    """Add the lipid bilayer of every virus (:func:`bilayer_profile` of the exact distance to its ellipsoid).

    Voxels are first screened with the bound ``|d| ≥ a_min·|‖q/a‖ − 1|`` (``q`` the voxel in the ellipsoid's frame);
    the exact signed distance (:func:`~tomoforge.simulate.specimen.ellipsoid_closest_point`) is computed only near
    the membrane. The profile is blurred by ``voxel/√12`` so that it is sampled without aliasing and its integral
    across the membrane is kept.

    Parameters
    ----------
    volume
        ``(z, y, x)`` float tensor, added to in place.
    viruses
        The viruses; each uses its own ``membrane_thickness_angstrom``.
    voxel_size_angstrom
        Voxel size (Å).
    headgroup_potential_v, core_potential_v, headgroup_sigma_angstrom
        Profile parameters (:func:`bilayer_profile`).

    Returns
    -------
    torch.Tensor
        ``volume``, with the membranes added.
    """
    _check_volume(volume)
    vs = float(voxel_size_angstrom)
    shape = volume.shape
    device = volume.device
    centre = _centre_xyz(shape)
    blur = vs / math.sqrt(12.0)
    for virus in viruses:
        thick = virus.membrane_thickness_angstrom
        band = thick / 2.0 + 4.0 * math.hypot(headgroup_sigma_angstrom, blur) + vs
        extent = virus.half_extent_xyz_angstrom(band)
        c_idx = virus.centre / vs + np.asarray(centre)
        lo = [max(int(math.floor(c_idx[k] - extent[k] / vs)) - 1, 0) for k in range(3)]
        hi = [min(int(math.ceil(c_idx[k] + extent[k] / vs)) + 2, shape[2 - k]) for k in range(3)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            continue
        radii = torch.tensor(virus.radii, dtype=torch.float64, device=device)
        rot = torch.tensor(virus.rotation_matrix, dtype=torch.float64, device=device)
        vc = torch.tensor(virus.centre, dtype=torch.float64, device=device)
        a_min = float(radii.min())
        xs = (torch.arange(lo[0], hi[0], device=device, dtype=torch.float64) - centre[0]) * vs
        ys = (torch.arange(lo[1], hi[1], device=device, dtype=torch.float64) - centre[1]) * vs
        ny, nx = len(ys), len(xs)
        slab = max(1, _CHUNK_SAMPLES // (ny * nx))
        for z0 in range(lo[2], hi[2], slab):
            z1 = min(z0 + slab, hi[2])
            zs = (torch.arange(z0, z1, device=device, dtype=torch.float64) - centre[2]) * vs
            gz, gy, gx = torch.meshgrid(zs, ys, xs, indexing="ij")
            local = (torch.stack([gx, gy, gz], dim=-1) - vc) @ rot  # (nz, ny, nx, 3) in the ellipsoid's frame
            scaled = torch.linalg.vector_norm(local / radii, dim=-1)
            near = (scaled - 1.0).abs() * a_min <= band
            if not bool(near.any()):
                continue
            _, dist = ellipsoid_closest_point(local[near], radii)
            values = bilayer_profile(
                dist,
                thickness_angstrom=thick,
                headgroup_potential_v=headgroup_potential_v,
                core_potential_v=core_potential_v,
                headgroup_sigma_angstrom=headgroup_sigma_angstrom,
                blur_sigma_angstrom=blur,
            )
            block = volume[z0:z1, lo[1] : hi[1], lo[0] : hi[0]]
            block[near] += values.to(volume.dtype)
    return volume


# ------------------------------------------------------------------------------------------------------------
# Gold
# ------------------------------------------------------------------------------------------------------------


def render_gold(
    volume: torch.Tensor,
    beads: GoldBeads,
    *,
    voxel_size_angstrom: float,
    potential_v: float = GOLD_MEAN_INNER_POTENTIAL_VOLT,
    displaced_potential_v: float = ICE_MEAN_INNER_POTENTIAL_VOLT,
    supersampling: int = 5,
) -> torch.Tensor:
    """Add solid gold spheres with partial-volume (anti-aliased) edges.

    Each voxel receives ``(potential_v − displaced_potential_v)`` times the fraction of it inside the bead, measured
    on ``supersampling³`` sub-samples per voxel (the occupied volume is exact to ~1 % for a 10 nm bead at 8 Å).

    Parameters
    ----------
    volume
        ``(z, y, x)`` float tensor, added to in place.
    beads
        Bead centres (Å from the tomogram centre) and diameter.
    voxel_size_angstrom
        Voxel size (Å).
    potential_v
        Mean inner potential of gold (default 29.9 V, independent-atom model).
    displaced_potential_v
        Potential of the ice the bead displaces (default 4.57 V); 0 for beads in vacuum.
    supersampling
        Sub-samples per voxel edge.

    Returns
    -------
    torch.Tensor
        ``volume``, with the beads added.
    """
    _check_volume(volume)
    vs = float(voxel_size_angstrom)
    shape = volume.shape
    device, dtype = volume.device, volume.dtype
    radius = beads.diameter_angstrom / 2.0
    half = int(math.ceil(radius / vs)) + 1
    r = torch.arange(-half, half + 1, device=device, dtype=torch.float64)
    sub = (torch.arange(supersampling, device=device, dtype=torch.float64) + 0.5) / supersampling - 0.5
    centre = torch.tensor(_centre_xyz(shape), dtype=torch.float64, device=device)
    excess = potential_v - displaced_potential_v
    for p in torch.as_tensor(beads.positions_xyz_angstrom, dtype=torch.float64, device=device).reshape(-1, 3):
        c = p / vs + centre
        base = torch.round(c).to(torch.int64)
        d = base.to(torch.float64) - c  # offset of voxel (0,0,0) from the bead centre, px
        # squared distances per axis of every sub-sample, then the 3D sum: (side, s) per axis.
        ax = [((r[:, None] + sub[None, :] + d[k]) * vs) ** 2 for k in range(3)]
        d2_yx = ax[1][:, None, :, None] + ax[0][None, :, None, :]  # (side_y, side_x, s_y, s_x)
        occupancy = torch.stack(
            [
                (d2_yx[:, :, None] + ax[2][zi][:, None, None] <= radius * radius)
                .to(torch.float64)
                .mean(dim=(-3, -2, -1))
                for zi in range(len(r))
            ]
        )  # (side, side, side) zyx
        iz, iy, ix = (base[2 - k] + r.to(torch.int64) for k in range(3))
        sz, sy, sx = ((idx >= 0) & (idx < n) for idx, n in zip((iz, iy, ix), shape, strict=True))
        if not (sz.any() and sy.any() and sx.any()):
            continue
        block = occupancy[sz][:, sy][:, :, sx]
        volume[iz[sz][0] : iz[sz][-1] + 1, iy[sy][0] : iy[sy][-1] + 1, ix[sx][0] : ix[sx][-1] + 1] += (
            excess * block
        ).to(dtype)
    return volume


# ------------------------------------------------------------------------------------------------------------
# Ice
# ------------------------------------------------------------------------------------------------------------


_Weights = tuple[torch.Tensor, torch.Tensor]  # (n_out, 4) node indices, (n_out, 4) weights


def _bspline_weights(n_out: int, step: float, device: torch.device) -> _Weights:
    """Cubic B-spline interpolation of a coarse axis (node spacing ``step`` output px) onto ``n_out`` px.

    Output sample ``k`` lies at ``t = k/step`` in node units; it combines nodes ``⌊t⌋ … ⌊t⌋+3`` of a coarse axis
    whose node ``j`` sits at ``t = j − 1`` (one node of margin on each side).
    """
    t = torch.arange(n_out, device=device, dtype=torch.float64) / step
    i = t.floor()
    f = t - i
    w = torch.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], -1) / 6.0
    idx = i.to(torch.int64)[:, None] + torch.arange(4, device=device)[None]
    return idx, w


def _smooth_noise_field(
    out_shape: Sequence[int], step_px: float, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, list[_Weights]]:
    """White noise on a coarse grid and the per-axis cubic B-spline interpolation onto ``out_shape``.

    The interpolated field is smooth (C²) with correlation length ~``step_px``. B-spline weighting lowers the
    variance by ``Σ wᵢ²`` per axis (0.48 on average over the node interval); the coarse values are scaled so that
    the field has unit variance on average.
    """
    coarse_shape = [int(math.ceil((n - 1) / step_px)) + 4 for n in out_shape]
    values = torch.randn(coarse_shape, generator=generator, dtype=torch.float64).to(device)
    f = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    w = torch.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], -1) / 6.0
    mean_w2 = float((w * w).sum(-1).mean())
    values *= mean_w2 ** (-len(out_shape) / 2.0)
    return values, [_bspline_weights(n, step_px, device) for n in out_shape]


def _interpolate_axis(values: torch.Tensor, axis: int, weights: _Weights) -> torch.Tensor:
    idx, w = weights
    out_shape = list(values.shape)
    out_shape[axis] = idx.shape[0]
    taken = values.index_select(axis, idx.reshape(-1)).reshape(
        *values.shape[:axis], idx.shape[0], 4, *values.shape[axis + 1 :]
    )
    w_shape = [1] * (values.ndim + 1)
    w_shape[axis], w_shape[axis + 1] = idx.shape[0], 4
    return (taken * w.reshape(w_shape)).sum(axis + 1)


def render_ice(
    volume: torch.Tensor,
    *,
    ice_thickness_angstrom: float,
    voxel_size_angstrom: float,
    potential_v: float = ICE_MEAN_INNER_POTENTIAL_VOLT,
    generator: torch.Generator | None = None,
    roughness_angstrom: float = 20.0,
    roughness_length_angstrom: float = 1000.0,
    fluctuation: float = 0.02,
    fluctuation_length_angstrom: float = 200.0,
    edge_sigma_angstrom: float = 3.0,
    centre_z_angstrom: float = 0.0,
) -> torch.Tensor:
    """Add a slab of vitreous ice with rough, soft surfaces and weak low-frequency density fluctuations.

    ``V(x, y, z) = potential_v · [Φ((z_top − z)/σ) − Φ((z_bottom − z)/σ)] · (1 + fluctuation · g(x, y, z))`` with
    ``z_top/bottom = centre ± thickness/2 + roughness · h_top/bottom(x, y)``, ``Φ`` the normal CDF, ``σ² =
    edge_sigma² + voxel²/12`` (so the slab's integral along z is its thickness exactly), ``h`` unit-variance smooth
    random surfaces with correlation length ``roughness_length`` and ``g`` a unit-variance smooth random field with
    correlation length ``fluctuation_length`` (white noise on a grid of that spacing, cubic B-spline
    interpolated). Ice is added everywhere in the slab; other materials are rendered as their excess over ice (see
    the module notes).

    Parameters
    ----------
    volume
        ``(z, y, x)`` float tensor, added to in place.
    ice_thickness_angstrom
        Mean slab thickness (Å).
    voxel_size_angstrom
        Voxel size (Å).
    potential_v
        Mean inner potential of the ice (default 4.57 V).
    generator
        CPU ``torch.Generator`` for the random surfaces and fluctuations (seed 0 when omitted).
    roughness_angstrom
        RMS height of each surface's undulation (0 for flat surfaces).
    roughness_length_angstrom
        Correlation length of the undulations.
    fluctuation
        Relative RMS of the density fluctuations (0 for none).
    fluctuation_length_angstrom
        Correlation length of the fluctuations.
    edge_sigma_angstrom
        Intrinsic softness of the surfaces.
    centre_z_angstrom
        Height of the slab's mid-plane relative to the tomogram centre.

    Returns
    -------
    torch.Tensor
        ``volume``, with the ice added.
    """
    _check_volume(volume)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    vs = float(voxel_size_angstrom)
    shape = tuple(volume.shape)
    device = volume.device
    cz = shape[0] // 2
    sigma = math.hypot(edge_sigma_angstrom, vs / math.sqrt(12.0))
    heights = []
    for _ in range(2):  # top, bottom
        vals, axes = _smooth_noise_field(
            shape[1:], max(roughness_length_angstrom / vs, 1.0), generator, device
        )
        heights.append(
            _interpolate_axis(_interpolate_axis(vals, 0, axes[0]), 1, axes[1]) * roughness_angstrom
        )
    z_top = centre_z_angstrom + ice_thickness_angstrom / 2.0 + heights[0]  # (y, x) Å
    z_bottom = centre_z_angstrom - ice_thickness_angstrom / 2.0 + heights[1]
    fl_vals, fl_axes = _smooth_noise_field(
        shape, max(fluctuation_length_angstrom / vs, 1.0), generator, device
    )
    s2 = sigma * math.sqrt(2.0)
    slab = max(1, _CHUNK_SAMPLES // (shape[1] * shape[2]))
    for z0 in range(0, shape[0], slab):
        z1 = min(z0 + slab, shape[0])
        z = ((torch.arange(z0, z1, device=device, dtype=torch.float64) - cz) * vs)[:, None, None]
        occupancy = 0.5 * (torch.erf((z_top - z) / s2) - torch.erf((z_bottom - z) / s2))
        if fluctuation:
            zw = (fl_axes[0][0][z0:z1], fl_axes[0][1][z0:z1])
            g = _interpolate_axis(
                _interpolate_axis(_interpolate_axis(fl_vals, 0, zw), 1, fl_axes[1]), 2, fl_axes[2]
            )
            occupancy = occupancy * (1.0 + fluctuation * g)
        volume[z0:z1] += (potential_v * occupancy).to(volume.dtype)
    return volume


# ------------------------------------------------------------------------------------------------------------
# Everything
# ------------------------------------------------------------------------------------------------------------


def render_specimen(
    specimen: Specimen,
    particle_map: torch.Tensor,
    *,
    voxel_size_angstrom: float,
    map_voxel_size_angstrom: float | None = None,
    shape_zyx: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    ice_kwargs: dict[str, float] | None = None,
) -> torch.Tensor:
    """The potential volume of a whole specimen: ice, membranes, gold and particles.

    Parameters
    ----------
    specimen
        The specimen.
    particle_map
        The particles' map as contrast against ice (see the module notes), centred at ``N//2``.
    voxel_size_angstrom
        Voxel size of the volume (Å).
    map_voxel_size_angstrom
        Voxel size of the map (default: the volume's).
    shape_zyx
        Volume shape; default: the specimen's field at this voxel size (:func:`volume_shape_zyx`).
    generator
        CPU ``torch.Generator`` for the ice (seeded from the specimen's seed when omitted).
    device, dtype
        Of the volume (default: the map's device, float32).
    ice_kwargs
        Extra options of :func:`render_ice` (roughness, fluctuation, …).

    Returns
    -------
    torch.Tensor
        ``(z, y, x)`` potential in volts.
    """
    shape = (
        tuple(shape_zyx)
        if shape_zyx is not None
        else volume_shape_zyx(specimen.field_xyz_angstrom, voxel_size_angstrom)
    )
    volume = torch.zeros(shape, dtype=dtype, device=device if device is not None else particle_map.device)
    if generator is None:
        generator = torch.Generator().manual_seed(int(specimen.seed))
    render_ice(
        volume,
        ice_thickness_angstrom=specimen.ice_thickness_angstrom,
        voxel_size_angstrom=voxel_size_angstrom,
        generator=generator,
        **(ice_kwargs or {}),
    )
    render_membranes(volume, specimen.viruses, voxel_size_angstrom=voxel_size_angstrom)
    render_gold(volume, specimen.gold, voxel_size_angstrom=voxel_size_angstrom)
    render_particles(
        volume,
        particle_map,
        specimen.particles.positions_xyz_angstrom,
        specimen.particles.rotations,
        voxel_size_angstrom=voxel_size_angstrom,
        map_voxel_size_angstrom=map_voxel_size_angstrom,
    )
    return volume
