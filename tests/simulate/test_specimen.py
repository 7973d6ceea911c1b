"""The procedural specimen: virus placement, the CA-SP1 lattice (spacing, depth, orientations), gold beads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoforge.simulate.specimen import (
    Virus,
    build_specimen,
    ellipsoid_closest_point,
    lattice_on_virus,
    place_gold,
    place_viruses,
    random_rotation,
)

SPACING = 75.0
DEPTH = 110.0


@pytest.fixture(scope="module")
def virus() -> Virus:
    rot = random_rotation(np.random.default_rng(11))
    return Virus.create(7, (120.0, -80.0, 40.0), (640.0, 590.0, 540.0), rot, 40.0)


@pytest.fixture(scope="module")
def lattice(virus):
    return lattice_on_virus(
        np.random.default_rng(5), virus, spacing_angstrom=SPACING, depth_below_membrane_angstrom=DEPTH
    )


def _pairwise(points: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d


# ------------------------------------------------------------------------------------------------------------
# Ellipsoid distance
# ------------------------------------------------------------------------------------------------------------


def test_closest_point_matches_brute_force_and_sphere():
    radii = torch.tensor([500.0, 420.0, 380.0], dtype=torch.float64)
    # Brute force: densely sampled surface.
    u, v = torch.meshgrid(
        torch.linspace(0, math.pi, 721, dtype=torch.float64),
        torch.linspace(0, 2 * math.pi, 1441, dtype=torch.float64),
        indexing="ij",
    )
    surface = (
        torch.stack([torch.sin(u) * torch.cos(v), torch.sin(u) * torch.sin(v), torch.cos(u)], -1).reshape(
            -1, 3
        )
        * radii
    )
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(20, 3, generator=gen, dtype=torch.float64), dim=-1)
    depths = torch.linspace(-120.0, 80.0, 20, dtype=torch.float64)
    on_surface = directions / torch.linalg.vector_norm(directions / radii, dim=-1, keepdim=True)
    normals = torch.nn.functional.normalize(on_surface / radii**2, dim=-1)
    points = on_surface + depths[:, None] * normals  # known signed distance along the normal
    closest, signed = ellipsoid_closest_point(points, radii)
    assert torch.allclose(signed, depths, atol=1e-6)
    assert torch.allclose(closest, on_surface, atol=1e-6)
    brute = torch.cdist(points, surface).min(dim=1).values
    assert torch.allclose(signed.abs(), brute, atol=0.5)  # sampling resolution of the brute force
    # A sphere: distance is |p| − r.
    p = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 300
    _, d = ellipsoid_closest_point(p, [400.0, 400.0, 400.0])
    assert torch.allclose(d, torch.linalg.vector_norm(p, dim=-1) - 400.0, atol=1e-8)


# ------------------------------------------------------------------------------------------------------------
# Viruses
# ------------------------------------------------------------------------------------------------------------


def test_viruses_do_not_overlap_and_stay_in_field_and_ice():
    field = (5000.0, 5000.0, 2000.0)
    viruses, ice = place_viruses(
        np.random.default_rng(3),
        n=4,
        field_xyz_angstrom=field,
        ice_thickness_angstrom=1700.0,
        min_gap_angstrom=80.0,
    )
    assert len(viruses) == 4 and ice == 1700.0
    for k, v in enumerate(viruses):
        r = v.rotation_matrix
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.linalg.det(r) == pytest.approx(1.0)
        assert 500.0 * 0.9 - 1e-9 <= v.radii.min() and v.radii.max() <= 750.0 * 1.1 + 1e-9
        half = v.half_extent_xyz_angstrom(v.membrane_thickness_angstrom / 2)
        assert np.all(np.abs(v.centre[:2]) + half[:2] <= np.asarray(field[:2]) / 2 + 1e-6)
        assert abs(v.centre[2]) + half[2] <= ice / 2 + 1e-6
        # Exact extent: the farthest mid-plane point along z of the rotated ellipsoid.
        grid = np.random.default_rng(k).standard_normal((20000, 3))
        pts = grid / np.linalg.norm(grid / v.radii, axis=1, keepdims=True)
        z_max = np.max(np.abs((pts @ r.T)[:, 2]))
        assert z_max <= v.half_extent_xyz_angstrom()[2] + 1e-6
        for w in viruses[k + 1 :]:
            gap = np.linalg.norm(v.centre - w.centre) - v.outer_radius_angstrom - w.outer_radius_angstrom
            assert gap >= 80.0 - 1e-9


def test_thin_ice_grows_to_fit_the_viruses_and_too_shallow_field_is_refused():
    viruses, ice = place_viruses(
        np.random.default_rng(1),
        n=1,
        field_xyz_angstrom=(3000.0, 3000.0, 3000.0),
        ice_thickness_angstrom=600.0,
    )
    tallest = 2 * viruses[0].half_extent_xyz_angstrom(20.0)[2]
    assert ice == pytest.approx(tallest + 100.0)
    with pytest.raises(ValueError, match="deep"):
        place_viruses(
            np.random.default_rng(1),
            n=1,
            field_xyz_angstrom=(3000.0, 3000.0, 900.0),
            ice_thickness_angstrom=600.0,
        )


# ------------------------------------------------------------------------------------------------------------
# Lattice
# ------------------------------------------------------------------------------------------------------------


def test_lattice_spacing_statistics(lattice):
    d = _pairwise(lattice.positions_xyz_angstrom)
    nearest = d.min(axis=1)
    assert len(lattice) > 300
    assert abs(np.median(nearest) - SPACING) < 0.1 * SPACING
    assert nearest.min() >= 0.8 * SPACING
    # Locally hexagonal: no hexamer has more than 6 neighbours within 1.15 spacings, a large part has all 6.
    counts = (d < 1.15 * SPACING).sum(axis=1)
    assert counts.max() == 6
    assert np.mean(counts == 6) > 0.35


def test_lattice_coverage_and_patches(virus, lattice):
    inner = virus.radii - DEPTH
    p = 1.6075
    a, b, c = inner**p
    area = 4 * math.pi * ((a * b + a * c + b * c) / 3) ** (1 / p)
    coverage = len(lattice) * math.sqrt(3) / 2 * SPACING**2 / area
    assert coverage == pytest.approx(0.6, abs=0.03)
    assert set(np.unique(lattice.patch_ids)) <= set(range(6)) and len(np.unique(lattice.patch_ids)) >= 4
    assert np.all(lattice.virus_ids == virus.id)
    # Gaps: some hexamers lie at a domain boundary or hole (fewer than 6 neighbours).
    counts = (_pairwise(lattice.positions_xyz_angstrom) < 1.15 * SPACING).sum(axis=1)
    assert np.mean(counts < 6) > 0.1


def test_particles_sit_at_the_chosen_depth_inside_the_membrane(virus, lattice):
    d = virus.signed_distance_angstrom(lattice.positions_xyz_angstrom)
    assert np.allclose(d, -DEPTH, atol=1e-6)


def test_rotations_are_proper_with_z_along_the_outward_normal(virus, lattice):
    r = lattice.rotations
    assert np.allclose(np.einsum("nij,nkj->nik", r, r), np.eye(3), atol=1e-10)
    assert np.allclose(np.linalg.det(r), 1.0, atol=1e-10)
    normals = virus.outward_normal(lattice.positions_xyz_angstrom)
    cos = np.einsum("ni,ni->n", r[:, :, 2], normals)
    assert cos.min() > 0.999
    # Outward also in the plain sense: away from the virus centre.
    radial = lattice.positions_xyz_angstrom - virus.centre
    assert np.all(np.einsum("ni,ni->n", r[:, :, 2], radial) > 0)


def test_in_plane_angle_follows_the_lattice_of_each_patch(lattice):
    pos, r, patch = lattice.positions_xyz_angstrom, lattice.rotations, lattice.patch_ids
    d = _pairwise(pos)
    deviations = []
    for i in range(len(pos)):
        for j in np.flatnonzero((d[i] < 1.2 * SPACING) & (patch == patch[i])):
            v = pos[j] - pos[i]
            angle = math.degrees(math.atan2(v @ r[i][:, 1], v @ r[i][:, 0]))
            deviations.append(abs((angle + 30.0) % 60.0 - 30.0))
    deviations_arr = np.asarray(deviations)
    assert len(deviations_arr) > 1000
    # Curvature forbids a perfect lattice: the wrap distorts directions by a few degrees at a domain's rim.
    assert np.median(deviations_arr) < 2.0
    assert np.percentile(deviations_arr, 99) < 5.0 and deviations_arr.max() < 7.0
    # Different patches have different lattice directions (not all aligned modulo 60°).
    assert len(np.unique(patch)) > 1


def test_lattice_angle_offset_turns_x_about_the_normal(virus):
    a = lattice_on_virus(np.random.default_rng(2), virus, n_patches=3, coverage=0.3)
    b = lattice_on_virus(
        np.random.default_rng(2), virus, n_patches=3, coverage=0.3, lattice_angle_offset_deg=25.0
    )
    assert np.allclose(a.positions_xyz_angstrom, b.positions_xyz_angstrom)
    cos = np.einsum("ni,ni->n", a.rotations[:, :, 0], b.rotations[:, :, 0])
    sin = np.einsum("ni,ni->n", np.cross(a.rotations[:, :, 0], b.rotations[:, :, 0]), a.rotations[:, :, 2])
    assert np.allclose(np.degrees(np.arctan2(sin, cos)), 25.0, atol=1e-8)  # counter-clockwise about R·ẑ
    assert np.allclose(a.rotations[:, :, 2], b.rotations[:, :, 2])


# ------------------------------------------------------------------------------------------------------------
# Gold and the whole specimen
# ------------------------------------------------------------------------------------------------------------


def test_gold_sits_against_both_ice_surfaces_without_overlap():
    viruses, ice = place_viruses(
        np.random.default_rng(4),
        n=2,
        field_xyz_angstrom=(4000.0, 4000.0, 2000.0),
        ice_thickness_angstrom=1600.0,
    )
    gold = place_gold(
        np.random.default_rng(4),
        n=30,
        field_xyz_angstrom=(4000.0, 4000.0, 2000.0),
        ice_thickness_angstrom=ice,
        viruses=viruses,
    )
    p = gold.positions_xyz_angstrom
    assert len(gold) == 30 and gold.diameter_angstrom == 100.0
    assert np.allclose(p[:, 2], gold.surfaces * (ice / 2 - 50.0))
    assert set(gold.surfaces.tolist()) == {-1, 1}
    assert _pairwise(p).min() >= 100.0
    assert np.all(np.abs(p[:, :2]) <= 2000.0 - 50.0)
    for v in viruses:
        assert np.all(np.abs(v.signed_distance_angstrom(p)) >= 50.0 + 20.0)
    top = place_gold(
        np.random.default_rng(0),
        n=5,
        field_xyz_angstrom=(2000.0, 2000.0, 1000.0),
        ice_thickness_angstrom=800.0,
        surfaces="top",
    )
    assert np.all(top.positions_xyz_angstrom[:, 2] == 350.0)


def test_build_specimen_is_deterministic_for_a_seed():
    kwargs = dict(
        field_xyz_angstrom=(3000.0, 3000.0, 1600.0),
        ice_thickness_angstrom=1400.0,
        n_viruses=2,
        radius_range_angstrom=(500.0, 560.0),
        n_gold=6,
    )
    a = build_specimen(42, **kwargs)
    b = build_specimen(42, **kwargs)
    c = build_specimen(43, **kwargs)
    assert a.viruses == b.viruses
    assert np.array_equal(a.particles.positions_xyz_angstrom, b.particles.positions_xyz_angstrom)
    assert np.array_equal(a.particles.rotations, b.particles.rotations)
    assert np.array_equal(a.gold.positions_xyz_angstrom, b.gold.positions_xyz_angstrom)
    assert a.viruses != c.viruses
    assert set(np.unique(a.particles.virus_ids)) == {0, 1}
    # Changing only the gold leaves viruses and lattices alone (independent random streams).
    d = build_specimen(42, **{**kwargs, "n_gold": 3})
    assert d.viruses == a.viruses
    assert np.array_equal(d.particles.positions_xyz_angstrom, a.particles.positions_xyz_angstrom)
