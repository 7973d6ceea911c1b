"""Patch-based local motion correction of movies, as MotionCor2's local (patch) alignment.

After whole-frame alignment (:func:`tomoforge.motion.estimate_global_motion`) the globally corrected frames are cut
into a grid of overlapping patches; every patch stack is aligned with the same iterative scheme (each frame against
the sum of the others), and the residual patch shifts are fitted by a displacement model that is smooth in space
and time. MotionCor2's model is used: for each axis

``l(x, y, t) = Σ_{j=1..3} t^j · (a_j0 + a_j1 x + a_j2 x² + a_j3 y + a_j4 y² + a_j5 x y)``

(18 coefficients per axis, zero at frame 0 by construction), least-squares fitted to all patch shifts. Here ``x``,
``y`` are normalised image coordinates ``(x − w//2) / (w/2)`` and ``t = frame / (n − 1)``; the time degree drops to
``n − 1`` for movies of fewer than four frames and spatial terms along an axis with fewer than 3 (2) patches are
left out. Displacements follow CONVENTIONS.md §8 (specimen displacement relative to frame 0, input pixels); the
total displacement of a point is the global shift plus the local model.

References
----------
Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tomoforge.fourier import fourier_shift_2d
from tomoforge.motion.global_align import apply_motion, estimate_global_motion

__all__ = ["LocalMotion", "apply_local_motion", "estimate_local_motion", "patch_grid"]


def patch_grid(
    shape_yx: tuple[int, int], patches_xy: tuple[int, int], patch_overlap: float
) -> tuple[tuple[int, int], torch.Tensor]:
    """Patch size and patch centres of a regular grid of overlapping patches covering a frame.

    Along an axis of length ``L`` with ``p`` patches overlapping by a fraction ``o`` of their size, the patch size
    is ``L / (p − (p − 1) o)`` rounded down to even; the first patch starts at 0, the last ends at ``L``.

    Returns
    -------
    tuple
        ``(size_yx, centres_xy_px)``: patch size ``(h_p, w_p)`` and ``(p_y · p_x, 2)`` integer-valued centres
        ``(x, y)`` (index ``size // 2`` of each patch) in pixels, x fastest, float64 on the CPU.
    """
    if not 0.0 <= patch_overlap < 1.0:
        raise ValueError(f"patch_overlap must be in [0, 1), not {patch_overlap}")
    sizes, starts = [], []
    for length, count in zip(shape_yx, (patches_xy[1], patches_xy[0]), strict=True):
        if count < 1:
            raise ValueError(f"patches_xy must be positive, not {patches_xy}")
        size = int(length / (count - (count - 1) * patch_overlap)) // 2 * 2
        if size < 16:
            raise ValueError(f"patches of {size} px along an axis of {length} px are too small")
        step = (length - size) / (count - 1) if count > 1 else 0.0
        sizes.append(size)
        starts.append([round(i * step) for i in range(count)])
    ys, xs = torch.meshgrid(
        torch.tensor(starts[0], dtype=torch.float64) + sizes[0] // 2,
        torch.tensor(starts[1], dtype=torch.float64) + sizes[1] // 2,
        indexing="ij",
    )
    return (sizes[0], sizes[1]), torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def _spatial_exponents(patches_xy: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """MotionCor2's quadratic terms ``x^a y^b``, without those the patch grid cannot determine."""
    px, py = patches_xy
    terms = [(0, 0), (1, 0), (2, 0), (0, 1), (0, 2), (1, 1)]
    return tuple((a, b) for a, b in terms if a < px and b < py)


@dataclass(frozen=True)
class LocalMotion:
    """Result of :func:`estimate_local_motion`: patch measurements and the smooth local displacement model.

    Attributes
    ----------
    shape_yx
        Frame shape ``(h, w)`` the model refers to.
    centres_xy_px
        ``(p, 2)`` patch centres ``(x, y)`` in pixels.
    patch_shifts_xy_px
        ``(p, n, 2)`` measured *residual* (local) displacement of every patch after global correction, relative to
        frame 0, in pixels.
    global_shifts_xy_px
        ``(n, 2)`` whole-frame displacements the local model is added to.
    coefficients
        ``(n_space, n_time, 2)`` model coefficients in pixels, for the spatial terms ``spatial_exponents`` of the
        normalised coordinates and the time powers ``t^1 … t^n_time`` of ``t = frame / (n − 1)``.
    spatial_exponents
        ``(a, b)`` of every spatial term ``x^a y^b``.
    """

    shape_yx: tuple[int, int]
    centres_xy_px: torch.Tensor
    patch_shifts_xy_px: torch.Tensor
    global_shifts_xy_px: torch.Tensor
    coefficients: torch.Tensor
    spatial_exponents: tuple[tuple[int, int], ...]

    def local_shifts_at(self, x_px: torch.Tensor | float, y_px: torch.Tensor | float) -> torch.Tensor:
        """``(..., n, 2)`` local (model) displacement at pixel positions ``x_px``, ``y_px`` of shape ``(...)``."""
        coeff = self.coefficients
        x = torch.as_tensor(x_px, dtype=coeff.dtype, device=coeff.device)
        y = torch.as_tensor(y_px, dtype=coeff.dtype, device=coeff.device)
        space = _space_basis(x, y, self.shape_yx, self.spatial_exponents)  # (..., n_space)
        n = self.global_shifts_xy_px.shape[0]
        time = _time_basis(n, coeff.shape[1], dtype=coeff.dtype, device=coeff.device)  # (n, n_time)
        return torch.einsum("...s,nt,std->...nd", space, time, coeff)

    def shifts_at(self, x_px: torch.Tensor | float, y_px: torch.Tensor | float) -> torch.Tensor:
        """``(..., n, 2)`` total (global + local) specimen displacement of pixel positions, relative to frame 0."""
        local = self.local_shifts_at(x_px, y_px)
        return local + self.global_shifts_xy_px.to(dtype=local.dtype, device=local.device)


def _space_basis(
    x_px: torch.Tensor, y_px: torch.Tensor, shape_yx: tuple[int, int], exponents: tuple[tuple[int, int], ...]
) -> torch.Tensor:
    h, w = shape_yx
    x, y = torch.broadcast_tensors((x_px - w // 2) / (w / 2), (y_px - h // 2) / (h / 2))
    return torch.stack([x**a * y**b for a, b in exponents], dim=-1)


def _time_basis(n: int, degree: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.arange(n, dtype=dtype, device=device) / max(n - 1, 1)
    return torch.stack([t**j for j in range(1, degree + 1)], dim=-1)


def _edge_taper(
    size_yx: tuple[int, int], width_px: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Raised-cosine edge mask (1 inside, → 0 over ``width_px`` at the borders) against wrap-around edges."""
    masks = []
    for length in size_yx:
        r = torch.arange(length, dtype=dtype, device=device)
        d = torch.minimum(r + 0.5, length - 0.5 - r).clamp(max=width_px) / width_px
        masks.append(0.5 - 0.5 * torch.cos(math.pi * d))
    return masks[0][:, None] * masks[1][None, :]


def estimate_local_motion(
    frames: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    global_shifts_xy_px: torch.Tensor,
    patches_xy: tuple[int, int] = (5, 5),
    patch_overlap: float = 0.5,
    b_factor_angstrom2: float = 150.0,
    max_iterations: int = 10,
    tolerance_px: float = 0.01,
    max_shift_px: float = 10.0,
) -> LocalMotion:
    """Local (patch) motion of one movie on top of its whole-frame motion, fitted by a smooth model.

    Parameters
    ----------
    frames
        ``(n, h, w)`` frames of one movie.
    pixel_size_angstrom
        Pixel size in Å (scales the B-factor).
    global_shifts_xy_px
        ``(n, 2)`` whole-frame displacements (:func:`estimate_global_motion`); frames are corrected by them
        (Fourier shift) before patches are cut.
    patches_xy
        Number of patches along x and y (MotionCor2 ``-Patch``).
    patch_overlap
        Fraction of a patch's size shared with its neighbour (MotionCor2 ``-PatchOverlap`` / 100).
    b_factor_angstrom2
        B-factor of the patch alignment filter in Å² (MotionCor2 uses 150 for patches).
    max_iterations, tolerance_px
        Iteration control of the patch alignment, as in :func:`estimate_global_motion`.
    max_shift_px
        Largest residual shift searched in a patch, in pixels (capped below half a patch).

    Returns
    -------
    LocalMotion
        Patch centres, measured residual patch shifts and the least-squares model (float64, on the frames' device).

    Notes
    -----
    Patches are mean-subtracted and tapered by a raised-cosine edge (⅛ of the patch) so that the periodic FFT
    correlation does not lock onto the crop borders, which do not move with the specimen. All patches are aligned
    as one batch. The model is fitted to the patch shifts of frames ``1 … n − 1`` (frame 0 is 0 by definition).

    References
    ----------
    Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
    microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193
    """
    if frames.dim() != 3:
        raise ValueError(f"frames must have shape (n, h, w), got {tuple(frames.shape)}")
    real = frames if frames.is_floating_point() else frames.to(torch.float32)
    n, h, w = real.shape
    if global_shifts_xy_px.shape != (n, 2):
        raise ValueError(
            f"global_shifts_xy_px must have shape ({n}, 2), got {tuple(global_shifts_xy_px.shape)}"
        )
    (ph, pw), centres = patch_grid((h, w), patches_xy, patch_overlap)
    centres = centres.to(real.device)
    corrected = fourier_shift_2d(real, -global_shifts_xy_px.to(device=real.device, dtype=real.dtype))
    x0 = (centres[:, 0] - pw // 2).long().tolist()
    y0 = (centres[:, 1] - ph // 2).long().tolist()
    crops = torch.stack([corrected[:, y : y + ph, x : x + pw] for x, y in zip(x0, y0, strict=True)])
    crops = crops - crops.mean(dim=(-2, -1), keepdim=True)
    crops = crops * _edge_taper((ph, pw), max(min(ph, pw) // 8, 1), dtype=real.dtype, device=real.device)
    patch_shifts = estimate_global_motion(
        crops,
        pixel_size_angstrom=pixel_size_angstrom,
        b_factor_angstrom2=b_factor_angstrom2,
        max_iterations=max_iterations,
        tolerance_px=tolerance_px,
        max_shift_px=min(max_shift_px, min(ph, pw) / 2 - 2),
    ).to(torch.float64)  # (p, n, 2)
    exponents = _spatial_exponents(patches_xy)
    degree = min(3, n - 1)
    space = _space_basis(centres[:, 0], centres[:, 1], (h, w), exponents)  # (p, n_space)
    if n < 2:
        coefficients = space.new_zeros((len(exponents), 0, 2))
    else:
        time = _time_basis(n, degree, dtype=torch.float64, device=real.device)[1:]  # (n − 1, n_time)
        design = torch.einsum("ps,nt->pnst", space, time).reshape(-1, len(exponents) * degree)
        target = patch_shifts[:, 1:, :].reshape(-1, 2)
        solution = torch.linalg.lstsq(design, target).solution  # (n_space · n_time, 2)
        coefficients = solution.reshape(len(exponents), degree, 2)
    return LocalMotion(
        shape_yx=(h, w),
        centres_xy_px=centres,
        patch_shifts_xy_px=patch_shifts,
        global_shifts_xy_px=global_shifts_xy_px.to(device=real.device, dtype=torch.float64),
        coefficients=coefficients,
        spatial_exponents=exponents,
    )


def apply_local_motion(
    frames: torch.Tensor,
    global_shifts_xy_px: torch.Tensor,
    local: LocalMotion,
    *,
    dose_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Motion-corrected sum with a smooth per-pixel displacement field (global shift + local model).

    Every frame is first shifted by ``−g(t)`` in Fourier space (exact), then resampled bicubically
    (:func:`torch.nn.functional.grid_sample`, border padding) at ``x + l(x, t)``: the corrected frame is
    ``F_t(x + g(t) + l(x, t)) = F_t(x + s(x, t))``, the pixel where the specimen point imaged at ``x`` in frame 0
    sits in frame ``t``. The model is a low-order polynomial, so it is evaluated exactly at every pixel instead of
    being interpolated from a coarse grid.

    Parameters
    ----------
    frames
        ``(n, h, w)`` frames.
    global_shifts_xy_px
        ``(n, 2)`` whole-frame displacements in pixels.
    local
        Local model of the same movie (:func:`estimate_local_motion`).
    dose_weights
        Optional ``(n, h, w // 2 + 1)`` Fourier weights per frame, applied as in :func:`apply_motion`.

    Returns
    -------
    torch.Tensor
        ``(h, w)`` summed image, real dtype of the frames, on their device.
    """
    if frames.dim() != 3:
        raise ValueError(f"frames must have shape (n, h, w), got {tuple(frames.shape)}")
    real = frames if frames.is_floating_point() else frames.to(torch.float32)
    n, h, w = real.shape
    if local.shape_yx != (h, w) or local.global_shifts_xy_px.shape[0] != n:
        raise ValueError("local motion was estimated for a movie of another shape")
    corrected = fourier_shift_2d(real, -global_shifts_xy_px.to(device=real.device, dtype=real.dtype))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=real.device),
        torch.arange(w, dtype=torch.float64, device=real.device),
        indexing="ij",
    )
    field = local.local_shifts_at(xs, ys)  # (h, w, n, 2)
    sample_x = xs[..., None] + field[..., 0]
    sample_y = ys[..., None] + field[..., 1]
    # align_corners=True: normalised −1 and 1 are the centres of the first and last pixels.
    grid = torch.stack([2.0 * sample_x / (w - 1) - 1.0, 2.0 * sample_y / (h - 1) - 1.0], dim=-1)
    grid = grid.permute(2, 0, 1, 3).to(real.dtype)  # (n, h, w, 2)
    warped = F.grid_sample(
        corrected[:, None], grid, mode="bicubic", padding_mode="border", align_corners=True
    )[:, 0]
    return apply_motion(warped, warped.new_zeros((n, 2)), dose_weights=dose_weights)
