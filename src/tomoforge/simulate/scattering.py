"""Elastic electron scattering factors of neutral atoms (Peng et al. 1996) and what follows from them.

The electron scattering factor of a neutral atom is parameterised as five Gaussians,

    f(s) = Σᵢ aᵢ · exp(−bᵢ s²),      s = sin θ / λ = q / 2  (Å⁻¹),  f in Å,  b in Å²,

with the parameters of Peng, Ren, Dudarev & Whelan (1996), Table 1, fitted for 0 < s < 2 Å⁻¹ (the range that
matters for cryo-EM; their second fit, to 6 Å⁻¹, is *not* used here). ``f(0) = Σ aᵢ``.

Where the numbers come from (the paper itself is not reachable here; every row below was checked against two
independent transcriptions, and Se and Au against a third):

* abTEM ``abtem/parametrizations/data/peng_low.json`` (all elements below);
* ttsim3d ``src/ttsim3d/elastic_scattering_factors.json`` (H … Ca) and cisTEM
  ``src/programs/simulate/scattering_potential.h`` (H, C, N, O, F, Na, Mg, P, S, Cl, K, Ca, Mn, Fe, Zn);
* MULTEM ``src/atomic_data.hpp``, ``Load_feg_Peng_neutral_0_4`` (the same fit in ``g = 2s``; Se and Au checked).

Known transcription slips that the cross-check caught and that are *not* copied: cisTEM has K ``a₂ = −1.4031``
(abTEM, ttsim3d: ``+1.4031``); Bsoft ``scat_peng.star`` has C ``a₁ = 0.893`` (all others: ``0.0893``).

Gold: the Au row is included, so gold beads can be built from atoms; a solid 10 nm bead is more cheaply rendered
as a uniform sphere at gold's mean inner potential, :func:`mean_inner_potential_volt` of ``{"AU": 1}`` at
0.0590 atoms/Å³ (≈ 30 V in this independent-atom model).

References
----------
.. [1] L.-M. Peng, G. Ren, S. L. Dudarev & M. J. Whelan (1996). Robust parameterization of elastic and absorptive
   electron atomic scattering factors. Acta Cryst. A52, 257–276. doi:10.1107/S0108767395014371
.. [2] E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., Springer, §5.2 (potential from
   scattering factors). doi:10.1007/978-1-4419-6533-2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "ELEMENTS",
    "PENG_1996",
    "POTENTIAL_CONSTANT_VOLT_ANGSTROM2",
    "electron_scattering_factor_angstrom",
    "implicit_hydrogen_counts",
    "mean_inner_potential_volt",
    "peng_parameters",
]

# h² / (2π m₀ e) in V·Å² (CODATA 2018 exact SI constants; m₀ is the electron rest mass): the factor between the
# electron scattering factor f (Å) and the projected/3D potential. Evaluates to 47.878 V·Å².
_H_PLANCK_JS = 6.62607015e-34
_ELECTRON_MASS_KG = 9.1093837015e-31
_ELEMENTARY_CHARGE_C = 1.602176634e-19
POTENTIAL_CONSTANT_VOLT_ANGSTROM2 = (
    _H_PLANCK_JS**2 / (2 * math.pi * _ELECTRON_MASS_KG * _ELEMENTARY_CHARGE_C) * 1e20
)

# element: ((a1..a5 in Å), (b1..b5 in Å²)); Peng et al. (1996) Table 1, neutral atoms, 0 < s < 2 Å⁻¹.
PENG_1996: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "H": ((0.0349, 0.1201, 0.1970, 0.0573, 0.1195), (0.5347, 3.5867, 12.3471, 18.9525, 38.6269)),
    "C": ((0.0893, 0.2563, 0.7570, 1.0487, 0.3575), (0.2465, 1.7100, 6.4094, 18.6113, 50.2523)),
    "N": ((0.1022, 0.3219, 0.7982, 0.8197, 0.1715), (0.2451, 1.7481, 6.1925, 17.3894, 48.1431)),
    "O": ((0.0974, 0.2921, 0.6910, 0.6990, 0.2039), (0.2067, 1.3815, 4.6943, 12.7105, 32.4726)),
    "F": ((0.1083, 0.3175, 0.6487, 0.5846, 0.1421), (0.2057, 1.3439, 4.2788, 11.3932, 28.7881)),
    "NA": ((0.2142, 0.6853, 0.7692, 1.6589, 1.4482), (0.3334, 2.3446, 10.0830, 48.3037, 138.2700)),
    "MG": ((0.2314, 0.6866, 0.9677, 2.1882, 1.1339), (0.3278, 2.2720, 10.9241, 39.2898, 101.9748)),
    "P": ((0.2548, 0.6106, 1.4541, 2.3204, 0.8477), (0.2908, 1.8740, 8.5176, 24.3434, 63.2996)),
    "S": ((0.2497, 0.5628, 1.3899, 2.1865, 0.7715), (0.2681, 1.6711, 7.0267, 19.5377, 50.3888)),
    "CL": ((0.2443, 0.5397, 1.3919, 2.0197, 0.6621), (0.2468, 1.5242, 6.1537, 16.6687, 42.3086)),
    "K": ((0.4115, 1.4031, 2.2784, 2.6742, 2.2162), (0.3703, 3.3874, 13.1029, 68.9592, 194.4329)),
    "CA": ((0.4054, 1.3880, 2.1602, 3.7532, 2.2063), (0.3499, 3.0991, 11.9608, 53.9353, 142.3892)),
    "MN": ((0.3796, 1.2094, 1.7815, 2.5420, 1.5937), (0.2699, 2.0455, 7.4726, 31.0604, 91.5622)),
    "FE": ((0.3946, 1.2725, 1.7031, 2.3140, 1.4795), (0.2717, 2.0443, 7.6007, 29.9714, 86.2265)),
    "ZN": ((0.4288, 1.2646, 1.4472, 1.8294, 1.0934), (0.2593, 1.7998, 6.7500, 25.5860, 73.5284)),
    "SE": ((0.4477, 1.1678, 1.5843, 2.8087, 1.1956), (0.2405, 1.5442, 6.3231, 19.4610, 52.0233)),
    "AU": ((0.9674, 1.8916, 3.3993, 3.0524, 1.2607), (0.2358, 1.4712, 5.6758, 18.7119, 61.5286)),
}
ELEMENTS = tuple(PENG_1996)

# Hydrogens bonded to each heavy atom of the standard residues (neutral His as HID, Asp/Glu deprotonated,
# Lys/Arg protonated, internal residues): used to fold the hydrogens that X-ray and cryo-EM models lack into their
# heavy atoms ("united atoms"). Backbone: N 1 (Pro 0), CA 1 (Gly 2), C 0, O 0.
_SIDE_CHAIN_H: dict[str, dict[str, int]] = {
    "ALA": {"CB": 3},
    "ARG": {"CB": 2, "CG": 2, "CD": 2, "NE": 1, "NH1": 2, "NH2": 2},
    "ASN": {"CB": 2, "ND2": 2},
    "ASP": {"CB": 2},
    "CYS": {"CB": 2, "SG": 1},
    "GLN": {"CB": 2, "CG": 2, "NE2": 2},
    "GLU": {"CB": 2, "CG": 2},
    "GLY": {"CA": 2},
    "HIS": {"CB": 2, "ND1": 1, "CD2": 1, "CE1": 1},
    "ILE": {"CB": 1, "CG1": 2, "CG2": 3, "CD1": 3},
    "LEU": {"CB": 2, "CG": 1, "CD1": 3, "CD2": 3},
    "LYS": {"CB": 2, "CG": 2, "CD": 2, "CE": 2, "NZ": 3},
    "MET": {"CB": 2, "CG": 2, "CE": 3},
    "MSE": {"CB": 2, "CG": 2, "CE": 3},
    "PHE": {"CB": 2, "CD1": 1, "CD2": 1, "CE1": 1, "CE2": 1, "CZ": 1},
    "PRO": {"N": 0, "CB": 2, "CG": 2, "CD": 2},
    "SER": {"CB": 2, "OG": 1},
    "THR": {"CB": 1, "OG1": 1, "CG2": 3},
    "TRP": {"CB": 2, "CD1": 1, "NE1": 1, "CE3": 1, "CZ2": 1, "CZ3": 1, "CH2": 1},
    "TYR": {"CB": 2, "CD1": 1, "CD2": 1, "CE1": 1, "CE2": 1, "OH": 1},
    "VAL": {"CB": 1, "CG1": 3, "CG2": 3},
    "HOH": {"O": 2},
    "WAT": {"O": 2},
}
_BACKBONE_H = {"N": 1, "CA": 1}


def _symbol(element: str) -> str:
    return element.strip().upper()


def peng_parameters(
    elements: Sequence[str] | np.ndarray, *, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The five-Gaussian parameters of each atom.

    Parameters
    ----------
    elements
        ``N`` element symbols (any case).
    device
        Device of the returned tensors.

    Returns
    -------
    a_angstrom, b_angstrom2
        ``(N, 5)`` float64 tensors: amplitudes ``aᵢ`` (Å) and widths ``bᵢ`` (Å²) of ``f(s) = Σ aᵢ exp(−bᵢ s²)``.

    Raises
    ------
    ValueError
        An element without parameters in :data:`PENG_1996`.
    """
    symbols = np.asarray([_symbol(str(e)) for e in elements], dtype=str).reshape(-1)
    unique, inverse = np.unique(symbols, return_inverse=True)
    missing = [u for u in unique.tolist() if u not in PENG_1996]
    if missing:
        raise ValueError(
            f"no Peng et al. (1996) scattering factors for element(s) {', '.join(missing)}; known: {', '.join(ELEMENTS)}"
        )
    table_a = np.array([PENG_1996[u][0] for u in unique.tolist()], dtype=np.float64).reshape(-1, 5)
    table_b = np.array([PENG_1996[u][1] for u in unique.tolist()], dtype=np.float64).reshape(-1, 5)
    idx = np.asarray(inverse, dtype=np.int64).reshape(-1)
    return (
        torch.as_tensor(table_a[idx], device=device),
        torch.as_tensor(table_b[idx], device=device),
    )


def electron_scattering_factor_angstrom(
    element: str, s_per_angstrom: torch.Tensor | float, *, b_factor_angstrom2: float = 0.0
) -> torch.Tensor:
    """``f(s)`` of one element, optionally damped by a Debye–Waller factor ``exp(−B s²)``.

    Parameters
    ----------
    element
        Element symbol.
    s_per_angstrom
        ``(...)`` values of ``s = sin θ / λ`` (half the spatial frequency ``q``) in Å⁻¹.
    b_factor_angstrom2
        Isotropic B-factor (Å²).

    Returns
    -------
    torch.Tensor
        ``(...)`` float64 scattering factor in Å.
    """
    s = torch.as_tensor(s_per_angstrom, dtype=torch.float64)
    a, b = peng_parameters([element], device=s.device)
    s2 = (s * s)[..., None]
    return (a[0] * torch.exp(-(b[0] + b_factor_angstrom2) * s2)).sum(-1)


def mean_inner_potential_volt(composition: Mapping[str, float], units_per_angstrom3: float) -> float:
    """Mean inner potential of a material in the independent-atom model: ``V₀ = 47.878 V·Å² · Σ nₖ fₖ(0)``.

    The volume integral of an atom's potential is ``47.878 V·Å² · f(0)`` (see :mod:`tomoforge.simulate.potential`),
    so a material with ``nₖ`` atoms of element ``k`` per Å³ has the average potential above. Bonding lowers the
    true value by ~10 %: the model gives 4.9 V for liquid water (measured 4.48 ± 0.19 V, Yesibolati et al. 2020)
    and 10.5 V for amorphous carbon of 1.75 g/cm³ (measured 9.09 V, Wanner et al. 2006).

    Parameters
    ----------
    composition
        Atoms of each element per formula unit, e.g. ``{"H": 2, "O": 1}``.
    units_per_angstrom3
        Formula units per Å³.

    Returns
    -------
    float
        Mean inner potential in volts.

    References
    ----------
    .. [1] N. Yesibolati et al. (2020). Mean inner potential of liquid water. Phys. Rev. Lett. 124, 065502.
       doi:10.1103/PhysRevLett.124.065502
    .. [2] M. Wanner et al. (2006). Electron holography of thin amorphous carbon films: measurement of the mean
       inner potential and a thickness-independent phase shift. Ultramicroscopy 106, 341–345.
       doi:10.1016/j.ultramic.2005.10.004
    """
    f0 = sum(count * sum(PENG_1996[_symbol(el)][0]) for el, count in composition.items())
    return POTENTIAL_CONSTANT_VOLT_ANGSTROM2 * f0 * units_per_angstrom3


def implicit_hydrogen_counts(
    residue_names: Sequence[str] | np.ndarray, atom_names: Sequence[str] | np.ndarray
) -> np.ndarray:
    """Number of hydrogens bonded to each heavy atom of the standard amino acids and water.

    Cryo-EM and most X-ray models carry no hydrogens, yet hydrogens hold ~20 % of a protein's scattering at low
    resolution. Folding them into their heavy atoms (a "united-atom" model) restores that. Atoms of other residues
    (ligands, nucleic acids) and explicit hydrogens get 0.

    Parameters
    ----------
    residue_names, atom_names
        ``(N,)`` residue names (``"LYS"``) and atom names (``"NZ"``).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 hydrogen counts.
    """
    res = np.asarray(residue_names, dtype=str).reshape(-1)
    names = np.asarray(atom_names, dtype=str).reshape(-1)
    counts = np.zeros(res.shape, dtype=np.int64)
    for i, (r, n) in enumerate(zip(res.tolist(), names.tolist(), strict=True)):
        r, n = r.upper(), n.upper()
        side = _SIDE_CHAIN_H.get(r)
        if side is None:
            continue
        counts[i] = side[n] if n in side else (_BACKBONE_H.get(n, 0) if r not in ("HOH", "WAT") else 0)
    return counts
