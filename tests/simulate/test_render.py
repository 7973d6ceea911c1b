"""Rendering the specimen into a potential volume: exact positions and orientations, conservation, profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoforge.geometry import rotation_z
from tomoforge.simulate.render import (
    GOLD_MEAN_INNER_POTENTIAL_VOLT,
    bilayer_profile,
    render_gold,
    render_ice,
    render_membranes,
    render_particles,
    render_specimen,
    volume_shape_zyx,
)
from tomoforge.simulate.specimen import GoldBeads, Virus, build_specimen, random_rotation

BOX = 32
MARK = 9.0  # marker distance from the centre, map voxels


def _blob(centre_xyz, sigma, size=BOX):
    c = torch.arange(size, dtype=torch.float64) - size // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.exp(
        -((x - centre_xyz[0]) ** 2 + (y - centre_xyz[1]) ** 2 + (z - centre_xyz[2]) ** 2) / (2 * sigma**2)
    )


def _test_map() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A C6 ring of blobs about z, plus a marker on +z and one on +x; returns (map, +z marker, +x marker)."""
    ring = sum(
        _blob((6.0 * math.cos(k * math.pi / 3), 6.0 * math.sin(k * math.pi / 3), 0.0), 1.5) for k in range(6)
    )
    mz = 2.0 * _blob((0.0, 0.0, MARK), 1.2)
    mx = 2.0 * _blob((MARK + 3.0, 0.0, -4.0), 1.2)
    return (ring + mz + mx).float(), mz.float(), mx.float()


def _centroid_xyz(volume: torch.Tensor) -> np.ndarray:
    idx = [torch.arange(n, dtype=torch.float64) for n in volume.shape]
    z, y, x = torch.meshgrid(*idx, indexing="ij")
    w = volume.to(torch.float64)
    return np.array([float((w * a).sum() / w.sum()) for a in (x, y, z)])


def _expected_index_xyz(shape_zyx, position_xyz_angstrom, voxel):
    return np.asarray(position_xyz_angstrom) / voxel + np.array(
        [shape_zyx[2] // 2, shape_zyx[1] // 2, shape_zyx[0] // 2]
    )


# ------------------------------------------------------------------------------------------------------------
# Particles
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 48, 56), (41, 47, 53)])
def test_particle_lands_at_position_over_voxel_plus_centre(shape):
    blob = _blob((0.0, 0.0, 0.0), 1.5).float()
    for pos in ([0.0, 0.0, 0.0], [12.5, -7.25, 3.3], [-30.0, 21.0, -14.6]):
        vol = torch.zeros(shape)
        render_particles(vol, blob, np.array([pos]), np.eye(3)[None], voxel_size_angstrom=2.5)
        assert np.allclose(_centroid_xyz(vol), _expected_index_xyz(shape, pos, 2.5), atol=2e-3)
    # x is the last axis: a particle at +x only moves along the last array axis.
    vol = torch.zeros(shape)
    render_particles(vol, blob, np.array([[10.0, 0.0, 0.0]]), np.eye(3)[None], voxel_size_angstrom=1.0)
    peak = np.unravel_index(int(vol.argmax()), shape)
    assert peak == (shape[0] // 2, shape[1] // 2, shape[2] // 2 + 10)


def test_markers_follow_the_rotation():
    full, mz, mx = _test_map()
    shape = (64, 72, 80)
    rng = np.random.default_rng(0)
    rotations = [rotation_z(90.0).numpy(), *random_rotation(rng, 4)]
    for rot in rotations:
        pos = rng.uniform(-20, 20, 3)
        centre = _expected_index_xyz(shape, pos, 2.0)
        for marker, vec in ((mz, [0.0, 0.0, MARK]), (mx, [MARK + 3.0, 0.0, -4.0])):
            vol = torch.zeros(shape)
            render_particles(
                vol, marker, pos[None], rot[None], voxel_size_angstrom=2.0, map_voxel_size_angstrom=2.0
            )
            assert np.allclose(_centroid_xyz(vol), centre + rot @ np.asarray(vec), atol=0.02)
        # The full map: its +z marker is where R·ẑ points (the brightest spot near there).
        vol = torch.zeros(shape)
        render_particles(vol, full, pos[None], rot[None], voxel_size_angstrom=2.0)
        tip = np.round(centre + rot @ np.array([0.0, 0.0, MARK])).astype(int)
        assert float(vol[tip[2], tip[1], tip[0]]) > 1.2
    # Rz(90°) takes the +x marker to +y: a larger row index, same column.
    vol = torch.zeros(shape)
    render_particles(vol, mx, np.zeros((1, 3)), rotation_z(90.0).numpy()[None], voxel_size_angstrom=1.0)
    peak = np.unravel_index(int(vol.argmax()), shape)
    assert peak == (shape[0] // 2 - 4, shape[1] // 2 + 12, shape[2] // 2)


def test_voxel_size_scaling_of_positions_and_orientations():
    _, mz, _ = _test_map()
    shape = (40, 40, 40)
    rot = random_rotation(np.random.default_rng(7))
    vol = torch.zeros(shape)
    render_particles(
        vol, mz, np.array([[8.0, -4.0, 2.0]]), rot[None], voxel_size_angstrom=4.0, map_voxel_size_angstrom=2.0
    )
    expected = _expected_index_xyz(shape, [8.0, -4.0, 2.0], 4.0) + rot @ np.array([0.0, 0.0, MARK]) * 0.5
    assert np.allclose(_centroid_xyz(vol), expected, atol=0.05)


def test_mass_is_conserved():
    full, _, _ = _test_map()
    shape = (60, 64, 68)
    # Pure (sub-voxel) translation: exact.
    vol = torch.zeros(shape, dtype=torch.float64)
    render_particles(vol, full, np.array([[3.3, -1.7, 0.45]]), np.eye(3)[None], voxel_size_angstrom=1.0)
    assert float(vol.sum()) == pytest.approx(float(full.sum()), rel=1e-6)
    # Rotations: trilinear resampling keeps the sum of a smooth map to a fraction of a percent.
    rots = random_rotation(np.random.default_rng(3), 5)
    vol = torch.zeros(shape, dtype=torch.float64)
    render_particles(vol, full, np.zeros((5, 3)), rots, voxel_size_angstrom=1.0)
    assert float(vol.sum()) == pytest.approx(5 * float(full.sum()), rel=5e-3)
    # Coarser volume: the sum scales with (map voxel / volume voxel)³.
    smooth = _blob((0.0, 0.0, 0.0), 4.0).float()
    vol = torch.zeros(shape, dtype=torch.float64)
    render_particles(
        vol,
        smooth,
        np.array([[1.0, 2.0, -3.0]]),
        rots[:1],
        voxel_size_angstrom=2.0,
        map_voxel_size_angstrom=1.0,
    )
    assert float(vol.sum()) == pytest.approx(float(smooth.sum()) / 8.0, rel=5e-3)


def test_many_particles_add_up_and_are_clipped_at_the_edges():
    full, _, _ = _test_map()
    rng = np.random.default_rng(1)
    pos = rng.uniform(-30, 30, (40, 3))
    rots = random_rotation(rng, 40)
    big = torch.zeros((96, 96, 96))
    render_particles(big, full, pos, rots, voxel_size_angstrom=1.0)
    one_by_one = torch.zeros((96, 96, 96))
    for p, r in zip(pos, rots, strict=True):
        render_particles(one_by_one, full, p[None], r[None], voxel_size_angstrom=1.0)
    assert torch.allclose(big, one_by_one, atol=1e-5)
    # A smaller volume sees exactly the corresponding part of the big one (particles cut by its edges).
    small = torch.zeros((50, 40, 30))
    origin = np.array([10, 30, 20])  # (x, y, z) index in the big volume of the small volume's voxel 0
    shift = 48 - origin - np.array([30 // 2, 40 // 2, 50 // 2])  # small index = big index − origin
    render_particles(small, full, pos + shift, rots, voxel_size_angstrom=1.0)
    x0, y0, z0 = origin
    assert torch.allclose(small, big[z0 : z0 + 50, y0 : y0 + 40, x0 : x0 + 30], atol=1e-5)
    assert float(small.sum()) < 0.9 * float(big.sum())  # particles really were cut


# ------------------------------------------------------------------------------------------------------------
# Membranes, gold, ice
# ------------------------------------------------------------------------------------------------------------


def test_bilayer_profile_shape_and_integral():
    d = torch.linspace(-80, 80, 16001, dtype=torch.float64)
    prof = bilayer_profile(d, thickness_angstrom=40.0, headgroup_potential_v=1.6, core_potential_v=-0.4)
    peaks = d[torch.nonzero((prof[1:-1] > prof[:-2]) & (prof[1:-1] > prof[2:])).reshape(-1) + 1]
    assert torch.allclose(peaks, torch.tensor([-20.0, 20.0], dtype=torch.float64), atol=0.1)
    assert float(prof[8000]) < 0  # the hydrocarbon core is less dense than ice
    integral = float(torch.trapezoid(prof, d))
    expected = 2 * 1.6 * 4.0 * math.sqrt(2 * math.pi) - 0.4 * 2 * (20.0 - 8.0)
    assert integral == pytest.approx(expected, rel=1e-4)
    blurred = bilayer_profile(
        d, thickness_angstrom=40.0, headgroup_potential_v=1.6, core_potential_v=-0.4, blur_sigma_angstrom=3.0
    )
    assert float(torch.trapezoid(blurred, d)) == pytest.approx(expected, rel=1e-4)


def test_membrane_follows_the_ellipsoid():
    rot = random_rotation(np.random.default_rng(2))
    virus = Virus.create(0, (6.0, -4.0, 2.0), (70.0, 60.0, 52.0), rot, 20.0)
    shape, vs = (96, 100, 104), 2.0
    vol = torch.zeros(shape, dtype=torch.float64)
    render_membranes(vol, [virus], voxel_size_angstrom=vs, headgroup_sigma_angstrom=2.0)
    # Each voxel holds the profile of its exact distance to the mid-plane.
    idx = torch.nonzero(vol.abs() > 1e-3)
    pts = (idx.flip(-1).numpy() - np.array([shape[2] // 2, shape[1] // 2, shape[0] // 2])) * vs
    dist = torch.from_numpy(virus.signed_distance_angstrom(pts))
    expected = bilayer_profile(
        dist, thickness_angstrom=20.0, headgroup_sigma_angstrom=2.0, blur_sigma_angstrom=vs / math.sqrt(12)
    )
    assert torch.allclose(vol[tuple(idx.T)], expected, atol=1e-9)
    assert float(dist.abs().max()) < 10 + 4 * 2.2 + 2 * vs  # nothing far from the membrane
    # Along each principal axis the headgroup peaks sit at radius ± thickness/2.
    centre = _expected_index_xyz(shape, virus.centre, vs)
    for k in range(3):
        axis = rot[:, k]
        t = np.linspace(virus.radii[k] - 20, virus.radii[k] + 20, 801)
        samples = centre[None] + (t[:, None] * axis[None]) / vs
        vals = torch.nn.functional.grid_sample(
            vol[None, None],
            torch.from_numpy(samples / (np.array(shape[::-1]) - 1) * 2 - 1).reshape(1, 1, 1, -1, 3),
            align_corners=True,
        ).reshape(-1)
        inner, outer = t[t < virus.radii[k]], t[t > virus.radii[k]]
        assert abs(inner[int(vals[t < virus.radii[k]].argmax())] - (virus.radii[k] - 10)) < 1.0
        assert abs(outer[int(vals[t > virus.radii[k]].argmax())] - (virus.radii[k] + 10)) < 1.0


def test_gold_volume_and_position():
    beads = GoldBeads(np.array([[40.3, -22.1, 8.4], [-90.0, 40.0, -20.0]]), 100.0, np.array([1, -1]))
    shape, vs = (60, 64, 80), 4.0
    vol = torch.zeros(shape, dtype=torch.float64)
    render_gold(vol, beads, voxel_size_angstrom=vs, potential_v=30.0, displaced_potential_v=5.0)
    assert float(vol.max()) == pytest.approx(25.0)
    assert float(vol.min()) >= 0.0
    occupied = float(vol.sum()) / 25.0 * vs**3
    assert occupied == pytest.approx(2 * 4 / 3 * math.pi * 50.0**3, rel=0.01)
    half = vol.clone()
    half[:, :, :34] = 0  # keep the first bead only (x index 50 ± 12.5; the second ends at 30)
    assert np.allclose(
        _centroid_xyz(half), _expected_index_xyz(shape, beads.positions_xyz_angstrom[0], vs), atol=0.02
    )
    assert GOLD_MEAN_INNER_POTENTIAL_VOLT == pytest.approx(29.9, abs=0.1)


def test_ice_slab_thickness_roughness_and_fluctuations():
    shape, vs = (80, 64, 64), 10.0
    flat = torch.zeros(shape, dtype=torch.float64)
    render_ice(
        flat,
        ice_thickness_angstrom=400.0,
        voxel_size_angstrom=vs,
        potential_v=4.0,
        roughness_angstrom=0.0,
        fluctuation=0.0,
    )
    column = flat.sum(0) * vs / 4.0
    assert torch.allclose(column, torch.full_like(column, 400.0), atol=1e-6)
    assert float(flat[shape[0] // 2].mean()) == pytest.approx(4.0)
    assert float(flat[shape[0] // 2 + 25].abs().max()) < 1e-6  # 250 Å above the centre: vacuum
    gen = torch.Generator().manual_seed(3)
    rough = torch.zeros(shape, dtype=torch.float64)
    render_ice(
        rough,
        ice_thickness_angstrom=400.0,
        voxel_size_angstrom=vs,
        potential_v=4.0,
        generator=gen,
        roughness_angstrom=30.0,
        roughness_length_angstrom=200.0,
        fluctuation=0.05,
        fluctuation_length_angstrom=60.0,
    )
    column = rough.sum(0) * vs / 4.0
    assert 5.0 < float(column.std()) < 120.0  # the thickness varies...
    assert float(column.mean()) == pytest.approx(400.0, abs=30.0)  # ...about its mean
    core = rough[shape[0] // 2 - 5 : shape[0] // 2 + 5] / 4.0 - 1.0  # inside the slab: the fluctuations only
    assert 0.025 < float(core.std()) < 0.08
    again = torch.zeros(shape, dtype=torch.float64)
    render_ice(
        again,
        ice_thickness_angstrom=400.0,
        voxel_size_angstrom=vs,
        potential_v=4.0,
        generator=torch.Generator().manual_seed(3),
        roughness_angstrom=30.0,
        roughness_length_angstrom=200.0,
        fluctuation=0.05,
        fluctuation_length_angstrom=60.0,
    )
    assert torch.equal(rough, again)


def test_render_specimen_is_deterministic_and_contains_everything():
    spec = build_specimen(
        5,
        field_xyz_angstrom=(1800.0, 1600.0, 1500.0),
        ice_thickness_angstrom=1300.0,
        n_viruses=1,
        radius_range_angstrom=(500.0, 520.0),
        ellipticity=0.05,
        n_gold=3,
    )
    blob = _blob((0.0, 0.0, 0.0), 1.5).float()
    a = render_specimen(spec, blob, voxel_size_angstrom=20.0, map_voxel_size_angstrom=10.0)
    b = render_specimen(spec, blob, voxel_size_angstrom=20.0, map_voxel_size_angstrom=10.0)
    assert a.shape == volume_shape_zyx(spec.field_xyz_angstrom, 20.0) == (75, 80, 90)
    assert torch.equal(a, b)
    bead = _expected_index_xyz(a.shape, spec.gold.positions_xyz_angstrom[0], 20.0).round().astype(int)
    assert float(a[bead[2], bead[1], bead[0]]) > 10.0  # gold
    assert len(spec.particles) > 50
