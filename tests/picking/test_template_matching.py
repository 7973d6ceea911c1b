"""Template matching against analytic phantoms: blobs placed at known positions and orientations."""

from __future__ import annotations

import math

import pytest
import torch

from tomoforge.picking import (
    angular_sampling,
    false_alarm_threshold,
    find_peaks,
    match_template,
    missing_wedge_weight,
    rescale_reference,
)

# An asymmetric reference: Gaussian blobs (x, y, z offsets in voxels, σ, amplitude).
BLOBS = [
    ((0.0, 0.0, 0.0), 1.5, 1.0),
    ((4.0, 0.0, 0.0), 1.2, 0.8),
    ((0.0, 3.0, 1.0), 1.0, 0.6),
    ((-1.0, -1.0, 4.0), 1.0, 0.7),
]
BOX = 15


def _render(shape: tuple[int, int, int], copies: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Blobs of each copy at ``centre + R·offset`` (voxels, x y z; index origin at 0)."""
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([xx, yy, zz], dim=-1)
    out = torch.zeros(shape, dtype=torch.float64)
    for centre, rotation in copies:
        for offset, sigma, amplitude in BLOBS:
            where = centre + rotation @ torch.tensor(offset, dtype=torch.float64)
            out += amplitude * torch.exp(-0.5 * ((grid - where) ** 2).sum(-1) / sigma**2)
    return out


def _template() -> torch.Tensor:
    c = torch.full((3,), float(BOX // 2), dtype=torch.float64)
    return _render((BOX, BOX, BOX), [(c, torch.eye(3, dtype=torch.float64))]).to(torch.float32)


def _wedge(volume: torch.Tensor, max_tilt: float) -> torch.Tensor:
    kz = torch.fft.fftfreq(volume.shape[0])[:, None, None]
    kx = torch.fft.fftfreq(volume.shape[2])[None, None, :]
    seen = kz.abs() <= math.tan(math.radians(max_tilt)) * kx.abs() + 1e-9
    return torch.fft.ifftn(torch.fft.fftn(volume) * seen).real


def test_angular_sampling_covers_so3_at_its_step() -> None:
    rotations = angular_sampling(20.0, symmetry_order=2)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rotations.transpose(1, 2) @ rotations, eye.expand_as(rotations), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(len(rotations), dtype=torch.float64))
    # Random rotations (QR of Gaussian matrices) are within about the step of a sample, modulo C2 about z.
    generator = torch.Generator().manual_seed(0)
    q, r = torch.linalg.qr(torch.randn(300, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    q = q * torch.linalg.det(q)[:, None, None]
    half_turn = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    nearest = torch.full((300,), 180.0, dtype=torch.float64)
    for sym in (eye, half_turn):
        trace = torch.einsum("nij,mij->nm", q, rotations @ sym)
        angle = torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1))).min(dim=1).values
        nearest = torch.minimum(nearest, angle)
    assert float(nearest.max()) < 20.0 and float(nearest.median()) < 12.0
    assert len(angular_sampling(10.0)) > 6 * len(angular_sampling(20.0))


def test_the_local_correlation_is_one_for_an_exact_copy() -> None:
    template = _template()
    volume = torch.zeros(32, 32, 32)
    volume[10 : 10 + BOX, 12 : 12 + BOX, 8 : 8 + BOX] = 3.0 * template + 0.5
    result = match_template(volume, template, torch.eye(3)[None], mask_radius_px=7.0)
    peak = torch.nonzero(result.score == result.score.max())[0].tolist()
    assert peak == [10 + BOX // 2, 12 + BOX // 2, 8 + BOX // 2]
    assert float(result.score.max()) == pytest.approx(1.0, abs=1e-3)


def test_finds_rotated_copies_through_the_missing_wedge_and_noise() -> None:
    rotations = angular_sampling(45.0)
    picks = [(7, (12.0, 14.0, 20.0)), (40, (34.0, 30.0, 22.0)), (88, (20.0, 36.0, 26.0))]
    copies = [(torch.tensor(c, dtype=torch.float64), rotations[k]) for k, c in picks]
    volume = _wedge(_render((44, 48, 48), copies), 60.0)
    noise = torch.randn(volume.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    volume = (volume + 0.5 * float(volume.std()) * noise).to(torch.float32)
    result = match_template(
        volume, _template(), rotations, mask_radius_px=7.0, weight=missing_wedge_weight(BOX, 60.0)
    )
    threshold = false_alarm_threshold(result.score, len(rotations))
    index, values = find_peaks(result.score, min_distance_px=6.0, threshold=threshold)
    assert len(index) == len(picks)
    for k, (x, y, z) in picks:
        hit = [i for i, p in enumerate(index.tolist()) if p == [int(z), int(y), int(x)]]
        assert len(hit) == 1, (index, (x, y, z))
        assert int(result.rotation_index[int(z), int(y), int(x)]) == k


def test_the_surface_normal_limits_the_orientations() -> None:
    rotations = angular_sampling(45.0)
    k = 40
    centre = torch.tensor([16.0, 16.0, 16.0], dtype=torch.float64)
    volume = _render((32, 32, 32), [(centre, rotations[k])]).to(torch.float32)
    axis = rotations[k][:, 2].to(torch.float32)
    normals = axis[:, None, None, None].expand(3, 32, 32, 32).clone()
    allowed = match_template(
        volume, _template(), rotations, mask_radius_px=7.0, normals=normals, max_tilt_deg=10.0
    )
    assert int(allowed.rotation_index[16, 16, 16]) == k
    for result, normal in (
        (allowed, axis),
        (
            opposite := match_template(
                volume, _template(), rotations, mask_radius_px=7.0, normals=-normals, max_tilt_deg=10.0
            ),
            -axis,
        ),
    ):
        chosen = rotations[result.rotation_index[result.rotation_index >= 0].long()][:, :, 2].to(
            torch.float32
        )
        assert bool(((chosen @ normal) >= math.cos(math.radians(10.0)) - 1e-6).all())
    assert float(opposite.score[16, 16, 16]) < float(allowed.score[16, 16, 16]) - 0.1
    normals[:, :8] = 0.0  # not searched
    masked = match_template(
        volume, _template(), rotations, mask_radius_px=7.0, normals=normals, max_tilt_deg=10.0
    )
    assert bool((masked.rotation_index[:8] == -1).all()) and bool((masked.score[:8] == 0).all())


def test_noise_alone_gives_about_one_false_peak() -> None:
    rotations = angular_sampling(45.0)
    noise = torch.randn(40, 40, 40, generator=torch.Generator().manual_seed(2))
    result = match_template(noise, _template(), rotations, mask_radius_px=7.0)
    threshold = false_alarm_threshold(result.score, len(rotations))
    index, _ = find_peaks(result.score, min_distance_px=5.0, threshold=threshold)
    assert len(index) <= 3


def test_rescaling_keeps_the_centre_and_the_values() -> None:
    template = _template()
    half = rescale_reference(template, 1.0, 2.0)
    assert half.shape == (8, 8, 8)
    assert torch.nonzero(half == half.max())[0].tolist() == [4, 4, 4]
    assert float(half.sum()) == pytest.approx(float(template.sum()) * (8 / BOX) ** 3, rel=1e-3)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="cube"):
        match_template(torch.zeros(20, 20, 20), torch.zeros(5, 5, 6), torch.eye(3)[None], mask_radius_px=2.0)
    with pytest.raises(ValueError, match="larger"):
        match_template(
            torch.zeros(10, 20, 20), torch.zeros(15, 15, 15), torch.eye(3)[None], mask_radius_px=2.0
        )
    with pytest.raises(ValueError, match="angular step"):
        angular_sampling(0.0)
