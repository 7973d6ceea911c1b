"""The projection model against hand-computed cases (CONVENTIONS.md §7, §8)."""

import math

import numpy as np
import pytest
import torch

from tomoforge.geometry import (
    point_defocus_angstrom,
    project_points,
    projection_matrices,
    projection_matrices_from_xf,
    rotation_2d,
    rotation_x,
    rotation_y,
    rotation_z,
)

S60, C60 = math.sin(math.radians(60)), math.cos(math.radians(60))


def _project(point, tilt=0.0, axis=0.0, shift=(0.0, 0.0), xtilt=0.0):
    m = projection_matrices(tilt, axis, torch.tensor(shift, dtype=torch.float64), xtilt)
    return project_points(torch.tensor([point], dtype=torch.float64), m)[0].numpy()


def test_rotations_are_active_and_counter_clockwise():
    np.testing.assert_allclose(rotation_z(90.0).numpy() @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(rotation_x(90.0).numpy() @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(rotation_y(90.0).numpy() @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(rotation_2d(90.0).numpy() @ [1, 0], [0, 1], atol=1e-15)
    r = rotation_z(torch.tensor([10.0, 20.0], dtype=torch.float64)) @ rotation_y(33.0) @ rotation_x(-7.0)
    np.testing.assert_allclose(
        (r @ r.transpose(-1, -2)).numpy(), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-14
    )
    np.testing.assert_allclose(torch.linalg.det(r).numpy(), [1.0, 1.0], atol=1e-14)


def test_zero_tilt_zero_axis_is_orthographic_along_z():
    np.testing.assert_allclose(_project([3.0, -4.0, 7.0]), [3.0, -4.0, 7.0], atol=1e-12)


def test_tilt_axis_90_degrees_rotates_image_counter_clockwise():
    # Specimen x lands on image +y; specimen y (the tilt axis at α = 0) lands on image −x.
    np.testing.assert_allclose(_project([1.0, 0.0, 0.0], axis=90.0), [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(_project([0.0, 1.0, 0.0], axis=90.0), [-1.0, 0.0, 0.0], atol=1e-12)


def test_tilt_axis_direction_in_raw_image_is_alpha_from_y_counter_clockwise():
    alpha = 85.3
    on_axis = _project([0.0, 10.0, 0.0], tilt=60.0, axis=alpha)  # points on the axis do not move with tilt
    expected = 10.0 * np.array([-math.sin(math.radians(alpha)), math.cos(math.radians(alpha))])
    np.testing.assert_allclose(on_axis[:2], expected, atol=1e-12)


def test_sixty_degree_tilt():
    # x' = x cos θ + z sin θ ; depth = −x sin θ + z cos θ ; y unchanged.
    np.testing.assert_allclose(_project([10.0, 0.0, 0.0], tilt=60.0), [10 * C60, 0.0, -10 * S60], atol=1e-12)
    np.testing.assert_allclose(_project([0.0, 5.0, 10.0], tilt=60.0), [10 * S60, 5.0, 10 * C60], atol=1e-12)
    np.testing.assert_allclose(_project([0.0, 0.0, 10.0], tilt=-60.0), [-10 * S60, 0.0, 10 * C60], atol=1e-12)


def test_shifted_and_rotated_view():
    # θ = 60°, α = 90°, s = (5, −3): (10, 0, 0) → Ry → (5, 0, −8.66) → Rz(90) → (0, 5) → + s → (5, 2).
    np.testing.assert_allclose(
        _project([10.0, 0.0, 0.0], 60.0, 90.0, (5.0, -3.0)), [5.0, 2.0, -10 * S60], atol=1e-12
    )
    np.testing.assert_allclose(
        _project([0.0, 0.0, 10.0], 60.0, 90.0, (5.0, -3.0)), [5.0, 10 * S60 - 3.0, 10 * C60], atol=1e-12
    )


def test_x_tilt_applies_before_the_tilt():
    # φ = 90° sends +y to +z, then θ = 90° sends +z to +x.
    np.testing.assert_allclose(_project([0.0, 1.0, 0.0], tilt=90.0, xtilt=90.0), [1.0, 0.0, 0.0], atol=1e-12)


def test_batched_views_and_points_broadcast():
    m = projection_matrices(torch.tensor([-60.0, 0.0, 60.0], dtype=torch.float64), 85.3, torch.zeros(3, 2))
    pts = torch.randn(7, 3, dtype=torch.float64)
    out = project_points(pts, m)
    assert out.shape == (3, 7, 3)
    np.testing.assert_allclose(out[1].numpy(), _rot_only(pts.numpy(), 85.3), atol=1e-12)


def _rot_only(points, alpha):
    r = rotation_z(alpha).numpy()
    return points @ r.T


def test_xf_projection_equals_angle_projection_for_rigid_transforms():
    tilts = torch.tensor([-57.0, -3.0, 0.0, 21.0, 60.0], dtype=torch.float64)
    alpha = torch.tensor([85.1, 85.2, 85.3, 85.4, 85.5], dtype=torch.float64)
    a = rotation_2d(-alpha)  # raw → aligned brings the axis onto Y
    d = torch.tensor([[3.0, -2.0], [0.5, 0.25], [0.0, 0.0], [-7.0, 1.0], [12.0, 4.0]], dtype=torch.float64)
    s = -(torch.linalg.inv(a) @ d.unsqueeze(-1)).squeeze(-1)
    m_xf = projection_matrices_from_xf(a, d, tilts)
    m_angle = projection_matrices(tilts, alpha, s)
    np.testing.assert_allclose(m_xf.numpy(), m_angle.numpy(), atol=1e-12)


def test_xf_projection_inverts_a_general_affine():
    # Aligning the projected raw point with the same .xf must give the untransformed aligned projection.
    a = torch.tensor([[1.02, 0.05], [-0.03, 0.98]], dtype=torch.float64)
    d = torch.tensor([4.0, -6.0], dtype=torch.float64)
    pts = torch.randn(5, 3, dtype=torch.float64) * 20
    raw = project_points(pts, projection_matrices_from_xf(a, d, 40.0))[..., :2]
    aligned = (a @ raw.unsqueeze(-1)).squeeze(-1) + d
    expected = project_points(pts, projection_matrices(40.0, 0.0))[..., :2]
    np.testing.assert_allclose(aligned.numpy(), expected.numpy(), atol=1e-12)


def test_point_above_the_centre_has_smaller_underfocus():
    depth = project_points(torch.tensor([[0.0, 0.0, 10.0]]), projection_matrices(0.0, 0.0))[0, 2]
    np.testing.assert_allclose(point_defocus_angstrom(30000.0, depth, 2.0).item(), 30000.0 - 20.0)
    np.testing.assert_allclose(point_defocus_angstrom(30000.0, depth, 2.0, handedness=-1).item(), 30020.0)
    # On a +60° tilt, a point at +x (z = 0) moves away from the source: its defocus grows by x·sin θ·pixel.
    depth = project_points(torch.tensor([[100.0, 0.0, 0.0]]), projection_matrices(60.0, 0.0))[0, 2]
    np.testing.assert_allclose(
        point_defocus_angstrom(30000.0, depth, 1.0).item(), 30000.0 + 100 * S60, rtol=1e-12
    )
    with pytest.raises(ValueError, match="handedness"):
        point_defocus_angstrom(1.0, depth, 1.0, handedness=0)


def test_kernels_follow_the_device_of_their_inputs(device):
    tilts = torch.linspace(-60, 60, 41, dtype=torch.float64, device=device)
    m = projection_matrices(tilts, 85.3, torch.zeros(41, 2, dtype=torch.float64, device=device))
    pts = torch.randn(10, 3, dtype=torch.float64, device=device)
    out = project_points(pts, m)
    assert out.device.type == device.type and m.device.type == device.type
    depth = point_defocus_angstrom(
        torch.full((41, 1), 3e4, dtype=torch.float64, device=device), out[..., 2], 1.35
    )
    assert depth.device.type == device.type and depth.shape == (41, 10)
    # On-axis distances are preserved by every view (rigid projection of points on the tilt axis).
    on_axis = torch.tensor([[0.0, 7.0, 0.0]], dtype=torch.float64, device=device)
    np.testing.assert_allclose(
        project_points(on_axis, m)[..., :2].norm(dim=-1).cpu().numpy(), 7.0, atol=1e-12
    )
