"""The immature HIV-1 CA-SP1 hexamer: the atomic model in the standard reference frame, and its potential map.

The vendored model (``data/HIV1_CA-SP1_hexamer.cif``, see ``data/PROVENANCE.md``) is the ModelAngelo model built
into the 3.3 Å RELION-5 map of EMPIAR-10164: six full CA chains (208–212 residues) plus fragments of the
neighbouring hexamers (14–45 residues each).

**Which atoms.** The central hexamer is the six chains with at least half as many residues as the longest chain;
the neighbours' fragments (< 50 residues) are dropped. Exactly six must remain.

**Standard frame** (the reference box of CONVENTIONS.md §4, so that a particle's ``R·ẑ`` is its hexamer axis):

* ``z`` is the C6 axis. It starts as the normal of the plane through the six chain centroids and is refined as the
  axis of the single rigid motion that best maps chain ``k`` onto chain ``k+1`` for all six chains at once (Kabsch
  on the CA atoms of the residues all six chains share). Its sign makes ``+z`` point from the C-terminal domain
  (CTD, residues ≥ 146, towards SP1) to the N-terminal domain (NTD, residues ≤ 145): in the immature lattice the NTD
  faces the viral membrane, so ``R·ẑ`` is the outward normal of the virus.
* The origin is on the axis (the centroid of the six chains' CA atoms, a point of the axis for a C6-symmetric set),
  moved along the axis to the middle of the six chains' extent in ``z``. It sits at the box centre ``N//2``.
* ``x`` points from the axis to the CA centroid of the first full chain in chain-id order (perpendicular to ``z``);
  ``y = z × x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from tomoforge.io.structure import Structure, read_structure
from tomoforge.simulate.potential import atoms_to_potential
from tomoforge.simulate.scattering import implicit_hydrogen_counts

__all__ = [
    "HexamerFrame",
    "hexamer_frame",
    "hexamer_reference",
    "load_hexamer_structure",
    "select_central_hexamer",
]

_DATA_FILE = "HIV1_CA-SP1_hexamer.cif"
_NTD_LAST_RESIDUE = 145  # CA NTD 1–145, linker, CTD 146–231 (Gamble et al. 1997; Worthylake et al. 1999)


@dataclass(frozen=True)
class HexamerFrame:
    """Where the hexamer's standard frame sits in the model's coordinates.

    A model point ``p`` (Å, ``(x, y, z)``) is at ``rotation @ (p − centre_model_xyz_angstrom)`` in the standard
    frame, whose origin is the centre of the reference box (voxel ``N//2``).

    Attributes
    ----------
    rotation
        ``(3, 3)`` float64 rotation, rows = the frame's x, y, z axes in model coordinates.
    centre_model_xyz_angstrom
        ``(3,)`` the frame origin in model coordinates (Å).
    chains
        Chain ids of the six chains kept, counter-clockwise about ``+z``, starting with the one on ``+x``.
    c6_rmsd_angstrom
        RMS distance between the CA atoms of each chain rotated by 60° about the frame's ``z`` and the next chain.
    c6_angle_deg
        Rotation angle of the refined chain-to-next-chain motion (60° for an exact C6 hexamer).
    outer_diameter_angstrom
        Twice the largest distance of any kept atom from the axis.
    height_angstrom
        Extent of the kept atoms along the axis.
    """

    rotation: np.ndarray
    centre_model_xyz_angstrom: np.ndarray
    chains: tuple[str, ...]
    c6_rmsd_angstrom: float
    c6_angle_deg: float
    outer_diameter_angstrom: float
    height_angstrom: float

    @property
    def axis_model_xyz(self) -> np.ndarray:
        """The C6 axis (frame ``+z``) as a unit vector in model coordinates."""
        return self.rotation[2].copy()

    def to_frame(self, positions_xyz_angstrom: np.ndarray) -> np.ndarray:
        """Model positions ``(..., 3)`` → standard-frame positions (Å)."""
        return (
            np.asarray(positions_xyz_angstrom, dtype=np.float64) - self.centre_model_xyz_angstrom
        ) @ self.rotation.T


def load_hexamer_structure() -> Structure:
    """The vendored CA-SP1 hexamer model (all 12,359 atoms, neighbour fragments included)."""
    ref = resources.files("tomoforge.simulate").joinpath("data", _DATA_FILE)
    with resources.as_file(ref) as path:
        return read_structure(path)


def select_central_hexamer(structure: Structure) -> Structure:
    """The six full chains: chains with at least half the residues of the longest chain.

    Raises
    ------
    ValueError
        When that rule does not leave exactly six chains.
    """
    chains = np.unique(structure.chain_ids)
    lengths = {
        c: np.unique(structure.residue_numbers[structure.chain_ids == c]).size for c in chains.tolist()
    }
    longest = max(lengths.values())
    full = sorted(c for c, n in lengths.items() if n >= 0.5 * longest)
    if len(full) != 6:
        raise ValueError(
            f"expected six full chains (≥ half of {longest} residues), found {len(full)}: {full}"
        )
    return structure.select(np.isin(structure.chain_ids, full))


def _kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` minimising ``Σ |R src + t − dst|²``."""
    cs, cd = src.mean(0), dst.mean(0)
    h = (src - cs).T @ (dst - cd)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, cd - rot @ cs


def _chain_ca(structure: Structure, chain: str, residues: np.ndarray) -> np.ndarray:
    """CA positions of ``chain`` at ``residues`` (in that order)."""
    m = (structure.chain_ids == chain) & (structure.atom_names == "CA")
    res = structure.residue_numbers[m]
    pos = structure.positions_xyz_angstrom[m]
    _, first = np.unique(res, return_index=True)
    lookup = dict(zip(res[first].tolist(), pos[first], strict=True))
    return np.stack([lookup[r] for r in residues.tolist()])


def hexamer_frame(structure: Structure) -> HexamerFrame:
    """The standard frame of a hexamer (the module docstring defines it).

    Parameters
    ----------
    structure
        Exactly six chains of one hexamer (see :func:`select_central_hexamer`), with CA atoms.

    Returns
    -------
    HexamerFrame
        Rotation and centre of the frame, the chain order and the C6 self-consistency.
    """
    chains = sorted(np.unique(structure.chain_ids).tolist())
    if len(chains) != 6:
        raise ValueError(f"a hexamer frame needs six chains, got {len(chains)}")
    ca_sets = [
        set(structure.residue_numbers[(structure.chain_ids == c) & (structure.atom_names == "CA")].tolist())
        for c in chains
    ]
    common = np.array(sorted(set.intersection(*ca_sets)), dtype=np.int64)
    if common.size < 10:
        raise ValueError("the six chains share fewer than 10 residues with CA atoms")
    ca = np.stack([_chain_ca(structure, c, common) for c in chains])  # (6, R, 3)
    centroid = ca.reshape(-1, 3).mean(0)
    chain_centres = ca.mean(1)
    # Provisional axis: normal of the plane of the chain centroids; order the chains counter-clockwise about it.
    _, _, vt = np.linalg.svd(chain_centres - chain_centres.mean(0))
    axis = vt[2]
    ref = chain_centres[0] - centroid
    ref -= axis * (ref @ axis)
    ref /= np.linalg.norm(ref)
    angles = [
        np.arctan2(np.cross(ref, v) @ axis, ref @ v) % (2 * np.pi)
        for v in (chain_centres - centroid - np.outer((chain_centres - centroid) @ axis, axis))
    ]
    order = np.argsort(np.mod(np.asarray(angles) + 1e-6, 2 * np.pi))
    # Refinement: one rigid motion mapping chain k onto chain k+1 for all six at once (Kabsch).
    ordered = ca[order]
    rot, _ = _kabsch(ordered.reshape(-1, 3), np.roll(ordered, -1, axis=0).reshape(-1, 3))
    skew = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    angle_deg = float(np.degrees(np.arctan2(np.linalg.norm(skew) / 2.0, (np.trace(rot) - 1.0) / 2.0)))
    axis = skew / np.linalg.norm(skew)  # counter-clockwise rotation about +axis maps chain k to k+1
    # Sign: +z from the CTD towards the NTD.
    all_pos = structure.positions_xyz_angstrom
    is_ca = structure.atom_names == "CA"
    ntd = all_pos[is_ca & (structure.residue_numbers <= _NTD_LAST_RESIDUE)].mean(0)
    ctd = all_pos[is_ca & (structure.residue_numbers > _NTD_LAST_RESIDUE)].mean(0)
    if (ntd - ctd) @ axis < 0:
        axis = -axis
    heights = (all_pos - centroid) @ axis
    centre = centroid + axis * 0.5 * (heights.min() + heights.max())
    x_dir = chain_centres[0] - centre  # the first chain in chain-id order
    x_dir -= axis * (x_dir @ axis)
    x_dir /= np.linalg.norm(x_dir)
    rotation = np.stack([x_dir, np.cross(axis, x_dir), axis])
    # Order the chains counter-clockwise about the final +z, starting with the one on +x.
    frame_centres = (chain_centres - centre) @ rotation.T
    ccw = np.argsort(np.mod(np.arctan2(frame_centres[:, 1], frame_centres[:, 0]) + 1e-6, 2 * np.pi))
    ca = ca[ccw]
    names = tuple(np.asarray(chains)[ccw].tolist())
    # C6 check: each chain turned by +60° about the frame axis lands on the next one.
    c, s = np.cos(np.pi / 3), np.sin(np.pi / 3)
    rz60 = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    in_frame = (ca - centre) @ rotation.T
    rmsd = float(np.sqrt(np.mean(np.sum((in_frame @ rz60.T - np.roll(in_frame, -1, axis=0)) ** 2, axis=-1))))
    frame_all = (all_pos - centre) @ rotation.T
    return HexamerFrame(
        rotation=rotation,
        centre_model_xyz_angstrom=centre,
        chains=names,
        c6_rmsd_angstrom=rmsd,
        c6_angle_deg=angle_deg,
        outer_diameter_angstrom=float(2.0 * np.hypot(frame_all[:, 0], frame_all[:, 1]).max()),
        height_angstrom=float(frame_all[:, 2].max() - frame_all[:, 2].min()),
    )


def hexamer_reference(
    *,
    voxel_size_angstrom: float,
    box_size_px: int,
    b_factor_angstrom2: float | None = 30.0,
    structure: Structure | None = None,
    implicit_hydrogens: bool = True,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, HexamerFrame]:
    """The potential map of the central CA-SP1 hexamer in the standard frame.

    Parameters
    ----------
    voxel_size_angstrom
        Voxel edge in Å.
    box_size_px
        Edge of the cubic box in voxels; the frame origin sits at voxel ``box_size_px // 2``.
    b_factor_angstrom2
        One isotropic B-factor (Å²) for every atom (default 30 Å², the order of the B-factor of a well-resolved
        subtomogram average; radiation damage and the optics are simulated elsewhere). ``None`` uses the model's
        own values, which for the vendored ModelAngelo model are placeholders (96 % are 100 Å²).
    structure
        Another hexamer model (default: the vendored EMPIAR-10164 model); its six full chains are kept.
    implicit_hydrogens
        Fold the hydrogens the model lacks into their heavy atoms
        (:func:`tomoforge.simulate.scattering.implicit_hydrogen_counts`).
    device
        Device of the map.

    Returns
    -------
    potential, frame
        ``(box, box, box)`` float32 potential in volts (no solvent; see
        :func:`tomoforge.simulate.potential.solvent_potential`), and the frame.
    """
    full = select_central_hexamer(load_hexamer_structure() if structure is None else structure)
    frame = hexamer_frame(full)
    positions = torch.as_tensor(frame.to_frame(full.positions_xyz_angstrom), device=device)
    b = full.b_factors_angstrom2 if b_factor_angstrom2 is None else float(b_factor_angstrom2)
    hydrogens = implicit_hydrogen_counts(full.residue_names, full.atom_names) if implicit_hydrogens else None
    potential = atoms_to_potential(
        positions,
        full.elements,
        shape_zyx=(box_size_px, box_size_px, box_size_px),
        voxel_size_angstrom=voxel_size_angstrom,
        b_factors_angstrom2=b,
        occupancies=full.occupancies,
        hydrogen_counts=hydrogens,
    )
    return potential, frame
