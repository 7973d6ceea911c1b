"""Euler conventions at the I/O boundary against the numeric relations of tutorial-steps.md §18 and SciPy."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from tomoforge.geometry import (
    dynamo_euler_to_matrix,
    dynamo_from_scipion_matrix,
    matrix_to_dynamo_euler,
    matrix_to_relion_euler,
    relion_euler_to_matrix,
    relion_from_scipion_matrix,
    scipion_matrix_from_dynamo,
    scipion_matrix_from_relion,
)

RNG = np.random.default_rng(20261126)
# Random angles plus the gimbal-lock and quadrant edge cases.
RANDOM = np.column_stack([RNG.uniform(-180, 180, 200), RNG.uniform(0, 180, 200), RNG.uniform(-180, 180, 200)])
EDGES = np.array(
    [[0, 0, 0], [30, 0, 40], [30, 180, 40], [-170, 90, 170], [90, 90, -90], [180, 45, 180]], float
)
ANGLES = np.vstack([RANDOM, EDGES])


def _wrap(a):
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def test_relion_matrix_is_transpose_of_scipy_intrinsic_zyz():
    ours = relion_euler_to_matrix(torch.tensor(ANGLES)).numpy()
    scipy_m = Rotation.from_euler("ZYZ", ANGLES, degrees=True).as_matrix()
    np.testing.assert_allclose(ours, np.transpose(scipy_m, (0, 2, 1)), atol=1e-12)


def test_relion_matrix_equals_relion_euler_angles2matrix_entries():
    # RELION's Euler_angles2matrix written out entry by entry for one case.
    rot, tilt, psi = np.deg2rad([10.0, 20.0, 30.0])
    ca, sa, cb, sb, cg, sg = np.cos(rot), np.sin(rot), np.cos(tilt), np.sin(tilt), np.cos(psi), np.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    expected = np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )
    np.testing.assert_allclose(relion_euler_to_matrix([10.0, 20.0, 30.0]).numpy(), expected, atol=1e-14)


def test_relion_round_trip_matrix_angles_matrix():
    m = relion_euler_to_matrix(torch.tensor(ANGLES))
    back = relion_euler_to_matrix(matrix_to_relion_euler(m))
    np.testing.assert_allclose(back.numpy(), m.numpy(), atol=1e-9)


def test_relion_angles_recovered_away_from_gimbal_lock():
    m = relion_euler_to_matrix(torch.tensor(RANDOM))
    angles = matrix_to_relion_euler(m).numpy()
    np.testing.assert_allclose(_wrap(angles - RANDOM), 0.0, atol=1e-8)


def test_dynamo_matrix_is_transpose_of_scipy_extrinsic_zxz():
    ours = dynamo_euler_to_matrix(torch.tensor(ANGLES)).numpy()
    r_dyn = Rotation.from_euler("zxz", ANGLES, degrees=True).as_matrix()  # Rz(narot)·Rx(tilt)·Rz(tdrot)
    np.testing.assert_allclose(ours, np.transpose(r_dyn, (0, 2, 1)), atol=1e-12)


def test_dynamo_round_trip():
    m = dynamo_euler_to_matrix(torch.tensor(ANGLES))
    np.testing.assert_allclose(
        dynamo_euler_to_matrix(matrix_to_dynamo_euler(m)).numpy(), m.numpy(), atol=1e-9
    )
    np.testing.assert_allclose(
        _wrap(matrix_to_dynamo_euler(dynamo_euler_to_matrix(RANDOM)).numpy() - RANDOM), 0, atol=1e-8
    )


def test_relion_from_dynamo_numeric_relation():
    # tutorial-steps.md §18: RELION (rot, tilt, psi) = (narot − 90°, tilt, tdrot + 90°) from Dynamo (tdrot, tilt, narot).
    tdrot, tilt, narot = RANDOM.T
    relion = np.column_stack([narot - 90.0, tilt, tdrot + 90.0])
    np.testing.assert_allclose(
        relion_euler_to_matrix(relion).numpy(), dynamo_euler_to_matrix(RANDOM).numpy(), atol=1e-12
    )
    converted = matrix_to_relion_euler(dynamo_euler_to_matrix(RANDOM)).numpy()
    np.testing.assert_allclose(_wrap(converted - relion), 0.0, atol=1e-8)


def test_reference_z_axis_is_dynamo_normal_and_subtomogram_tilt_is_its_angle_to_z():
    # A_relion·ẑ is the Dynamo particle normal R_dynᵀ·ẑ, and RELION's tilt is the angle between it and tomogram Z.
    m = relion_euler_to_matrix(torch.tensor(RANDOM))
    normals = m[..., :, 2].numpy()
    dyn = np.column_stack([RANDOM[:, 2] - 90.0, RANDOM[:, 1], RANDOM[:, 0] + 90.0])  # (tdrot, tilt, narot)
    r_dyn = Rotation.from_euler("zxz", dyn, degrees=True).as_matrix()
    np.testing.assert_allclose(normals, np.transpose(r_dyn, (0, 2, 1))[:, :, 2], atol=1e-12)
    np.testing.assert_allclose(np.degrees(np.arccos(np.clip(normals[:, 2], -1, 1))), RANDOM[:, 1], atol=1e-6)


def test_scipion_rotation_part_is_transpose_and_relion_round_trip():
    origins = RNG.normal(0, 3, size=(len(RANDOM), 3))
    m = scipion_matrix_from_relion(torch.tensor(RANDOM), torch.tensor(origins))
    a = relion_euler_to_matrix(torch.tensor(RANDOM))
    np.testing.assert_allclose(m[..., :3, :3].numpy(), a.transpose(-1, -2).numpy(), atol=1e-12)
    at = np.transpose(a.numpy(), (0, 2, 1))
    expected_t = -np.einsum("nij,njk,nk->ni", at, at, origins)  # −(Aᵀ)²·o as Scipion's converter stores it
    np.testing.assert_allclose(m[..., :3, 3].numpy(), expected_t, atol=1e-12)
    np.testing.assert_allclose(m[..., 3, :].numpy(), np.tile([0, 0, 0, 1.0], (len(RANDOM), 1)))
    angles, o = relion_from_scipion_matrix(m)
    np.testing.assert_allclose(_wrap(angles.numpy() - RANDOM), 0.0, atol=1e-8)
    np.testing.assert_allclose(o.numpy(), origins, atol=1e-10)


def test_scipion_from_dynamo_is_stored_as_is_and_round_trips():
    shifts = RNG.normal(0, 3, size=(len(RANDOM), 3))
    m = scipion_matrix_from_dynamo(torch.tensor(RANDOM), torch.tensor(shifts)).numpy()
    r_dyn = Rotation.from_euler("zxz", RANDOM, degrees=True).as_matrix()
    np.testing.assert_allclose(m[:, :3, :3], r_dyn, atol=1e-12)
    np.testing.assert_allclose(m[:, :3, 3], -np.einsum("nij,nj->ni", r_dyn, shifts), atol=1e-12)
    angles, s = dynamo_from_scipion_matrix(torch.tensor(m))
    np.testing.assert_allclose(_wrap(angles.numpy() - RANDOM), 0.0, atol=1e-8)
    np.testing.assert_allclose(s.numpy(), shifts, atol=1e-10)


def test_scipion_rotation_of_dynamo_and_relion_agree_for_the_same_orientation():
    dyn = RANDOM
    rel = np.column_stack([dyn[:, 2] - 90.0, dyn[:, 1], dyn[:, 0] + 90.0])
    zero = torch.zeros(len(dyn), 3, dtype=torch.float64)
    m_dyn = scipion_matrix_from_dynamo(torch.tensor(dyn), zero)
    m_rel = scipion_matrix_from_relion(torch.tensor(rel), zero)
    np.testing.assert_allclose(m_dyn.numpy(), m_rel.numpy(), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euler_kernels_keep_dtype_and_device(dtype):
    a = torch.tensor(RANDOM[:5], dtype=dtype)
    m = relion_euler_to_matrix(a)
    assert m.dtype == dtype and m.device == a.device and m.shape == (5, 3, 3)
    assert matrix_to_relion_euler(m).dtype == dtype
