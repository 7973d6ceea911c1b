"""Particle reconstruction from tilt images: extract each particle's view, insert it with its CTF, and reconstruct
gold-standard half maps with a Wiener filter from their FSC.

Used by the simulator's oracle (with every truth known) and by the averaging steps (with the pipeline's alignment,
CTF and poses). For each tilt, :func:`insert_tilt_particles` projects the particles with the view's projection
matrix (CONVENTIONS.md §7), cuts a box around each (centred to the sub-pixel by a phase ramp), and inserts it
(:func:`tomoforge.averaging.insert_slices`) premultiplied by its CTF at the particle's depth (and an optional extra
transfer such as dose weighting) with an optional noise weight. In the view frame the specimen is seen rotated by
the projection matrix's rotation, and the reference is carried into the specimen by the particle's rotation
(CONVENTIONS.md §4), so the reference as seen in the image is rotated by ``M·R``.

:func:`reconstruct_half_maps` applies the point group to the accumulators and reconstructs each half and the whole
with a per-shell Wiener constant from the half-map FSC (``W̄_s·(1 − FSC)/FSC``, RELION's ``1/τ²`` in the units of
the weights; Scheres 2012, J. Struct. Biol. 180, 519-530).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch

from tomoforge.averaging.fsc import fourier_shell_correlation, soft_sphere_mask
from tomoforge.averaging.insert import (
    accumulator_shape,
    insert_slices,
    reconstruct,
    symmetrize_accumulators,
    symmetry_rotations,
)
from tomoforge.ctf import ctf_2d
from tomoforge.fourier import fftfreq_grid
from tomoforge.geometry import point_defocus_angstrom, project_points

__all__ = [
    "HalfMaps",
    "Views",
    "extract_views",
    "view_ctfs",
    "TiltDefocus",
    "Optics",
    "ParticleAccumulators",
    "insert_tilt_particles",
    "reconstruct_half_maps",
    "shell_grid",
    "wiener_constant",
]


class TiltDefocus(Protocol):
    """A tilt's CTF at the tomogram centre's height (e.g. :class:`tomoforge.models.CtfParameters`)."""

    @property
    def defocus_u_angstrom(self) -> float: ...
    @property
    def defocus_v_angstrom(self) -> float: ...
    @property
    def astigmatism_angle_deg(self) -> float: ...
    @property
    def phase_shift_deg(self) -> float: ...


@dataclass(frozen=True)
class Optics:
    """Microscope constants of the CTF (CONVENTIONS.md §5, §8)."""

    voltage_kv: float
    spherical_aberration_mm: float
    amplitude_contrast: float
    b_factor_angstrom2: float = 0.0


@dataclass
class ParticleAccumulators:
    """Fourier accumulators ``(data_sum, weight_sum)`` per half set, and counts of the views inserted."""

    box_size_px: int
    pad_factor: int = 2
    oversample_images: bool = False
    device: torch.device | str | None = None
    halves: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    n_views: int = 0
    n_views_outside: int = 0

    def __post_init__(self) -> None:
        shape = accumulator_shape(self.box_size_px, self.pad_factor)
        for half in (1, 2):
            self.halves[half] = (
                torch.zeros(shape, dtype=torch.complex64, device=self.device),
                torch.zeros(shape, dtype=torch.float32, device=self.device),
            )

    @property
    def transform_size(self) -> int:
        """Edge of the grid the boxes are transformed on (the CTF's grid)."""
        return self.box_size_px * self.pad_factor if self.oversample_images else self.box_size_px


class Views(NamedTuple):
    """Boxes cut around particles' projections in one image (:func:`extract_views`)."""

    kept: torch.Tensor
    """``(k,)`` indices of the particles whose box lies wholly inside the image."""
    boxes: torch.Tensor
    """``(k, b, b)`` float32 boxes, the particle's projection within half a pixel of the centre ``b // 2``."""
    shifts_xy_px: torch.Tensor
    """``(k, 2)`` sub-pixel shifts that move the projection exactly onto the box centre."""
    depth_px: torch.Tensor
    """``(k,)`` the particles' depth along the beam in this view (the third row of the projection), pixels."""


def extract_views(
    image: torch.Tensor, projection_matrix: torch.Tensor, positions_xyz_px: torch.Tensor, box: int
) -> Views:
    """Cut a ``box``-pixel square around each particle's projection in ``image`` (centre ``N // 2``).

    ``projection_matrix`` is the view's ``(3, 4)`` matrix in pixels of the image (CONVENTIONS.md §7) and the
    positions are in the same pixels from the tomogram's centre. A box starts at the nearest whole pixel; the
    remaining fraction is returned as the shift that centres it.
    """
    h, w = (int(v) for v in image.shape)
    device = image.device
    matrix = projection_matrix.to(device=device, dtype=torch.float64)
    projected = project_points(positions_xyz_px.to(device=device, dtype=torch.float64), matrix)
    centre = torch.stack([projected[:, 0] + w // 2, projected[:, 1] + h // 2], dim=-1)
    nearest = torch.round(centre)
    corner = nearest.to(torch.int64) - box // 2
    inside = (corner >= 0).all(dim=-1) & (corner[:, 0] + box <= w) & (corner[:, 1] + box <= h)
    keep = torch.nonzero(inside).squeeze(1)
    steps = torch.arange(box, device=device)
    rows = (corner[keep, 1, None] + steps)[:, :, None]
    cols = (corner[keep, 0, None] + steps)[:, None, :]
    return Views(
        keep,
        image[rows, cols].to(torch.float32),
        (nearest[keep] - centre[keep]).to(torch.float32),
        projected[keep, 2],
    )


def view_ctfs(
    depth_px: torch.Tensor,
    defocus: TiltDefocus,
    optics: Optics,
    *,
    pixel_size_angstrom: float,
    size: int,
    handedness: int = 1,
) -> torch.Tensor:
    """``(k, size, size // 2 + 1)`` CTFs of particle views at their depths (CONVENTIONS.md §8) on an rfft grid."""

    def at_depth(value: float) -> torch.Tensor:
        return point_defocus_angstrom(value, depth_px, pixel_size_angstrom, handedness)

    return ctf_2d(
        defocus_u_angstrom=at_depth(defocus.defocus_u_angstrom),
        defocus_v_angstrom=at_depth(defocus.defocus_v_angstrom),
        astigmatism_angle_deg=defocus.astigmatism_angle_deg,
        voltage_kv=optics.voltage_kv,
        spherical_aberration_mm=optics.spherical_aberration_mm,
        amplitude_contrast=optics.amplitude_contrast,
        phase_shift_deg=defocus.phase_shift_deg,
        b_factor_angstrom2=optics.b_factor_angstrom2,
        pixel_size_angstrom=pixel_size_angstrom,
        shape_yx=(size, size),
        dtype=torch.float32,
        device=depth_px.device,
    )


def insert_tilt_particles(
    accumulators: ParticleAccumulators,
    image: torch.Tensor,
    *,
    projection_matrix: torch.Tensor,
    positions_xyz_px: torch.Tensor,
    rotations: torch.Tensor,
    half_sets: torch.Tensor,
    defocus: TiltDefocus,
    optics: Optics,
    pixel_size_angstrom: float,
    handedness: int = 1,
    transfer: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> int:
    """Extract the particles of one tilt image and insert them into the half-set accumulators.

    Parameters
    ----------
    accumulators
        Updated in place.
    image
        ``(H, W)`` tilt image in projection units (``Σ_z V``, the particle's CTF not corrected), centre ``N // 2``.
    projection_matrix
        ``(3, 4)`` view of this tilt in pixels of the image (CONVENTIONS.md §7), e.g. from
        :func:`tomoforge.geometry.projection_matrices_from_xf`.
    positions_xyz_px
        ``(n, 3)`` particle centres in pixels from the tomogram centre.
    rotations
        ``(n, 3, 3)`` particle rotations, reference → tomogram (CONVENTIONS.md §4).
    half_sets
        ``(n,)`` 1 or 2.
    defocus
        The tilt's CTF at the tomogram centre's height.
    optics
        Microscope constants.
    pixel_size_angstrom
        Pixel of the image.
    handedness
        Defocus handedness (CONVENTIONS.md §8).
    transfer, weights
        ``(g, g // 2 + 1)`` extra transfer multiplying the CTF and noise weight of this tilt
        (:func:`tilt_transfer_and_weights`) on the grid of :attr:`ParticleAccumulators.transform_size`; None: 1.

    Returns
    -------
    int
        Number of particles inserted (those whose box lies wholly inside the image).
    """
    b, g = accumulators.box_size_px, accumulators.transform_size
    device = image.device
    matrix = projection_matrix.to(device=device, dtype=torch.float64)
    cut = extract_views(image, matrix, positions_xyz_px, b)
    accumulators.n_views_outside += int(positions_xyz_px.shape[0] - cut.kept.numel())
    if cut.kept.numel() == 0:
        return 0
    keep, boxes, shifts = cut.kept, cut.boxes, cut.shifts_xy_px
    ctf = view_ctfs(
        cut.depth_px, defocus, optics, pixel_size_angstrom=pixel_size_angstrom, size=g, handedness=handedness
    )
    if transfer is not None:
        ctf = ctf * transfer.to(device)
    views = (matrix[:, :3] @ rotations.to(device=device, dtype=torch.float64)[keep]).to(torch.float32)
    halves = half_sets.to(device)[keep]
    for half, (data_sum, weight_sum) in accumulators.halves.items():
        mine = torch.nonzero(halves == half).squeeze(1)
        if mine.numel() == 0:
            continue
        insert_slices(
            boxes[mine],
            views[mine],
            ctf=ctf[mine],
            weights=None if weights is None else weights.to(device),
            shifts_xy_px=shifts[mine],
            pad_factor=accumulators.pad_factor,
            oversample_images=accumulators.oversample_images,
            accumulators=(data_sum, weight_sum),
        )
    accumulators.n_views += int(keep.numel())
    return int(keep.numel())


def shell_grid(p: int, box: int, device: torch.device) -> torch.Tensor:
    """Box-shell index ``round(|k|·b)`` of every voxel of the padded ``(P, P, P//2+1)`` grid."""
    freq = fftfreq_grid((p, p, p), device=device, dtype=torch.float64)
    return torch.round(torch.linalg.vector_norm(freq, dim=-1) * box).to(torch.int64)


def wiener_constant(weight_sum: torch.Tensor, shells: torch.Tensor, fsc: torch.Tensor) -> torch.Tensor:
    """``W̄_s·(1 − FSC_s)/FSC_s`` per voxel (FSC clamped to [0.001, 0.999])."""
    n = int(fsc.numel())
    inside = shells < n
    counts = torch.bincount(shells[inside], minlength=n).clamp(min=1)
    mean_weight = (
        torch.bincount(shells[inside], weights=weight_sum[inside].to(torch.float64), minlength=n) / counts
    )
    f = fsc.to(torch.float64).clamp(0.001, 0.999)
    per_shell = mean_weight * (1.0 - f) / f
    constant = torch.full_like(weight_sum, float(per_shell.max()) if n else 0.0)
    constant[inside] = per_shell[shells[inside]].to(weight_sum.dtype)
    return constant


class HalfMaps(NamedTuple):
    """Half maps, the merged map and their FSC."""

    map: torch.Tensor
    """``(b, b, b)`` Wiener-filtered map of both halves."""
    half1: torch.Tensor
    half2: torch.Tensor
    fsc_half_maps: torch.Tensor
    """``(b // 2 + 1,)`` FSC between the half maps within :attr:`mask`."""
    mask: torch.Tensor
    """``(b, b, b)`` the soft sphere the FSC was computed within."""


def reconstruct_half_maps(
    accumulators: ParticleAccumulators,
    *,
    symmetry: str = "C1",
    mask_radius_fraction: float = 0.42,
    mask_edge_fraction: float = 0.06,
) -> HalfMaps:
    """Symmetrise the accumulators, reconstruct the half maps and the map, and their FSC.

    The half maps are first reconstructed with a small constant (0.1 % of each shell's mean weight); their FSC
    (within a soft sphere of ``mask_radius_fraction`` of the box, edge ``mask_edge_fraction``) gives the per-shell
    Wiener constants of the final half maps, and the FSC of the whole (``2·FSC/(1 + FSC)``) that of the map.

    Parameters
    ----------
    accumulators
        Filled by :func:`insert_tilt_particles` (or :func:`tomoforge.averaging.insert_slices`).
    symmetry
        Point group ``Cn`` or ``Dn`` (:func:`tomoforge.averaging.symmetry_rotations`).
    """
    b = accumulators.box_size_px
    ops = symmetry_rotations(symmetry, dtype=torch.float32, device=accumulators.device)
    halves = {}
    for half, (data_sum, weight_sum) in accumulators.halves.items():
        halves[half] = (
            symmetrize_accumulators(data_sum, weight_sum, ops) if ops.shape[0] > 1 else (data_sum, weight_sum)
        )
    whole = (halves[1][0] + halves[2][0], halves[1][1] + halves[2][1])
    p = whole[0].shape[0]
    shells = shell_grid(p, b, whole[0].device)
    mask = soft_sphere_mask(
        b, radius_px=mask_radius_fraction * b, edge_px=mask_edge_fraction * b, dtype=torch.float64
    ).to(whole[0].device)
    floor = torch.full((b // 2 + 1,), 0.999, dtype=torch.float64)  # W̄·(1 − f)/f ≈ 0.001·W̄
    first = [
        reconstruct(d, w, box_size_px=b, wiener_constant=wiener_constant(w, shells, floor))
        for d, w in (halves[1], halves[2])
    ]
    fsc_first = fourier_shell_correlation(first[0].double(), first[1].double(), mask=mask).cpu()
    maps = [
        reconstruct(d, w, box_size_px=b, wiener_constant=wiener_constant(w, shells, fsc_first))
        for d, w in (halves[1], halves[2])
    ]
    fsc_whole = 2.0 * fsc_first.clamp(min=0.0) / (1.0 + fsc_first.clamp(min=0.0))
    full = reconstruct(*whole, box_size_px=b, wiener_constant=wiener_constant(whole[1], shells, fsc_whole))
    fsc_halves = fourier_shell_correlation(maps[0].double(), maps[1].double(), mask=mask).cpu()
    return HalfMaps(full, maps[0], maps[1], fsc_halves, mask)
