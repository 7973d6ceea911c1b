"""Map scores: Fourier shell correlation and the search for the rotation, shift and hand that superpose two maps.

A pipeline's average is in its own reference frame: rotated (only modulo the point group), shifted, possibly of the
other hand, and, for a particle in a lattice on a membrane, it also holds the neighbours and the membrane that the
lone true particle lacks. :func:`align_maps` finds the transform ``aligned(x) = moving'(G·x + t)`` (``moving'`` the
moving map or its mirror image) that best matches the reference, scoring every pose by the correlation within the
reference's support only (a soft mask of the true map dilated by a few voxels, :func:`support_mask`), locally
normalised over translations by FFT (Roseman 2003). The mask lives in the reference's frame and is carried with the
rotated reference, so both hands of the moving map are measured alike. The search: the best distinct rotations of
a near-uniform SO(3) grid on downsampled, low-passed maps for each hand, and, when the reference's Cn axis lies
along z, the best turns about z and flips of z (an average whose symmetry was imposed about z has its axis there);
a local pattern search of each on finer maps; for the best of each hand a final local search on exact maps, the
hand that correlates better winning; finally the sub-voxel shift by Newton steps on the continuous
cross-correlation. Volumes are resampled through a 2× Fourier-upsampled copy with a cubic B-spline
(:mod:`.resample`), which keeps the FSC near 1 up to Nyquist.

The FSC lives in :mod:`tomoforge.averaging.fsc`, resampling in :mod:`.resample`; both are re-exported here.

References
----------
González, Á. (2010). Measurement of areas on a sphere using Fibonacci and latitude–longitude lattices. Math.
Geosci. 42, 49–64. doi:10.1007/s11004-009-9257-x (the direction grid).

Roseman, A. M. (2003). Particle finding in electron micrographs using a fast local correlation algorithm.
Ultramicroscopy 94, 225–236. doi:10.1016/S0304-3991(02)00333-9 (the locally normalised correlation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from tomoforge.averaging.fsc import (
    centre_crop_or_pad,
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
    soft_sphere_mask,
)
from tomoforge.fourier import fftfreq_grid
from tomoforge.geometry import rotation_x, rotation_y, rotation_z
from tomoforge.io import FormatError
from tomoforge.io.mrc import read_mrc
from tomoforge.simulate.scoring._common import NotProvided, Scored, rotation_angle_deg, rotation_from_vector
from tomoforge.simulate.scoring.picking import symmetry_operators
from tomoforge.simulate.scoring.resample import (
    Interpolant,
    fourier_resize,
    mirror_volume,
    transform_volume,
)

__all__ = [
    "MapAlignment",
    "MapScore",
    "align_maps",
    "apply_map_alignment",
    "axis_rotations",
    "fourier_resize",
    "fourier_shell_correlation",
    "fsc_resolution_angstrom",
    "mirror_volume",
    "score_map",
    "shell_frequencies_per_angstrom",
    "soft_sphere_mask",
    "support_mask",
    "true_map_support",
    "transform_volume",
    "uniform_rotation_grid",
]


# --------------------------------------------------------------------------------------------------- rotations


def uniform_rotation_grid(
    step_deg: float, *, symmetry_order: int = 1, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Near-uniform rotations ``G = Rz(a)·Ry(b)·Rz(c)`` with spacing about ``step_deg``, identity first.

    Directions ``G·ẑ`` form a Fibonacci sphere of ``4π / step²`` points; ``c`` runs over ``[0°, 360°/n)`` in steps
    of ``step_deg``, so each rotation appears once modulo the ``n``-fold axis of a Cn reference (``G`` and
    ``G·Rz(360°/n)`` are the same pose).

    Returns
    -------
    torch.Tensor
        ``(m, 3, 3)``.
    """
    step = math.radians(step_deg)
    n_dirs = max(2, round(4.0 * math.pi / step**2))
    i = torch.arange(n_dirs, dtype=dtype)
    z = 1.0 - (2.0 * i + 1.0) / n_dirs
    a = torch.rad2deg(torch.remainder(i * math.pi * (3.0 - math.sqrt(5.0)), 2.0 * math.pi))
    b = torch.rad2deg(torch.acos(z))
    span = 360.0 / symmetry_order
    n_psi = max(1, math.ceil(span / step_deg - 1e-9))
    c = torch.arange(n_psi, dtype=dtype) * (span / n_psi)
    aa, cc = a[:, None].expand(-1, n_psi), c[None, :].expand(n_dirs, -1)
    bb = b[:, None].expand(-1, n_psi)
    grid = rotation_z(aa) @ rotation_y(bb) @ rotation_z(cc)
    return torch.cat([torch.eye(3, dtype=dtype).unsqueeze(0), grid.reshape(-1, 3, 3)])


def axis_rotations(
    step_deg: float, *, symmetry_order: int = 1, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The rotations that keep the z axis (up to its sign): turns ``Rz(c)`` and flips ``Rz(c)·Rx(180°)``.

    ``c`` runs over ``[0°, 360°/n)`` in steps of about ``step_deg`` (modulo the ``n``-fold axis of a Cn reference);
    identity first.

    Returns
    -------
    torch.Tensor
        ``(2m, 3, 3)``.
    """
    span = 360.0 / symmetry_order
    n_psi = max(1, math.ceil(span / step_deg - 1e-9))
    turns = rotation_z(torch.arange(n_psi, dtype=dtype) * (span / n_psi))
    return torch.cat([turns, turns @ rotation_x(torch.tensor(180.0, dtype=dtype))])


# --------------------------------------------------------------------------------------------------- support


def support_mask(
    volume: torch.Tensor,
    *,
    lowpass_px: float = 1.0,
    threshold: float = 0.1,
    dilation_px: float = 2.0,
    edge_px: float = 1.0,
) -> torch.Tensor:
    """Soft mask of a lone particle's support: where the map, low-passed, exceeds a fraction of its maximum.

    The map is low-passed (Gaussian of standard deviation ``lowpass_px``), thresholded at ``threshold`` of its
    maximum, dilated by a ball of radius ``dilation_px`` and given a Gaussian edge of standard deviation
    ``edge_px`` (the mask is 1/2 on the dilated boundary).

    Returns
    -------
    torch.Tensor
        Mask in [0, 1], shape and dtype of ``volume``.
    """
    low = _lowpass(volume.to(torch.float64), lowpass_px)
    inside = (low > threshold * low.max()).to(torch.float64)
    if dilation_px > 0:
        offsets = [torch.fft.fftfreq(k, 1.0 / k, dtype=torch.float64) for k in inside.shape]
        zz, yy, xx = torch.meshgrid(*offsets, indexing="ij")
        ball = (xx.square() + yy.square() + zz.square() <= dilation_px**2 + 1e-9).to(torch.float64)
        hits = torch.fft.irfftn(torch.fft.rfftn(inside) * torch.fft.rfftn(ball), s=inside.shape)
        inside = (hits > 0.5).to(torch.float64)
    return _lowpass(inside, edge_px).clamp(0.0, 1.0).to(volume.dtype)


def _has_z_axis(reference: torch.Tensor, support: torch.Tensor, order: int) -> bool:
    """Whether the reference has its ``order``-fold axis along z (correlation > 0.9 with itself turned)."""
    if order < 2:
        return False
    turned = transform_volume(reference.to(torch.float64), rotation_z(360.0 / order).double(), oversample=1)
    w = support.to(torch.float64)
    a, b = (w * (v - (w * v).sum() / w.sum()) for v in (reference.to(torch.float64), turned))
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30)) > 0.9


# --------------------------------------------------------------------------------------------------- search

_AXIS_CANDIDATES = 2
"""Best axis-keeping rotations of each hand refined besides the best of the global grid."""

_MAX_PATTERN_MOVES = 60
"""Most steps (moves and halvings) of one local search."""

_MIN_GAIN = 1e-6
"""Smallest gain in correlation that moves the local search."""

_HAND_STEP_DEG = 0.25
"""Final step of the exact local search of each hand before the better one is refined further."""

_FAST_STEP_DEG = 1.0
"""Final step of the trilinear local search of the candidates."""


class MapAlignment(NamedTuple):
    """The transform found by :func:`align_maps`: ``aligned(x) = moving'(G·x + t)``."""

    rotation: torch.Tensor
    """``(3, 3)`` ``G``: the moving map shows the reference rotated by ``G`` (modulo the symmetry)."""
    shift_xyz_px: torch.Tensor
    """``(3,)`` ``t`` in voxels: the moving map shows the reference moved by ``t`` (after the rotation)."""
    mirrored: bool
    """Whether ``moving'`` is the mirror image of the moving map (:func:`mirror_volume`)."""
    score: float
    """Masked, locally normalised correlation of the low-passed maps at the refined pose."""
    other_hand_score: float = math.nan
    """The same at the best refined pose of the other hand (NaN when the mirror image was not searched)."""


def _lowpass(volume: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian low-pass (real-space standard deviation ``sigma_px``)."""
    f = fftfreq_grid(volume.shape[-3:], rfft=True, device=volume.device, dtype=volume.dtype)
    gauss = torch.exp(-2.0 * math.pi**2 * sigma_px**2 * f.square().sum(-1))
    spectrum = torch.fft.rfftn(volume, dim=(-3, -2, -1)) * gauss
    return torch.fft.irfftn(spectrum, s=volume.shape[-3:], dim=(-3, -2, -1))


class _Level:
    """Reference, its support and the moving map at one sampling; scores rotations by masked FFT correlation.

    For a rotation ``G`` the reference and its support are rotated (``r``, ``w``) and, for every shift ``s`` within
    ``max_shift_px``, the moving map ``m`` is compared with ``r`` only inside ``w`` moved by ``s``: the weighted
    Pearson correlation ``Σ w(r − r̄)(m − m̄_s) / sqrt(Σ w(r − r̄)² · Σ w(m − m̄_s)²)``, with ``m̄_s`` the weighted mean
    of ``m`` under the moved support (a locally normalised correlation, Roseman 2003). What surrounds the particle
    in the moving map (neighbours, a membrane) does not count, and both hands are measured in one mask, the
    reference's. The maps are cut to the smallest box about the centre that holds the rotated support moved by
    any shift searched, ``reach_px + max_shift_px``.
    """

    def __init__(
        self,
        reference: torch.Tensor,
        support: torch.Tensor,
        moving: dict[bool, torch.Tensor],
        *,
        size: int,
        sigma_px: float,
        cubic: bool,
        dtype: torch.dtype,
        max_shift_px: float,
        reach_px: float,
    ) -> None:
        n = reference.shape[-1]
        self.size, self.cubic, self.scale = size, cubic, n / size
        box = 2 * math.ceil((reach_px + max_shift_px) / self.scale) + 4
        self.box = min(size, box + box % 2)
        # The reference and its support, resampled together (one set of positions per rotation).
        self.volumes = Interpolant(
            torch.stack(
                [
                    self._cut(_lowpass(self._resized(reference, dtype), sigma_px)),
                    self._cut(self._resized(support, dtype).clamp(0.0, 1.0)),
                ]
            ),
            oversample=1,
            cubic=cubic,
        )
        self.moving_ft: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
        for hand, volume in moving.items():
            v = _lowpass(self._resized(volume, dtype), sigma_px)
            v = self._cut((v - v.mean()) / v.std().clamp_min(1e-30))
            self.moving_ft[hand] = (torch.fft.rfftn(v), torch.fft.rfftn(v.square()))
        offsets = torch.fft.fftfreq(self.box, 1.0 / self.box, dtype=dtype)
        zz, yy, xx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
        self.allowed = (xx.square() + yy.square() + zz.square()).sqrt() <= max(1.0, max_shift_px / self.scale)

    def _resized(self, volume: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        v = volume.to(dtype)
        return fourier_resize(v, self.size) if self.size != v.shape[-1] else v

    def _cut(self, volume: torch.Tensor) -> torch.Tensor:
        return centre_crop_or_pad(volume, self.box) if self.box < self.size else volume

    def score(
        self, rotations: torch.Tensor, hands: Sequence[bool] | None = None
    ) -> dict[bool, tuple[torch.Tensor, torch.Tensor]]:
        """Peak correlation per rotation (parabola-refined) and its shift ``(x, y, z)`` in voxels of the full
        maps, for each hand of the moving map (or those given)."""
        chosen = list(self.moving_ft) if hands is None else list(hands)
        found: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {hand: [] for hand in chosen}
        batch = max(1, (2**20 if not self.cubic else 2**18) // self.box**3)
        shape = (self.box,) * 3
        for start in range(0, len(rotations), batch):
            g = rotations[start : start + batch].to(self.volumes.dtype).transpose(-1, -2)
            r, w = self.volumes.sample(g).unbind(1)
            w = w.clamp(0.0, 1.0)
            total = w.sum((-3, -2, -1), keepdim=True).clamp_min(1e-30)
            centred = r - (w * r).sum((-3, -2, -1), keepdim=True) / total
            a = w * centred
            norm = (a * centred).sum((-3, -2, -1)).clamp_min(1e-30).sqrt()
            dims = (-3, -2, -1)
            spectrum = torch.fft.rfftn(a, dim=dims).conj()
            weight = torch.fft.rfftn(w, dim=dims).conj()
            for hand in chosen:
                moving_ft, squared_ft = self.moving_ft[hand]
                numerator = torch.fft.irfftn(moving_ft * spectrum, s=shape, dim=dims)
                mean = torch.fft.irfftn(moving_ft * weight, s=shape, dim=dims)
                second = torch.fft.irfftn(squared_ft * weight, s=shape, dim=dims)
                variance = (second - mean.square() / total).clamp_min(1e-3 * total)
                cc = numerator / (norm[:, None, None, None] * variance.sqrt())
                value, shift = _peak(cc, self.allowed)
                found[hand].append((value, shift * self.scale))
        return {
            hand: (torch.cat([v for v, _ in pairs]), torch.cat([s for _, s in pairs]))
            for hand, pairs in found.items()
        }


def _peak(cc: torch.Tensor, allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum of ``(b, n, n, n)`` periodic correlations and its position ``(x, y, z)``, parabola-refined.

    ``allowed`` (``(n, n, n)`` booleans) restricts where the maximum voxel is sought; the parabolas through it and
    its neighbours use the correlations as they are, and their vertices are kept within half a voxel.
    """
    b, n = cc.shape[0], cc.shape[-1]
    search = cc if allowed is None else torch.where(allowed, cc, torch.finfo(cc.dtype).min)
    flat = search.reshape(b, -1).argmax(dim=1)
    index = [flat // (n * n), (flat // n) % n, flat % n]  # z, y, x
    rows = torch.arange(b, device=cc.device)
    centre = cc[rows, index[0], index[1], index[2]]
    value = centre.clone()
    shift = []
    for k in (2, 1, 0):  # x, y, z
        plus, minus = list(index), list(index)
        plus[k] = (index[k] + 1) % n
        minus[k] = (index[k] - 1) % n
        cp, cm = cc[rows, plus[0], plus[1], plus[2]], cc[rows, minus[0], minus[1], minus[2]]
        curv = cp - 2.0 * centre + cm
        concave = curv < 0
        safe = torch.where(concave, curv, -torch.ones_like(curv))
        delta = torch.where(concave, 0.5 * (cm - cp) / safe, torch.zeros_like(curv)).clamp(-0.5, 0.5)
        value = (
            value + 0.5 * (cp - cm) * delta + 0.5 * torch.where(concave, curv, 0.0 * curv) * delta.square()
        )
        signed = torch.where(index[k] > n // 2, index[k] - n, index[k]).to(cc.dtype)
        shift.append(signed + delta)
    return value, torch.stack(shift, dim=-1)


def _pattern_search(
    level: _Level, rotation: torch.Tensor, hand: bool, step_deg: float, min_step_deg: float
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Local maximisation of the correlation over left rotation perturbations about x, y, z, halving the step.

    Returns the rotation, its correlation and its shift ``(x, y, z)`` in voxels.
    """
    values, shifts = level.score(rotation.unsqueeze(0), [hand])[hand]
    best, shift = float(values[0]), shifts[0]
    axes = torch.cat([torch.eye(3), -torch.eye(3)]).to(rotation)
    step = step_deg
    for _ in range(_MAX_PATTERN_MOVES):
        if step < min_step_deg:
            break
        candidates = rotation_from_vector(axes * math.radians(step)) @ rotation
        values, shifts = level.score(candidates, [hand])[hand]
        k = int(values.argmax())
        if float(values[k]) > best + _MIN_GAIN:
            best, rotation, shift = float(values[k]), candidates[k], shifts[k]
        else:
            step /= 2.0
    return rotation, best, shift


def _newton_shift(reference: torch.Tensor, moving: torch.Tensor, start_xyz: torch.Tensor) -> torch.Tensor:
    """Continuous maximiser ``s`` of ``Σ_x reference(x − s)·moving(x)`` near ``start`` (Newton steps)."""
    shape = reference.shape
    fr = torch.fft.rfftn(reference.to(torch.float64))
    fm = torch.fft.rfftn(moving.to(torch.float64))
    k = fftfreq_grid(shape, rfft=True, dtype=torch.float64).flip(-1)  # cycles/voxel, (kx, ky, kz)
    weight = torch.full(fr.shape, 2.0, dtype=torch.float64)
    weight[..., 0] = 1.0
    if shape[-1] % 2 == 0:
        weight[..., -1] = 1.0
    product = (fm * fr.conj() * weight).reshape(-1)
    k = 2.0 * math.pi * k.reshape(-1, 3)
    s = start_xyz.to(torch.float64).clone()
    for _ in range(20):
        phase = torch.exp(1j * (k @ s))
        term = product * phase
        grad = -(term.imag.unsqueeze(-1) * k).sum(0)
        hess = -(term.real.unsqueeze(-1).unsqueeze(-1) * k.unsqueeze(-1) * k.unsqueeze(-2)).sum(0)
        try:
            step = -torch.linalg.solve(hess, grad)
        except RuntimeError:
            break
        step = step.clamp(-0.5, 0.5)
        s = s + step
        if float(step.abs().max()) < 1e-7:
            break
    return s


def align_maps(
    reference: torch.Tensor,
    moving: torch.Tensor,
    *,
    support: torch.Tensor | None = None,
    symmetry_order: int = 1,
    step_deg: float = 15.0,
    try_mirror: bool = True,
    coarse_size: int = 16,
    fine_size: int = 64,
    n_refine: int = 3,
    min_step_deg: float = 0.05,
    max_shift_px: float | None = None,
) -> MapAlignment:
    """Find the rotation, shift and hand that superpose ``moving`` onto ``reference``.

    Every pose is scored by the correlation of the reference with the moving map inside the reference's support
    (:class:`_Level`), so that a moving map that also holds the particle's surroundings (the neighbours of a
    lattice, a membrane) matches an isolated reference. Candidates: the best distinct rotations of a near-uniform
    SO(3) grid on coarse maps for each hand and, when the reference's Cn axis lies along z, the best of the
    rotations that keep z (:func:`axis_rotations`; an average whose symmetry was imposed about z has its axis
    there too). Each is refined locally on finer maps; the best of each hand is refined on exact (cubic, float64)
    maps, and the hand with the higher correlation wins.

    Parameters
    ----------
    reference, moving
        ``(n, n, n)`` volumes on the same grid (resample first when pixel sizes differ).
    support
        ``(n, n, n)`` soft mask of the reference's support (default: :func:`support_mask` of the reference).
    symmetry_order
        ``n`` of the reference's Cn symmetry about z (the rotation is found modulo ``Rz(360°/n)``).
    step_deg
        Spacing of the global rotation grid.
    try_mirror
        Also search the mirror image of ``moving``.
    coarse_size, fine_size
        Box edges of the global search and of the local refinement (capped at ``n``).
    n_refine
        Distinct global candidates of each hand refined locally.
    min_step_deg
        Final step of the local search.
    max_shift_px
        Largest shift searched (default: half the support's radius about the centre, so that the moving map's
        particle is the one near its centre, not a neighbour or a site between neighbours).

    Returns
    -------
    MapAlignment
    """
    if reference.shape != moving.shape or len(set(reference.shape)) != 1 or reference.ndim != 3:
        raise ValueError(
            f"maps must be cubic and of one shape, got {tuple(reference.shape)} and {tuple(moving.shape)}"
        )
    n = reference.shape[-1]
    if support is None:
        support = support_mask(reference.to(torch.float64))
    elif support.shape != reference.shape:
        raise ValueError(f"the support must have the maps' shape, got {tuple(support.shape)}")
    if max_shift_px is None:
        max_shift_px = 0.5 * _support_radius_px(support, 0.5)
    reach = _support_radius_px(support, 1e-3)
    hands = {False: moving}
    if try_mirror:
        hands[True] = mirror_volume(moving)

    def level(size: int, sigma_px: float) -> _Level:
        return _Level(
            reference,
            support,
            hands,
            size=min(n, size + size % 2),
            sigma_px=sigma_px,
            cubic=False,
            dtype=torch.float32,
            max_shift_px=max_shift_px,
            reach_px=reach,
        )

    coarse = level(coarse_size, 1.0)
    families = [(uniform_rotation_grid(step_deg, symmetry_order=symmetry_order), n_refine, step_deg)]
    if _has_z_axis(reference, support, symmetry_order):
        axis_step = step_deg / 3.0
        families.append(
            (axis_rotations(axis_step, symmetry_order=symmetry_order), _AXIS_CANDIDATES, axis_step)
        )
    candidates: list[tuple[bool, torch.Tensor]] = []
    for rotations, keep, spacing in families:
        grid = rotations.to(torch.float32)
        for hand, (scores, _) in coarse.score(grid).items():
            picked = _distinct_best(grid, scores, keep, 2.0 * spacing, symmetry_order)
            candidates += [(hand, grid[i]) for i in picked]
    # Local refinement: fast trilinear correlation for the candidates, then cubic in float64 for the best of
    # each hand.
    fast = level(fine_size, 1.0)
    finalists: dict[bool, tuple[torch.Tensor, float, torch.Tensor]] = {}
    for hand, start in candidates:
        rotation, score, shift = _pattern_search(fast, start, hand, step_deg / 2.0, _FAST_STEP_DEG)
        if hand not in finalists or score > finalists[hand][1]:
            finalists[hand] = (rotation, score, shift)
    reference64 = reference.to(torch.float64)
    fine_n = fast.size
    exact: dict[bool, tuple[_Level, torch.Tensor, float, torch.Tensor, torch.Tensor]] = {}
    for hand, (rotation, _, shift) in finalists.items():
        # Remove the sub-voxel shift (exactly, in Fourier space) so that the correlation peak of the final
        # refinement lies on a voxel, where its value is not biased by interpolation; then refine with cubic
        # resampling, first to _HAND_STEP_DEG for each hand.
        rotation = rotation.to(torch.float64)
        shift = _subvoxel_shift(reference64, hands[hand], rotation, shift.to(torch.float64))
        centred = _fourier_translate(hands[hand].to(torch.float64), -shift)
        final = _Level(
            reference,
            support,
            {hand: centred},
            size=fine_n,
            sigma_px=0.5,
            cubic=True,
            dtype=torch.float64,
            max_shift_px=2.0 * n / fine_n,
            reach_px=reach,
        )
        rotation, score, residual = _pattern_search(
            final, rotation, hand, 0.5, max(_HAND_STEP_DEG, min_step_deg)
        )
        exact[hand] = (final, rotation, score, shift, residual)
    # The hand that correlates better; then its pose to the final step.
    hand = max(exact, key=lambda h: exact[h][2])
    final, rotation, score, shift, residual = exact[hand]
    if min_step_deg < _HAND_STEP_DEG:
        rotation, score, residual = _pattern_search(final, rotation, hand, _HAND_STEP_DEG / 2.0, min_step_deg)
    shift = _subvoxel_shift(reference64, hands[hand], rotation, shift + residual)
    other = exact[not hand][2] if (not hand) in exact else math.nan
    return MapAlignment(
        rotation=rotation, shift_xyz_px=shift, mirrored=hand, score=score, other_hand_score=other
    )


def _support_radius_px(support: torch.Tensor, level: float) -> float:
    """Largest distance from the centre ``N // 2`` of a voxel where the support is at least ``level``."""
    n = support.shape[-1]
    offsets = torch.arange(n, dtype=torch.float64) - n // 2
    zz, yy, xx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    radius = (xx.square() + yy.square() + zz.square()).sqrt()
    inside = support >= level
    return float(radius[inside].max()) if bool(inside.any()) else n / 2.0


def _distinct_best(
    rotations: torch.Tensor, scores: torch.Tensor, keep: int, min_angle_deg: float, symmetry_order: int
) -> list[int]:
    """Indices of the ``keep`` best rotations, each at least ``min_angle_deg`` (modulo Cn about z) from the
    better ones."""
    turns = rotation_z(torch.arange(symmetry_order, dtype=torch.float64) * (360.0 / symmetry_order))
    picked: list[int] = []
    for i in torch.argsort(scores, descending=True).tolist():
        g = rotations[i].to(torch.float64)
        if all(
            float(rotation_angle_deg(rotations[j].to(torch.float64).T @ g @ turns).min()) >= min_angle_deg
            for j in picked
        ):
            picked.append(i)
            if len(picked) == keep:
                break
    return picked


def _fourier_translate(volume: torch.Tensor, shift_xyz_px: torch.Tensor) -> torch.Tensor:
    """``out(y) = volume(y − s)``: the content moved by ``s`` voxels (periodic, exact for band-limited maps)."""
    k = fftfreq_grid(volume.shape, rfft=True, dtype=volume.dtype, device=volume.device).flip(-1)
    phase = torch.exp(-2j * math.pi * (k @ shift_xyz_px.to(volume.dtype)))
    return torch.fft.irfftn(torch.fft.rfftn(volume) * phase, s=volume.shape)


def _subvoxel_shift(
    reference: torch.Tensor, moving: torch.Tensor, rotation: torch.Tensor, start_xyz: torch.Tensor
) -> torch.Tensor:
    """Translation ``t`` with ``moving(y) ≈ reference(Gᵀ(y − t))`` for a known rotation ``G``, to sub-voxel
    precision: the maximum of the cross-correlation of the derotated moving map with the (lone) reference nearest
    ``start_xyz`` (``t`` to within a voxel or so)."""
    derotated = transform_volume(moving.to(torch.float32), rotation, oversample=1).to(
        torch.float64
    )  # ≈ ref(x − Gᵀt)
    return rotation @ _newton_shift(reference.to(torch.float64), derotated, rotation.T @ start_xyz)


def apply_map_alignment(
    moving: torch.Tensor, alignment: MapAlignment, *, oversample: int = 2
) -> torch.Tensor:
    """The moving map brought onto the reference: ``moving'(G·x + t)`` (``moving'`` mirrored when flagged)."""
    source = mirror_volume(moving) if alignment.mirrored else moving
    return transform_volume(
        source.to(torch.float64), alignment.rotation, alignment.shift_xyz_px, oversample=oversample
    )


# --------------------------------------------------------------------------------------------------- scoring


def _symmetry_order(symmetry: str) -> int:
    text = symmetry.strip().upper()
    if len(text) < 2 or text[0] not in "CD" or not text[1:].isdigit() or int(text[1:]) < 1:
        raise ValueError(f"symmetry must be Cn or Dn (e.g. C6), got {symmetry!r}")
    return int(text[1:])


class MapScore(Scored):
    """The result map against the true map."""

    voxel_size_angstrom: float = Field(description="Voxel size of the comparison (the truth's), Å.")
    box_size_px: int = Field(description="Box edge of the comparison, voxels.")
    symmetry: str = Field(description="Symmetry the rotation is defined modulo.")
    resampled: bool = Field(description="Whether the result map was resampled onto the truth's grid.")
    mirrored: bool = Field(description="Whether the result map has the other hand.")
    rotation_matrix: list[list[float]] = Field(
        description="G: the result shows the true map rotated by G (after mirroring when mirrored)."
    )
    rotation_angle_deg: float = Field(
        description="Smallest rotation angle of G modulo the symmetry, degrees."
    )
    shift_angstrom: list[float] = Field(description="Shift (x, y, z) of the result after the rotation, Å.")
    search_score: float = Field(
        description="Correlation of the low-passed maps within the true map's support at the found pose."
    )
    other_hand_search_score: float | None = Field(
        default=None,
        description="The same at the best pose of the other hand (the hand is the one that correlates better).",
    )
    resolution_fsc_0_5_angstrom: float = Field(description="Resolution where the FSC falls below 0.5, Å.")
    resolution_fsc_0_143_angstrom: float = Field(description="Resolution where the FSC falls below 0.143, Å.")
    fsc_mask_radius_angstrom: float = Field(description="Radius of the soft spherical mask of the FSC, Å.")
    frequencies_per_angstrom: list[float] = Field(description="FSC shell frequencies, cycles/Å.")
    fsc: list[float] = Field(description="FSC per shell against the true map.")
    support_resolution_fsc_0_143_angstrom: float | None = Field(
        default=None,
        description="Resolution where the FSC within the true map's support (soft mask) falls below 0.143, Å: "
        "what the result's neighbours and membrane, absent from the lone true particle, do not count in.",
    )
    support_fsc: list[float] | None = Field(
        default=None, description="FSC per shell against the true map within its support."
    )
    half_map_resolution_0_143_angstrom: float | None = Field(
        description="Gold-standard resolution of the results' half maps (their mask if given), Å; None without."
    )


def _load(path: Path) -> tuple[torch.Tensor, float]:
    volume = read_mrc(path)
    data = torch.from_numpy(np.array(volume.data, dtype=np.float64))
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise FormatError(path, f"is not a cubic volume (shape {tuple(data.shape)})")
    pixel = volume.pixel_size_angstrom
    if not pixel > 0:
        raise FormatError(path, "has no voxel size in its header")
    return data, pixel


def _crossings(fsc: torch.Tensor, freqs: torch.Tensor) -> tuple[float, float]:
    return fsc_resolution_angstrom(fsc, freqs, 0.5), fsc_resolution_angstrom(fsc, freqs, 0.143)


_SUPPORT_LOWPASS_ANGSTROM = 5.0
"""Low-pass (Gaussian standard deviation) of the true map before thresholding its support."""
_SUPPORT_THRESHOLD = 0.1
"""Fraction of the low-passed true map's maximum inside its support."""
_SUPPORT_DILATION_ANGSTROM = 10.0
"""Dilation of the thresholded support."""
_SUPPORT_EDGE_ANGSTROM = 5.0
"""Gaussian edge of the support mask."""


def true_map_support(truth: torch.Tensor, pixel_size_angstrom: float) -> torch.Tensor:
    """The support mask of a true map (:func:`support_mask`: low-pass 5 Å, 10 % of the maximum, dilated by
    10 Å, 5 Å edge)."""
    return support_mask(
        truth,
        lowpass_px=_SUPPORT_LOWPASS_ANGSTROM / pixel_size_angstrom,
        threshold=_SUPPORT_THRESHOLD,
        dilation_px=_SUPPORT_DILATION_ANGSTROM / pixel_size_angstrom,
        edge_px=_SUPPORT_EDGE_ANGSTROM / pixel_size_angstrom,
    )


def score_map(
    truth_path: str | Path,
    results_folder: str | Path,
    *,
    symmetry: str = "C6",
    step_deg: float = 15.0,
    max_shift_angstrom: float | None = None,
) -> MapScore | NotProvided:
    """Score ``average/map.mrc`` of a results folder against the true map.

    The result map is resampled onto the truth's grid if its voxel size or box differs and superposed with
    :func:`align_maps` (both hands), comparing it with the true map only within the true map's support
    (:func:`true_map_support`): the result of a particle in a lattice also holds its neighbours and the membrane,
    which the lone true particle lacks. The FSC is computed within a soft sphere of 0.42 box radius and within the
    support. The half maps ``average/half1.mrc``/``half2.mrc``, when present, give the results' own gold-standard
    resolution (within ``average/mask.mrc`` when present).

    Parameters
    ----------
    truth_path
        The true map, ``average/map.mrc`` of the truth.
    results_folder
        The results' export-layout folder.
    symmetry
        Point group of the true map (Cn or Dn about z).
    step_deg
        Spacing of the global rotation search.
    max_shift_angstrom
        Largest shift searched (default: half the radius of the true map's support).

    Returns
    -------
    MapScore or NotProvided
    """
    results = Path(results_folder) / "average"
    order = _symmetry_order(symmetry)
    if not (results / "map.mrc").is_file():
        return NotProvided(reason="the results have no average/map.mrc")
    truth, pixel = _load(Path(truth_path))
    result, result_pixel = _load(results / "map.mrc")
    n = truth.shape[-1]
    resampled = result.shape != truth.shape or abs(result_pixel - pixel) > 1e-4 * pixel
    if resampled:
        scale = torch.eye(3, dtype=torch.float64) * (pixel / result_pixel)
        result = transform_volume(result, scale, output_shape_zyx=truth.shape)
    support = true_map_support(truth, pixel)
    # The local refinement is band-limited to what both maps hold: at most the result's Nyquist frequency.
    fine = min(64, 2 * max(8, round(n * min(1.0, pixel / result_pixel) / 2)))
    alignment = align_maps(
        truth,
        result,
        support=support,
        symmetry_order=order,
        step_deg=step_deg,
        fine_size=fine,
        max_shift_px=None if max_shift_angstrom is None else max_shift_angstrom / pixel,
    )
    aligned = apply_map_alignment(result, alignment)
    radius = 0.42 * n
    mask = soft_sphere_mask(n, radius_px=radius, edge_px=0.06 * n, dtype=torch.float64)
    freqs = shell_frequencies_per_angstrom(n, pixel)
    keep = freqs <= 1.0 / (2.0 * result_pixel) + 1e-12
    fsc = fourier_shell_correlation(truth, aligned, mask=mask)[keep]
    support_fsc = fourier_shell_correlation(truth, aligned, mask=support)[keep]
    freqs = freqs[keep]
    res05, res0143 = _crossings(fsc, freqs)
    ops = symmetry_operators(symmetry)
    angles = rotation_angle_deg(alignment.rotation.unsqueeze(0) @ ops)
    half = None
    if (results / "half1.mrc").is_file() and (results / "half2.mrc").is_file():
        h1, half_pixel = _load(results / "half1.mrc")
        h2, _ = _load(results / "half2.mrc")
        if h1.shape == h2.shape:
            m = h1.shape[-1]
            half_mask = soft_sphere_mask(m, radius_px=0.42 * m, edge_px=0.06 * m, dtype=torch.float64)
            if (results / "mask.mrc").is_file():
                given, _ = _load(results / "mask.mrc")
                half_mask = given if given.shape == h1.shape else half_mask
            half_fsc = fourier_shell_correlation(h1, h2, mask=half_mask)
            half = _crossings(half_fsc, shell_frequencies_per_angstrom(m, half_pixel))[1]
    other = alignment.other_hand_score
    return MapScore(
        voxel_size_angstrom=pixel,
        box_size_px=n,
        symmetry=symmetry.upper(),
        resampled=resampled,
        mirrored=alignment.mirrored,
        rotation_matrix=alignment.rotation.tolist(),
        rotation_angle_deg=float(angles.min()),
        shift_angstrom=(alignment.shift_xyz_px * pixel).tolist(),
        search_score=alignment.score,
        other_hand_search_score=None if math.isnan(other) else other,
        resolution_fsc_0_5_angstrom=res05,
        resolution_fsc_0_143_angstrom=res0143,
        fsc_mask_radius_angstrom=radius * pixel,
        frequencies_per_angstrom=freqs.tolist(),
        fsc=fsc.tolist(),
        support_resolution_fsc_0_143_angstrom=fsc_resolution_angstrom(support_fsc, freqs, 0.143),
        support_fsc=support_fsc.tolist(),
        half_map_resolution_0_143_angstrom=half,
    )
