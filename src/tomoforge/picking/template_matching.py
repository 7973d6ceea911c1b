"""Template matching: a tomogram searched with a reference over orientations (as pytom-match-pick and GAPSTOP do).

For every orientation ``R`` (reference → tomogram, CONVENTIONS.md §4) the reference is rotated, weighted in
Fourier space by what the tomogram can hold (the missing wedge of the tilt range and, optionally, a radial CTF
profile), normalised to zero mean and unit variance under a spherical mask, and cross-correlated with the whole
tomogram by FFT. Divided by the tomogram's local standard deviation under the same mask (rotation-invariant, so
computed once), this is the fast local correlation of Roseman (2003): a Pearson correlation in ``[-1, 1]`` at
every voxel. The best correlation over orientations and the orientation that gave it are kept per voxel.

When the surface the particles sit on is known (a vesicle, a virus), an orientation only counts at a voxel if its
z axis lies within ``max_tilt_deg`` of the surface normal given there (an angular range around the local normal,
as GAPSTOP's constrained search or Dynamo's tilt prior): the hexamers of a lattice are not searched upside down.

Peaks are local maxima at least ``min_distance`` apart, strongest first, above a threshold: by default the one at
which a search of ``N`` positions × ``R`` orientations of Gaussian noise gives about one false peak
(``σ·√2·erfc⁻¹(2/(N·R))``, pytom-match-pick's default, with ``σ`` the score map's robust spread).

References: Roseman (2003) J. Struct. Biol. 142, 114-127 (fast local correlation); Chaillet et al. (2023) Int. J.
Mol. Sci. 24, 13375 (pytom-match-pick, false-alarm threshold); Cruz-León et al. (2024) Nat. Commun. 15, 3992
(GAPSTOP, angular constraints).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch

from tomoforge.fourier.windows import fast_fft_size
from tomoforge.geometry.rotations import rotate_volume

__all__ = [
    "MatchResult",
    "angular_sampling",
    "false_alarm_threshold",
    "find_peaks",
    "match_template",
    "missing_wedge_weight",
    "radial_weight",
    "rescale_reference",
]


class MatchResult(NamedTuple):
    """Best correlation over orientations at every voxel, and which orientation gave it."""

    score: torch.Tensor
    """``(z, y, x)`` float32 local correlation (−1 … 1; 0 where no orientation was allowed, at the faces, or where
    every correlation was negative)."""
    rotation_index: torch.Tensor
    """``(z, y, x)`` int32 index into the rotations searched (−1 where none was allowed)."""


def angular_sampling(
    step_deg: float, *, symmetry_order: int = 1, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Rotations ``(n, 3, 3)`` covering SO(3) at about ``step_deg`` for a reference with Cn symmetry about z.

    The reference's z axis takes Fibonacci-sphere directions spaced about ``step_deg`` apart (``4π / step²``
    of them); about each, the in-plane angle takes ``360 / n / step`` values over ``[0°, 360° / n)``. Each rotation
    maps the z axis to its direction with the smallest turn, then spins about it.
    """
    if not 0 < step_deg <= 180:
        raise ValueError(f"angular step must be in (0, 180] degrees, got {step_deg}")
    if symmetry_order < 1:
        raise ValueError(f"symmetry order must be ≥ 1, got {symmetry_order}")
    step = math.radians(step_deg)
    n_dir = max(1, int(round(4 * math.pi / step**2)))
    k = torch.arange(n_dir, dtype=dtype) + 0.5
    z = 1.0 - 2.0 * k / n_dir
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    rho = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    directions = torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=1)
    n_psi = max(1, int(round(360.0 / symmetry_order / step_deg)))
    psi = torch.arange(n_psi, dtype=dtype) * (2 * math.pi / symmetry_order / n_psi)
    # Smallest turn taking +z to each direction (Rodrigues about z × d), then a spin psi about z first.
    axis = torch.stack([-directions[:, 1], directions[:, 0], torch.zeros_like(z)], dim=1)
    sin = torch.linalg.vector_norm(axis, dim=1)
    cos = directions[:, 2]
    unit = axis / sin.clamp(min=1e-12)[:, None]
    cross = torch.zeros(n_dir, 3, 3, dtype=dtype)
    cross[:, 0, 1], cross[:, 0, 2] = -unit[:, 2], unit[:, 1]
    cross[:, 1, 0], cross[:, 1, 2] = unit[:, 2], -unit[:, 0]
    cross[:, 2, 0], cross[:, 2, 1] = -unit[:, 1], unit[:, 0]
    eye = torch.eye(3, dtype=dtype).expand(n_dir, 3, 3)
    tilt = eye + sin[:, None, None] * cross + (1 - cos)[:, None, None] * (cross @ cross)
    tilt = torch.where((sin < 1e-9)[:, None, None], _flip_or_identity(cos), tilt)
    c, s = torch.cos(psi), torch.sin(psi)
    spin = torch.zeros(n_psi, 3, 3, dtype=dtype)
    spin[:, 0, 0], spin[:, 0, 1], spin[:, 1, 0], spin[:, 1, 1], spin[:, 2, 2] = c, -s, s, c, 1.0
    return (tilt[:, None] @ spin[None]).reshape(-1, 3, 3)


def _flip_or_identity(cos: torch.Tensor) -> torch.Tensor:
    """For directions along ±z: the identity for +z, a half turn about x for −z."""
    out = torch.eye(3, dtype=cos.dtype).repeat(len(cos), 1, 1)
    down = cos < 0
    out[down, 1, 1] = -1.0
    out[down, 2, 2] = -1.0
    return out


def missing_wedge_weight(
    box: int, max_tilt_deg: float, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(box, box, box // 2 + 1)`` rfft weight (tomogram axes z, y, x): 1 where a single-axis tilt series about y
    of ±``max_tilt_deg`` samples Fourier space (``|k_z| ≤ tan(max tilt)·|k_x|``), 0 in the missing wedge."""
    kz = torch.fft.fftfreq(box, dtype=dtype)[:, None, None]
    kx = torch.fft.rfftfreq(box, dtype=dtype)[None, None, :]
    seen = kz.abs() <= math.tan(math.radians(max_tilt_deg)) * kx.abs() + 1e-9
    return seen.expand(box, box, box // 2 + 1).to(dtype)


def _sphere(box: int, radius: float, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(box, dtype=torch.float32, device=device) - box // 2
    zz, yy, xx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    return ((xx * xx + yy * yy + zz * zz) <= radius * radius).to(torch.float32)


def _place(box_volume: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A box volume in a zero array of ``shape`` with its centre voxel at index 0 (wrapped)."""
    b = box_volume.shape[0]
    out = torch.zeros(shape, dtype=box_volume.dtype, device=box_volume.device)
    out[:b, :b, :b] = box_volume
    return torch.roll(out, shifts=(-(b // 2),) * 3, dims=(0, 1, 2))


def match_template(
    volume: torch.Tensor,
    template: torch.Tensor,
    rotations: torch.Tensor,
    *,
    mask_radius_px: float,
    weight: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
    max_tilt_deg: float = 20.0,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> MatchResult:
    """Search ``volume`` with ``template`` over ``rotations`` (module docstring).

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram, in the contrast of the template (negate an image-contrast tomogram for a density
        template).
    template
        ``(b, b, b)`` reference at the tomogram's voxel size, centre voxel ``b // 2``, in its own frame.
    rotations
        ``(r, 3, 3)`` orientations reference → tomogram (e.g. :func:`angular_sampling`).
    mask_radius_px
        Radius of the spherical mask the correlation is computed under, in voxels.
    weight
        Optional ``(b, b, b // 2 + 1)`` rfft weight applied to each rotated template in the tomogram's frame
        (:func:`missing_wedge_weight`, times a radial CTF profile when wanted).
    normals
        Optional ``(3, z, y, x)`` unit surface normals (x, y, z components); voxels with a zero normal are not
        searched, and elsewhere only orientations whose z axis is within ``max_tilt_deg`` of the normal count.
    max_tilt_deg
        Angular range around the normal (with ``normals``).
    progress
        Wraps the loop over orientations (e.g. a progress bar).

    Returns
    -------
    MatchResult
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got {tuple(volume.shape)}")
    if template.ndim != 3 or len(set(template.shape)) != 1:
        raise ValueError(f"template must be a cube, got {tuple(template.shape)}")
    box = template.shape[0]
    if any(box > n for n in volume.shape):
        raise ValueError(f"template box {box} is larger than the tomogram {tuple(volume.shape)}")
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3) or len(rotations) == 0:
        raise ValueError(f"rotations must be (r, 3, 3), got {tuple(rotations.shape)}")
    device = volume.device
    shape = tuple(volume.shape)
    padded = tuple(fast_fft_size(n) for n in shape)
    data = volume.to(torch.float32)
    data = data - data.mean()
    data = torch.nn.functional.pad(
        data, (0, padded[2] - shape[2], 0, padded[1] - shape[1], 0, padded[0] - shape[0])
    )
    mask = _sphere(box, mask_radius_px, device)
    n_mask = float(mask.sum())
    spectrum = torch.fft.rfftn(data)
    mask_spectrum = torch.fft.rfftn(_place(mask, padded)).conj()
    local_mean = torch.fft.irfftn(spectrum * mask_spectrum, s=padded) / n_mask
    local_sq = torch.fft.irfftn(torch.fft.rfftn(data * data) * mask_spectrum, s=padded) / n_mask
    local_std = (local_sq - local_mean * local_mean).clamp(min=0.0).sqrt()
    del local_mean, local_sq, mask_spectrum
    inner = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    floor = 1e-3 * float(local_std[inner].median().clamp(min=1e-12))
    inverse_std = 1.0 / (n_mask * local_std[inner].clamp(min=floor))
    del local_std
    # Positions whose mask would reach past the tomogram's faces are not scored (the zero padding there would
    # pass for a flat, low-variance neighbourhood).
    margin = min(int(math.ceil(mask_radius_px)), *(n // 2 for n in shape))
    valid = torch.zeros(shape, dtype=torch.bool, device=device)
    valid[margin : shape[0] - margin, margin : shape[1] - margin, margin : shape[2] - margin] = True
    facing: torch.Tensor | None = None
    if normals is not None:
        if tuple(normals.shape) != (3, *shape):
            raise ValueError(
                f"normals must be (3, {shape[0]}, {shape[1]}, {shape[2]}), got {tuple(normals.shape)}"
            )
        valid &= torch.linalg.vector_norm(normals.to(device), dim=0) > 0.5
        # (z, y, x, 3), zero where not searched: one matrix-vector product per orientation gives cos(angle).
        facing = (
            torch.where(valid[None], normals.to(torch.float32).to(device), 0.0)
            .permute(1, 2, 3, 0)
            .contiguous()
        )
        cos_limit = math.cos(math.radians(max_tilt_deg))
    best = torch.zeros(shape, dtype=torch.float32, device=device)
    index = torch.full(shape, -1, dtype=torch.int32, device=device)
    reference = template.to(torch.float32).to(device)
    box_index = [(torch.arange(box, device=device) - box // 2) % n for n in padded]
    where_z, where_y, where_x = (
        box_index[0][:, None, None],
        box_index[1][None, :, None],
        box_index[2][None, None, :],
    )
    buffer = torch.zeros(padded, dtype=torch.float32, device=device)
    order: Iterable[int] = range(len(rotations))
    for r in progress(order) if progress else order:
        rotation = rotations[r].to(torch.float32).to(device)
        turned = rotate_volume(reference, rotation)
        if weight is not None:
            turned = torch.fft.irfftn(
                torch.fft.rfftn(torch.fft.ifftshift(turned)) * weight.to(device), s=turned.shape
            )
            turned = torch.fft.fftshift(turned)
        inside = turned[mask > 0]
        turned = (turned - inside.mean()) * mask
        turned = turned / (turned.square().sum() / n_mask).sqrt().clamp(min=1e-12)
        buffer[where_z, where_y, where_x] = turned  # centre at index 0, wrapped
        correlation = torch.fft.irfftn(spectrum * torch.fft.rfftn(buffer).conj(), s=padded)
        score = correlation[inner]
        score.mul_(inverse_std)
        if facing is not None:
            score.masked_fill_(facing @ rotation[:, 2] < cos_limit, -math.inf)
        better = score > best
        torch.maximum(best, score, out=best)
        index.masked_fill_(better, r)
    best.masked_fill_(~valid, 0.0)
    index.masked_fill_(~valid, -1)
    return MatchResult(best, index)


def false_alarm_threshold(score: torch.Tensor, n_rotations: int, *, false_alarms: float = 1.0) -> float:
    """Score above which ``false_alarms`` peaks are expected from noise alone: ``σ·√2·erfc⁻¹(2·FA / (N·R))`` for
    ``N`` voxels searched and ``R`` orientations, ``σ`` the robust standard deviation of the searched voxels'
    scores (1.4826 × their median absolute deviation)."""
    values = score[score != 0]
    if values.numel() == 0:
        return math.inf
    sample = values.flatten()
    if sample.numel() > 2_000_000:
        sample = sample[
            torch.randperm(sample.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]
        ]
    sigma = float(1.4826 * (sample - sample.median()).abs().median())
    p = min(1.0, 2.0 * false_alarms / (values.numel() * max(1, n_rotations)))
    # erfc⁻¹(p) = erf⁻¹(1 − p), exact enough in float64 for p ≥ 1e-15.
    inverse = float(torch.special.erfinv(torch.tensor(1.0 - max(p, 1e-15), dtype=torch.float64)))
    return sigma * math.sqrt(2.0) * inverse


def find_peaks(
    score: torch.Tensor, *, min_distance_px: float, threshold: float, max_peaks: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaks of a score map, strongest first: ``(k, 3)`` voxel indices (z, y, x) and their scores.

    A peak is above ``threshold`` and the maximum of the cube inscribed in the sphere of radius ``min_distance``
    around it (half-side ``min_distance / √3``: a larger cube would hide a neighbour of a dense lattice standing at
    its corner); then, strongest first, a peak closer than ``min_distance`` to a kept one is dropped.
    """
    size = 2 * max(1, int(min_distance_px / math.sqrt(3.0))) + 1
    pooled = score[None, None]
    for kernel in ((size, 1, 1), (1, size, 1), (1, 1, size)):
        pooled = torch.nn.functional.max_pool3d(
            pooled, kernel_size=kernel, stride=1, padding=tuple(k // 2 for k in kernel)
        )
    candidates = torch.nonzero((score >= pooled[0, 0]) & (score > threshold))
    values = score[tuple(candidates.T)]
    order = torch.argsort(values, descending=True)
    candidates, values = candidates[order], values[order]
    # Greedy suppression with a grid of cells min_distance wide: only the 27 cells around a candidate can hold a
    # kept peak closer than min_distance.
    kept: list[int] = []
    cells: dict[tuple[int, int, int], list[tuple[float, float, float]]] = {}
    cell = max(min_distance_px, 1e-6)
    limit = min_distance_px * min_distance_px
    for i, (z, y, x) in enumerate(candidates.tolist()):
        if max_peaks is not None and len(kept) >= max_peaks:
            break
        key = (int(z // cell), int(y // cell), int(x // cell))
        near = False
        for dz in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    for pz, py, px in cells.get((key[0] + dz, key[1] + dy, key[2] + dx), ()):
                        if (pz - z) ** 2 + (py - y) ** 2 + (px - x) ** 2 < limit:
                            near = True
                            break
                    if near:
                        break
                if near:
                    break
        if near:
            continue
        kept.append(i)
        cells.setdefault(key, []).append((float(z), float(y), float(x)))
    chosen = torch.tensor(kept, dtype=torch.int64)
    return candidates[chosen], values[chosen]


def rescale_reference(volume: torch.Tensor, from_voxel: float, to_voxel: float) -> torch.Tensor:
    """A cubic map resampled from ``from_voxel`` to ``to_voxel`` by Fourier cropping (or zero padding), keeping
    the centre voxel ``N // 2`` at the same point and the values (not the sums) unchanged."""
    n = volume.shape[0]
    m = max(1, int(round(n * from_voxel / to_voxel)))
    if m == n:
        return volume.clone()
    spectrum = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(volume.to(torch.float64))))
    out = torch.zeros((m, m, m), dtype=spectrum.dtype)
    k = min(n, m)
    src = slice(n // 2 - k // 2, n // 2 - k // 2 + k)
    dst = slice(m // 2 - k // 2, m // 2 - k // 2 + k)
    out[dst, dst, dst] = spectrum[src, src, src]
    result = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(out))).real * (m / n) ** 3
    return result.to(volume.dtype)


def radial_weight(
    box: int, profile: Callable[[torch.Tensor], torch.Tensor], *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(box, box, box // 2 + 1)`` rfft weight from a radial ``profile(frequency in cycles/voxel)``."""
    kz = torch.fft.fftfreq(box, dtype=dtype)[:, None, None]
    ky = torch.fft.fftfreq(box, dtype=dtype)[None, :, None]
    kx = torch.fft.rfftfreq(box, dtype=dtype)[None, None, :]
    return profile(torch.sqrt(kz * kz + ky * ky + kx * kx)).to(dtype)
