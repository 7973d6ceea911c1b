r"""Atomic models → electrostatic potential maps (volts), averaged exactly over each voxel.

Derivation
----------
In the first Born approximation the electron scattering factor of an atom is the Fourier transform of its
potential, ``f(q) = (2π m₀ e / h²) ∫ V(r) e^{2πi q·r} d³r`` with ``q = 2s`` the spatial frequency. Inverting,

    V(r) = (h² / (2π m₀ e)) ∫ f(q) e^{−2πi q·r} d³q.

With Peng's parameterisation ``f = Σ aᵢ exp(−bᵢ s²) = Σ aᵢ exp(−bᵢ q²/4)`` and the 3D transform
``∫ exp(−β q²) e^{−2πi q·r} d³q = (π/β)^{3/2} exp(−π² r²/β)`` (``β = bᵢ/4``),

    V(r) = C · Σᵢ aᵢ (4π/bᵢ)^{3/2} exp(−4π² r² / bᵢ),     C = h² / (2π m₀ e) = 47.878 V·Å²

(Kirkland 2010, eq. 5.15; ``a`` in Å, ``b`` in Å², ``r`` in Å gives volts). Each term is ``C·aᵢ`` times a
*normalised* 3D Gaussian of variance ``σᵢ² = bᵢ / (8π²)`` per axis, so an atom's potential integrates to
``C · f(0)`` V·Å³ (120.1 V·Å³ for carbon). An isotropic B-factor multiplies ``f`` by ``exp(−B s²)``, i.e.
``bᵢ → bᵢ + B``; occupancy scales ``aᵢ``. The constant is checked against measured mean inner potentials in
:func:`tomoforge.simulate.scattering.mean_inner_potential_volt` (water, amorphous carbon: the independent-atom model
is ~10 % high, as expected from bonding).

Voxel averaging
---------------
The value of a voxel is the *average* of ``V`` over the voxel cube: each Gaussian is integrated exactly over the
cube with error functions, ``∫ N(x; μ, σ²) dx = ½[erf((x₁−μ)/(σ√2)) − erf((x₀−μ)/(σ√2))]`` per axis (separable).
No extra blur is added, the map integrates to exactly ``C Σ f(0)`` (up to truncation at ``n_sigma`` standard
deviations), and coarse voxels are handled as well as fine ones. Evaluation is vectorised in chunks of atoms over a
cubic neighbourhood of each atom and accumulated with ``index_add_``.

Solvent
-------
:func:`solvent_potential` gives the constant potential of vitreous ice, optionally minus the solvent that the atoms
displace (Gaussian excluded volumes of Fraser, MacRae & Suzuki 1978, one volume per heavy atom from the protein
partial specific volume). Adding it to the protein map gives the protein's contrast against ice. Hydrogens, which
cryo-EM models lack, can be folded into their heavy atoms (``hydrogen_counts``); they carry ~18 % of a protein's
``f(0)``.

References
----------
.. [1] L.-M. Peng, G. Ren, S. L. Dudarev & M. J. Whelan (1996). Robust parameterization of elastic and absorptive
   electron atomic scattering factors. Acta Cryst. A52, 257–276. doi:10.1107/S0108767395014371
.. [2] E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., Springer.
   doi:10.1007/978-1-4419-6533-2
.. [3] R. D. B. Fraser, T. P. MacRae & E. Suzuki (1978). An improved method for calculating the contribution of
   solvent to the X-ray diffraction pattern of biological molecules. J. Appl. Cryst. 11, 693–694.
   doi:10.1107/S0021889878014296
.. [4] H. P. Erickson (2009). Size and shape of protein molecules at the nanometer level determined by
   sedimentation, gel filtration, and electron microscopy. Biol. Proced. Online 11, 32–51.
   doi:10.1007/s12575-009-9008-x
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from tomoforge.simulate.scattering import (
    POTENTIAL_CONSTANT_VOLT_ANGSTROM2,
    mean_inner_potential_volt,
    peng_parameters,
)

__all__ = [
    "ICE_DENSITY_G_PER_CM3",
    "ICE_MEAN_INNER_POTENTIAL_VOLT",
    "PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3",
    "atoms_to_potential",
    "solvent_potential",
]

ICE_DENSITY_G_PER_CM3 = 0.94  # low-density amorphous (vitreous) ice
_AVOGADRO = 6.02214076e23
# Water molecules per Å³ at that density, and its mean inner potential in the same independent-atom model as the
# protein (4.57 V; holography of liquid water measures 4.48 V, Yesibolati et al. 2020).
ICE_MEAN_INNER_POTENTIAL_VOLT = mean_inner_potential_volt(
    {"H": 2, "O": 1}, ICE_DENSITY_G_PER_CM3 * _AVOGADRO * 1e-24 / 18.015
)
# Protein partial specific volume 0.73 cm³/g (Erickson 2009) × 14.1 Da per heavy atom (110 Da per residue of
# 7.8 heavy atoms, hydrogens included) → 17.1 Å³ of solvent displaced per heavy atom.
PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3 = 0.73 * 14.1 / _AVOGADRO * 1e24

_CHUNK_VOXELS = 1 << 23  # voxels evaluated per chunk (≈ 32 MB of float32)


def _as_positions(positions_xyz_angstrom: torch.Tensor | np.ndarray) -> torch.Tensor:
    pos = torch.as_tensor(positions_xyz_angstrom)
    if pos.ndim != 2 or pos.shape[-1] != 3:
        raise ValueError(f"positions must be (N, 3), got {tuple(pos.shape)}")
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("positions must be finite")
    return pos.to(torch.float64)


def _per_atom(
    values: torch.Tensor | np.ndarray | float | None, n: int, default: float, like: torch.Tensor
) -> torch.Tensor:
    if values is None:
        return torch.full((n,), default, dtype=torch.float64, device=like.device)
    out = torch.as_tensor(values, dtype=torch.float64, device=like.device)
    if out.ndim == 0:
        return out.expand(n).clone()
    if out.shape != (n,):
        raise ValueError(f"per-atom values must be ({n},), got {tuple(out.shape)}")
    return out


def _splat_gaussians(
    centres_xyz_px: torch.Tensor,
    amplitudes: torch.Tensor,
    sigmas_px: torch.Tensor,
    shape_zyx: tuple[int, int, int],
    n_sigma: float,
) -> torch.Tensor:
    """Sum of ``amplitude × (fraction of a normalised 3D Gaussian inside each voxel)`` over all Gaussians.

    ``centres_xyz_px`` ``(M, 3)`` are continuous voxel indices (voxel ``i`` spans ``[i − ½, i + ½]``),
    ``amplitudes`` and ``sigmas_px`` ``(M, G)``. Returns a ``(z, y, x)`` float32 volume on the device of the inputs.
    """
    nz, ny, nx = shape_zyx
    device = centres_xyz_px.device
    out = torch.zeros(nz * ny * nx, dtype=torch.float32, device=device)
    m, g = amplitudes.shape
    if m == 0:
        return out.reshape(shape_zyx)
    radius = int(math.ceil(n_sigma * float(sigmas_px.max()) + 0.5))
    k = 2 * radius + 1
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.int64)
    sizes = torch.tensor([nx, ny, nz], device=device, dtype=torch.int64)
    strides = torch.tensor([1, nx, nx * ny], device=device, dtype=torch.int64)
    chunk = max(1, _CHUNK_VOXELS // (k**3))
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    for start in range(0, m, chunk):
        c = centres_xyz_px[start : start + chunk]  # (B, 3)
        amp = amplitudes[start : start + chunk]  # (B, G)
        inv_s = inv_sqrt2 / sigmas_px[start : start + chunk]  # (B, G)
        nearest = torch.round(c).to(torch.int64)
        idx = nearest[:, :, None] + offsets  # (B, 3, K)
        lo = (idx.to(torch.float64) - 0.5 - c[:, :, None])[:, None]  # (B, 1, 3, K)
        scale = inv_s[:, :, None, None]  # (B, G, 1, 1)
        w = 0.5 * (torch.erf((lo + 1.0) * scale) - torch.erf(lo * scale))  # (B, G, 3, K)
        inside = (idx >= 0) & (idx < sizes[:, None])  # (B, 3, K)
        w = (w * inside[:, None]).to(torch.float32)
        wx, wy, wz = w[:, :, 0], w[:, :, 1], w[:, :, 2]  # (B, G, K)
        wz = wz * amp[:, :, None].to(torch.float32)
        zy = (wz[:, :, :, None] * wy[:, :, None, :]).reshape(-1, g, k * k)  # (B, G, K·K)
        block = torch.bmm(zy.transpose(1, 2), wx)  # (B, K·K, K) = (z, y) × x
        # out-of-range voxels carry zero weight; clamp their indices into the volume
        flat = torch.minimum(idx, sizes[:, None] - 1).clamp(min=0) * strides[:, None]
        # linear index of every voxel of every neighbourhood, (B, K, K, K)
        lin = flat[:, 2, :, None, None] + flat[:, 1, None, :, None] + flat[:, 0, None, None, :]
        out.index_add_(0, lin.reshape(-1), block.reshape(-1))
    return out.reshape(shape_zyx)


def _centres_px(
    pos: torch.Tensor,
    shape_zyx: tuple[int, int, int],
    voxel_size_angstrom: float,
    origin_xyz_angstrom: Sequence[float],
) -> torch.Tensor:
    origin = torch.as_tensor(origin_xyz_angstrom, dtype=torch.float64, device=pos.device).reshape(3)
    centre_idx = torch.tensor([shape_zyx[2] // 2, shape_zyx[1] // 2, shape_zyx[0] // 2], dtype=torch.float64)
    return (pos - origin) / voxel_size_angstrom + centre_idx.to(pos.device)


def atoms_to_potential(
    positions_xyz_angstrom: torch.Tensor | np.ndarray,
    elements: Sequence[str] | np.ndarray,
    *,
    shape_zyx: tuple[int, int, int],
    voxel_size_angstrom: float,
    b_factors_angstrom2: torch.Tensor | np.ndarray | float | None = None,
    origin_xyz_angstrom: Sequence[float] = (0.0, 0.0, 0.0),
    occupancies: torch.Tensor | np.ndarray | None = None,
    hydrogen_counts: torch.Tensor | np.ndarray | None = None,
    n_sigma: float = 4.0,
) -> torch.Tensor:
    """Electrostatic potential of an atomic model, averaged over each voxel.

    Parameters
    ----------
    positions_xyz_angstrom
        ``(N, 3)`` atom positions in Å, ordered ``(x, y, z)``.
    elements
        ``N`` element symbols with parameters in :data:`tomoforge.simulate.scattering.PENG_1996`.
    shape_zyx
        Output shape ``(z, y, x)``.
    voxel_size_angstrom
        Voxel edge in Å.
    b_factors_angstrom2
        ``(N,)`` or scalar isotropic B-factors in Å² (default 0: the bare atoms).
    origin_xyz_angstrom
        Physical position (Å, ``(x, y, z)``) of voxel ``(N_x//2, N_y//2, N_z//2)``, the volume centre
        (CONVENTIONS.md §2).
    occupancies
        ``(N,)`` occupancies (default 1).
    hydrogen_counts
        ``(N,)`` hydrogens to fold into each atom ("united atoms", see
        :func:`tomoforge.simulate.scattering.implicit_hydrogen_counts`); they are placed at the atom's position
        with its B-factor and occupancy. Default: none.
    n_sigma
        Each Gaussian is evaluated out to this many standard deviations of the widest one (4 keeps > 99.98 % of
        every atom's integral).

    Returns
    -------
    torch.Tensor
        ``(z, y, x)`` float32 potential in volts on the device of ``positions_xyz_angstrom``. Its sum times the
        voxel volume is ``47.878 V·Å² · Σ occupancy · f(0)`` for atoms inside the box.

    References
    ----------
    .. [1] L.-M. Peng et al. (1996). Acta Cryst. A52, 257–276. doi:10.1107/S0108767395014371
    .. [2] E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., eq. 5.15.
       doi:10.1007/978-1-4419-6533-2
    """
    if voxel_size_angstrom <= 0:
        raise ValueError("voxel_size_angstrom must be positive")
    shape = (int(shape_zyx[0]), int(shape_zyx[1]), int(shape_zyx[2]))
    pos = _as_positions(positions_xyz_angstrom)
    n = pos.shape[0]
    a, b = peng_parameters(elements, device=pos.device)  # (N, 5)
    if a.shape[0] != n:
        raise ValueError(f"{n} positions but {a.shape[0]} elements")
    bf = _per_atom(b_factors_angstrom2, n, 0.0, pos)
    occ = _per_atom(occupancies, n, 1.0, pos)
    if hydrogen_counts is not None:
        h_count = _per_atom(hydrogen_counts, n, 0.0, pos)
        a_h, b_h = peng_parameters(["H"], device=pos.device)
        a = torch.cat([a, h_count[:, None] * a_h], dim=1)
        b = torch.cat([b, b_h.expand(n, -1)], dim=1)
    total_b = b + bf[:, None]
    if bool((total_b <= 0).any()):
        raise ValueError("b + B must be positive for every atom (negative B-factor?)")
    sigmas_px = torch.sqrt(total_b / (8.0 * math.pi**2)) / voxel_size_angstrom
    # volts per unit fraction of each Gaussian inside a voxel
    amplitudes = POTENTIAL_CONSTANT_VOLT_ANGSTROM2 * a * occ[:, None] / voxel_size_angstrom**3
    centres = _centres_px(pos, shape, voxel_size_angstrom, origin_xyz_angstrom)
    return _splat_gaussians(centres, amplitudes, sigmas_px, shape, n_sigma)


def solvent_potential(
    shape_zyx: tuple[int, int, int],
    *,
    voxel_size_angstrom: float,
    mean_inner_potential_volt: float = ICE_MEAN_INNER_POTENTIAL_VOLT,
    positions_xyz_angstrom: torch.Tensor | np.ndarray | None = None,
    volume_per_atom_angstrom3: float = PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3,
    origin_xyz_angstrom: Sequence[float] = (0.0, 0.0, 0.0),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Potential of the embedding vitreous ice, with the solvent displaced by the atoms removed.

    Each (heavy) atom displaces a Gaussian of unit peak and volume ``v`` (``σ² = v^{2/3} / 2π``, Fraser et al.
    1978); the displaced fraction of a voxel is the voxel average of their sum. The sum is not clipped: between
    bonded atoms it exceeds 1 (there the solvent term dips below 0, by up to ~2 MIP at 1 Å voxels, less at coarser
    ones), but its integral is exactly ``N·v``, so ``atoms_to_potential + solvent_potential`` has the protein's
    contrast against ice exactly at the low resolutions that tilt images carry (CA-SP1 hexamer: 8.1 V protein
    against 4.6 V ice).

    Parameters
    ----------
    shape_zyx
        Output shape ``(z, y, x)``.
    voxel_size_angstrom
        Voxel edge in Å.
    mean_inner_potential_volt
        Potential of the bulk solvent (default: vitreous ice of 0.94 g/cm³, 4.57 V in the same independent-atom
        model as the atoms).
    positions_xyz_angstrom
        ``(N, 3)`` heavy-atom positions in Å (``None``: no excluded volume, a constant map).
    volume_per_atom_angstrom3
        Solvent volume displaced per atom (default 17.1 Å³: protein partial specific volume 0.73 cm³/g, hydrogens
        included in their heavy atoms).
    origin_xyz_angstrom
        Physical position of the centre voxel ``N//2``, as in :func:`atoms_to_potential`.
    device
        Device of the result when no positions are given (otherwise theirs).

    Returns
    -------
    torch.Tensor
        ``(z, y, x)`` float32 potential in volts.

    References
    ----------
    .. [1] R. D. B. Fraser, T. P. MacRae & E. Suzuki (1978). J. Appl. Cryst. 11, 693–694.
       doi:10.1107/S0021889878014296
    .. [2] H. P. Erickson (2009). Biol. Proced. Online 11, 32–51. doi:10.1007/s12575-009-9008-x
    """
    shape = (int(shape_zyx[0]), int(shape_zyx[1]), int(shape_zyx[2]))
    if positions_xyz_angstrom is None:
        return torch.full(shape, float(mean_inner_potential_volt), dtype=torch.float32, device=device)
    pos = _as_positions(positions_xyz_angstrom)
    n = pos.shape[0]
    sigma_px = volume_per_atom_angstrom3 ** (1.0 / 3.0) / math.sqrt(2.0 * math.pi) / voxel_size_angstrom
    amplitudes = torch.full(
        (n, 1), volume_per_atom_angstrom3 / voxel_size_angstrom**3, dtype=torch.float64, device=pos.device
    )
    sigmas = torch.full((n, 1), sigma_px, dtype=torch.float64, device=pos.device)
    centres = _centres_px(pos, shape, voxel_size_angstrom, origin_xyz_angstrom)
    displaced = _splat_gaussians(centres, amplitudes, sigmas, shape, 4.0)
    return float(mean_inner_potential_volt) * (1.0 - displaced)
