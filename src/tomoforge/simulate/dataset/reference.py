"""The particle map: the atomic model's potential as contrast against ice."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from tomoforge.io.structure import Structure
from tomoforge.simulate.hexamer import hexamer_frame, load_hexamer_structure, select_central_hexamer
from tomoforge.simulate.potential import ICE_MEAN_INNER_POTENTIAL_VOLT, atoms_to_potential, solvent_potential
from tomoforge.simulate.scattering import implicit_hydrogen_counts

__all__ = ["particle_contrast_map"]


@functools.lru_cache(maxsize=1)
def _vendored_hexamer() -> tuple[Structure, np.ndarray, bool]:
    return _framed_structure(load_hexamer_structure())


def _framed_structure(structure: Structure | None) -> tuple[Structure, np.ndarray, bool]:
    """The atoms to simulate and their positions in the reference frame.

    A hexamer (six full chains) goes into the standard frame of :mod:`tomoforge.simulate.hexamer`; any other model
    is centred on its centroid with its own axes. Returns ``(atoms, positions, is_hexamer)``.
    """
    if structure is None:
        return _vendored_hexamer()
    source = structure
    try:
        hexamer = select_central_hexamer(source)
        frame = hexamer_frame(hexamer)
    except ValueError:
        positions = source.positions_xyz_angstrom - source.positions_xyz_angstrom.mean(axis=0)
        return source, positions, False
    return hexamer, frame.to_frame(hexamer.positions_xyz_angstrom), True


def particle_contrast_map(
    *,
    voxel_size_angstrom: float,
    box_size_px: int | None = None,
    b_factor_angstrom2: float = 30.0,
    structure: Structure | None = None,
) -> torch.Tensor:
    """The particle's potential as contrast against ice: atoms + displaced-solvent term − ice (volts).

    Parameters
    ----------
    voxel_size_angstrom
        Voxel size in Å.
    box_size_px
        Cubic box edge (even); default: the atoms' extent plus 30 Å.
    b_factor_angstrom2
        One B-factor for every atom.
    structure
        Another model (default: the vendored CA-SP1 hexamer in its standard frame).

    Returns
    -------
    torch.Tensor
        ``(box, box, box)`` float32 map centred at ``box // 2`` (the reference frame origin).
    """
    atoms, positions, _ = _framed_structure(structure)
    if box_size_px is None:
        extent = 2.0 * float(np.linalg.norm(positions, axis=1).max()) + 30.0
        box_size_px = 2 * int(math.ceil(extent / voxel_size_angstrom / 2.0))
    shape = (box_size_px,) * 3
    potential = atoms_to_potential(
        positions,
        atoms.elements,
        shape_zyx=shape,
        voxel_size_angstrom=voxel_size_angstrom,
        b_factors_angstrom2=b_factor_angstrom2,
        occupancies=atoms.occupancies,
        hydrogen_counts=implicit_hydrogen_counts(atoms.residue_names, atoms.atom_names),
    )
    solvent = solvent_potential(
        shape, voxel_size_angstrom=voxel_size_angstrom, positions_xyz_angstrom=positions
    )
    return potential + solvent - ICE_MEAN_INNER_POTENTIAL_VOLT
