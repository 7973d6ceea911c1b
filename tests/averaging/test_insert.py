"""Fourier-slice reconstruction: exact analytic projections of a known map reconstruct it.

The map is a sum of Gaussian blobs, whose projection along any direction is known in closed form (a 2D Gaussian at
the projected centre with amplitude ``a·√(2π)·σ``), so the test images carry no interpolation error of their own.
"""

from __future__ import annotations

import math

import pytest
import torch

from tomoforge.averaging import (
    accumulator_shape,
    insert_slices,
    reconstruct,
    symmetrize_accumulators,
    symmetry_rotations,
)
from tomoforge.ctf import ctf_2d

BOX = 24


def _shell_fsc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unmasked FSC per shell ``round(|k|·N)``, shells 0 … N/2."""
    n = a.shape[-1]
    fa, fb = torch.fft.rfftn(a.double()), torch.fft.rfftn(b.double())
    f = torch.stack(
        torch.meshgrid(torch.fft.fftfreq(n), torch.fft.fftfreq(n), torch.fft.rfftfreq(n), indexing="ij"), -1
    )
    shell = torch.round(f.norm(dim=-1) * n).long().reshape(-1)
    keep = shell <= n // 2
    s = shell[keep]

    def acc(v: torch.Tensor) -> torch.Tensor:
        return torch.bincount(s, weights=v.reshape(-1)[keep], minlength=n // 2 + 1)

    return acc((fa * fb.conj()).real) / (acc(fa.abs() ** 2) * acc(fb.abs() ** 2)).sqrt()


def _blobs(seed: int, n: int = 30, radius: float = 7.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres ``(n, 3)`` (x, y, z) px, amplitudes and widths of an asymmetric blob map."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(4 * n, 3, generator=g, dtype=torch.float64) - 0.5) * 2 * radius
    centres = centres[centres.norm(dim=1) < radius][:n]
    amplitudes = torch.rand(len(centres), generator=g, dtype=torch.float64) + 0.5
    widths = torch.rand(len(centres), generator=g, dtype=torch.float64) * 0.4 + 1.0
    return centres, amplitudes, widths


def _volume(
    centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor, box: int = BOX
) -> torch.Tensor:
    ax = torch.arange(box, dtype=torch.float64) - box // 2
    z, y, x = torch.meshgrid(ax, ax, ax, indexing="ij")
    vol = torch.zeros(box, box, box, dtype=torch.float64)
    for c, a, s in zip(centres, amplitudes, widths, strict=True):
        vol += a * torch.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol


def _projections(
    rotations: torch.Tensor,
    centres: torch.Tensor,
    amplitudes: torch.Tensor,
    widths: torch.Tensor,
    box: int = BOX,
    offsets_xy: torch.Tensor | None = None,
) -> torch.Tensor:
    """``∫ V(Rᵀ·(x, y, z)) dz`` for each ``R``: the blob at ``c`` lands at ``(R·c)_xy`` (+ offset)."""
    ax = torch.arange(box, dtype=torch.float64) - box // 2
    projected = centres @ rotations.transpose(-1, -2)  # (n, blobs, 3)
    if offsets_xy is not None:
        projected = projected + torch.nn.functional.pad(offsets_xy, (0, 1))[:, None, :]
    s = widths[None, :, None]
    gx = torch.exp(-((ax - projected[..., 0, None]) ** 2) / (2 * s * s))
    gy = torch.exp(-((ax - projected[..., 1, None]) ** 2) / (2 * s * s))
    weights = amplitudes * math.sqrt(2 * math.pi) * widths
    return torch.einsum("nby,nbx,b->nyx", gy, gx, weights)


def random_rotations(n: int, seed: int) -> torch.Tensor:
    """Uniformly distributed rotations from random unit quaternions."""
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


@pytest.mark.parametrize("oversample", [False, True])
def test_random_projections_reconstruct_an_asymmetric_map(oversample: bool):
    blobs = _blobs(1)
    truth = _volume(*blobs)
    rotations = random_rotations(1500, seed=2)
    images = _projections(rotations, *blobs).float()
    data, weight = insert_slices(images, rotations.float(), oversample_images=oversample)
    assert data.shape == accumulator_shape(BOX) == (48, 48, 25) and data.dtype == torch.complex64
    volume = reconstruct(data, weight, box_size_px=BOX).double()
    fsc = _shell_fsc(volume, truth)
    assert fsc[1 : int(0.8 * BOX / 2) + 1].min() > 0.99
    # Amplitudes: the reconstruction is the map itself (Fourier-slice theorem, unnormalised FFTs).
    scale = float((volume * truth).sum() / (truth * truth).sum())
    assert abs(scale - 1.0) < 0.03
    # The gridding correction is what keeps the amplitudes: without it the box edges are damped.
    plain = reconstruct(data, weight, box_size_px=BOX, gridding_correction=False).double()
    assert float((plain * truth).sum() / (truth * truth).sum()) < scale - 0.01


def test_a_transposed_rotation_does_not_reconstruct_the_map():
    blobs = _blobs(1)
    truth = _volume(*blobs)
    rotations = random_rotations(600, seed=3)
    images = _projections(rotations, *blobs).float()
    right = reconstruct(*insert_slices(images, rotations.float()), box_size_px=BOX)
    wrong = reconstruct(*insert_slices(images, rotations.transpose(-1, -2).float()), box_size_px=BOX)
    mid = slice(5, 10)
    assert _shell_fsc(right, truth)[mid].min() > 0.98
    assert _shell_fsc(wrong, truth)[mid].mean() < 0.6


def test_sub_pixel_shifts_centre_the_particles():
    blobs = _blobs(4)
    truth = _volume(*blobs)
    rotations = random_rotations(800, seed=5)
    offsets = (
        torch.rand(800, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64) - 0.5
    ) * 3.0
    images = _projections(rotations, *blobs, offsets_xy=offsets).float()
    centred = reconstruct(
        *insert_slices(images, rotations.float(), shifts_xy_px=-offsets.float()), box_size_px=BOX
    )
    assert _shell_fsc(centred, truth)[1:10].min() > 0.99
    shifted_wrong_way = insert_slices(images, rotations.float(), shifts_xy_px=offsets.float())
    assert _shell_fsc(reconstruct(*shifted_wrong_way, box_size_px=BOX), truth)[4:10].mean() < 0.8


def _c6_blobs(
    centres: torch.Tensor, amplitudes: torch.Tensor, widths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The blobs of the C6 average ``(1/6)·Σ_j V(Rz(60°·j)·r)``: every blob replicated about z."""
    ops = symmetry_rotations("C6")
    return (centres @ ops.transpose(-1, -2)).reshape(-1, 3), amplitudes.repeat(6) / 6, widths.repeat(6)


def test_c6_symmetry_by_insertion_and_by_symmetrised_accumulators():
    symmetric = _c6_blobs(*_blobs(7))
    expected = _volume(*symmetric)
    ops = symmetry_rotations("C6", dtype=torch.float32)
    assert ops.shape == (6, 3, 3) and symmetry_rotations("D3").shape == (6, 3, 3)
    torch.testing.assert_close(ops[1] @ ops[5], torch.eye(3), rtol=0, atol=1e-6)
    # 40 views of a C6 map: too few to fill Fourier space at high resolution, enough with the symmetry.
    rotations = random_rotations(40, seed=8).float()
    images = _projections(rotations.double(), *symmetric).float()
    inserted = reconstruct(*insert_slices(images, rotations, symmetry=ops), box_size_px=BOX)
    symmetrised = reconstruct(
        *symmetrize_accumulators(*insert_slices(images, rotations), ops), box_size_px=BOX
    )
    plain = reconstruct(*insert_slices(images, rotations), box_size_px=BOX)
    for volume in (inserted, symmetrised):
        assert _shell_fsc(volume, expected)[1:11].min() > 0.98
    assert _shell_fsc(plain, expected)[9:11].mean() < 0.9
    # Views of an asymmetric map reconstructed with C6 give its C6 average.
    blobs = _blobs(7)
    rotations = random_rotations(600, seed=9).float()
    images = _projections(rotations.double(), *blobs).float()
    averaged = reconstruct(*symmetrize_accumulators(*insert_slices(images, rotations), ops), box_size_px=BOX)
    assert _shell_fsc(averaged, expected)[1:11].min() > 0.95
    assert (
        _shell_fsc(reconstruct(*insert_slices(images, rotations), box_size_px=BOX), expected)[5:11].mean()
        < 0.7
    )


def test_ctf_weighted_reconstruction_restores_the_map():
    blobs = _blobs(9)
    truth = _volume(*blobs)
    n = 1500
    rotations = random_rotations(n, seed=10)
    images = _projections(rotations, *blobs)
    g = torch.Generator().manual_seed(11)
    defocus = 8000.0 + 20000.0 * torch.rand(n, generator=g, dtype=torch.float64)
    ctf = ctf_2d(
        defocus_u_angstrom=defocus,
        defocus_v_angstrom=defocus - 300.0,
        astigmatism_angle_deg=30.0,
        voltage_kv=300.0,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.1,
        pixel_size_angstrom=4.0,
        shape_yx=(BOX, BOX),
        dtype=torch.float64,
    )
    observed = torch.fft.irfft2(
        torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1))) * ctf, s=(BOX, BOX)
    )
    observed = torch.fft.fftshift(observed, dim=(-2, -1))
    data, weight = insert_slices(observed, rotations, ctf=ctf)
    assert data.dtype == torch.complex128 and weight.dtype == torch.float64
    volume = reconstruct(data, weight, box_size_px=BOX)
    fsc = _shell_fsc(volume, truth)
    assert fsc[1 : int(0.8 * BOX / 2) + 1].min() > 0.95
    assert abs(float((volume * truth).sum() / (truth * truth).sum()) - 1.0) < 0.05
    # Ignoring the CTF (weights 1, images not premultiplied) gives a map that is not the truth.
    ignored = reconstruct(*insert_slices(observed, rotations), box_size_px=BOX)
    assert _shell_fsc(ignored, truth)[3:10].mean() < 0.6

    # With noise, the Wiener constant σ²/τ² lowers the error of the map (the plain CTF-weighted average
    # divides noise by the small weights near CTF zeros).
    noisy = observed + 0.3 * float(images.std()) * torch.randn(
        observed.shape, generator=g, dtype=torch.float64
    )
    data, weight = insert_slices(noisy, rotations, ctf=ctf)
    errors = [
        float((reconstruct(data, weight, box_size_px=BOX, wiener_constant=c) - truth).norm() / truth.norm())
        for c in (0.0, 0.05 * float(weight[weight > 0].mean()))
    ]
    assert errors[1] < 0.8 * errors[0]


def test_accumulating_in_pieces_equals_one_call_and_weights_scale_consistently():
    blobs = _blobs(12)
    rotations = random_rotations(200, seed=13)
    images = _projections(rotations, *blobs).float()
    whole = insert_slices(images, rotations.float(), max_samples_per_chunk=10_000)
    first = insert_slices(images[:70], rotations[:70].float())
    both = insert_slices(images[70:], rotations[70:].float(), accumulators=first)
    assert both[0] is first[0]
    torch.testing.assert_close(both[0], whole[0], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(both[1], whole[1], rtol=1e-4, atol=1e-4)
    # A constant noise weight scales data and weight alike and leaves the map unchanged.
    weighted = insert_slices(images, rotations.float(), weights=torch.tensor(3.0))
    torch.testing.assert_close(weighted[1], 3.0 * whole[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        reconstruct(*weighted, box_size_px=BOX), reconstruct(*whole, box_size_px=BOX), rtol=1e-3, atol=1e-4
    )
    # The kx = 0 plane of the accumulators is Hermitian (every sample is inserted with its mate).
    plane = whole[0][:, :, 0]
    mirrored = torch.roll(torch.flip(plane, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    torch.testing.assert_close(plane, mirrored.conj(), rtol=1e-4, atol=1e-3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="b, b"):
        insert_slices(torch.zeros(3, 8, 6), torch.eye(3))
    with pytest.raises(ValueError, match="3, 3"):
        insert_slices(torch.zeros(3, 8, 8), torch.eye(2))
    with pytest.raises(ValueError, match="accumulators"):
        insert_slices(
            torch.zeros(1, 8, 8), torch.eye(3), accumulators=(torch.zeros(4, 4, 3), torch.zeros(4, 4, 3))
        )
    with pytest.raises(ValueError, match="Cn or Dn"):
        symmetry_rotations("O")
    data, weight = insert_slices(torch.zeros(1, 8, 8), torch.eye(3))
    with pytest.raises(ValueError, match="non-negative"):
        reconstruct(data, weight, box_size_px=8, wiener_constant=-1.0)
