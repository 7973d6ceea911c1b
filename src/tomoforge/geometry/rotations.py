"""Elementary active rotation matrices.

All matrices are *active* and *left-multiply column vectors* ordered ``(x, y, z)`` (CONVENTIONS.md §3): the rotated
point is ``R @ p``. A positive angle turns counter-clockwise when looking down the rotation axis towards the origin
(right-hand rule).
"""

from __future__ import annotations

import torch

from tomoforge.geometry._tensors import as_float_tensor


def _cos_sin(angles_deg: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.deg2rad(as_float_tensor(angles_deg))
    return torch.cos(a), torch.sin(a)


def rotation_x(angles_deg: torch.Tensor | float) -> torch.Tensor:
    """Rotation about x.

    Parameters
    ----------
    angles_deg
        ``(...)`` angles in degrees.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3)`` active rotation matrices: ``y' = c·y − s·z``, ``z' = s·y + c·z``.
    """
    c, s = _cos_sin(angles_deg)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    rows = [torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)]
    return torch.stack(rows, -2)


def rotation_y(angles_deg: torch.Tensor | float) -> torch.Tensor:
    """Rotation about y: ``x' = c·x + s·z``, ``z' = −s·x + c·z``; ``(...)`` → ``(..., 3, 3)``."""
    c, s = _cos_sin(angles_deg)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    rows = [torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)]
    return torch.stack(rows, -2)


def rotation_z(angles_deg: torch.Tensor | float) -> torch.Tensor:
    """Rotation about z: ``x' = c·x − s·y``, ``y' = s·x + c·y``; ``(...)`` → ``(..., 3, 3)``."""
    c, s = _cos_sin(angles_deg)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    rows = [torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)]
    return torch.stack(rows, -2)


def rotation_2d(angles_deg: torch.Tensor | float) -> torch.Tensor:
    """In-plane rotation of ``(x, y)`` column vectors, counter-clockwise positive; ``(...)`` → ``(..., 2, 2)``."""
    return rotation_z(angles_deg)[..., :2, :2]
