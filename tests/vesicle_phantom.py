"""A phantom tomogram of vesicles for the vesicle-finding tests: dense layers seen through the missing wedge."""

from __future__ import annotations

import math

import torch

from tomoforge.picking import ellipsoid_closest_point

VOXEL = 10.0
SHAPE = (72, 128, 128)
# centre (x, y, z) Å from the centre voxel, semi-axes along x, y, z in Å
VESICLES = [
    ((-300.0, -250.0, 20.0), (300.0, 300.0, 300.0)),
    ((320.0, 270.0, -30.0), (330.0, 270.0, 250.0)),
]


def vesicle_phantom(seed: int, vesicles: list[tuple[tuple[float, ...], tuple[float, ...]]]) -> torch.Tensor:
    """Image-contrast tomogram (dense = dark): layers 40 Å thick, the ±60° missing wedge about y, white noise and
    a slow background gradient."""
    nz, ny, nx = SHAPE
    axes = [(torch.arange(n, dtype=torch.float64) - n // 2) * VOXEL for n in SHAPE]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    density = torch.zeros(SHAPE, dtype=torch.float64)
    for (cx, cy, cz), (a, b, c) in vesicles:
        local = torch.stack([xx - cx, yy - cy, zz - cz], dim=-1).reshape(-1, 3)
        _, distance = ellipsoid_closest_point(local, torch.tensor([a, b, c], dtype=torch.float64))
        density += torch.exp(-0.5 * (distance.reshape(SHAPE) / 17.0) ** 2)
    spectrum = torch.fft.fftn(density)
    kz = torch.fft.fftfreq(nz)[:, None, None]
    kx = torch.fft.fftfreq(nx)[None, None, :]
    wedge = (kz.abs() <= math.tan(math.radians(60)) * kx.abs()) | ((kx == 0) & (kz == 0))
    seen = torch.fft.ifftn(spectrum * wedge).real
    scale = float(seen.std()) if vesicles else 1.0
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    gradient = 2.0 * scale * xx / xx.max()
    return (-seen + 0.7 * scale * noise + gradient).to(torch.float32)
