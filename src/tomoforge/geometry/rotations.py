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


def rotation_from_vector(vectors: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` of rotation vectors ``(..., 3)`` (axis × angle in radians, right-hand rule): the
    exponential of their cross-product matrices (Rodrigues)."""
    v = vectors
    cross = torch.zeros((*v.shape[:-1], 3, 3), dtype=v.dtype, device=v.device)
    cross[..., 0, 1], cross[..., 0, 2] = -v[..., 2], v[..., 1]
    cross[..., 1, 0], cross[..., 1, 2] = v[..., 2], -v[..., 0]
    cross[..., 2, 0], cross[..., 2, 1] = -v[..., 1], v[..., 0]
    return torch.linalg.matrix_exp(cross)


def rotate_volume(volume: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Cubic volumes turned about their centre voxel ``N // 2``: the result at ``q`` is the input at ``Rᵀ·q``
    (the volume's content is carried by ``R``; trilinear, zero outside).

    Parameters
    ----------
    volume
        ``(N, N, N)`` or ``(B, N, N, N)`` real volumes, axes ``(z, y, x)``.
    rotation
        ``(3, 3)`` or ``(B, 3, 3)`` rotations acting on ``(x, y, z)`` column vectors. One volume and ``B``
        rotations give ``B`` turned copies; ``B`` volumes and one rotation turn each alike.

    Returns
    -------
    torch.Tensor
        ``(N, N, N)`` when both are single, else ``(B, N, N, N)``.
    """
    single = volume.ndim == 3 and rotation.ndim == 2
    volumes = volume[None] if volume.ndim == 3 else volume
    rotations = rotation[None] if rotation.ndim == 2 else rotation
    count = max(len(volumes), len(rotations))
    volumes = volumes.expand(count, *volumes.shape[1:])
    rotations = rotations.to(device=volume.device, dtype=volume.dtype).expand(count, 3, 3)
    n = volume.shape[-1]
    # grid_sample's coordinate of voxel index i is 2·i/(n − 1) − 1; the centre voxel n // 2 sits at ``shift``.
    scale, shift = 2.0 / (n - 1), 2.0 * (n // 2) / (n - 1) - 1.0
    offsets = (torch.arange(n, dtype=volume.dtype, device=volume.device) - n // 2) * scale
    zz, yy, xx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    q = torch.stack([xx, yy, zz], dim=-1).reshape(1, -1, 3)
    grid = torch.baddbmm(
        torch.full((1, 1, 1), shift, dtype=volume.dtype, device=volume.device).expand(count, 1, 3),
        q.expand(count, -1, 3),
        rotations,
    ).reshape(count, n, n, n, 3)  # rows: (Rᵀ q)ᵀ = qᵀ R
    out = torch.nn.functional.grid_sample(
        volumes[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0]
    return out[0] if single else out
