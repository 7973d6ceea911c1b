"""Local alignment of particles against a reference: projections of a map by Fourier slicing, and the search of
rotations and 3D shifts that best explains a particle's views in the tilt images.

A particle seen in tilt ``v`` (projection rotation ``M_v``, CONVENTIONS.md §7) with rotation ``R`` (reference →
tomogram, §4) shows the reference rotated by ``M_v·R``; by the Fourier-slice theorem the view's transform is the
central slice of the reference's transform at ``(M_v·R)ᵀ·(k, 0)`` (:func:`project_slices`, the transpose of
:func:`tomoforge.averaging.insert_slices`: the same padded grid and trilinear interpolation, with the real-space
``sinc²`` pre-correction). A 3D shift ``t`` of the particle moves its projection in view ``v`` by ``(M_v·t)_xy``.

:func:`local_search` scores every candidate rotation (the current one turned by each of a set of small rotations)
and every 3D shift on a grid as ``Σ_v Σ_k Re[X_v(k)·conj(CTF_v(k)·P_v(k))·e^{2πi k·(M_v t)_xy}]`` over the
frequencies below a cut-off, normalised by the norm of ``CTF·P`` (the image's own norm is common to all
candidates): the cross-correlation RELION maximises in its local searches, without its probability weighting.
The per-view correlation maps come from one inverse FFT per view and candidate; the 3D shifts are read from them
bilinearly.

**Orientation priors** (RELION's ``--sigma_tilt`` / ``--sigma_psi``). A candidate ``R`` is compared with a prior
rotation ``R₀`` (the particle's starting pose) through ``Δ = R₀ᵀ·R``, split as ``Δ = S·Rz(ψ)`` into a *twist*
``Rz(ψ)`` about the reference's z axis followed by a *swing* ``S`` about an axis in the reference's xy plane
(:func:`prior_angles_deg`): the **tilt** is the swing's angle, the angle between the candidate's z axis ``R·ẑ`` and
the prior's ``R₀·ẑ`` (``atan2(√(Δ₀₂² + Δ₁₂²), Δ₂₂)``), and **psi** is the twist, the spin about the particle's own
axis (``atan2(Δ₁₀ − Δ₀₁, Δ₀₀ + Δ₁₁)``, the same whether the twist comes before or after the swing). For a reference
with an n-fold axis along z (Cn, Dn) ``R`` and ``R·Rz(360°/n)`` are the same particle, so psi is taken modulo
``360°/n``, in ``[−180°/n, 180°/n]`` (the two-fold flips of Dn, which turn the axis over, are not folded in: a local
search never comes near them).

To weigh a prior against the data the score is turned into a log-likelihood. With white Gaussian noise of variance
``ν`` per Fourier sample (unnormalised transform, full plane) and a model ``a·CTF·P`` of free amplitude ``a ≥ 0``,
the likelihood maximised over ``a`` is ``ln L = max(s, 0)² / (2ν) + const`` for the normalised correlation ``s``
above, and ``ν`` is the variance of ``s`` on noise alone (:func:`score_noise_variance` estimates it from a
particle's own views). :func:`local_search` then maximises ``ln L − ½(tilt/σ_tilt)² − ½(psi/σ_psi)²`` over the
candidates within ``3σ`` of the prior in tilt and in psi; candidates beyond are never chosen, as RELION samples no
orientation beyond three sigmas of its priors. Without a prior the candidates are ranked by ``s`` alone, which is
the same order.

References
----------
Scheres, S. H. W. (2012). RELION: implementation of a Bayesian approach to cryo-EM structure determination.
J. Struct. Biol. 180, 519–530. https://doi.org/10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.averaging.insert import _sample_half_grid
from tomoforge.fourier import fftfreq_grid, rfft_multiplicity, shift_phase_ramp_2d
from tomoforge.geometry.rotations import rotation_from_vector

__all__ = [
    "LocalResult",
    "local_rotations",
    "local_search",
    "masked_view_spectra",
    "prior_angles_deg",
    "project_slices",
    "reference_table",
    "score_noise_variance",
]


def reference_table(volume: torch.Tensor, pad_factor: int = 2) -> tuple[torch.Tensor, int]:
    """The reference's padded transform as the interpolation table of :func:`project_slices`.

    The ``(b, b, b)`` map (centre ``b // 2``) is divided by ``sinc²(x / P)`` per axis (so that trilinear
    interpolation of its transform gives the projections of the map itself), zero-padded to ``P = pad·b`` about
    its centre and transformed (``rfftn`` of the ``ifftshift``-ed grid, DC at index 0). Returns the flattened
    ``(P·P·(P//2+1), 3)`` table of rows ``(re, im, 1)`` and ``P``.
    """
    b = volume.shape[0]
    p = pad_factor * b
    x = (torch.arange(b, device=volume.device, dtype=volume.dtype) - b // 2) / p
    s2 = torch.sinc(x) ** 2
    corrected = volume / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
    padded = torch.zeros((p, p, p), dtype=volume.dtype, device=volume.device)
    start = p // 2 - b // 2
    padded[start : start + b, start : start + b, start : start + b] = corrected
    spectrum = torch.fft.rfftn(torch.fft.ifftshift(padded))
    table = torch.stack(
        [
            spectrum.real.flatten(),
            spectrum.imag.flatten(),
            torch.ones(spectrum.numel(), dtype=volume.dtype, device=volume.device),
        ],
        dim=1,
    )
    return table, p


def project_slices(table: torch.Tensor, p: int, views: torch.Tensor, box: int) -> torch.Tensor:
    """``(n, box, box // 2 + 1)`` complex rfft2 of the reference's projections along the views ``(n, 3, 3)``
    (reference → view frame), as images of ``box`` pixels centred at ``box // 2``."""
    freq = fftfreq_grid((box, box), device=table.device, dtype=table.dtype)  # (box, box//2+1, 2) as (ky, kx)
    k = torch.stack([freq[..., 1], freq[..., 0], torch.zeros_like(freq[..., 0])], dim=-1).reshape(-1, 3)
    coords = torch.einsum("nji,mj->nmi", views.to(table.dtype), k) * p  # (Mᵀ k) on the padded grid
    samples = _sample_half_grid(table, p, coords.reshape(-1, 3))
    values = torch.complex(samples[:, 0], samples[:, 1])
    return values.reshape(views.shape[0], box, box // 2 + 1)


def masked_view_spectra(
    boxes: torch.Tensor, shifts_xy_px: torch.Tensor, *, radius_px: float, edge_px: float
) -> torch.Tensor:
    """``(k, b, b // 2 + 1)`` rfft2 of particle boxes as :func:`local_search` takes them: each box (centre
    ``b // 2``) moved onto its centre by its sub-pixel shift, its background outside a circle of ``radius_px`` set
    to its mean, then faded to zero over a raised-cosine edge of ``edge_px`` (RELION's particle mask), and
    ``ifftshift``-ed so that a centred particle has zero phase."""
    b = boxes.shape[-1]
    real = torch.float64
    spectra = torch.fft.rfft2(torch.fft.ifftshift(boxes.to(real), dim=(-2, -1)))
    centred = torch.fft.irfft2(spectra * shift_phase_ramp_2d(shifts_xy_px.to(real), (b, b)), s=(b, b))
    circle = _particle_circle(b, radius_px, edge_px, real, boxes.device)
    outside = (centred * (1 - circle)).sum(dim=(-2, -1)) / (1 - circle).sum().clamp(min=1e-12)
    return torch.fft.rfft2((centred - outside[:, None, None]) * circle)


def _particle_circle(
    b: int, radius_px: float, edge_px: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``(b, b)`` the particle mask of :func:`masked_view_spectra` in the ``ifftshift``-ed layout (centre at 0)."""
    offsets = torch.fft.fftfreq(b, 1.0 / b, dtype=dtype, device=device)
    r = torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    fade = 0.5 * (1 + torch.cos(math.pi * (r - radius_px) / max(edge_px, 1e-6)))
    return torch.where(
        r <= radius_px, torch.ones_like(r), torch.where(r >= radius_px + edge_px, 0.0 * r, fade)
    )


def _band(b: int, max_frequency_per_pixel: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(b, b // 2 + 1)`` 1 on the rfft2 samples up to the cut-off, DC excluded (the mean says nothing about the
    pose), else 0."""
    freq = fftfreq_grid((b, b), device=device, dtype=dtype)
    band = (torch.linalg.vector_norm(freq, dim=-1) <= max_frequency_per_pixel).to(dtype)
    band[0, 0] = 0.0
    return band


def score_noise_variance(
    images: torch.Tensor, *, max_frequency_per_pixel: float, radius_px: float, edge_px: float
) -> float:
    """Variance ``ν`` of :func:`local_search`'s score on noise alone, estimated from a particle's own views.

    The views' power is taken as all noise (cryo-ET views have a signal-to-noise ratio far below one; the estimate
    is ``1 + SNR`` times too large, which errs on the side of the prior) and white within the band:
    ``ν`` is the mean ``|X(k)|²`` over the full plane's samples up to the cut-off (DC excluded), times ``b² / Σ w²``
    for the particle mask ``w`` (:func:`masked_view_spectra`), since masking keeps only ``Σ w² / b²`` of the noise
    power while the model, inside the mask, correlates with all of it.

    Parameters
    ----------
    images
        ``(v, b, b // 2 + 1)`` the particle's masked view spectra (:func:`masked_view_spectra`).
    max_frequency_per_pixel
        The search's cut-off, cycles/pixel.
    radius_px, edge_px
        The particle mask the views were masked with.

    Returns
    -------
    float
        ``ν``, in units of the score squared.
    """
    b = images.shape[-2]
    real = images.real.dtype
    weight = _band(b, max_frequency_per_pixel, real, images.device) * rfft_multiplicity(
        b, dtype=real, device=images.device
    )
    power = float((images.abs().square() * weight).sum()) / max(float(weight.sum()) * images.shape[0], 1e-30)
    circle = _particle_circle(b, radius_px, edge_px, real, images.device)
    return power * b * b / max(float(circle.square().sum()), 1e-30)


def prior_angles_deg(
    rotations: torch.Tensor, prior_rotation: torch.Tensor, *, symmetry_order: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tilt and psi of rotations away from a prior rotation (module docstring), degrees.

    Parameters
    ----------
    rotations
        ``(..., 3, 3)`` rotations (reference → tomogram).
    prior_rotation
        ``(3, 3)`` the prior's rotation ``R₀``.
    symmetry_order
        ``n`` of the reference's n-fold axis along z (Cn, Dn); psi is taken modulo ``360°/n``.

    Returns
    -------
    tilt_deg, psi_deg
        ``(...)`` each: the angle between ``R·ẑ`` and ``R₀·ẑ`` in ``[0°, 180°]``, and the twist about the particle's
        z axis in ``[−180°/n, 180°/n]``.
    """
    if symmetry_order < 1:
        raise ValueError(f"symmetry_order must be at least 1, got {symmetry_order}")
    delta = prior_rotation.to(rotations).transpose(-2, -1) @ rotations
    tilt = torch.rad2deg(torch.atan2(torch.hypot(delta[..., 0, 2], delta[..., 1, 2]), delta[..., 2, 2]))
    psi = torch.rad2deg(torch.atan2(delta[..., 1, 0] - delta[..., 0, 1], delta[..., 0, 0] + delta[..., 1, 1]))
    period = 360.0 / symmetry_order
    return tilt, psi - period * torch.round(psi / period)


def local_rotations(step_deg: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(27, 3, 3)`` small rotations: rotation vectors on the grid ``{−s, 0, s}³`` (the identity first)."""
    s = math.radians(step_deg)
    grid = torch.tensor([-s, 0.0, s], dtype=dtype)
    vectors = torch.cartesian_prod(grid, grid, grid)
    order = torch.argsort(torch.linalg.vector_norm(vectors, dim=1), stable=True)
    return rotation_from_vector(vectors[order])


class LocalResult(NamedTuple):
    """The best candidate of a local search."""

    rotation: torch.Tensor
    """``(3, 3)`` the particle's new rotation (reference → tomogram)."""
    shift_xyz_px: torch.Tensor
    """``(3,)`` the 3D shift of the particle found, pixels (add it to its position): the best whole-pixel shift
    refined to the sub-pixel by a parabola through its neighbours along each axis."""
    score: float
    """The normalised correlation of the chosen candidate (the best one, or with a prior the most probable)."""


def local_search(
    table: torch.Tensor,
    p: int,
    images: torch.Tensor,
    ctfs: torch.Tensor,
    view_rotations: torch.Tensor,
    rotation: torch.Tensor,
    candidates: torch.Tensor,
    *,
    max_shift_px: int,
    max_frequency_per_pixel: float,
    prior_rotation: torch.Tensor | None = None,
    sigma_tilt_deg: float | None = None,
    sigma_psi_deg: float | None = None,
    symmetry_order: int = 1,
    score_noise_variance: float | None = None,
) -> LocalResult:
    """Best rotation among ``rotation`` turned by each of ``candidates`` (``R_c = C·R``) and best 3D shift, by the
    score alone or, with a prior, by the score's log-likelihood plus the log-prior (module docstring).

    Parameters
    ----------
    table, p
        The reference (:func:`reference_table`).
    images
        ``(v, b, b // 2 + 1)`` complex rfft2 of the particle's views, centred on its current projection
        (``ifftshift``-ed boxes).
    ctfs
        ``(v, b, b // 2 + 1)`` their transfer functions (CTF × dose weight).
    view_rotations
        ``(v, 3, 3)`` the views' projection rotations ``M_v`` (tomogram → view frame).
    rotation
        ``(3, 3)`` the particle's current rotation.
    candidates
        ``(c, 3, 3)`` small rotations applied in the tomogram's frame (e.g. :func:`local_rotations`).
    max_shift_px
        3D shifts on the integer grid ``[−s, s]³`` are tried.
    max_frequency_per_pixel
        Frequencies beyond this (cycles/pixel) are left out (the reference's resolution).
    prior_rotation
        ``(3, 3)`` the prior's rotation ``R₀`` (e.g. the particle's starting pose); needed with a sigma.
    sigma_tilt_deg, sigma_psi_deg
        Standard deviations of the Gaussian priors on tilt and psi away from ``prior_rotation``, degrees; ``None``:
        no prior on that angle. Candidates beyond ``3σ`` are never chosen.
    symmetry_order
        ``n`` of the reference's n-fold axis along z; psi is compared modulo ``360°/n``.
    score_noise_variance
        ``ν``, the variance of the score on noise alone (:func:`score_noise_variance`); needed with a sigma.

    Raises
    ------
    ValueError
        For a sigma without ``prior_rotation`` or ``score_noise_variance``, or when no candidate lies within
        ``3σ`` of the prior (the current rotation should).
    """
    v, b = images.shape[0], images.shape[1]
    real = table.dtype
    band = _band(b, max_frequency_per_pixel, real, table.device)
    rotations = candidates.to(real) @ rotation.to(real)  # (c, 3, 3)
    views = view_rotations.to(real)[None] @ rotations[:, None]  # (c, v, 3, 3)
    projected = project_slices(table, p, views.reshape(-1, 3, 3), b).reshape(
        len(candidates), v, b, b // 2 + 1
    )
    model = projected * ctfs[None].to(real) * band
    hermitian = rfft_multiplicity(
        b, dtype=real, device=table.device
    )  # each rfft sample stands for itself and its mirror
    norm = (model.abs().square() * hermitian).sum(dim=(1, 2, 3)).sqrt().clamp(min=1e-30)  # (c,)
    maps = torch.fft.irfft2(images[None] * model.conj(), s=(b, b)) * (
        b * b
    )  # (c, v, b, b), shift s at index s
    grid = torch.arange(-max_shift_px, max_shift_px + 1, dtype=real, device=table.device)
    shifts = torch.cartesian_prod(grid, grid, grid)  # (t, 3) x, y, z
    moved = torch.einsum("vij,tj->vti", view_rotations.to(real)[:, :2, :], shifts)  # (v, t, 2) image shifts
    # Bilinear read of each view's map at its shifts (maps are periodic, index = shift mod b).
    x0, y0 = torch.floor(moved[..., 0]), torch.floor(moved[..., 1])
    fx, fy = moved[..., 0] - x0, moved[..., 1] - y0
    total = torch.zeros((len(candidates), shifts.shape[0]), dtype=real, device=table.device)
    view_index = torch.arange(v, device=table.device)[:, None].expand(v, shifts.shape[0])
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi = torch.remainder(y0.long() + dy, b)
            xi = torch.remainder(x0.long() + dx, b)
            total += (maps[:, view_index, yi, xi] * (wy * wx)[None]).sum(dim=1)
    score = total / norm[:, None]
    objective = _objective(
        score, rotations, prior_rotation, sigma_tilt_deg, sigma_psi_deg, symmetry_order, score_noise_variance
    )
    best = int(torch.argmax(objective))
    c, t = divmod(best, shifts.shape[0])
    # Sub-pixel shift: along each axis, the vertex of the parabola through the best score and its two neighbours.
    n = 2 * max_shift_px + 1
    cube = score[c].reshape(n, n, n)  # (x, y, z) order of cartesian_prod
    at = [int(v) + max_shift_px for v in shifts[t].tolist()]
    refined = shifts[t].clone()
    for axis in range(3):
        if 0 < at[axis] < n - 1:
            lower, upper = list(at), list(at)
            lower[axis] -= 1
            upper[axis] += 1
            left, centre, right = float(cube[tuple(lower)]), float(cube[tuple(at)]), float(cube[tuple(upper)])
            curvature = left - 2 * centre + right
            if curvature < 0:
                refined[axis] += max(-0.5, min(0.5, 0.5 * (left - right) / curvature))
    return LocalResult(rotations[c], refined, float(score.flatten()[best]))


def _objective(
    score: torch.Tensor,
    rotations: torch.Tensor,
    prior_rotation: torch.Tensor | None,
    sigma_tilt_deg: float | None,
    sigma_psi_deg: float | None,
    symmetry_order: int,
    score_noise_variance: float | None,
) -> torch.Tensor:
    """``(c, t)`` what :func:`local_search` maximises over candidates and shifts: the score ``(c, t)`` itself
    without a prior, else its log-likelihood plus the Gaussian log-prior of each candidate rotation, ``−inf``
    beyond ``3σ``."""
    sigmas = (sigma_tilt_deg, sigma_psi_deg)
    if all(sigma is None for sigma in sigmas):
        return score
    if any(sigma is not None and not sigma > 0 for sigma in sigmas):
        raise ValueError(f"prior sigmas must be positive, got tilt {sigma_tilt_deg}, psi {sigma_psi_deg}")
    if prior_rotation is None or score_noise_variance is None or not score_noise_variance > 0:
        raise ValueError("a prior needs prior_rotation and a positive score_noise_variance")
    angles = prior_angles_deg(rotations, prior_rotation, symmetry_order=symmetry_order)
    log_prior = torch.zeros(rotations.shape[0], dtype=rotations.dtype, device=rotations.device)
    allowed = torch.ones(rotations.shape[0], dtype=torch.bool, device=rotations.device)
    for angle, sigma in zip(angles, sigmas, strict=True):
        if sigma is not None:
            log_prior = log_prior - 0.5 * (angle / sigma) ** 2
            allowed &= angle.abs() <= 3 * sigma + 1e-9
    if not bool(allowed.any()):
        raise ValueError("no candidate rotation lies within 3 sigma of the prior")
    log_prior = torch.where(allowed, log_prior, torch.full_like(log_prior, -math.inf))
    return score.clamp(min=0).square() / (2 * score_noise_variance) + log_prior[:, None]
