"""Patch-based local motion correction of movies, as MotionCor2's local (patch) alignment.

After whole-frame alignment (:func:`tomoforge.motion.estimate_global_motion`) the globally corrected frames are cut
into a grid of overlapping patches; every patch stack is aligned with the same iterative scheme (each frame against
the sum of the others), and the residual patch shifts are fitted by a displacement model that is smooth in space
and time. MotionCor2's model is used: for each axis

``l(x, y, t) = Σ_{j=1..3} t^j · (a_j0 + a_j1 x + a_j2 x² + a_j3 y + a_j4 y² + a_j5 x y)``

(18 coefficients per axis, zero at frame 0 by construction), least-squares fitted to all patch shifts. Here ``x``,
``y`` are normalised image coordinates ``(x − w//2) / (w/2)`` and ``t = frame / (n − 1)``. Displacements follow
CONVENTIONS.md §8 (specimen displacement relative to frame 0, input pixels); the total displacement of a point is
the global shift plus the local model.

Low-dose tilt movies carry little signal per patch, and the full model then fits the noise of the patch shifts (a
2×2 grid is even interpolated exactly). The model is therefore *chosen by leave-one-patch-out cross-validation*
among nested sub-models — spatial terms {1}, {1, x, y}, {1, x, y, xy} or all six, times ``t … t^d`` with ``d ≤ 3``
— and among "no local motion": each candidate is fitted without one patch (and without the patches that share
pixels with it, whose errors are correlated with its own) and scored on how well it predicts that patch's measured
trajectory. The winner must predict held-out patches better than zero local motion by a margin (``min_cv_gain``)
and on more patches than chance allows (a sign test), otherwise the local model is zero and the correction equals
the global one. Patches whose trajectories disagree grossly with the fitted model (a wrong correlation peak on an
empty or contaminated patch) are dropped and the selection repeated, in the spirit of MotionCor2's patch outlier
rejection.

References
----------
Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tomoforge.fourier import edge_taper, fourier_shift_2d
from tomoforge.motion.global_align import apply_motion, estimate_global_motion, motion_sum

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


_SPATIAL_CANDIDATES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 0),),
    ((0, 0), (1, 0), (0, 1)),
    ((0, 0), (1, 0), (0, 1), (1, 1)),
    ((0, 0), (1, 0), (2, 0), (0, 1), (0, 2), (1, 1)),
)


def _candidate_models(
    patches_xy: tuple[int, int], n_patches: int, n_frames: int
) -> list[tuple[tuple[tuple[int, int], ...], int]]:
    """Nested ``(spatial exponents, time degree)`` models the patch grid can determine with a patch to spare."""
    px, py = patches_xy
    spaces: list[tuple[tuple[int, int], ...]] = []
    for terms in _SPATIAL_CANDIDATES:
        kept = tuple((a, b) for a, b in terms if a < px and b < py)
        if kept not in spaces and len(kept) <= n_patches - 2:
            spaces.append(kept)
    return [(space, degree) for space in spaces for degree in range(1, min(3, n_frames - 1) + 1)]


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
        ``(a, b)`` of every spatial term ``x^a y^b`` of the chosen model.
    significant
        Whether a local model predicted held-out patches better than zero local motion by the required margin;
        if not, ``coefficients`` are zero and the correction equals the global one.
    cv_error_px2
        Leave-one-patch-out prediction error (mean squared, px², per patch and frame) of the chosen model.
    null_cv_error_px2
        The same for zero local motion (the mean squared residual patch displacement).
    inliers
        ``(p,)`` bool, patches the model was fitted to (False: rejected as outliers).
    """

    shape_yx: tuple[int, int]
    centres_xy_px: torch.Tensor
    patch_shifts_xy_px: torch.Tensor
    global_shifts_xy_px: torch.Tensor
    coefficients: torch.Tensor
    spatial_exponents: tuple[tuple[int, int], ...]
    significant: bool
    cv_error_px2: float
    null_cv_error_px2: float
    inliers: torch.Tensor

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


def _design(space: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """Design rows ``(p, n − 1, n_space · n_time)``: products of ``(p, n_space)`` space and ``(n − 1, n_time)`` time terms."""
    return torch.einsum("ps,nt->pnst", space, time).flatten(-2)


def _fit(design: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients ``(k, 2)`` for ``(p, m, k)`` design rows and ``(p, m, 2)`` targets."""
    return torch.linalg.lstsq(design.reshape(-1, design.shape[-1]), target.reshape(-1, 2)).solution


def _cv_errors(design: torch.Tensor, target: torch.Tensor, overlapping: torch.Tensor) -> torch.Tensor:
    """``(p,)`` held-out squared prediction error of every patch (summed over frames and axes).

    Patch ``q`` is predicted by the model fitted without it and without every patch that shares pixels with it
    (``overlapping[q]``): overlapping patches see the same shot noise, so their shift errors are correlated and
    would make the model look better than it is. A patch too few others remain for is scored as unpredicted
    (its error is that of zero local motion).
    """
    p, k = design.shape[0], design.shape[-1]
    errors = design.new_empty(p)
    for held_out in range(p):
        keep = ~overlapping[held_out]
        if int(keep.sum()) <= k // 2 or int(keep.sum()) * target.shape[1] < k + 1:
            errors[held_out] = target[held_out].square().sum()
            continue
        coeff = _fit(design[keep], target[keep])
        errors[held_out] = (design[held_out] @ coeff - target[held_out]).square().sum()
    return errors


def _binomial_tail(k: int, n: int) -> float:
    """``P(X ≥ k)`` for ``X ~ Binomial(n, 1/2)``."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


def _select_model(
    space_all: torch.Tensor,
    exponents_all: tuple[tuple[int, int], ...],
    time_all: torch.Tensor,
    target: torch.Tensor,
    candidates: list[tuple[tuple[tuple[int, int], ...], int]],
    overlapping: torch.Tensor,
) -> tuple[tuple[tuple[int, int], ...], int, torch.Tensor]:
    """Candidate with the least total held-out error: ``(exponents, degree, per-patch errors)``."""
    best: tuple[tuple[tuple[int, int], ...], int, torch.Tensor] | None = None
    for exponents, degree in candidates:
        columns = [exponents_all.index(e) for e in exponents]
        errors = _cv_errors(_design(space_all[:, columns], time_all[:, :degree]), target, overlapping)
        if best is None or float(errors.sum()) < float(best[2].sum()):
            best = (exponents, degree, errors)
    if best is None:
        raise ValueError("no local motion model can be determined from so few patches")
    return best


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
    min_cv_gain: float = 0.1,
    significance: float = 0.05,
    outlier_factor: float = 4.0,
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
        Number of patches along x and y (MotionCor2 ``-Patch``); at least 3 patches in all.
    patch_overlap
        Fraction of a patch's size shared with its neighbour (MotionCor2 ``-PatchOverlap`` / 100).
    b_factor_angstrom2
        B-factor of the patch alignment filter in Å² (MotionCor2 uses 150 for patches).
    max_iterations, tolerance_px
        Iteration control of the patch alignment, as in :func:`estimate_global_motion`.
    max_shift_px
        Largest residual shift searched in a patch, in pixels (capped below half a patch).
    min_cv_gain
        Fraction by which the chosen model's leave-one-patch-out prediction error must undercut that of zero
        local motion for the model to be used (0.1: 10 % better).
    significance
        Level of the sign test the model must also pass: it must predict more of the held-out patches better
        than zero local motion than a coin would (rejected patches count as not predicted), at this
        false-positive rate.
    outlier_factor
        A patch whose RMS deviation from the fitted model exceeds this many times the median patch deviation
        (and 1 px) is rejected and the model chosen again without it.

    Returns
    -------
    LocalMotion
        Patch centres, measured residual patch shifts and the chosen least-squares model (float64, on the
        frames' device); zero coefficients and ``significant=False`` when no model beats zero local motion.

    Notes
    -----
    Patches are mean-subtracted and tapered by a raised-cosine edge (⅛ of the patch) so that the periodic FFT
    correlation does not lock onto the crop borders, which do not move with the specimen. All patches are aligned
    as one batch. Models are fitted to the patch shifts of frames ``1 … n − 1`` (frame 0 is 0 by definition).
    Cross-validation leaves out whole patches, so the correlated errors of one patch's trajectory cannot make a
    model look better than it is.

    References
    ----------
    Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
    microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193

    Stone, M. (1974). Cross-validatory choice and assessment of statistical predictions. J. R. Stat. Soc. B 36,
    111–147. doi:10.1111/j.2517-6161.1974.tb00994.x
    """
    if frames.dim() != 3:
        raise ValueError(f"frames must have shape (n, h, w), got {tuple(frames.shape)}")
    if not 0.0 <= min_cv_gain < 1.0:
        raise ValueError(f"min_cv_gain must be in [0, 1), not {min_cv_gain}")
    real = frames if frames.is_floating_point() else frames.to(torch.float32)
    n, h, w = real.shape
    if global_shifts_xy_px.shape != (n, 2):
        raise ValueError(
            f"global_shifts_xy_px must have shape ({n}, 2), got {tuple(global_shifts_xy_px.shape)}"
        )
    if patches_xy[0] * patches_xy[1] < 3:
        raise ValueError(f"local motion needs at least 3 patches, not {patches_xy[0]}×{patches_xy[1]}")
    (ph, pw), centres = patch_grid((h, w), patches_xy, patch_overlap)
    centres = centres.to(real.device)
    p = centres.shape[0]
    x0 = (centres[:, 0] - pw // 2).long().tolist()
    y0 = (centres[:, 1] - ph // 2).long().tolist()
    # Globally corrected patches, one frame at a time (no second copy of the whole movie).
    shifts = global_shifts_xy_px.to(device=real.device, dtype=real.dtype)
    crops = real.new_empty((p, n, ph, pw))
    for t in range(n):
        corrected = fourier_shift_2d(real[t], -shifts[t])
        for i, (x, y) in enumerate(zip(x0, y0, strict=True)):
            crops[i, t] = corrected[y : y + ph, x : x + pw]
    crops = crops - crops.mean(dim=(-2, -1), keepdim=True)
    crops = crops * edge_taper((ph, pw), max(min(ph, pw) // 8, 1), dtype=real.dtype, device=real.device)
    patch_shifts = estimate_global_motion(
        crops,
        pixel_size_angstrom=pixel_size_angstrom,
        b_factor_angstrom2=b_factor_angstrom2,
        max_iterations=max_iterations,
        tolerance_px=tolerance_px,
        max_shift_px=min(max_shift_px, min(ph, pw) / 2 - 2),
    ).to(torch.float64)  # (p, n, 2)
    inliers = torch.ones(p, dtype=torch.bool, device=real.device)

    def result(
        coefficients: torch.Tensor,
        exponents: tuple[tuple[int, int], ...],
        significant: bool,
        cv: float,
        null: float,
    ) -> LocalMotion:
        return LocalMotion(
            shape_yx=(h, w),
            centres_xy_px=centres,
            patch_shifts_xy_px=patch_shifts,
            global_shifts_xy_px=global_shifts_xy_px.to(device=real.device, dtype=torch.float64),
            coefficients=coefficients,
            spatial_exponents=exponents,
            significant=significant,
            cv_error_px2=cv,
            null_cv_error_px2=null,
            inliers=inliers,
        )

    zero_model = centres.new_zeros((1, 1, 2)), ((0, 0),)
    if n < 2:
        return result(*zero_model, False, 0.0, 0.0)
    # Patches that share pixels (each patch overlaps itself); left out together in cross-validation.
    gap = (centres[:, None, :] - centres[None, :, :]).abs()
    overlapping = (gap[..., 0] < pw) & (gap[..., 1] < ph)
    exponents_all = _SPATIAL_CANDIDATES[-1]
    space_all = _space_basis(centres[:, 0], centres[:, 1], (h, w), exponents_all)  # (p, 6)
    time_all = _time_basis(n, min(3, n - 1), dtype=torch.float64, device=real.device)[1:]  # (n − 1, d)
    target = patch_shifts[:, 1:, :]
    for attempt in range(2):  # choose and fit; then once more without the outlier patches, if any
        candidates = _candidate_models(patches_xy, int(inliers.sum()), n)
        if not candidates:
            break
        space_terms, degree, cv_errors = _select_model(
            space_all[inliers],
            exponents_all,
            time_all,
            target[inliers],
            candidates,
            overlapping[inliers][:, inliers],
        )
        columns = [exponents_all.index(e) for e in space_terms]
        design = _design(space_all[:, columns], time_all[:, :degree])
        coeff = _fit(design[inliers], target[inliers])
        deviation = (design @ coeff - target).square().sum(-1).mean(-1).sqrt()  # (p,) RMS px
        limit = max(outlier_factor * float(deviation[inliers].median()), 1.0)
        outliers = inliers & (deviation > limit)
        if attempt == 1 or not bool(outliers.any()):
            break
        inliers = inliers & ~outliers
    null_errors = target[inliers].square().sum(dim=(-2, -1))  # (kept,) per held-out patch
    null_error = float(null_errors.sum()) / target[inliers][..., 0].numel()
    if candidates:
        cv_error = float(cv_errors.sum()) / target[inliers][..., 0].numel()
        better = int((cv_errors < null_errors).sum())
        if cv_error < (1.0 - min_cv_gain) * null_error and _binomial_tail(better, p) < significance:
            return result(coeff.reshape(len(space_terms), degree, 2), space_terms, True, cv_error, null_error)
    return result(*zero_model, False, null_error, null_error)


def apply_local_motion(
    frames: torch.Tensor,
    global_shifts_xy_px: torch.Tensor,
    local: LocalMotion,
    *,
    binning: int = 1,
    dose_weights: torch.Tensor | None = None,
    frame_indices: Sequence[int] | None = None,
) -> torch.Tensor:
    """Motion-corrected sum with a smooth per-pixel displacement field (global shift + local model).

    Every frame is resampled bicubically (:func:`torch.nn.functional.grid_sample`, border padding) at
    ``x + g(t) + l(x, t)``: the corrected frame is ``F_t(x + s(x, t))``, the pixel where the specimen point imaged
    at ``x`` in frame 0 sits in frame ``t``. The model is a low-order polynomial, so it is evaluated exactly at
    every pixel instead of being interpolated from a coarse grid. Frames are warped one at a time, so the extra
    memory is one frame's sampling grid. Without a significant local model this is :func:`apply_motion` (exact
    Fourier shifts).

    Parameters
    ----------
    frames
        ``(n, h, w)`` frames: the movie the model was fitted to, or the subset ``frame_indices`` of it.
    global_shifts_xy_px
        ``(n_model, 2)`` whole-frame displacements in pixels of all frames of the fitted movie.
    local
        Local model of the same movie (:func:`estimate_local_motion`).
    frame_indices
        Which frames of the fitted movie ``frames`` holds (e.g. a sum range or the even frames); None: all.
    binning
        Fourier-cropping factor of the output, as in :func:`apply_motion`.
    dose_weights
        Optional ``(n, h', w' // 2 + 1)`` Fourier weights per frame on the output grid, as in
        :func:`apply_motion`.

    Returns
    -------
    torch.Tensor
        ``(h / binning, w / binning)`` summed image, real dtype of the frames, on their device.
    """
    if frames.dim() != 3:
        raise ValueError(f"frames must have shape (n, h, w), got {tuple(frames.shape)}")
    real = frames if frames.is_floating_point() else frames.to(torch.float32)
    n, h, w = real.shape
    n_model = local.global_shifts_xy_px.shape[0]
    indices = list(range(n_model)) if frame_indices is None else [int(i) for i in frame_indices]
    if local.shape_yx != (h, w) or global_shifts_xy_px.shape != (n_model, 2):
        raise ValueError("local motion was estimated for a movie of another shape")
    if len(indices) != n or any(not 0 <= i < n_model for i in indices):
        raise ValueError(f"frame_indices must name the {n} given frames among the model's {n_model}")
    shifts = global_shifts_xy_px.to(device=real.device, dtype=torch.float64)[indices]
    if not local.significant:
        return apply_motion(real, shifts, binning=binning, dose_weights=dose_weights)
    ys = torch.arange(h, dtype=torch.float64, device=real.device)[:, None]
    xs = torch.arange(w, dtype=torch.float64, device=real.device)[None, :]
    space = _space_basis(xs, ys, (h, w), local.spatial_exponents)  # (h, w, n_space)
    time = _time_basis(n_model, local.coefficients.shape[1], dtype=torch.float64, device=real.device)[indices]
    per_frame = torch.einsum("nt,std->nsd", time, local.coefficients.to(real.device))  # (n, n_space, 2)

    def warped(t: int) -> torch.Tensor:
        field = (space.to(real.dtype) @ per_frame[t].to(real.dtype)).add_(shifts[t].to(real.dtype))
        # align_corners=True: normalised −1 and 1 are the centres of the first and last pixels.
        field[..., 0].add_(xs.to(real.dtype)).mul_(2.0 / (w - 1)).sub_(1.0)
        field[..., 1].add_(ys.to(real.dtype)).mul_(2.0 / (h - 1)).sub_(1.0)
        return F.grid_sample(
            real[t][None, None], field[None], mode="bicubic", padding_mode="border", align_corners=True
        )[0, 0]

    return motion_sum(warped, n, (h, w), binning=binning, dose_weights=dose_weights, like=real)
