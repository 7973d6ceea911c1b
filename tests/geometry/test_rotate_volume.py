"""``rotate_volume`` carries a volume's content by the rotation (CONVENTIONS.md §3), about the centre voxel."""

from __future__ import annotations

import torch

from tomoforge.geometry import rotate_volume, rotation_x, rotation_z


def _point(x: int, y: int, z: int, n: int = 15) -> torch.Tensor:
    volume = torch.zeros((n, n, n))
    volume[n // 2 + z, n // 2 + y, n // 2 + x] = 1.0
    return volume


def test_a_point_on_x_goes_to_y_under_a_quarter_turn_about_z() -> None:
    turned = rotate_volume(_point(4, 0, 0), rotation_z(90.0))
    assert torch.allclose(turned, _point(0, 4, 0), atol=1e-5)


def test_batches_of_rotations_and_of_volumes() -> None:
    turns = torch.stack([rotation_z(90.0), rotation_x(90.0)])
    out = rotate_volume(_point(0, 3, 0), turns)
    assert torch.allclose(out[0], _point(-3, 0, 0), atol=1e-5)
    assert torch.allclose(out[1], _point(0, 0, 3), atol=1e-5)
    both = rotate_volume(torch.stack([_point(2, 0, 0), _point(0, 0, 2)]), rotation_x(90.0))
    assert torch.allclose(both[0], _point(2, 0, 0), atol=1e-5)
    assert torch.allclose(both[1], _point(0, -2, 0), atol=1e-5)
