"""The projection model: where a specimen point lands in tilt image ``i``, and at which defocus.

This is the one function that reconstruction, fiducial alignment, extraction and simulation all use
(CONVENTIONS.md §7). For view ``i`` with tilt angle ``θᵢ``, x-axis tilt ``φᵢ``, tilt-axis angle ``αᵢ`` (from the
image Y axis, counter-clockwise positive) and shift ``sᵢ``::

    (x, y, depth)ᵢ = Rz(αᵢ) · Ry(θᵢ) · Rx(φᵢ) · X + (sᵢ, 0)

``X = (x, y, z)`` is the point in pixels relative to the tomogram centre (index ``N // 2`` on each axis), ``(x, y)``
is the position in the raw tilt image in pixels relative to its centre, ``sᵢ`` is where the tomogram centre
projects in that image, and ``depth`` is the point's height along the beam axis, positive towards the electron
source. This is RELION 5's tilt-series geometry (``rlnTomoZRot = α``, ``rlnTomoYTilt = θ``, ``rlnTomoXTilt = φ``,
``rlnTomo{X,Y}ShiftAngst = s · pixel size``).
"""

from __future__ import annotations

import torch

from tomoforge.geometry._tensors import as_float_tensor
from tomoforge.geometry.rotations import rotation_x, rotation_y, rotation_z


def projection_matrices(
    tilt_angles_deg: torch.Tensor | list[float] | float,
    tilt_axis_angles_deg: torch.Tensor | list[float] | float,
    shifts_xy_px: torch.Tensor | list[float] | None = None,
    x_tilt_angles_deg: torch.Tensor | list[float] | float = 0.0,
) -> torch.Tensor:
    """Affine projection matrices of tilt views.

    Parameters
    ----------
    tilt_angles_deg
        ``(...)`` tilt angles θ in degrees (rotation of the specimen about the tilt axis, right-handed).
    tilt_axis_angles_deg
        ``(...)`` tilt-axis angles α in the raw images, from +Y counter-clockwise, in degrees.
    shifts_xy_px
        ``(..., 2)`` image position of the tomogram centre, in pixels from the image centre; zero when omitted.
    x_tilt_angles_deg
        ``(...)`` rotation φ about the x axis applied before the tilt (IMOD's x-axis tilt), in degrees.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 4)`` matrices ``[R | t]`` with ``R = Rz(α)·Ry(θ)·Rx(φ)`` and ``t = (sx, sy, 0)``; use them with
        :func:`project_points`.
    """
    theta = as_float_tensor(tilt_angles_deg)
    alpha = as_float_tensor(tilt_axis_angles_deg, like=theta)
    phi = as_float_tensor(x_tilt_angles_deg, like=theta)
    theta, alpha, phi = torch.broadcast_tensors(theta, alpha, phi)
    r = rotation_z(alpha) @ rotation_y(theta) @ rotation_x(phi)
    t = torch.zeros((*r.shape[:-2], 3), dtype=r.dtype, device=r.device)
    if shifts_xy_px is not None:
        t[..., :2] = as_float_tensor(shifts_xy_px, like=r)
    return torch.cat([r, t.unsqueeze(-1)], dim=-1)


def projection_matrices_from_xf(
    xf_matrices: torch.Tensor,
    xf_shifts_xy_px: torch.Tensor,
    tilt_angles_deg: torch.Tensor | list[float],
    x_tilt_angles_deg: torch.Tensor | list[float] | float = 0.0,
) -> torch.Tensor:
    """Projection matrices from IMOD-style alignment transforms (raw → aligned) and refined tilt angles.

    An ``.xf`` transform maps raw to aligned image coordinates about the centres, ``a = A·r + d``, and the aligned
    image is the projection with the tilt axis along Y, ``a = [Ry(θ)·Rx(φ)·X]_xy``. Hence
    ``r = A⁻¹·[Ry(θ)·Rx(φ)·X]_xy − A⁻¹·d``. For a pure rotation ``A = Rz(−α)`` this equals
    :func:`projection_matrices` with ``s = −A⁻¹·d``. ``depth`` is unaffected by the in-plane transform.

    Parameters
    ----------
    xf_matrices
        ``(..., 2, 2)`` ``[[A11, A12], [A21, A22]]``.
    xf_shifts_xy_px
        ``(..., 2)`` ``(DX, DY)`` in pixels about **tomoforge** centres (convert IMOD files with
        :func:`tomoforge.geometry.imod_to_tomoforge_xf_shift_px`).
    tilt_angles_deg
        ``(...)`` refined tilt angles θ.
    x_tilt_angles_deg
        ``(...)`` x-axis tilts φ.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 4)`` projection matrices.
    """
    a = as_float_tensor(xf_matrices)
    d = as_float_tensor(xf_shifts_xy_px, like=a)
    base = projection_matrices(as_float_tensor(tilt_angles_deg, like=a), 0.0, None, x_tilt_angles_deg)
    a_inv = torch.linalg.inv(a)
    batch = torch.broadcast_shapes(base.shape[:-2], a_inv.shape[:-2], d.shape[:-1])
    base = base.expand(*batch, 3, 4)
    a_inv = a_inv.expand(*batch, 2, 2)
    d = d.expand(*batch, 2)
    out = base.clone()
    out[..., :2, :3] = a_inv @ base[..., :2, :3]
    out[..., :2, 3] = -(a_inv @ d.unsqueeze(-1)).squeeze(-1)
    return out


def project_points(points_xyz_px: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Project specimen points into tilt views.

    Parameters
    ----------
    points_xyz_px
        ``(..., n, 3)`` points ``(x, y, z)`` in pixels relative to the tomogram centre.
    matrices
        ``(..., 3, 4)`` from :func:`projection_matrices`; leading dimensions broadcast with the points', e.g.
        points ``(n, 3)`` and matrices ``(t, 3, 4)`` give ``(t, n, 3)``.

    Returns
    -------
    torch.Tensor
        ``(..., n, 3)``: image ``x``, ``y`` in pixels from the image centre, and ``depth`` in pixels (towards the
        source).
    """
    m = as_float_tensor(matrices)
    p = as_float_tensor(points_xyz_px, like=m).to(m.dtype)
    return p @ m[..., :3].transpose(-1, -2) + m[..., 3].unsqueeze(-2)


def plane_depth_px(image_xy_px: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Depth of the specimen mid-plane (``z = 0`` of the tomogram) under given image positions.

    The plane's points ``X = (x, y, 0)`` project to ``(x', y') = R[:2, :2]·(x, y) + s`` and
    ``depth = R[2, :2]·(x, y)`` (:func:`project_points`), so the point under an image position ``p`` is
    ``(x, y) = R[:2, :2]⁻¹·(p − s)``. Used to give every tile or strip of a tilted image its defocus
    (:func:`point_defocus_angstrom`).

    Parameters
    ----------
    image_xy_px
        ``(..., n, 2)`` image positions in pixels from the image centre.
    matrices
        ``(..., 3, 4)`` from :func:`projection_matrices` (leading dimensions broadcast as in :func:`project_points`).

    Returns
    -------
    torch.Tensor
        ``(..., n)`` depth in pixels (positive towards the source).

    Raises
    ------
    ValueError
        If a view looks at the plane edge-on (tilt of 90°), where the depth is undefined.
    """
    m = as_float_tensor(matrices).to(torch.float64)
    p = as_float_tensor(image_xy_px, like=m).to(torch.float64)
    lateral = m[..., :2, :2]
    if bool((torch.linalg.det(lateral).abs() < 1e-9).any()):
        raise ValueError("the specimen plane is seen edge-on in a view (tilt of 90°): its depth is undefined")
    relative = p - m[..., :2, 3].unsqueeze(-2)
    plane_xy = torch.linalg.solve(lateral.unsqueeze(-3), relative.unsqueeze(-1)).squeeze(-1)
    depth = (plane_xy * m[..., 2, :2].unsqueeze(-2)).sum(-1)
    return depth.to(as_float_tensor(image_xy_px).dtype if image_xy_px.is_floating_point() else torch.float32)


def point_defocus_angstrom(
    view_defocus_angstrom: torch.Tensor | float,
    depth_px: torch.Tensor,
    pixel_size_angstrom: float,
    handedness: int = 1,
) -> torch.Tensor:
    """Defocus at a point of given depth (CONVENTIONS.md §8).

    Defocus is positive for underfocus. The in-focus plane lies upstream of (above) an underfocused specimen, so a
    point higher up (larger ``depth``, towards the source) is nearer to it and has a *smaller* defocus:
    ``Δf = Δf_view − handedness · depth · pixel size``. ``handedness = −1`` describes data whose images are mirrored
    relative to that (measured by the CTF step).

    Parameters
    ----------
    view_defocus_angstrom
        ``(...)`` defocus of the view at the tomogram centre's height (depth 0).
    depth_px
        ``(...)`` depths from :func:`project_points` (broadcast with the defocus).
    pixel_size_angstrom
        Pixel size of the coordinates.
    handedness
        +1 or −1.

    Returns
    -------
    torch.Tensor
        ``(...)`` defocus in Å.
    """
    if handedness not in (1, -1):
        raise ValueError(f"handedness must be +1 or -1, got {handedness}")
    depth = as_float_tensor(depth_px)
    return as_float_tensor(view_defocus_angstrom, like=depth) - handedness * depth * pixel_size_angstrom
