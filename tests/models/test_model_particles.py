"""ParticleSet array conversions and per-tomogram helpers."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tomoforge.models import Particle, ParticleSet


def _random_rotations(n: int, seed: int = 0) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1.0
    return q


def test_arrays_round_trip() -> None:
    n = 25
    pos = np.random.default_rng(3).normal(scale=800.0, size=(n, 3))
    rot = _random_rotations(n)
    ids = ["TS_01"] * 10 + ["TS_03"] * 12 + ["TS_02"] * 3
    halves = [1 + i % 2 for i in range(n)]
    ps = ParticleSet.from_arrays(
        ids, pos, rot, half_sets=halves, pixel_size_angstrom=4.0, box_size_px=48, symmetry="C2"
    )
    np.testing.assert_array_equal(ps.positions_angstrom(), pos)
    np.testing.assert_array_equal(ps.rotation_matrices(), rot)
    assert ps.ts_ids() == ids
    assert [p.half_set for p in ps.particles] == halves
    assert ps.count_per_tomogram() == {"TS_01": 10, "TS_02": 3, "TS_03": 12}
    assert list(ps.count_per_tomogram()) == ["TS_01", "TS_02", "TS_03"]
    assert len(ps.for_tomogram("TS_02")) == 3
    restored = ParticleSet.model_validate_json(ps.model_dump_json())
    np.testing.assert_array_equal(restored.rotation_matrices(), rot)


def test_empty_set_arrays_have_the_right_shape() -> None:
    ps = ParticleSet()
    assert ps.positions_angstrom().shape == (0, 3)
    assert ps.rotation_matrices().shape == (0, 3, 3)
    assert ps.count_per_tomogram() == {}


def test_from_arrays_defaults_and_errors() -> None:
    ps = ParticleSet.from_arrays("TS_05", np.zeros((2, 3)))
    np.testing.assert_array_equal(ps.rotation_matrices(), np.broadcast_to(np.eye(3), (2, 3, 3)))
    assert ps.ts_ids() == ["TS_05", "TS_05"]
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ParticleSet.from_arrays("TS_05", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="ts_ids has 1 entries for 2 particles"):
        ParticleSet.from_arrays(["TS_05"], np.zeros((2, 3)))
    bad = np.broadcast_to(np.eye(3), (2, 3, 3)).copy()
    bad[1, 2, 2] = -1.0
    with pytest.raises(ValidationError, match="determinant"):
        ParticleSet.from_arrays("TS_05", np.zeros((2, 3)), bad)


def test_rotation_maps_reference_into_tomogram() -> None:
    rot = ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))  # +90° about z
    p = Particle(ts_id="TS_01", position_angstrom=(100.0, 0.0, 0.0), rotation_matrix=rot)
    # The reference x axis lands on the tomogram y axis: p_tomo = position + R @ p_ref.
    ref_point = np.array([10.0, 0.0, 0.0])
    np.testing.assert_allclose(np.array(p.position_angstrom) + p.rotation() @ ref_point, [100.0, 10.0, 0.0])


def test_assignment_is_validated() -> None:
    ps = ParticleSet()
    with pytest.raises(ValidationError, match="box_size_px"):
        ps.box_size_px = 0
    ps.symmetry = "o"
    assert ps.symmetry == "O"
