"""Map score: FSC, exact resampling, and recovery of a rotated, shifted and mirrored map, also of a particle that sits
in a lattice on a membrane against the lone true particle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_scoring_fixtures import band_limited_blobs, random_blob_map

from tomoforge.geometry import rotation_z
from tomoforge.io.mrc import write_mrc
from tomoforge.simulate.scoring import (
    align_maps,
    apply_map_alignment,
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    score_map,
)
from tomoforge.simulate.scoring._common import NotProvided, rotation_angle_deg, rotation_from_vector
from tomoforge.simulate.scoring.maps import (
    MapScore,
    axis_rotations,
    fourier_resize,
    mirror_volume,
    shell_frequencies_per_angstrom,
    soft_sphere_mask,
    support_mask,
    transform_volume,
    uniform_rotation_grid,
)

MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def test_fsc_of_identical_and_independent_maps() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, 32, generator=g, dtype=torch.float64)
    b = torch.randn(32, 32, 32, generator=g, dtype=torch.float64)
    assert torch.allclose(fourier_shell_correlation(a, a), torch.ones(17, dtype=torch.float64))
    fsc = fourier_shell_correlation(a, b)
    assert fsc.shape == (17,) and float(fsc[2:].abs().max()) < 0.3  # noise: |FSC| ~ 1/sqrt(voxels per shell)
    assert float(fourier_shell_correlation(a, -a)[5]) == pytest.approx(-1.0)
    freqs = shell_frequencies_per_angstrom(32, 2.0)
    assert float(freqs[-1]) == pytest.approx(0.25)  # Nyquist of 2 Å voxels
    curve = 1.0 - torch.arange(17, dtype=torch.float64) / 16.0  # falls linearly, crosses 0.5 at shell 8
    assert fsc_resolution_angstrom(curve, freqs, 0.5) == pytest.approx(1.0 / float(freqs[8]))
    assert fsc_resolution_angstrom(torch.ones(17), freqs, 0.143) == pytest.approx(4.0)


def test_fsc_is_fast_for_128_cubed() -> None:
    import time

    a = torch.randn(128, 128, 128, dtype=torch.float64)
    start = time.perf_counter()
    fourier_shell_correlation(a, a + 0.1)
    assert time.perf_counter() - start < 1.0


def test_resampling_is_exact_on_the_grid_and_moves_by_integers() -> None:
    volume, *_ = random_blob_map(1, n=16)
    up = fourier_resize(volume, 32)
    assert torch.allclose(up[::2, ::2, ::2], volume, atol=1e-12)
    assert torch.allclose(fourier_resize(up, 16), volume, atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(transform_volume(volume, eye), volume, atol=1e-9)
    shifted = transform_volume(volume, eye, torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64))
    rolled = torch.roll(volume, shifts=(-3, 1, -2), dims=(0, 1, 2))  # out(x) = volume(x + t)
    assert torch.allclose(shifted[4:-4, 4:-4, 4:-4], rolled[4:-4, 4:-4, 4:-4], atol=1e-9)
    m = mirror_volume(volume)
    assert torch.equal(mirror_volume(m), volume) and torch.equal(m[:, :, 8], volume[:, :, 8])
    grid = uniform_rotation_grid(30.0, symmetry_order=6)
    assert torch.equal(grid[0], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(grid @ grid.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(grid))


def test_rotated_shifted_mirrored_map_is_recovered() -> None:
    reference, centres, sigmas, amplitudes = random_blob_map(7)
    rotation = rotation_from_vector(torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64))  # ~77°
    shift = torch.tensor([3.5, -2.0, 1.25], dtype=torch.float64)
    # The result shows the reference rotated by G, moved by t and then mirrored (x → −x).
    moving = band_limited_blobs(32, (centres @ rotation.T + shift) @ MIRROR_X.T, sigmas, amplitudes)
    found = align_maps(reference, moving)
    assert found.mirrored
    assert float(rotation_angle_deg(found.rotation.T @ rotation)) < 0.3
    assert torch.allclose(found.shift_xyz_px, shift, atol=0.02)
    fsc = fourier_shell_correlation(reference, apply_map_alignment(moving, found), mask=_mask())
    assert float(fsc[:15].min()) > 0.99 and float(fsc[:16].min()) > 0.9  # > 0.9 up to 0.47 of the sampling


def test_c6_map_is_recovered_modulo_c6_and_itself_exactly() -> None:
    _, centres, sigmas, amplitudes = random_blob_map(3)
    c6 = torch.cat([centres[:4] @ rotation_z(60.0 * k).T for k in range(6)])
    sigmas, amplitudes = sigmas[:4].repeat(6), amplitudes[:4].repeat(6)
    reference = band_limited_blobs(32, c6, sigmas, amplitudes)
    rotation = rotation_from_vector(torch.tensor([-0.3, 0.9, 2.0], dtype=torch.float64))
    moving = band_limited_blobs(32, c6 @ rotation.T + torch.tensor([1.5, 0.0, -2.5]), sigmas, amplitudes)
    found = align_maps(reference, moving, symmetry_order=6)
    assert not found.mirrored
    errors = rotation_angle_deg(found.rotation.T @ rotation @ rotation_z(60.0 * torch.arange(6.0)).double())
    assert float(errors.min()) < 0.3
    fsc = fourier_shell_correlation(reference, apply_map_alignment(moving, found), mask=_mask())
    assert float(fsc[:15].min()) > 0.99
    same = align_maps(reference, reference, symmetry_order=6)
    assert torch.equal(same.rotation, torch.eye(3, dtype=torch.float64)) and not same.mirrored
    assert float(same.shift_xyz_px.abs().max()) < 1e-5
    assert float(fourier_shell_correlation(reference, apply_map_alignment(reference, same)).min()) > 1 - 1e-6


def test_score_map_resamples_a_binned_result(tmp_path: Path) -> None:
    reference, *_ = random_blob_map(2)
    truth = tmp_path / "truth.mrc"
    write_mrc(reference.numpy().astype(np.float32), truth, 2.0)
    results = tmp_path / "results"
    assert isinstance(score_map(truth, results), NotProvided)
    (results / "average").mkdir(parents=True)
    binned = fourier_resize(reference, 16)  # the same map at 4 Å
    write_mrc(binned.numpy().astype(np.float32), results / "average" / "map.mrc", 4.0)
    for half in (1, 2):
        noisy = binned + 0.02 * torch.randn(16, 16, 16, generator=torch.Generator().manual_seed(half))
        write_mrc(noisy.numpy().astype(np.float32), results / "average" / f"half{half}.mrc", 4.0)
    score = score_map(truth, results, symmetry="C1")
    assert isinstance(score, MapScore)
    assert score.resampled and not score.mirrored and score.rotation_angle_deg < 0.5
    assert score.frequencies_per_angstrom[-1] == pytest.approx(0.125)  # the FSC stops at the result's Nyquist
    assert (
        min(score.fsc[:-1]) > 0.99 and score.fsc[-1] > 0.9
    )  # a Fourier-cropped map keeps half its Nyquist bin
    assert score.resolution_fsc_0_143_angstrom == pytest.approx(8.0)
    assert (
        score.half_map_resolution_0_143_angstrom is not None
        and 8.0 <= score.half_map_resolution_0_143_angstrom < 30
    )
    assert math.isfinite(score.resolution_fsc_0_5_angstrom)


def _hexamer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A handed C6 particle about z (voxels): four blobs per subunit that twist with height."""
    subunit = torch.tensor(
        [[3.0, 0.0, -3.0], [5.0, 1.5, -1.0], [5.5, 3.5, 1.5], [4.0, 3.0, 3.5]], dtype=torch.float64
    )
    centres = torch.cat([subunit @ rotation_z(60.0 * k).double().T for k in range(6)])
    sigmas = torch.tensor([1.3, 1.2, 1.2, 1.1], dtype=torch.float64).repeat(6)
    amplitudes = torch.tensor([1.0, 0.8, 0.9, 0.7], dtype=torch.float64).repeat(6)
    return centres, sigmas, amplitudes


def _in_a_lattice(
    n: int, rotation: torch.Tensor, shift: torch.Tensor, *, mirrored: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lone particle and an average of it in its lattice: the particle with its six neighbours (15 voxels
    apart, nearly touching) and the next ring, on a membrane 11 voxels below its centre, rotated by ``G``, moved by
    ``t`` and mirrored (x → −x) when asked, with white noise of half the lone particle's standard deviation."""
    centres, sigmas, amplitudes = _hexamer()
    truth = band_limited_blobs(n, centres, sigmas, amplitudes)
    parts = [(centres, sigmas, amplitudes)]
    for i in range(-2, 3):
        for j in range(-2, 3):
            site = torch.tensor([15.0 * (i + 0.5 * j), 15.0 * math.sqrt(0.75) * j, 0.0], dtype=torch.float64)
            if 0 < float(site.norm()) < 0.6 * n:
                parts.append((centres + site, sigmas, amplitudes))
    grid = torch.arange(-n, n + 1, 2.0, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    sheet = torch.stack([xx.flatten(), yy.flatten(), torch.full_like(xx.flatten(), -11.0)], -1)
    sheet = sheet[sheet[:, :2].norm(dim=-1) < n]
    parts.append(
        (sheet, torch.full((len(sheet),), 1.5, dtype=torch.float64), torch.full((len(sheet),), 0.15))
    )
    placed = torch.cat([c for c, _, _ in parts]) @ rotation.T + shift
    if mirrored:
        placed = placed @ MIRROR_X.T
    average = band_limited_blobs(
        n, placed, torch.cat([s for _, s, _ in parts]), torch.cat([a.double() for _, _, a in parts])
    )
    noise = torch.randn(n, n, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return truth, average + 0.5 * float(truth.std()) * noise


@pytest.mark.parametrize("mirrored", [False, True])
def test_particle_in_a_lattice_is_recovered_with_its_hand(mirrored: bool) -> None:
    # Scored over the whole box, the search lands on a neighbour; within the lone particle's support it finds
    # the particle, its pose and its hand. G: 75° about an axis 46° from z.
    rotation = rotation_from_vector(torch.tensor([0.5, -0.8, 0.9], dtype=torch.float64))
    shift = torch.tensor([1.5, -2.0, 2.5], dtype=torch.float64)
    truth, average = _in_a_lattice(32, rotation, shift, mirrored=mirrored)
    found = align_maps(truth, average, symmetry_order=6)
    assert found.mirrored == mirrored and found.score > found.other_hand_score + 0.03
    turns = rotation_z(60.0 * torch.arange(6.0)).double()
    assert float(rotation_angle_deg(found.rotation.T @ rotation @ turns).min()) < 3.0
    assert float((found.shift_xyz_px - shift).norm()) < 0.5


def test_score_map_of_a_lattice_average_turned_about_z(tmp_path: Path) -> None:
    # An average with its symmetry axis along z, as a pipeline imposing C6 about z writes it.
    rotation = rotation_z(37.0).double()
    truth, average = _in_a_lattice(
        40, rotation, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64), mirrored=False
    )
    write_mrc(truth.numpy().astype(np.float32), tmp_path / "truth.mrc", 5.0)
    (tmp_path / "results" / "average").mkdir(parents=True)
    write_mrc(average.numpy().astype(np.float32), tmp_path / "results" / "average" / "map.mrc", 5.0)
    score = score_map(tmp_path / "truth.mrc", tmp_path / "results", symmetry="C6")
    assert isinstance(score, MapScore) and not score.mirrored
    assert score.other_hand_search_score is not None and score.search_score > score.other_hand_search_score
    assert abs(score.rotation_angle_deg - 23.0) < 1.0  # 37° is 23° from the nearest turn of C6
    assert score.shift_angstrom == pytest.approx([0.0, 0.0, 10.0], abs=1.0)
    # Within the support the neighbours and the membrane do not count: the FSC stays above 0.6 to 12.5 Å, where
    # the noise takes over; in the sphere the membrane alone takes it below 0.143 at 100 Å.
    assert score.support_fsc is not None and min(score.support_fsc[:17]) > 0.6
    assert score.support_resolution_fsc_0_143_angstrom is not None
    assert score.support_resolution_fsc_0_143_angstrom < 11.0 < 100.0 < score.resolution_fsc_0_143_angstrom


def test_axis_rotations_keep_z_and_the_support_covers_the_particle() -> None:
    rotations = axis_rotations(10.0, symmetry_order=6)
    assert rotations.shape == (12, 3, 3) and torch.equal(rotations[0], torch.eye(3, dtype=torch.float64))
    z = rotations[:, :, 2]
    assert torch.allclose(z[:6], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(6, 3), atol=1e-12)
    assert torch.allclose(z[6:], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(6, 3), atol=1e-12)
    blob = band_limited_blobs(
        32, torch.zeros(1, 3, dtype=torch.float64), torch.tensor([1.5], dtype=torch.float64), torch.ones(1)
    )
    mask = support_mask(blob, dilation_px=3.0)
    assert float(mask[16, 16, 16]) == pytest.approx(1.0, abs=1e-3) and float(mask[16, 16, 28]) < 1e-3
    # Thresholded at 10 % of the low-passed blob (σ ≈ 1.8 voxels: radius 3.9), dilated by 3: 1/2 between 6 and 7.
    assert float(mask[16, 16, 22]) > 0.5 > float(mask[16, 16, 24])


def _mask() -> torch.Tensor:
    return soft_sphere_mask(32, radius_px=13.0, edge_px=2.0, dtype=torch.float64)
