"""Scattering factors and atomic potentials: the table, the 47.878 V·Å² constant, exact voxel integrals, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tomoforge.simulate.potential as potential_module
from tomoforge.simulate.potential import (
    ICE_MEAN_INNER_POTENTIAL_VOLT,
    PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3,
    atoms_to_potential,
    solvent_potential,
)
from tomoforge.simulate.scattering import (
    PENG_1996,
    POTENTIAL_CONSTANT_VOLT_ANGSTROM2,
    electron_scattering_factor_angstrom,
    implicit_hydrogen_counts,
    mean_inner_potential_volt,
    peng_parameters,
)

C = POTENTIAL_CONSTANT_VOLT_ANGSTROM2
F0_CARBON = 0.0893 + 0.2563 + 0.7570 + 1.0487 + 0.3575  # Peng et al. (1996) Table 1, written out: 2.5088 Å
F0_HYDROGEN = 0.0349 + 0.1201 + 0.1970 + 0.0573 + 0.1195


def _analytic_volt(r_angstrom: np.ndarray, element: str, b_factor: float = 0.0) -> np.ndarray:
    """V(r) = 47.878 Σ aᵢ (4π/(bᵢ+B))^{3/2} exp(−4π² r²/(bᵢ+B)), written independently of the kernel."""
    a, b = PENG_1996[element]
    r2 = np.asarray(r_angstrom, dtype=np.float64)[..., None] ** 2
    bb = np.asarray(b) + b_factor
    return 47.878 * np.sum(np.asarray(a) * (4 * np.pi / bb) ** 1.5 * np.exp(-4 * np.pi**2 * r2 / bb), axis=-1)


def test_constant_is_h2_over_2pi_m0_e() -> None:
    assert C == pytest.approx(47.878, abs=1e-3)


def test_scattering_factor_at_zero_is_the_sum_of_the_amplitudes() -> None:
    assert electron_scattering_factor_angstrom("C", 0.0).item() == pytest.approx(F0_CARBON, abs=1e-12)
    assert electron_scattering_factor_angstrom("h", 0.0).item() == pytest.approx(F0_HYDROGEN, abs=1e-12)
    # Σ aᵢ of the table rows, summed by hand
    for element, f0 in [
        ("C", 2.5088),
        ("O", 1.9834),
        ("N", 2.2135),
        ("S", 5.1604),
        ("SE", 7.2041),
        ("AU", 10.5714),
    ]:
        assert electron_scattering_factor_angstrom(element, 0.0).item() == pytest.approx(f0, abs=1e-4)
    s = torch.linspace(0, 2, 50)
    f = electron_scattering_factor_angstrom("C", s)
    assert bool((f.diff() < 0).all()) and f[-1] < 0.02 * f[0]
    damped = electron_scattering_factor_angstrom("C", s, b_factor_angstrom2=40.0)
    torch.testing.assert_close(damped, f.double() * torch.exp(-40.0 * s.double() ** 2))  # Debye–Waller factor


def test_parameters_cover_the_shipped_models_and_reject_unknown_elements() -> None:
    a, b = peng_parameters(["C", "n", "O", "S", "Se", "H"])
    assert a.shape == b.shape == (6, 5) and a.dtype == torch.float64
    assert float(a[0].sum()) == pytest.approx(F0_CARBON)
    with pytest.raises(ValueError, match="XX"):
        peng_parameters(["C", "XX"])


@pytest.mark.parametrize(("voxel", "b_factor"), [(0.5, 0.0), (1.0, 20.0), (3.0, 60.0)])
def test_single_atom_integrates_to_47_878_times_f0(voxel: float, b_factor: float) -> None:
    pos = torch.tensor([[0.37, -0.81, 0.22]], dtype=torch.float64)
    v = atoms_to_potential(
        pos, ["C"], shape_zyx=(24, 24, 24), voxel_size_angstrom=voxel, b_factors_angstrom2=b_factor
    )
    assert v.dtype == torch.float32 and v.shape == (24, 24, 24)
    assert float(v.double().sum()) * voxel**3 == pytest.approx(C * F0_CARBON, rel=2e-4)  # 120.1 V·Å³


def test_occupancy_and_implicit_hydrogens_add_linearly() -> None:
    pos = torch.zeros(1, 3, dtype=torch.float64)
    kw = {"shape_zyx": (20, 20, 20), "voxel_size_angstrom": 1.0, "b_factors_angstrom2": 10.0}
    half = atoms_to_potential(pos, ["C"], occupancies=torch.tensor([0.5]), **kw)
    full = atoms_to_potential(pos, ["C"], **kw)
    torch.testing.assert_close(half * 2, full)
    ch3 = atoms_to_potential(pos, ["C"], hydrogen_counts=torch.tensor([3]), **kw)
    hydrogens = atoms_to_potential(pos.repeat(3, 1), ["H"] * 3, **kw)
    torch.testing.assert_close(ch3, full + hydrogens, atol=1e-5, rtol=1e-5)
    assert float(ch3.double().sum()) == pytest.approx(C * (F0_CARBON + 3 * F0_HYDROGEN), rel=2e-4)


def test_fine_voxels_sample_the_analytic_potential() -> None:
    """At voxels much finer than the atom, the voxel average is the formula's value at the voxel centre."""
    voxel, n, b_factor = 0.1, 50, 50.0  # σ ≥ 0.8 Å: averaging over 0.1 Å changes values by < 0.3 %
    v = atoms_to_potential(
        torch.zeros(1, 3), ["O"], shape_zyx=(n, n, n), voxel_size_angstrom=voxel, b_factors_angstrom2=b_factor
    )
    r = (np.arange(n) - n // 2) * voxel  # along +x through the centre
    expected = _analytic_volt(r, "O", b_factor)
    np.testing.assert_allclose(v[n // 2, n // 2].numpy(), expected, rtol=5e-3, atol=1e-3 * expected.max())
    assert float(v.max()) == pytest.approx(expected.max(), rel=3e-3)  # 11.0 V at the nucleus of a B = 50 Å² O


def test_coarse_voxel_is_the_exact_average_over_the_cube() -> None:
    """A 3 Å voxel equals the average of the analytic potential over the cube (midpoint rule, 3000 samples/axis).

    ``exp(−4π² r²/b) = Π_axes exp(−4π² x²/b)``, so the cube average of each term is a product of 1D averages.
    """
    voxel, b_factor = 3.0, 15.0
    atom = np.array([0.9, -0.4, 1.3])
    v = atoms_to_potential(
        torch.tensor(atom[None]),
        ["N"],
        shape_zyx=(9, 9, 9),
        voxel_size_angstrom=voxel,
        b_factors_angstrom2=b_factor,
    )
    a, b = (np.asarray(p) for p in PENG_1996["N"])
    bb = b + b_factor
    t = (np.arange(3000) + 0.5) / 3000 * voxel - voxel / 2
    for index_zyx in [(4, 4, 4), (4, 4, 5), (5, 3, 4), (4, 6, 4)]:
        d = (np.array(index_zyx[::-1]) - 4) * voxel - atom  # voxel centre − atom, (x, y, z)
        per_axis = np.exp(-4 * np.pi**2 * (d[:, None, None] + t[None, :, None]) ** 2 / bb).mean(1)  # (3, 5)
        average = 47.878 * np.sum(a * (4 * np.pi / bb) ** 1.5 * per_axis.prod(0))
        assert float(v[index_zyx]) == pytest.approx(average, rel=1e-4)


def test_origin_is_the_position_of_the_centre_voxel() -> None:
    kw = {"shape_zyx": (9, 10, 11), "voxel_size_angstrom": 2.0, "b_factors_angstrom2": 5.0}
    at_origin = atoms_to_potential(
        torch.tensor([[5.0, -3.0, 1.0]]), ["C"], origin_xyz_angstrom=(5.0, -3.0, 1.0), **kw
    )
    assert np.unravel_index(int(at_origin.argmax()), at_origin.shape) == (4, 5, 5)  # (N_z//2, N_y//2, N_x//2)
    plus_x = atoms_to_potential(torch.tensor([[2.0, 0.0, -4.0]]), ["C"], **kw)
    # (x, y, z) = (+1, 0, −2) voxels from the centre
    assert np.unravel_index(int(plus_x.argmax()), plus_x.shape) == (4 - 2, 5, 5 + 1)


def test_atoms_at_the_edge_and_chunking() -> None:
    gen = torch.Generator().manual_seed(3)
    pos = (torch.rand(200, 3, generator=gen, dtype=torch.float64) - 0.5) * 40  # some atoms leave a 32 Å box
    elements = ["C", "N", "O", "S"] * 50
    kw = {"shape_zyx": (16, 16, 16), "voxel_size_angstrom": 2.0, "b_factors_angstrom2": 30.0}
    whole = atoms_to_potential(pos, elements, **kw)
    original = potential_module._CHUNK_VOXELS
    try:
        potential_module._CHUNK_VOXELS = 1000  # one atom per chunk
        chunked = atoms_to_potential(pos, elements, **kw)
    finally:
        potential_module._CHUNK_VOXELS = original
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=1e-5)
    singles = sum(atoms_to_potential(pos[i : i + 1], [e], **kw) for i, e in enumerate(elements))
    torch.testing.assert_close(whole, singles, atol=1e-4, rtol=1e-5)
    inside = (pos.abs() < 12).all(1)  # 4σ of B = 30 Å² is < 4 Å: these atoms lie wholly in the box
    f0 = {e: sum(PENG_1996[e][0]) for e in "CNOS"}
    total_inside = C * sum(f0[e] for e, keep in zip(elements, inside.tolist(), strict=True) if keep)
    assert float(whole.double().sum()) * 8 > total_inside


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="negative B"):
        atoms_to_potential(
            torch.zeros(1, 3), ["H"], shape_zyx=(4, 4, 4), voxel_size_angstrom=1.0, b_factors_angstrom2=-5.0
        )
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        atoms_to_potential(torch.zeros(3), ["H"], shape_zyx=(4, 4, 4), voxel_size_angstrom=1.0)
    with pytest.raises(ValueError, match="2 positions but 1 elements"):
        atoms_to_potential(torch.zeros(2, 3), ["H"], shape_zyx=(4, 4, 4), voxel_size_angstrom=1.0)


def test_mean_inner_potentials_match_measurements_within_the_independent_atom_error() -> None:
    """IAM is ~10 % above holography (bonding): water 4.48 V (Yesibolati 2020), amorphous C 9.09 V (Wanner 2006)."""
    water = mean_inner_potential_volt({"H": 2, "O": 1}, 1.0 * 6.02214076e23 * 1e-24 / 18.015)
    carbon = mean_inner_potential_volt({"C": 1}, 1.75 * 6.02214076e23 * 1e-24 / 12.011)
    assert 1.0 < water / 4.48 < 1.15 and 1.0 < carbon / 9.09 < 1.2
    assert ICE_MEAN_INNER_POTENTIAL_VOLT == pytest.approx(water * 0.94, rel=1e-9)
    assert 4.3 < ICE_MEAN_INNER_POTENTIAL_VOLT < 4.7
    gold = mean_inner_potential_volt({"AU": 1}, 19.3 * 6.02214076e23 * 1e-24 / 196.97)
    assert 25 < gold < 35  # ≈ 30 V in the IAM


def test_solvent_with_excluded_volume() -> None:
    plain = solvent_potential((8, 8, 8), voxel_size_angstrom=2.0)
    assert plain.dtype == torch.float32 and torch.all(plain == torch.tensor(ICE_MEAN_INNER_POTENTIAL_VOLT))
    gen = torch.Generator().manual_seed(0)
    pos = (torch.rand(300, 3, generator=gen, dtype=torch.float64) - 0.5) * 20
    ice = solvent_potential((24, 24, 24), voxel_size_angstrom=2.0, positions_xyz_angstrom=pos)
    displaced = (
        float((ICE_MEAN_INNER_POTENTIAL_VOLT - ice.double()).sum()) * 8 / ICE_MEAN_INNER_POTENTIAL_VOLT
    )
    assert displaced == pytest.approx(300 * PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3, rel=1e-3)
    assert float(ice[0, 0, 0]) == pytest.approx(ICE_MEAN_INNER_POTENTIAL_VOLT, rel=1e-6)  # far from the atoms
    assert float(ice[12, 12, 12]) < 0.7 * ICE_MEAN_INNER_POTENTIAL_VOLT  # 300 atoms displace ~64 % of 8000 Å³


def test_implicit_hydrogens_per_residue() -> None:
    res = ["GLY", "GLY", "ALA", "LYS", "PRO", "PRO", "HOH", "HEM", "TRP", "ASP"]
    names = ["CA", "N", "CB", "NZ", "N", "CA", "O", "FE", "CZ2", "OD1"]
    assert implicit_hydrogen_counts(res, names).tolist() == [2, 1, 3, 3, 0, 1, 2, 0, 1, 0]


def test_speed_12k_atoms_into_128_cubed() -> None:
    import time

    gen = torch.Generator().manual_seed(1)
    pos = (torch.rand(12000, 3, generator=gen, dtype=torch.float64) - 0.5) * 100
    start = time.perf_counter()
    v = atoms_to_potential(
        pos, ["C"] * 12000, shape_zyx=(128, 128, 128), voxel_size_angstrom=1.0, b_factors_angstrom2=30.0
    )
    assert time.perf_counter() - start < 5.0
    assert math.isfinite(float(v.sum()))
