"""TiltTransform against hand-computed homogeneous matrices."""

from __future__ import annotations

import numpy as np
import pytest

from tomoforge.models import TiltTransform

ROT90 = TiltTransform(a11=0.0, a12=-1.0, a21=1.0, a22=0.0)
SHIFT = TiltTransform(dx_angstrom=10.0, dy_angstrom=-4.0)
GENERAL = TiltTransform(a11=1.02, a12=-0.13, a21=0.09, a22=0.97, dx_angstrom=23.5, dy_angstrom=-11.25)


def test_as_matrix_layout() -> None:
    m = GENERAL.as_matrix(pixel_size_angstrom=2.5)
    expected = np.array([[1.02, -0.13, 9.4], [0.09, 0.97, -4.5], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(m, expected, rtol=0, atol=1e-12)
    assert m.dtype == np.float64


def test_rotation_then_shift_matches_hand_computed_matrix() -> None:
    total = ROT90.compose(SHIFT)  # rotate by 90° first, then shift
    # Hand-computed: [[1,0,10],[0,1,-4],[0,0,1]] @ [[0,-1,0],[1,0,0],[0,0,1]] in Å (pixel size 1).
    expected = np.array([[0.0, -1.0, 10.0], [1.0, 0.0, -4.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(total.as_matrix(1.0), expected, atol=1e-12)
    # The point (1, 0) px from the centre goes to (0, 1) by the rotation, then to (10, -3).
    np.testing.assert_allclose(total.apply(np.array([1.0, 0.0]), 1.0), [10.0, -3.0], atol=1e-12)
    # Order matters: shifting first and rotating afterwards rotates the shift too.
    other = SHIFT.compose(ROT90)
    np.testing.assert_allclose(
        other.as_matrix(1.0), np.array([[0.0, -1.0, 4.0], [1.0, 0.0, 10.0], [0.0, 0.0, 1.0]]), atol=1e-12
    )


@pytest.mark.parametrize("pixel_size", [1.0, 1.35, 10.8])
def test_compose_is_later_times_earlier(pixel_size: float) -> None:
    earlier, later = GENERAL, ROT90.compose(SHIFT)
    expected = later.as_matrix(pixel_size) @ earlier.as_matrix(pixel_size)
    np.testing.assert_allclose(earlier.compose(later).as_matrix(pixel_size), expected, atol=1e-12)


def test_inverse_composed_with_itself_is_identity() -> None:
    for t in (ROT90, SHIFT, GENERAL, ROT90.compose(SHIFT)):
        inv = t.inverse()
        for product in (t.compose(inv), inv.compose(t)):
            np.testing.assert_allclose(product.as_matrix(1.7), np.eye(3), atol=1e-12)
        np.testing.assert_allclose(inv.as_matrix(1.7), np.linalg.inv(t.as_matrix(1.7)), atol=1e-12)


def test_binning_independence() -> None:
    unbinned = GENERAL.as_matrix(1.35)
    binned = GENERAL.as_matrix(2.7)
    np.testing.assert_allclose(binned[:2, 2], unbinned[:2, 2] / 2.0, rtol=1e-15)
    np.testing.assert_array_equal(binned[:2, :2], unbinned[:2, :2])
    # A point measured at 2x binning maps to half the coordinates it has unbinned.
    point_unbinned = np.array([40.0, -18.0])
    np.testing.assert_allclose(
        GENERAL.apply(point_unbinned / 2.0, 2.7), GENERAL.apply(point_unbinned, 1.35) / 2.0, rtol=1e-14
    )


def test_from_matrix_round_trip() -> None:
    m = GENERAL.as_matrix(3.0)
    back = TiltTransform.from_matrix(m, 3.0)
    np.testing.assert_allclose(back.as_matrix(3.0), m, atol=1e-12)
    assert back.dx_angstrom == pytest.approx(GENERAL.dx_angstrom)
    with pytest.raises(ValueError, match="last row"):
        TiltTransform.from_matrix(np.array([[1, 0, 0], [0, 1, 0], [0.1, 0, 1]]), 1.0)
    with pytest.raises(ValueError, match="3x3"):
        TiltTransform.from_matrix(np.eye(2), 1.0)
    with pytest.raises(ValueError, match="pixel_size_angstrom"):
        GENERAL.as_matrix(0.0)


def test_rotation_angle_definition() -> None:
    assert ROT90.rotation_deg == pytest.approx(90.0)
    assert TiltTransform.from_rotation(-30.0, scale=1.1).rotation_deg == pytest.approx(-30.0)
    assert TiltTransform.from_rotation(135.0).rotation_deg == pytest.approx(135.0)
    assert TiltTransform.identity().rotation_deg == 0.0
    # Counter-clockwise with x right, y up: the x axis is carried onto the y axis by +90°.
    np.testing.assert_allclose(ROT90.apply(np.array([[1.0, 0.0]]), 1.0), [[0.0, 1.0]], atol=1e-12)


def test_identity_and_apply_shapes() -> None:
    ident = TiltTransform.identity()
    assert ident.is_identity and not GENERAL.is_identity
    pts = np.arange(24, dtype=float).reshape(3, 4, 2)
    np.testing.assert_array_equal(ident.apply(pts, 2.0), pts)
    moved = GENERAL.apply(pts, 2.0)
    m = GENERAL.as_matrix(2.0)
    np.testing.assert_allclose(moved[1, 2], m[:2, :2] @ pts[1, 2] + m[:2, 2])
    with pytest.raises(ValueError, match="length 2"):
        ident.apply(np.zeros((4, 3)), 1.0)


def test_tilt_axis_angle_of_an_alignment_transform():
    # An alignment that brings an 85.3° tilt axis onto Y rotates by −85.3°.
    t = TiltTransform.from_rotation(-85.3, dx_angstrom=3.0)
    assert abs(t.tilt_axis_angle_deg - 85.3) < 1e-9
    assert abs(t.rotation_deg + 85.3) < 1e-9
