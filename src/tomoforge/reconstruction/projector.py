"""Back-projection and projection between aligned tilt views and a tomogram, slab by slab.

Geometry (CONVENTIONS.md §7 in the aligned frame): an aligned view has its tilt axis along y and the specimen
origin at its centre pixel ``N // 2``, so a specimen point ``X = (x, y, z)`` (pixels) lands at
``a = [Ry(θ)·Rx(φ)·X]_xy``. Tomogram voxel ``(k, j, i)`` (index z, y, x) is the specimen point
``X = (i − nx//2 + oₓ, j − ny//2 + o_y, k − nz//2 + o_z)``: the centre voxel sits at the offset ``o`` (pixels), e.g.
a tomogram shifted along z, or a sub-range of rows. z points towards the electron source at zero tilt.

Single-axis views (no x-axis tilt) map every tomogram row ``j`` to image row ``j − ny//2 + o_y + H//2`` of every
view and mix only x and z, so one sparse matrix ``P`` of shape ``(nz·nx, m·W)`` (linear interpolation along the
detector row, two entries per voxel and view) back-projects all rows of a slab at once: ``slab = P @ rows`` with the
rows as columns, a sparse × dense product that runs at memory speed on CPU (MKL) and GPU (cuSPARSE). Its transpose
is the matched projector used by SIRT. This is the structure tomo3d and IMOD exploit (XZ slices are independent).

Views with an x-axis tilt mix rows; :func:`backproject_general` samples them bilinearly for every voxel instead
(slower, and WBP only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "backproject_general",
    "backproject_single_axis",
    "full_ray_width",
    "general_rows_needed",
    "project_single_axis",
    "single_axis_matrix",
    "sirt_slab",
    "transpose_matrix",
]


def single_axis_matrix(
    tilt_angles_deg: Sequence[float] | torch.Tensor,
    *,
    detector_width: int,
    volume_width: int,
    thickness: int,
    x_offset_px: float = 0.0,
    z_offset_px: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sparse back-projection matrix ``P`` (CSR, float32) of single-axis views into the XZ plane.

    Row ``k·nx + i`` is voxel ``(z=k, x=i)``; column ``v·W + u`` is detector pixel ``u`` of view ``v``. Voxel
    ``(k, i)`` projects to ``u = cos θ·(i − nx//2 + oₓ) + sin θ·(k − nz//2 + o_z) + W//2`` and takes
    ``(1 − f)·row[⌊u⌋] + f·row[⌊u⌋ + 1]``; pixels off the detector contribute nothing.

    Parameters
    ----------
    tilt_angles_deg
        ``(m,)`` tilt angles θ (the aligned stack's order).
    detector_width
        ``W``: width of the aligned views.
    volume_width, thickness
        ``nx`` and ``nz`` of the tomogram.
    x_offset_px, z_offset_px
        Specimen position of the tomogram's centre voxel along x and z, in pixels.
    device
        Where the matrix lives.

    Returns
    -------
    torch.Tensor
        ``(nz·nx, m·W)`` sparse CSR tensor.
    """
    theta = torch.deg2rad(torch.as_tensor(tilt_angles_deg, dtype=torch.float64)).reshape(-1).to(device)
    m = theta.numel()
    if m == 0 or detector_width < 2 or volume_width < 1 or thickness < 1:
        raise ValueError(
            f"cannot build a projector for {m} views of width {detector_width} into {thickness} × {volume_width}"
        )
    if m * detector_width >= 2**31:
        raise ValueError(f"a projector over {m * detector_width} detector pixels is too large")
    x = torch.arange(volume_width, dtype=torch.float64, device=device) - volume_width // 2 + x_offset_px
    z = torch.arange(thickness, dtype=torch.float64, device=device) - thickness // 2 + z_offset_px
    sin, cos = torch.sin(theta), torch.cos(theta)
    view_start = (torch.arange(m, device=device, dtype=torch.int32) * detector_width)[None, None, :]
    counts, kept_columns, kept_values = [], [], []
    # A few sections at a time: the temporaries stay small next to the matrix itself.
    step = max(1, (2**22) // max(1, volume_width * m))
    for k0 in range(0, thickness, step):
        u = z[k0 : k0 + step, None, None] * sin + x[None, :, None] * cos + detector_width // 2  # (k, nx, m)
        left64 = torch.floor(u)
        frac = (u - left64).to(torch.float32)
        left = left64.to(torch.int32)
        columns = torch.stack([left + view_start, left + view_start + 1], dim=-1)
        values = torch.stack([1.0 - frac, frac], dim=-1)
        on_detector = torch.stack(
            [
                (left >= 0) & (left < detector_width) & (frac < 1),
                (left >= -1) & (left < detector_width - 1) & (frac > 0),
            ],
            dim=-1,
        )
        counts.append(on_detector.reshape(-1, 2 * m).sum(dim=1))
        kept_columns.append(columns[on_detector])
        kept_values.append(values[on_detector])
    n_rows = thickness * volume_width
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(torch.cat(counts), 0)
    if int(crow[-1]) >= 2**31:
        raise ValueError(
            f"a projector with {int(crow[-1])} entries is too large; reconstruct fewer rows or views"
        )
    return _csr(
        crow.to(torch.int32), torch.cat(kept_columns), torch.cat(kept_values), (n_rows, m * detector_width)
    )


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor, without torch's notices that CSR is in beta and that invariants are not checked (the
    indices are built sorted and in range here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
        return torch.sparse_csr_tensor(crow, col, values, size=size)


def full_ray_width(
    tilt_angles_deg: Sequence[float] | torch.Tensor,
    *,
    detector_width: int,
    thickness: int,
    volume_width: int,
    z_offset_px: float = 0.0,
) -> int:
    """Width a slab must have for every detector pixel's ray to cross its whole thickness inside it.

    Real specimens go on beyond the field of view, so at high tilt the rays reaching the detector's edges leave a
    tomogram of the views' width through its sides: their measured sums hold specimen that is not in the volume.
    WBP does not mind, but SIRT, which asks the volume to reproduce every ray sum, piles that excess into the
    edge voxels and streaks the slab. SIRT therefore solves on this wider slab (at least ``volume_width``, same
    parity) and the tomogram is its central part.

    Returns
    -------
    int
        ``max(volume_width, 2·⌈max over views of (W/2 + |z|max·|sin θ|) / cos θ⌉ + 2)`` with the parity of
        ``volume_width``.
    """
    theta = torch.deg2rad(torch.as_tensor(tilt_angles_deg, dtype=torch.float64)).reshape(-1)
    z_reach = thickness / 2.0 + abs(z_offset_px)
    half = float(
        ((detector_width / 2.0 + z_reach * theta.sin().abs()) / theta.cos().abs().clamp(min=0.05)).max()
    )
    width = 2 * math.ceil(half) + 2
    if width % 2 != volume_width % 2:
        width += 1
    return max(volume_width, width)


def transpose_matrix(matrix: torch.Tensor) -> torch.Tensor:
    """The CSR transpose ``Pᵀ`` (the matched forward projector) of a CSR matrix."""
    csc = matrix.to_sparse_csc()
    rows, cols = matrix.shape
    return torch.sparse_csr_tensor(csc.ccol_indices(), csc.row_indices(), csc.values(), size=(cols, rows))


def backproject_single_axis(
    matrix: torch.Tensor, rows: torch.Tensor, thickness: int, volume_width: int
) -> torch.Tensor:
    """Back-project the rows of single-axis views into a slab of the tomogram.

    Parameters
    ----------
    matrix
        ``P`` from :func:`single_axis_matrix`.
    rows
        ``(m, r, W)``: the same ``r`` rows of every aligned view (already weighted for WBP).
    thickness, volume_width
        ``nz`` and ``nx``.

    Returns
    -------
    torch.Tensor
        ``(nz, r, nx)`` float32 slab: ``Σᵥ`` of every view's row smeared along its rays.
    """
    m, r, w = rows.shape
    dense = rows.to(torch.float32).permute(0, 2, 1).reshape(m * w, r)
    out = torch.sparse.mm(matrix, dense)
    return out.reshape(thickness, volume_width, r).permute(0, 2, 1).contiguous()


def project_single_axis(transposed: torch.Tensor, slab: torch.Tensor, n_views: int) -> torch.Tensor:
    """Project a slab into single-axis views with the matched projector ``Pᵀ``.

    Parameters
    ----------
    transposed
        ``Pᵀ`` from :func:`transpose_matrix`.
    slab
        ``(nz, r, nx)``.
    n_views
        ``m``.

    Returns
    -------
    torch.Tensor
        ``(m, r, W)``: each detector pixel's sum of the voxels that interpolate from it (the line integral in
        voxels, ``thickness / cos θ`` for a uniform slab of value 1).
    """
    nz, r, nx = slab.shape
    dense = slab.to(torch.float32).permute(0, 2, 1).reshape(nz * nx, r)
    out = torch.sparse.mm(transposed, dense)
    return out.reshape(n_views, -1, r).permute(0, 2, 1).contiguous()


def sirt_slab(
    matrix: torch.Tensor,
    transposed: torch.Tensor,
    rows: torch.Tensor,
    *,
    thickness: int,
    volume_width: int,
    iterations: int,
    relaxation: float = 1.0,
    initial: torch.Tensor | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """SIRT on one slab: ``v ← v + λ·C·Pᵀᵀ(R·(p − Pᵀv))`` with ``C``, ``R`` the inverse column and row sums.

    The rows of single-axis views are independent, so SIRT runs slab by slab with its memory bounded by the slab.
    ``R`` is the inverse of each detector pixel's total weight (its ray length in voxels) and ``C`` the inverse of
    each voxel's total weight (the number of views that see it), as in tomo3d; pixels and voxels with no weight are
    left alone. The result has the scale of the specimen (a projection is a line integral in voxels).

    Parameters
    ----------
    matrix, transposed
        ``P`` and ``Pᵀ``.
    rows
        ``(m, r, W)`` unweighted rows of the aligned views.
    thickness, volume_width
        ``nz``, ``nx``.
    iterations
        Number of SIRT iterations (tomo3d's default is 30).
    relaxation
        ``λ`` in (0, 2).
    initial
        ``(nz, r, nx)`` starting slab (zeros when None).
    on_iteration
        Called after each iteration with its number (from 1) and the relative residual ``‖p − Pᵀv‖ / ‖p‖``.

    Returns
    -------
    torch.Tensor
        ``(nz, r, nx)`` float32 slab.
    """
    if not 0.0 < relaxation < 2.0:
        raise ValueError(f"the SIRT relaxation must lie in (0, 2), got {relaxation}")
    m, r, w = rows.shape
    p = rows.to(torch.float32).permute(0, 2, 1).reshape(m * w, r)
    ones_det = torch.ones((m * w, 1), dtype=torch.float32, device=p.device)
    ones_vox = torch.ones((thickness * volume_width, 1), dtype=torch.float32, device=p.device)
    column_sums = torch.sparse.mm(matrix, ones_det)
    row_sums = torch.sparse.mm(transposed, ones_vox)
    c = torch.where(column_sums > 0, relaxation / column_sums.clamp(min=1e-12), torch.zeros_like(column_sums))
    rr = torch.where(row_sums > 0, 1.0 / row_sums.clamp(min=1e-12), torch.zeros_like(row_sums))
    if initial is None:
        v = torch.zeros((thickness * volume_width, r), dtype=torch.float32, device=p.device)
    else:
        v = initial.to(torch.float32).permute(0, 2, 1).reshape(thickness * volume_width, r).clone()
    norm = float(torch.linalg.vector_norm(p)) or 1.0
    for k in range(iterations):
        residual = p - torch.sparse.mm(transposed, v)
        if on_iteration is not None:
            on_iteration(k + 1, float(torch.linalg.vector_norm(residual)) / norm)
        residual *= rr
        v += c * torch.sparse.mm(matrix, residual)
    return v.reshape(thickness, volume_width, r).permute(0, 2, 1).contiguous()


def _voxel_points(
    shape_zyx: Sequence[int],
    y_range: tuple[int, int],
    offset_xyz_px: Sequence[float],
    *,
    z_range: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    nz, ny, nx = (int(n) for n in shape_zyx)
    z0, z1 = z_range or (0, nz)
    ox, oy, oz = (float(v) for v in offset_xyz_px)
    x = torch.arange(nx, dtype=torch.float32, device=device) - nx // 2 + ox
    y = torch.arange(*y_range, dtype=torch.float32, device=device) - ny // 2 + oy
    z = torch.arange(z0, z1, dtype=torch.float32, device=device) - nz // 2 + oz
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def general_rows_needed(
    matrices: torch.Tensor,
    shape_zyx: Sequence[int],
    y_range: tuple[int, int],
    offset_xyz_px: Sequence[float],
    image_height: int,
) -> tuple[int, int]:
    """Image rows ``[r0, r1)`` that the voxels of tomogram rows ``y_range`` project onto in any view (clipped)."""
    nz, ny, nx = (int(n) for n in shape_zyx)
    corners = torch.tensor(
        [[x, y, z] for x in (0, nx - 1) for y in (y_range[0], y_range[1] - 1) for z in (0, nz - 1)],
        dtype=torch.float64,
    )
    offset = torch.tensor([float(v) for v in offset_xyz_px], dtype=torch.float64)
    points = corners - torch.tensor([nx // 2, ny // 2, nz // 2], dtype=torch.float64) + offset
    m = matrices.to(torch.float64).cpu()
    image_y = points @ m[:, 1, :3].T + m[:, 1, 3] + image_height // 2
    r0 = max(0, math.floor(float(image_y.min())) - 1)
    r1 = min(image_height, math.ceil(float(image_y.max())) + 2)
    return r0, max(r0, r1)


def backproject_general(
    rows: torch.Tensor,
    row_start: int,
    image_height: int,
    matrices: torch.Tensor,
    shape_zyx: Sequence[int],
    y_range: tuple[int, int],
    offset_xyz_px: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    z_chunk: int = 64,
) -> torch.Tensor:
    """Back-project views of any geometry into tomogram rows ``y_range`` by bilinear sampling per voxel.

    Parameters
    ----------
    rows
        ``(m, rr, W)`` image rows ``row_start … row_start + rr − 1`` of the aligned views (weighted for WBP);
        :func:`general_rows_needed` says which.
    row_start, image_height
        First row held and the full height ``H`` of the views.
    matrices
        ``(m, 3, 4)`` projection matrices of the aligned views (:func:`tomoforge.geometry.projection_matrices`
        with the tilt axis angle 0, e.g. with x-axis tilts).
    shape_zyx
        Shape of the whole tomogram.
    y_range
        Tomogram rows ``[j0, j1)`` to reconstruct.
    offset_xyz_px
        Specimen position of the tomogram's centre voxel.
    z_chunk
        Sections sampled at once (bounds the memory of the sampling grid).

    Returns
    -------
    torch.Tensor
        ``(nz, j1 − j0, nx)`` float32 slab.
    """
    m, rr, w = rows.shape
    nz = int(shape_zyx[0])
    device = rows.device
    mats = matrices.to(torch.float32).to(device)
    out = torch.zeros((nz, y_range[1] - y_range[0], int(shape_zyx[2])), dtype=torch.float32, device=device)
    # One zero row above and below the held rows: voxels that project off them sample zeros, and grid_sample
    # always has at least two rows to interpolate between.
    images = torch.nn.functional.pad(rows.to(torch.float32), (0, 0, 1, 1))[:, None]  # (m, 1, rr + 2, W)
    for z0 in range(0, nz, z_chunk):
        z1 = min(nz, z0 + z_chunk)
        points = _voxel_points(shape_zyx, y_range, offset_xyz_px, z_range=(z0, z1), device=device)
        for v in range(m):
            image_xy = points @ mats[v, :2, :3].T + mats[v, :2, 3]
            col = image_xy[..., 0] + w // 2
            row = image_xy[..., 1] + image_height // 2 - row_start + 1
            grid = torch.stack([2.0 * col / (w - 1) - 1.0, 2.0 * row / (rr + 1) - 1.0], dim=-1)
            sampled = torch.nn.functional.grid_sample(
                images[v : v + 1],
                grid.reshape(1, -1, grid.shape[-2], 2),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )
            out[z0:z1] += sampled.reshape(z1 - z0, out.shape[1], out.shape[2])
    return out
