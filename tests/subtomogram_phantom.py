"""A small handed C6 phantom and its 3D subtomograms through a missing wedge, for the initial-model and 3D
refinement kernels' tests."""

from __future__ import annotations

import math

import torch

from tomoforge.geometry import rotate_volume

BOX = 20


def blob(centre: tuple[float, float, float], width: float) -> torch.Tensor:
    o = torch.arange(BOX, dtype=torch.float32) - BOX // 2
    z, y, x = torch.meshgrid(o, o, o, indexing="ij")
    return torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * width**2))


def phantom() -> torch.Tensor:
    """Six blobs in a ring with a tail each, turned the same way (a handed C6 object), and a cap below."""
    volume = 0.5 * blob((0.0, 0.0, -3.0), 1.8)
    for j in range(6):
        a = 2 * math.pi * j / 6
        volume += blob((5 * math.cos(a), 5 * math.sin(a), 0.0), 1.4)
        volume += 0.6 * blob((5 * math.cos(a + 0.5), 5 * math.sin(a + 0.5), 2.5), 1.1)
    return volume


def wedge() -> torch.Tensor:
    """Centred weights of a ±60° single-axis tilt series about y, three views' worth."""
    k = torch.fft.fftshift(torch.fft.fftfreq(BOX))
    kz, _, kx = torch.meshgrid(k, k, k, indexing="ij")
    return 3.0 * (kz.abs() <= math.tan(math.radians(60)) * kx.abs() + 1e-9).float()


def subtomogram(volume: torch.Tensor, rotation: torch.Tensor, shift: tuple[int, int, int], noise: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    weights = wedge()
    turned = torch.roll(
        rotate_volume(volume, rotation), shifts=(shift[2], shift[1], shift[0]), dims=(0, 1, 2)
    )
    half = torch.fft.ifftshift(weights)[..., : BOX // 2 + 1]
    spectrum = torch.fft.rfftn(torch.fft.ifftshift(turned)) * half
    spectrum += half.sqrt() * torch.fft.rfftn(torch.randn((BOX,) * 3, generator=generator)) * noise
    return torch.fft.fftshift(torch.fft.irfftn(spectrum, s=(BOX,) * 3)), weights


def random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    w, x, y, z = (q / torch.linalg.vector_norm(q, dim=1, keepdim=True)).T
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, -2)
