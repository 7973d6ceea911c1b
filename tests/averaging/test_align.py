"""Projections by Fourier slicing against real-space projections, and local searches that recover a known pose."""

from __future__ import annotations

import math

import torch

from tomoforge.averaging.align import local_rotations, local_search, project_slices, reference_table
from tomoforge.fourier import shift_phase_ramp_2d
from tomoforge.geometry import rotation_x, rotation_y, rotation_z

BOX = 32


def _volume(seed: int = 0) -> torch.Tensor:
    """A smooth asymmetric blob cluster centred in a 32³ box."""
    generator = torch.Generator().manual_seed(seed)
    centres = (torch.rand(8, 3, generator=generator, dtype=torch.float64) - 0.5) * 14
    axes = torch.arange(BOX, dtype=torch.float64) - BOX // 2
    zz, yy, xx = torch.meshgrid(axes, axes, axes, indexing="ij")
    grid = torch.stack([xx, yy, zz], dim=-1)
    volume = torch.zeros(BOX, BOX, BOX, dtype=torch.float64)
    for k, c in enumerate(centres):
        volume += (1.0 + 0.3 * k) * torch.exp(-0.5 * ((grid - c) ** 2).sum(-1) / 2.0**2)
    return volume


def _real_space_projection(volume: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """∫ V(Rᵀ·(x, y, z)) dz by trilinear resampling."""
    axes = torch.arange(BOX, dtype=torch.float64) - BOX // 2
    zz, yy, xx = torch.meshgrid(axes, axes, axes, indexing="ij")
    q = torch.stack([xx, yy, zz], dim=-1) @ view  # rows: (Rᵀ q)ᵀ
    grid = (2.0 * (q + BOX // 2) / (BOX - 1) - 1.0)[None]
    turned = torch.nn.functional.grid_sample(volume[None, None], grid, align_corners=True)[0, 0]
    return turned.sum(dim=0)


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(a.T @ b)) - 1) / 2))))


def test_fourier_slices_are_the_projections() -> None:
    volume = _volume()
    table, p = reference_table(volume)
    view = rotation_z(25.0) @ rotation_y(40.0) @ rotation_x(-10.0)
    sliced = torch.fft.fftshift(torch.fft.irfft2(project_slices(table, p, view[None], BOX)[0], s=(BOX, BOX)))
    direct = _real_space_projection(volume, view)
    cc = torch.corrcoef(torch.stack([sliced.flatten(), direct.flatten()]))[0, 1]
    assert float(cc) > 0.99, float(cc)
    assert abs(float(sliced.sum() / direct.sum()) - 1) < 0.05  # the rotated box loses a little at its corners


def test_local_search_recovers_a_known_rotation_and_shift() -> None:
    volume = _volume(1)
    table, p = reference_table(volume)
    truth = rotation_z(70.0) @ rotation_y(30.0) @ rotation_z(-20.0)
    tilts = torch.stack([rotation_y(float(a)) for a in range(-60, 61, 15)])
    shift = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    images = project_slices(table, p, tilts @ truth, BOX)
    image_shifts = tilts[:, :2, :] @ shift  # (v, 2): the particle's projection moves by (M t)_xy
    images = images * shift_phase_ramp_2d(image_shifts, (BOX, BOX))
    ctfs = torch.ones(images.shape, dtype=torch.float64)
    start = rotation_x(3.0) @ rotation_y(-2.5) @ truth
    current = start
    for step in (2.0, 2.0, 1.0, 1.0, 0.5, 0.5):
        found = local_search(
            table,
            p,
            images,
            ctfs,
            tilts,
            current,
            local_rotations(step),
            max_shift_px=2,
            max_frequency_per_pixel=0.4,
        )
        current = found.rotation
    assert _angle_deg(start, truth) > 3.5
    assert _angle_deg(current, truth) < 0.5, _angle_deg(current, truth)
    assert torch.allclose(found.shift_xyz_px, shift, atol=0.05), found.shift_xyz_px


def test_local_rotations_are_a_grid_about_the_identity() -> None:
    small = local_rotations(2.0)
    assert small.shape == (27, 3, 3) and torch.allclose(small[0], torch.eye(3, dtype=torch.float64))
    angles = sorted(_angle_deg(r, torch.eye(3, dtype=torch.float64)) for r in small)
    assert abs(angles[-1] - 2.0 * math.sqrt(3)) < 1e-6 and abs(angles[1] - 2.0) < 1e-6


def test_masked_view_spectra_centre_the_particle_and_drop_the_background() -> None:
    from tomoforge.averaging.align import masked_view_spectra

    b = 32
    yy, xx = torch.meshgrid(
        torch.arange(b, dtype=torch.float64), torch.arange(b, dtype=torch.float64), indexing="ij"
    )
    off = (0.3, -0.4)  # the particle sits this far (x, y) from the box centre
    blob = torch.exp(-0.5 * ((xx - b // 2 - off[0]) ** 2 + (yy - b // 2 - off[1]) ** 2) / 2.0**2)
    boxes = (5.0 + blob)[None]
    spectra = masked_view_spectra(boxes, torch.tensor([[-off[0], -off[1]]]), radius_px=10.0, edge_px=3.0)
    # Centred: a symmetric particle at the origin of the ifftshift-ed layout has a real transform.
    assert float(spectra.imag.abs().max()) < 1e-3 * float(spectra.real.abs().max())
    # The constant background is gone: the DC term is the blob's integral (2π·σ²), not 5·b².
    assert abs(float(spectra[0, 0, 0].real) - 2 * math.pi * 4.0) < 0.05 * 2 * math.pi * 4.0
