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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.averaging.insert import _sample_half_grid
from tomoforge.fourier import fftfreq_grid, shift_phase_ramp_2d

__all__ = [
    "LocalResult",
    "local_rotations",
    "local_search",
    "masked_view_spectra",
    "project_slices",
    "reference_table",
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
    offsets = torch.fft.fftfreq(
        b, 1.0 / b, dtype=real, device=boxes.device
    )  # ifftshift-ed layout: centre at 0
    r = torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    fade = 0.5 * (1 + torch.cos(math.pi * (r - radius_px) / max(edge_px, 1e-6)))
    circle = torch.where(
        r <= radius_px, torch.ones_like(r), torch.where(r >= radius_px + edge_px, 0.0 * r, fade)
    )
    outside = (centred * (1 - circle)).sum(dim=(-2, -1)) / (1 - circle).sum().clamp(min=1e-12)
    return torch.fft.rfft2((centred - outside[:, None, None]) * circle)


def local_rotations(step_deg: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(27, 3, 3)`` small rotations: rotation vectors on the grid ``{−s, 0, s}³`` (the identity first)."""
    s = math.radians(step_deg)
    grid = torch.tensor([-s, 0.0, s], dtype=dtype)
    vectors = torch.cartesian_prod(grid, grid, grid)
    order = torch.argsort(torch.linalg.vector_norm(vectors, dim=1), stable=True)
    return torch.linalg.matrix_exp(_skew(vectors[order]))


def _skew(v: torch.Tensor) -> torch.Tensor:
    out = torch.zeros((*v.shape[:-1], 3, 3), dtype=v.dtype, device=v.device)
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


class LocalResult(NamedTuple):
    """The best candidate of a local search."""

    rotation: torch.Tensor
    """``(3, 3)`` the particle's new rotation (reference → tomogram)."""
    shift_xyz_px: torch.Tensor
    """``(3,)`` the 3D shift of the particle found, pixels (add it to its position): the best whole-pixel shift
    refined to the sub-pixel by a parabola through its neighbours along each axis."""
    score: float
    """The normalised correlation of the best candidate."""


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
) -> LocalResult:
    """Best rotation among ``rotation`` turned by each of ``candidates`` (``R_c = C·R``) and best 3D shift.

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
    """
    v, b = images.shape[0], images.shape[1]
    real = table.dtype
    freq = fftfreq_grid((b, b), device=table.device, dtype=real)
    band = (torch.linalg.vector_norm(freq, dim=-1) <= max_frequency_per_pixel).to(real)
    band[0, 0] = 0.0  # the mean says nothing about the pose
    rotations = candidates.to(real) @ rotation.to(real)  # (c, 3, 3)
    views = view_rotations.to(real)[None] @ rotations[:, None]  # (c, v, 3, 3)
    projected = project_slices(table, p, views.reshape(-1, 3, 3), b).reshape(
        len(candidates), v, b, b // 2 + 1
    )
    model = projected * ctfs[None].to(real) * band
    # Each rfft sample stands for itself and its mirror, except the k_x = 0 (and even-size Nyquist) column.
    hermitian = torch.full((b // 2 + 1,), 2.0, dtype=real, device=table.device)
    hermitian[0] = 1.0
    if b % 2 == 0:
        hermitian[-1] = 1.0
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
    best = int(torch.argmax(score))
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
