"""The CA-SP1 hexamer reference: chain selection, the standard frame (C6 axis on +z towards the NTD) and the map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from tomoforge.io.structure import Structure
from tomoforge.simulate.hexamer import (
    hexamer_frame,
    hexamer_reference,
    load_hexamer_structure,
    select_central_hexamer,
)
from tomoforge.simulate.potential import PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3
from tomoforge.simulate.scattering import (
    PENG_1996,
    POTENTIAL_CONSTANT_VOLT_ANGSTROM2,
    implicit_hydrogen_counts,
)


@pytest.fixture(scope="module")
def model() -> Structure:
    return load_hexamer_structure()


@pytest.fixture(scope="module")
def hexamer(model: Structure) -> Structure:
    return select_central_hexamer(model)


def _rotate_about_z(volume: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """``V'(r) = V(Rz(−angle)·r)`` about the centre voxel ``N//2`` (trilinear), i.e. the map turned by +angle."""
    n = volume.shape[-1]
    idx = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(idx, idx, idx, indexing="ij")
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    xs, ys = c * x + s * y, -s * x + c * y  # Rz(−angle) applied to (x, y)
    grid = torch.stack([xs, ys, z], -1) + n // 2
    grid = (grid / (n - 1) * 2 - 1).to(volume.dtype)
    return F.grid_sample(volume[None, None], grid[None], align_corners=True, padding_mode="zeros")[0, 0]


def _corr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a_ = np.asarray(a, dtype=np.float64).ravel()
    b_ = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a_, b_)[0, 1])


def test_the_six_full_chains_are_kept(model: Structure, hexamer: Structure) -> None:
    assert sorted(set(hexamer.chain_ids.tolist())) == ["Af", "Ag", "Ah", "Ai", "Ak", "Al"]
    assert len(hexamer) == 9804 < len(model)
    with pytest.raises(ValueError, match="six full chains"):
        select_central_hexamer(hexamer.select(hexamer.chain_ids != "Af"))


def test_frame_is_c6_with_z_towards_the_ntd(hexamer: Structure) -> None:
    frame = hexamer_frame(hexamer)
    assert frame.c6_angle_deg == pytest.approx(60.0, abs=0.5)
    assert frame.c6_rmsd_angstrom < 1.0  # chain k turned by 60° about +z lands on chain k+1 (0.23 Å)
    np.testing.assert_allclose(frame.rotation @ frame.rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(frame.rotation) == pytest.approx(1.0)
    local = frame.to_frame(hexamer.positions_xyz_angstrom)
    ca = hexamer.atom_names == "CA"
    ntd_z = local[ca & (hexamer.residue_numbers <= 145), 2].mean()
    ctd_z = local[ca & (hexamer.residue_numbers > 145), 2].mean()
    assert ntd_z > 10 > -10 > ctd_z  # NTD up (outward in the virus), CTD down
    assert local[:, 2].max() == pytest.approx(-local[:, 2].min())  # z centred on the extent
    np.testing.assert_allclose(local[ca].mean(0)[:2], 0.0, atol=0.2)  # the CA centroid is on the axis
    assert 90.0 < frame.outer_diameter_angstrom < 110.0  # measured: 102.6 Å
    assert 80.0 < frame.height_angstrom < 100.0  # measured: 91.1 Å
    first = local[ca & (hexamer.chain_ids == frame.chains[0])].mean(0)
    # the first chain sits on +x (exactly: the CA centroid of its residues shared by all six chains)
    assert abs(first[1]) < 1.0 < first[0]


def test_frame_does_not_depend_on_the_model_pose(hexamer: Structure) -> None:
    """Turn and shift the model (including a flip of its axis): the standard coordinates stay the same."""
    reference = hexamer_frame(hexamer).to_frame(hexamer.positions_xyz_angstrom)
    gen = np.random.default_rng(7)
    q, _ = np.linalg.qr(gen.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    flip = np.diag([1.0, -1.0, -1.0])  # the axis upside down first
    for rot in (q, q @ flip):
        moved_xyz = hexamer.positions_xyz_angstrom @ rot.T + [5, -40, 300]
        moved = Structure(**{**vars(hexamer), "positions_xyz_angstrom": moved_xyz})
        again = hexamer_frame(moved).to_frame(moved.positions_xyz_angstrom)
        np.testing.assert_allclose(again, reference, atol=1e-6)


def test_map_is_c6_symmetric_about_z_at_8_angstrom() -> None:
    volume, _ = hexamer_reference(voxel_size_angstrom=8.0, box_size_px=32)
    assert volume.shape == (32, 32, 32) and volume.dtype == torch.float32
    c60 = _corr(_rotate_about_z(volume, 60.0), volume)
    c30 = _corr(_rotate_about_z(volume, 30.0), volume)
    c_x = _corr(volume.flip(0), volume)  # turned upside down (180° about x): not symmetric
    assert c60 >= 0.9  # measured ≈ 0.99
    assert c60 > c30 and c60 > c_x + 0.1
    # axis is z: the second moments of the map are those of a symmetric top about z
    n = 32
    idx = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(idx, idx, idx, indexing="ij")
    w = volume.double() / volume.double().sum()
    mx, my, mz = (w * x).sum(), (w * y).sum(), (w * z).sum()
    assert abs(float(mx)) < 0.1 and abs(float(my)) < 0.1  # centred on the axis at N//2
    d = torch.stack([x - mx, y - my, z - mz])  # (3, n, n, n)
    cov = torch.einsum("aijk,bijk,ijk->ab", d, d, w)
    assert abs(float(cov[0, 2])) < 0.05 * float(cov[2, 2]) and abs(float(cov[1, 2])) < 0.05 * float(cov[2, 2])
    assert float(cov[0, 0]) == pytest.approx(float(cov[1, 1]), rel=0.05)


def test_map_matches_an_independent_rendering_of_the_model(hexamer: Structure) -> None:
    """Against atoms binned into 4 Å voxels with weights f(0): the same after a 1-voxel Gaussian low-pass."""
    voxel, n = 4.0, 48
    volume, frame = hexamer_reference(voxel_size_angstrom=voxel, box_size_px=n)
    local = frame.to_frame(hexamer.positions_xyz_angstrom)
    hydrogens = implicit_hydrogen_counts(hexamer.residue_names, hexamer.atom_names)
    f0_h = sum(PENG_1996["H"][0])
    f0 = np.array([sum(PENG_1996[e][0]) for e in hexamer.elements.tolist()]) + hydrogens * f0_h
    index_xyz = np.rint(local / voxel).astype(int) + n // 2
    binned = np.zeros((n, n, n))
    np.add.at(binned, (index_xyz[:, 2], index_xyz[:, 1], index_xyz[:, 0]), f0)
    total = POTENTIAL_CONSTANT_VOLT_ANGSTROM2 * f0.sum()
    # nothing is lost at the box edge
    assert float(volume.double().sum()) * voxel**3 == pytest.approx(total, rel=1e-3)
    smooth_map, smooth_ref = gaussian_filter(volume.numpy(), 1.0), gaussian_filter(binned, 1.0)
    assert _corr(smooth_map, smooth_ref) > 0.97
    assert _corr(smooth_map, np.roll(smooth_ref, 2, axis=2)) < 0.9  # a 8 Å shift is noticed


def test_protein_mean_inner_potential(hexamer: Structure) -> None:
    """Potential integral / protein volume (0.73 cm³/g): 8.1 V with hydrogens folded in, 6.7 V without."""
    protein_volume = len(hexamer) * PROTEIN_VOLUME_PER_HEAVY_ATOM_ANGSTROM3
    with_h, _ = hexamer_reference(voxel_size_angstrom=6.0, box_size_px=32)
    without_h, _ = hexamer_reference(voxel_size_angstrom=6.0, box_size_px=32, implicit_hydrogens=False)
    mip = float(with_h.double().sum()) * 6.0**3 / protein_volume
    mip_no_h = float(without_h.double().sum()) * 6.0**3 / protein_volume
    assert 7.0 < mip < 9.5
    assert mip / mip_no_h == pytest.approx(1.22, abs=0.03)  # hydrogens hold ~18 % of the scattering


def test_given_structure_and_model_b_factors(hexamer: Structure) -> None:
    default, _ = hexamer_reference(voxel_size_angstrom=8.0, box_size_px=24)
    given, _ = hexamer_reference(voxel_size_angstrom=8.0, box_size_px=24, structure=hexamer)
    torch.testing.assert_close(default, given)
    own_b, _ = hexamer_reference(voxel_size_angstrom=8.0, box_size_px=24, b_factor_angstrom2=None)
    assert _corr(own_b, default) > 0.95 and not torch.allclose(own_b, default)
