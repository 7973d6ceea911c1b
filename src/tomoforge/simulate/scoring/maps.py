"""Map scores: Fourier shell correlation and the search for the rotation, shift and hand that superpose two maps.

A pipeline's average is in its own reference frame: rotated (only modulo the point group), shifted, possibly of the
other hand. :func:`align_maps` finds the transform ``aligned(x) = moving'(G·x + t)`` (``moving'`` the moving map or
its mirror image) that best matches the reference: an exhaustive search over a near-uniform SO(3) grid on
downsampled, low-passed maps, translations by FFT cross-correlation, both hands; then a local pattern search of the
best candidates on finer maps; finally the sub-voxel shift by Newton steps on the continuous cross-correlation.
Volumes are resampled through a 2× Fourier-upsampled copy with a cubic B-spline (:mod:`.resample`), which keeps
the FSC near 1 up to Nyquist.

The FSC lives in :mod:`.fsc`, resampling in :mod:`.resample`; both are re-exported here.

References
----------
González, Á. (2010). Measurement of areas on a sphere using Fibonacci and latitude–longitude lattices. Math.
Geosci. 42, 49–64. doi:10.1007/s11004-009-9257-x (the direction grid).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from tomoforge.averaging.fsc import (
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
    soft_sphere_mask,
)
from tomoforge.fourier import fftfreq_grid
from tomoforge.geometry import rotation_y, rotation_z
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
    "fourier_resize",
    "fourier_shell_correlation",
    "fsc_resolution_angstrom",
    "mirror_volume",
    "score_map",
    "shell_frequencies_per_angstrom",
    "soft_sphere_mask",
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


# --------------------------------------------------------------------------------------------------- search

_HAND_MARGIN = 0.01
"""Low-resolution correlation within which the other hand is refined too (nearly achiral maps)."""


class MapAlignment(NamedTuple):
    """The transform found by :func:`align_maps`: ``aligned(x) = moving'(G·x + t)``."""

    rotation: torch.Tensor
    """``(3, 3)`` ``G``: the moving map shows the reference rotated by ``G`` (modulo the symmetry)."""
    shift_xyz_px: torch.Tensor
    """``(3,)`` ``t`` in voxels: the moving map shows the reference moved by ``t`` (after the rotation)."""
    mirrored: bool
    """Whether ``moving'`` is the mirror image of the moving map (:func:`mirror_volume`)."""
    score: float
    """Normalised cross-correlation of the low-passed, masked maps at the refined pose."""


def _lowpass(volume: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian low-pass (real-space standard deviation ``sigma_px``)."""
    f = fftfreq_grid(volume.shape[-3:], rfft=True, device=volume.device, dtype=volume.dtype)
    gauss = torch.exp(-2.0 * math.pi**2 * sigma_px**2 * f.square().sum(-1))
    spectrum = torch.fft.rfftn(volume, dim=(-3, -2, -1)) * gauss
    return torch.fft.irfftn(spectrum, s=volume.shape[-3:], dim=(-3, -2, -1))


class _Level:
    """Reference and moving maps at one sampling, scoring batches of rotations by FFT cross-correlation.

    The rotated reference is masked (soft sphere) and normalised; the moving map is only low-passed, so that its
    content shifted towards the mask edge still counts. Scores are ``max_t Σ ref_G(y − t)·m(y) / (‖ref_G‖·‖m‖)``.
    """

    def __init__(
        self,
        reference: torch.Tensor,
        moving: dict[bool, torch.Tensor],
        *,
        size: int,
        sigma_px: float,
        cubic: bool,
        dtype: torch.dtype,
    ) -> None:
        self.size, self.cubic = size, cubic
        self.mask = soft_sphere_mask(size, radius_px=0.42 * size, edge_px=0.06 * size, dtype=dtype)
        self.reference = Interpolant(
            _lowpass(self._resized(reference, dtype), sigma_px), oversample=1, cubic=cubic
        )
        self.moving_ft = {}
        for hand, volume in moving.items():
            v = _lowpass(self._resized(volume, dtype), sigma_px)
            v = v - v.mean()
            self.moving_ft[hand] = torch.fft.rfftn(v / v.norm().clamp_min(1e-30))

    def _resized(self, volume: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        v = volume.to(dtype)
        return fourier_resize(v, self.size) if self.size != v.shape[-1] else v

    def score(self, rotations: torch.Tensor) -> dict[bool, torch.Tensor]:
        """Peak correlation per rotation (parabola-refined), for each hand of the moving map."""
        scores: dict[bool, list[torch.Tensor]] = {hand: [] for hand in self.moving_ft}
        batch = max(1, (2**21 if not self.cubic else 2**18) // self.size**3)
        for start in range(0, len(rotations), batch):
            g = rotations[start : start + batch].to(self.reference.dtype)
            rotated = self.reference.sample(g.transpose(-1, -2))
            rotated = rotated * self.mask
            rotated = rotated - (rotated.sum((-3, -2, -1), keepdim=True) / self.mask.sum()) * self.mask
            norm = rotated.flatten(1).norm(dim=1).clamp_min(1e-30)
            spectrum = torch.fft.rfftn(rotated, dim=(-3, -2, -1)).conj()
            for hand, moving_ft in self.moving_ft.items():
                cc = torch.fft.irfftn(moving_ft * spectrum, s=(self.size,) * 3, dim=(-3, -2, -1))
                scores[hand].append(_peak(cc / norm[:, None, None, None])[0])
        return {hand: torch.cat(values) for hand, values in scores.items()}


def _peak(cc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum of ``(b, n, n, n)`` periodic correlations, parabola-refined, and its position ``(x, y, z)``."""
    b, n = cc.shape[0], cc.shape[-1]
    flat = cc.reshape(b, -1).argmax(dim=1)
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
        value = value - torch.where(concave, 0.125 * (cp - cm).square() / safe, torch.zeros_like(curv))
        signed = torch.where(index[k] > n // 2, index[k] - n, index[k]).to(cc.dtype)
        shift.append(signed + delta)
    return value, torch.stack(shift, dim=-1)


def _pattern_search(
    level: _Level, rotation: torch.Tensor, hand: bool, step_deg: float, min_step_deg: float
) -> tuple[torch.Tensor, float]:
    """Local maximisation of the correlation over left rotation perturbations about x, y, z, halving the step."""
    best = float(level.score(rotation.unsqueeze(0))[hand][0])
    axes = torch.cat([torch.eye(3), -torch.eye(3)]).to(rotation)
    step = step_deg
    while step >= min_step_deg:
        candidates = rotation_from_vector(axes * math.radians(step)) @ rotation
        scores = level.score(candidates)[hand]
        k = int(scores.argmax())
        if float(scores[k]) > best + 1e-9 * abs(best):
            best, rotation = float(scores[k]), candidates[k]
        else:
            step /= 2.0
    return rotation, best


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
    symmetry_order: int = 1,
    step_deg: float = 15.0,
    try_mirror: bool = True,
    coarse_size: int = 16,
    fine_size: int = 64,
    n_refine: int = 3,
    min_step_deg: float = 0.05,
) -> MapAlignment:
    """Find the rotation, shift and hand that superpose ``moving`` onto ``reference``.

    Parameters
    ----------
    reference, moving
        ``(n, n, n)`` volumes on the same grid (resample first when pixel sizes differ).
    symmetry_order
        ``n`` of the reference's Cn symmetry about z (the rotation is found modulo ``Rz(360°/n)``).
    step_deg
        Spacing of the global rotation grid.
    try_mirror
        Also search the mirror image of ``moving``.
    coarse_size, fine_size
        Box edges of the global search and of the local refinement (capped at ``n``).
    n_refine
        Best global candidates of each hand refined locally.
    min_step_deg
        Final step of the local search.

    Returns
    -------
    MapAlignment
    """
    if reference.shape != moving.shape or len(set(reference.shape)) != 1 or reference.ndim != 3:
        raise ValueError(
            f"maps must be cubic and of one shape, got {tuple(reference.shape)} and {tuple(moving.shape)}"
        )
    n = reference.shape[-1]
    hands = {False: moving}
    if try_mirror:
        hands[True] = mirror_volume(moving)
    coarse = _Level(
        reference,
        hands,
        size=min(n, coarse_size + coarse_size % 2),
        sigma_px=1.0,
        cubic=False,
        dtype=torch.float32,
    )
    grid = uniform_rotation_grid(step_deg, symmetry_order=symmetry_order).to(torch.float32)
    candidates: list[tuple[float, bool, torch.Tensor]] = []
    for hand, scores in coarse.score(grid).items():
        top = torch.topk(scores, min(n_refine, len(scores))).indices
        candidates += [(float(scores[i]), hand, grid[i]) for i in top.tolist()]
    fine_n = min(n, fine_size + fine_size % 2)
    # Local refinement: fast trilinear correlation for the best candidates, then cubic in float64 for
    # the winner of each hand.
    fast = _Level(reference, hands, size=fine_n, sigma_px=1.0, cubic=False, dtype=torch.float32)
    refined = [
        (*_pattern_search(fast, rotation, hand, step_deg / 2.0, 0.5), hand)
        for _, hand, rotation in candidates
    ]
    # The best of each hand goes on: a nearly achiral map is told from its mirror image only at high resolution.
    ranked = sorted(refined, key=lambda r: -r[1])
    finalists: dict[bool, torch.Tensor] = {}
    for rotation, score, hand in ranked:
        if score >= ranked[0][1] - _HAND_MARGIN:
            finalists.setdefault(hand, rotation)
    best: tuple[float, bool, torch.Tensor] | None = None
    for hand, rotation in finalists.items():
        # Remove the sub-voxel shift (exactly, in Fourier space) so that the correlation peak of the final
        # refinement lies on a voxel, where its value is not biased by interpolation; then refine with cubic
        # resampling.
        fine_ref, fine_moving = (
            fourier_resize(v.to(torch.float64), fine_n) for v in (reference, hands[hand])
        )
        shift = (n / fine_n) * _subvoxel_shift(fine_ref, fine_moving, rotation.to(torch.float64))
        centred = _fourier_translate(hands[hand].to(torch.float64), -shift)
        exact = _Level(reference, {hand: centred}, size=fine_n, sigma_px=0.5, cubic=True, dtype=torch.float64)
        refined_rotation, score = _pattern_search(exact, rotation.to(torch.float64), hand, 0.5, min_step_deg)
        if best is None or score > best[0]:
            best = (score, hand, refined_rotation)
    assert best is not None
    score, hand, rotation = best
    shift = _subvoxel_shift(reference, hands[hand], rotation)
    return MapAlignment(rotation=rotation, shift_xyz_px=shift, mirrored=hand, score=score)


def _fourier_translate(volume: torch.Tensor, shift_xyz_px: torch.Tensor) -> torch.Tensor:
    """``out(y) = volume(y − s)``: the content moved by ``s`` voxels (periodic, exact for band-limited maps)."""
    k = fftfreq_grid(volume.shape, rfft=True, dtype=volume.dtype, device=volume.device).flip(-1)
    phase = torch.exp(-2j * math.pi * (k @ shift_xyz_px.to(volume.dtype)))
    return torch.fft.irfftn(torch.fft.rfftn(volume) * phase, s=volume.shape)


def _subvoxel_shift(reference: torch.Tensor, moving: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Translation ``t`` with ``moving(y) ≈ reference(Gᵀ(y − t))`` for a known rotation ``G``, to sub-voxel precision."""
    n = reference.shape[-1]
    ref64 = reference.to(torch.float64)
    derotated = transform_volume(moving.to(torch.float32), rotation, oversample=1).to(
        torch.float64
    )  # ≈ ref(x − Gᵀt)
    cc = torch.fft.irfftn(torch.fft.rfftn(derotated) * torch.fft.rfftn(ref64).conj(), s=(n,) * 3)
    start = _peak(cc.unsqueeze(0))[1][0].round()
    return rotation @ _newton_shift(ref64, derotated, start)


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
        description="Normalised correlation of the low-passed maps at the found pose."
    )
    resolution_fsc_0_5_angstrom: float = Field(description="Resolution where the FSC falls below 0.5, Å.")
    resolution_fsc_0_143_angstrom: float = Field(description="Resolution where the FSC falls below 0.143, Å.")
    fsc_mask_radius_angstrom: float = Field(description="Radius of the soft spherical mask of the FSC, Å.")
    frequencies_per_angstrom: list[float] = Field(description="FSC shell frequencies, cycles/Å.")
    fsc: list[float] = Field(description="FSC per shell against the true map.")
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


def score_map(
    truth_path: str | Path,
    results_folder: str | Path,
    *,
    symmetry: str = "C6",
    step_deg: float = 15.0,
) -> MapScore | NotProvided:
    """Score ``average/map.mrc`` of a results folder against the true map.

    The result map is resampled onto the truth's grid if its voxel size or box differs, superposed with
    :func:`align_maps` (both hands), and compared by the FSC within a soft sphere of 0.42 box radius. The half maps
    ``average/half1.mrc``/``half2.mrc``, when present, give the results' own gold-standard resolution
    (within ``average/mask.mrc`` when present).

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
    alignment = align_maps(truth, result, symmetry_order=order, step_deg=step_deg)
    aligned = apply_map_alignment(result, alignment)
    radius = 0.42 * n
    mask = soft_sphere_mask(n, radius_px=radius, edge_px=0.06 * n, dtype=torch.float64)
    freqs = shell_frequencies_per_angstrom(n, pixel)
    fsc = fourier_shell_correlation(truth, aligned, mask=mask)
    keep = freqs <= 1.0 / (2.0 * result_pixel) + 1e-12
    fsc, freqs = fsc[keep], freqs[keep]
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
        resolution_fsc_0_5_angstrom=res05,
        resolution_fsc_0_143_angstrom=res0143,
        fsc_mask_radius_angstrom=radius * pixel,
        frequencies_per_angstrom=freqs.tolist(),
        fsc=fsc.tolist(),
        half_map_resolution_0_143_angstrom=half,
    )
