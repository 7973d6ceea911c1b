"""Projections by Fourier slicing against real-space projections, local searches that recover a known pose, and
orientation priors that hold a search within three sigmas of the prior or pull an undetermined angle back to it."""

from __future__ import annotations

import math

import torch

from tomoforge.averaging.align import (
    local_rotations,
    local_search,
    masked_view_spectra,
    prior_angles_deg,
    project_slices,
    reference_table,
    score_noise_variance,
)
from tomoforge.fourier import fftfreq_grid, shift_phase_ramp_2d
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


def _cylinder() -> torch.Tensor:
    """A map symmetric about its z axis (a ring above a blob): its projections fix the axis but not the spin."""
    axes = torch.arange(BOX, dtype=torch.float64) - BOX // 2
    zz, yy, xx = torch.meshgrid(axes, axes, axes, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2)
    ring = torch.exp(-0.5 * ((r - 6.0) ** 2 + (zz - 4.0) ** 2) / 1.5**2)
    return ring + 2.0 * torch.exp(-0.5 * (r**2 + (zz + 5.0) ** 2) / 2.0**2)


def _search_from(
    volume: torch.Tensor, truth: torch.Tensor, start: torch.Tensor, **prior: object
) -> list[torch.Tensor]:
    """The rotations of successive local searches (steps 2° to 0.5°) from ``start`` on noise-free views of
    ``volume`` at ``truth`` in five tilts, with the prior's arguments (``score_noise_variance`` from the views)."""
    table, p = reference_table(volume)
    tilts = torch.stack([rotation_y(float(a)) for a in range(-60, 61, 30)])
    images = project_slices(table, p, tilts @ truth, BOX)
    ctfs = torch.ones(images.shape, dtype=torch.float64)
    if prior:
        prior["score_noise_variance"] = score_noise_variance(
            images, max_frequency_per_pixel=0.4, radius_px=14.0, edge_px=2.0
        )
    path = [start]
    for step in (2.0, 2.0, 1.0, 1.0, 0.5, 0.5):
        found = local_search(
            table, p, images, ctfs, tilts, path[-1], local_rotations(step),
            max_shift_px=0, max_frequency_per_pixel=0.4, **prior,  # type: ignore[arg-type]
        )  # fmt: skip
        path.append(found.rotation)
    return path


def test_prior_angles_are_the_tilt_of_the_axis_and_the_spin_about_it() -> None:
    start = rotation_z(70.0) @ rotation_y(30.0) @ rotation_z(-20.0)
    # The spin about the particle's own axis, then a tilt of that axis, or the other way round: the same angles.
    for turned in (start @ rotation_y(10.0) @ rotation_z(25.0), start @ rotation_z(25.0) @ rotation_x(10.0)):
        tilt, psi = prior_angles_deg(turned, start)
        assert abs(float(tilt) - 10.0) < 1e-9 and abs(float(psi) - 25.0) < 1e-9, (tilt, psi)
    # Tilt is the angle between the z axes whatever the turn.
    turned = rotation_x(7.0) @ rotation_z(40.0) @ rotation_y(-4.0) @ start
    cosine = float(turned[:, 2] @ start[:, 2])
    assert abs(float(prior_angles_deg(turned, start)[0]) - math.degrees(math.acos(cosine))) < 1e-9
    # With a six-fold axis a spin of 58° is one of −2°; batches keep their shape.
    tilt, psi = prior_angles_deg(
        torch.stack([start @ rotation_x(5.0) @ rotation_z(58.0), start]), start, symmetry_order=6
    )
    assert tilt.shape == (2,) and torch.allclose(tilt, torch.tensor([5.0, 0.0], dtype=torch.float64))
    assert torch.allclose(psi, torch.tensor([-2.0, 0.0], dtype=torch.float64))
    assert abs(float(prior_angles_deg(start @ rotation_z(58.0), start)[1]) - 58.0) < 1e-9


def test_score_noise_variance_is_the_variance_of_the_score_on_noise() -> None:
    table, p = reference_table(_volume(1))
    truth = rotation_z(70.0) @ rotation_y(30.0) @ rotation_z(-20.0)
    tilts = torch.stack([rotation_y(float(a)) for a in range(-60, 61, 30)])
    cut, radius, edge, n, sigma = 0.3, 13.0, 3.0, 1000, 3.0
    noise = sigma * torch.randn(
        n * 5, BOX, BOX, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    spectra = masked_view_spectra(
        noise, torch.zeros(n * 5, 2, dtype=torch.float64), radius_px=radius, edge_px=edge
    )
    spectra = spectra.reshape(n, 5, BOX, BOX // 2 + 1)
    # The score of local_search at the true pose and no shift, in real space: b·Σ_v⟨x_v, m_v⟩ / ‖m‖ with m the
    # band-limited projections (DC left out).
    band = (torch.linalg.vector_norm(fftfreq_grid((BOX, BOX), dtype=torch.float64), dim=-1) <= cut).double()
    band[0, 0] = 0.0
    model = torch.fft.irfft2(project_slices(table, p, tilts @ truth, BOX) * band, s=(BOX, BOX))
    masked = torch.fft.irfft2(spectra, s=(BOX, BOX))
    scores = BOX * (masked * model).sum(dim=(1, 2, 3)) / model.square().sum().sqrt()
    ctfs = torch.ones(spectra.shape[1:], dtype=torch.float64)
    for i in range(2):
        found = local_search(
            table, p, spectra[i], ctfs, tilts, truth, local_rotations(1.0)[:1],
            max_shift_px=0, max_frequency_per_pixel=cut,
        )  # fmt: skip
        assert abs(found.score - float(scores[i])) < 1e-9 * abs(float(scores[i])), (found.score, scores[i])
    estimates = [
        score_noise_variance(spectra[i], max_frequency_per_pixel=cut, radius_px=radius, edge_px=edge)
        for i in range(20)
    ]
    empirical = float(scores.var())
    assert abs(sum(estimates) / len(estimates) / empirical - 1) < 0.1, (estimates[:3], empirical)
    assert abs(empirical / (BOX * BOX * sigma**2) - 1) < 0.1  # white noise: the variance per pixel times b²


def test_a_tilt_prior_never_lets_the_axis_go_beyond_three_sigma() -> None:
    # The data alone turn the axis 5° away from the start, onto the truth; a tilt prior of σ = 1° around the start
    # keeps every search within 3°, where the data press it against the limit.
    volume = _volume(1)
    truth = rotation_z(70.0) @ rotation_y(30.0) @ rotation_z(-20.0)
    start = truth @ rotation_y(-5.0)
    free = _search_from(volume, truth, start)
    held = _search_from(volume, truth, start, prior_rotation=start, sigma_tilt_deg=1.0)
    assert _angle_deg(free[-1], truth) < 0.5 and float(prior_angles_deg(free[-1], start)[0]) > 4.5
    tilts = [float(prior_angles_deg(r, start)[0]) for r in held]
    assert max(tilts) <= 3.0 + 1e-6 and tilts[-1] > 2.0, tilts
    assert _angle_deg(held[-1], truth) > 2.0


def test_a_psi_prior_pulls_an_undetermined_spin_back_to_the_prior() -> None:
    # Views of a map symmetric about z say nothing about the spin: 5° off the prior, the spin stays there without
    # the prior and comes back to it with a psi prior of σ = 2°, while the data keep the axis on the truth's.
    truth = rotation_z(70.0) @ rotation_y(30.0) @ rotation_z(-20.0)
    start = truth @ rotation_z(5.0)
    free = _search_from(_cylinder(), truth, start)
    pulled = _search_from(_cylinder(), truth, start, prior_rotation=truth, sigma_psi_deg=2.0)
    tilt, psi = (float(a) for a in prior_angles_deg(free[-1], truth))
    assert abs(psi - 5.0) < 1.0 and tilt < 0.5, (tilt, psi)
    tilt, psi = (float(a) for a in prior_angles_deg(pulled[-1], truth))
    assert abs(psi) < 1.0 and tilt < 1.0, (tilt, psi)
