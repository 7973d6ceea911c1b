"""The simulator's kernels: atomic models → potentials, the HIV CA-SP1 hexamer reference, specimen and images.

Every function is pure (tensors in, tensors out) and may use :mod:`tomoforge.io` and :mod:`tomoforge.models`.
"""

from tomoforge.simulate.hexamer import (
    HexamerFrame,
    hexamer_frame,
    hexamer_reference,
    load_hexamer_structure,
    select_central_hexamer,
)
from tomoforge.simulate.potential import (
    ICE_MEAN_INNER_POTENTIAL_VOLT,
    atoms_to_potential,
    solvent_potential,
)
from tomoforge.simulate.scattering import (
    PENG_1996,
    electron_scattering_factor_angstrom,
    implicit_hydrogen_counts,
    mean_inner_potential_volt,
    peng_parameters,
)

__all__ = [
    "ICE_MEAN_INNER_POTENTIAL_VOLT",
    "PENG_1996",
    "HexamerFrame",
    "atoms_to_potential",
    "electron_scattering_factor_angstrom",
    "hexamer_frame",
    "hexamer_reference",
    "implicit_hydrogen_counts",
    "load_hexamer_structure",
    "mean_inner_potential_volt",
    "peng_parameters",
    "select_central_hexamer",
    "solvent_potential",
]
