"""Euler-angle conventions at the I/O boundary: RELION (ZYZ), Dynamo (ZXZ) and Scipion 4×4 matrices.

Inside tomoforge an orientation is a single 3×3 active rotation ``R`` that maps coordinates in the reference
(template) box into tomogram coordinates (CONVENTIONS.md §4). Euler angles exist only where files are read or
written, through the functions below:

* RELION ``(rot, tilt, psi)``: ``R = Rz(−psi)·Ry(−tilt)·Rz(−rot)`` (RELION's ``Euler_angles2matrix``; equal to the
  transpose of SciPy's intrinsic ``'ZYZ'`` rotation of ``(rot, tilt, psi)``).
* Dynamo ``(tdrot, tilt, narot)``: Dynamo's matrix ``R_dyn = Rz(narot)·Rx(tilt)·Rz(tdrot)`` maps particle to
  reference, so ``R = R_dynᵀ``. Numerically RELION ``(rot, tilt, psi) = (narot − 90°, tilt, tdrot + 90°)``.
* Scipion ``_eulerMatrix`` / ``_transform`` 4×4 ``M``: rotation part ``Rᵀ``; translation ``−Rᵀ·s`` for a Dynamo
  shift ``s`` and ``−(Rᵀ)²·o`` for a RELION origin ``o`` (what Scipion's converters store, reproduced as is).

References
----------
Scheres, S. H. W. (2012). RELION: Implementation of a Bayesian approach to cryo-EM structure determination.
J. Struct. Biol. 180, 519–530. https://doi.org/10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

import torch

from tomoforge.geometry._tensors import as_float_tensor
from tomoforge.geometry.rotations import rotation_x, rotation_y, rotation_z

_GIMBAL_EPS = 1e-6


def relion_euler_to_matrix(angles_deg: torch.Tensor | list[float]) -> torch.Tensor:
    """RELION Euler angles to rotation matrices.

    Parameters
    ----------
    angles_deg
        ``(..., 3)`` RELION ``(rot, tilt, psi)`` in degrees (``rlnAngleRot/Tilt/Psi`` or
        ``rlnTomoSubtomogramRot/Tilt/Psi``).

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3)`` matrices ``R = Rz(−psi)·Ry(−tilt)·Rz(−rot)`` mapping reference coordinates into the
        particle's (tomogram) frame.
    """
    a = as_float_tensor(angles_deg)
    rot, tilt, psi = a[..., 0], a[..., 1], a[..., 2]
    return rotation_z(-psi) @ rotation_y(-tilt) @ rotation_z(-rot)


def matrix_to_relion_euler(matrices: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to RELION ``(rot, tilt, psi)`` in degrees, ``(..., 3, 3)`` → ``(..., 3)``.

    ``tilt`` lies in [0°, 180°], ``rot`` and ``psi`` in (−180°, 180°]. At gimbal lock (tilt 0° or 180°) ``rot`` is
    set to 0 and the whole in-plane angle goes into ``psi``, as RELION's ``Euler_matrix2angles`` does.
    """
    m = as_float_tensor(matrices)
    sin_tilt = torch.sqrt(m[..., 2, 0] ** 2 + m[..., 2, 1] ** 2)
    tilt = torch.atan2(sin_tilt, m[..., 2, 2])
    rot = torch.atan2(m[..., 2, 1], m[..., 2, 0])
    psi = torch.atan2(m[..., 1, 2], -m[..., 0, 2])
    locked = sin_tilt < _GIMBAL_EPS
    # tilt ≈ 0: R = Rz(−(psi+rot)); tilt ≈ 180°: R = Rz(−psi)·diag(−1, 1, −1) with rot = 0.
    psi_locked = torch.where(
        m[..., 2, 2] > 0, torch.atan2(m[..., 0, 1], m[..., 0, 0]), torch.atan2(m[..., 0, 1], -m[..., 0, 0])
    )
    rot = torch.where(locked, torch.zeros_like(rot), rot)
    psi = torch.where(locked, psi_locked, psi)
    return torch.rad2deg(torch.stack([rot, tilt, psi], -1))


def dynamo_euler_to_matrix(angles_deg: torch.Tensor | list[float]) -> torch.Tensor:
    """Dynamo Euler angles to tomoforge rotation matrices.

    Parameters
    ----------
    angles_deg
        ``(..., 3)`` Dynamo ``(tdrot, tilt, narot)`` in degrees (table columns 7, 8, 9).

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3)`` matrices ``R = (Rz(narot)·Rx(tilt)·Rz(tdrot))ᵀ``, reference → tomogram.
    """
    a = as_float_tensor(angles_deg)
    tdrot, tilt, narot = a[..., 0], a[..., 1], a[..., 2]
    r_dyn = rotation_z(narot) @ rotation_x(tilt) @ rotation_z(tdrot)
    return r_dyn.transpose(-1, -2)


def matrix_to_dynamo_euler(matrices: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (reference → tomogram) to Dynamo ``(tdrot, tilt, narot)`` in degrees.

    ``(..., 3, 3)`` → ``(..., 3)``; ``tilt`` in [0°, 180°]. At gimbal lock ``narot`` is set to 0.
    """
    r = as_float_tensor(matrices).transpose(-1, -2)  # Dynamo's own matrix, particle → reference
    sin_tilt = torch.sqrt(r[..., 2, 0] ** 2 + r[..., 2, 1] ** 2)
    tilt = torch.atan2(sin_tilt, r[..., 2, 2])
    tdrot = torch.atan2(r[..., 2, 0], r[..., 2, 1])
    narot = torch.atan2(r[..., 0, 2], -r[..., 1, 2])
    locked = sin_tilt < _GIMBAL_EPS
    # tilt ≈ 0: R_dyn = Rz(tdrot); tilt ≈ 180°: R_dyn = diag(1, −1, −1)·Rz(tdrot) with narot = 0.
    tdrot_locked = torch.where(
        r[..., 2, 2] > 0, torch.atan2(r[..., 1, 0], r[..., 0, 0]), torch.atan2(-r[..., 0, 1], r[..., 0, 0])
    )
    narot = torch.where(locked, torch.zeros_like(narot), narot)
    tdrot = torch.where(locked, tdrot_locked, tdrot)
    return torch.rad2deg(torch.stack([tdrot, tilt, narot], -1))


def _homogeneous(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    m = torch.zeros((*rotation.shape[:-2], 4, 4), dtype=rotation.dtype, device=rotation.device)
    m[..., :3, :3] = rotation
    m[..., :3, 3] = translation
    m[..., 3, 3] = 1.0
    return m


def scipion_matrix_from_dynamo(
    angles_deg: torch.Tensor | list[float], shifts_px: torch.Tensor | list[float]
) -> torch.Tensor:
    """Scipion 4×4 transform of a Dynamo particle: ``M = [R_dyn | −R_dyn·s]``.

    Parameters
    ----------
    angles_deg
        ``(..., 3)`` Dynamo ``(tdrot, tilt, narot)``.
    shifts_px
        ``(..., 3)`` Dynamo ``(dx, dy, dz)`` in pixels (table columns 4–6).

    Returns
    -------
    torch.Tensor
        ``(..., 4, 4)``.
    """
    r = dynamo_euler_to_matrix(angles_deg)
    s = as_float_tensor(shifts_px, like=r)
    r_dyn = r.transpose(-1, -2)
    return _homogeneous(r_dyn, -(r_dyn @ s.unsqueeze(-1)).squeeze(-1))


def dynamo_from_scipion_matrix(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`scipion_matrix_from_dynamo`: ``(..., 4, 4)`` → (angles ``(..., 3)``, shifts_px ``(..., 3)``)."""
    m = as_float_tensor(matrices)
    r_dyn = m[..., :3, :3]
    shifts = -(r_dyn.transpose(-1, -2) @ m[..., :3, 3].unsqueeze(-1)).squeeze(-1)
    return matrix_to_dynamo_euler(r_dyn.transpose(-1, -2)), shifts


def scipion_matrix_from_relion(
    angles_deg: torch.Tensor | list[float], origins_px: torch.Tensor | list[float]
) -> torch.Tensor:
    """Scipion 4×4 transform of a RELION particle, as Scipion's RELION converter stores it.

    Parameters
    ----------
    angles_deg
        ``(..., 3)`` RELION ``(rot, tilt, psi)``.
    origins_px
        ``(..., 3)`` ``rlnOrigin{X,Y,Z}Angst`` divided by the pixel size.

    Returns
    -------
    torch.Tensor
        ``(..., 4, 4)`` ``M = [Rᵀ | −(Rᵀ)²·o]``.
    """
    r = relion_euler_to_matrix(angles_deg)
    o = as_float_tensor(origins_px, like=r)
    rt = r.transpose(-1, -2)
    return _homogeneous(rt, -(rt @ rt @ o.unsqueeze(-1)).squeeze(-1))


def relion_from_scipion_matrix(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`scipion_matrix_from_relion`: ``(..., 4, 4)`` → (angles ``(..., 3)``, origins_px ``(..., 3)``)."""
    m = as_float_tensor(matrices)
    r = m[..., :3, :3].transpose(-1, -2)
    origins = -(r @ r @ m[..., :3, 3].unsqueeze(-1)).squeeze(-1)
    return matrix_to_relion_euler(r), origins
