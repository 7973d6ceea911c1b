"""Sub-pixel location of the maximum of cross-correlation maps."""

from __future__ import annotations

import torch

__all__ = ["find_peak_2d"]


def _parabola_offset(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through ``(−1, minus), (0, centre), (1, plus)``, clamped to ``[−½, ½]``."""
    curvature = minus - 2.0 * centre + plus
    safe = torch.where(curvature < 0, curvature, -torch.ones_like(curvature))
    offset = torch.where(curvature < 0, 0.5 * (minus - plus) / safe, torch.zeros_like(curvature))
    return offset.clamp(-0.5, 0.5)


def find_peak_2d(cc: torch.Tensor, *, max_shift_px: float | None = None) -> torch.Tensor:
    """Position of the maximum of unshifted (DC-at-0) cross-correlation maps, refined to sub-pixel precision.

    The integer maximum is searched within ``max_shift_px`` of the origin (periodic: index ``h − 1`` is ``−1``);
    the 3×3 neighbourhood around it is fitted by a 2D quadratic ``a + b x + c y + d x² + e xy + f y²`` (least
    squares) whose vertex is the sub-pixel peak. Where that fit is not a maximum or its vertex leaves the
    neighbourhood, separable 1D parabolas through the peak row and column are used instead.

    Parameters
    ----------
    cc
        ``(..., h, w)`` real correlation maps, zero lag at index ``(0, 0)``.
    max_shift_px
        Largest lag searched along each axis, in pixels of ``cc`` (default: the whole map).

    Returns
    -------
    torch.Tensor
        ``(..., 2)`` peak lags ``(x, y)`` in pixels, in ``(−w/2, w/2]`` × ``(−h/2, h/2]``, dtype of ``cc``.

    References
    ----------
    Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
    microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193
    """
    h, w = cc.shape[-2:]
    dtype, device = cc.dtype, cc.device
    lag_y = torch.fft.fftfreq(h, d=1.0 / h, device=device, dtype=dtype)
    lag_x = torch.fft.fftfreq(w, d=1.0 / w, device=device, dtype=dtype)
    if max_shift_px is not None:
        inside = (lag_y.abs() <= max_shift_px)[:, None] & (lag_x.abs() <= max_shift_px)[None, :]
        searched = torch.where(inside, cc, torch.full_like(cc, float("-inf")))
    else:
        searched = cc
    flat = searched.flatten(-2).argmax(dim=-1)
    iy, ix = flat // w, flat % w
    # 3×3 neighbourhood, periodic, values n[..., dy + 1, dx + 1].
    d = torch.arange(-1, 2, device=device)
    rows = (iy[..., None] + d) % h  # (..., 3)
    cols = (ix[..., None] + d) % w
    batch = cc.shape[:-2]
    flat_cc = cc.reshape(-1, h * w)
    index = (rows.reshape(-1, 3, 1) * w + cols.reshape(-1, 1, 3)).reshape(-1, 9)
    n = torch.gather(flat_cc, 1, index).reshape(*batch, 3, 3)
    n = n - n[..., 1:2, 1:2]  # conditioning: centre value 0
    # Least-squares quadratic over the 3×3 grid (closed form for the symmetric design).
    xs = d.to(dtype)[None, :].expand(3, 3)
    ys = d.to(dtype)[:, None].expand(3, 3)
    gx = (n * xs).sum(dim=(-2, -1)) / 6.0
    gy = (n * ys).sum(dim=(-2, -1)) / 6.0
    hxy = (n * xs * ys).sum(dim=(-2, -1)) / 4.0
    row_sums = n.sum(dim=-2)  # over y, per x
    col_sums = n.sum(dim=-1)  # over x, per y
    # x² and y² coefficients: projections on the orthogonal x² − ⅔ and y² − ⅔ (norm² 2 over the grid).
    hxx = (row_sums[..., 0] + row_sums[..., 2]) / 6.0 - row_sums[..., 1] / 3.0
    hyy = (col_sums[..., 0] + col_sums[..., 2]) / 6.0 - col_sums[..., 1] / 3.0
    # Model a + gx x + gy y + hxx x² + hxy xy + hyy y²: vertex solves [[2hxx, hxy], [hxy, 2hyy]] v = −g.
    det = 4.0 * hxx * hyy - hxy * hxy
    is_max = (hxx < 0) & (det > 0)
    safe_det = torch.where(is_max, det, torch.ones_like(det))
    vx = (-2.0 * hyy * gx + hxy * gy) / safe_det
    vy = (-2.0 * hxx * gy + hxy * gx) / safe_det
    ok = is_max & (vx.abs() <= 1.0) & (vy.abs() <= 1.0)
    fx = _parabola_offset(n[..., 1, 0], n[..., 1, 1], n[..., 1, 2])
    fy = _parabola_offset(n[..., 0, 1], n[..., 1, 1], n[..., 2, 1])
    off_x = torch.where(ok, vx, fx)
    off_y = torch.where(ok, vy, fy)
    return torch.stack([lag_x[ix] + off_x, lag_y[iy] + off_y], dim=-1)
