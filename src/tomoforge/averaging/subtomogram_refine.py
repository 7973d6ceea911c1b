"""Gold-standard refinement on 3D pseudo-subtomograms (RELION 5's auto-refine when the particles are 3D
subtomograms rather than 2D stacks; ``../shared/docs/tutorial-steps.md`` §16.3).

The data model and likelihood are those of :mod:`tomoforge.averaging.initial_model`: a subtomogram's transform
``D = W·V̂_R + noise`` of power ``W·σ²``. Each particle is held in the frame of its current pose ``Q`` (its
subtomogram turned by ``Qᵀ``, :func:`~tomoforge.averaging.initial_model.local_frame`) and with its current
displacement ``d`` (tomogram frame, pixels) undone by a phase ramp, so that

* **its half's reference** is the regularised sum ``Σ D̃ / Σ W̃`` of its half set's local-frame subtomograms
  (:func:`half_sums`, then :func:`half_maps`: Wiener constants from the half maps' FSC, as
  :func:`tomoforge.averaging.particles.reconstruct_half_maps`, and the point group applied to the maps);
* **its local search** is the posterior over small rotations ``C`` (``R = Q·C``) and shifts ``δ`` about the current
  pose (:func:`~tomoforge.averaging.initial_model.posterior` with a per-particle log-prior on the tilt from its
  starting pose), each half against its own reference, and the most probable candidate is kept.
"""

from __future__ import annotations

import math

import torch

from tomoforge.averaging.fsc import fourier_shell_correlation, shell_index
from tomoforge.averaging.initial_model import Subtomograms, half_grid, inverse_noise_power, symmetrize
from tomoforge.averaging.particles import HalfMaps

__all__ = ["half_maps", "half_sums", "undo_shifts"]


def undo_shifts(batch: Subtomograms, shifts_px: torch.Tensor) -> Subtomograms:
    """The batch with each particle's shift ``(n, 3)`` ``(x, y, z)`` in its local frame undone (its content moved
    by ``−shift``, back to the box centre)."""
    b = batch.weights.shape[-1]
    k = torch.fft.fftfreq(b, device=batch.data.device, dtype=torch.float64)
    kx = torch.fft.rfftfreq(b, device=batch.data.device, dtype=torch.float64)
    t = shifts_px.to(device=batch.data.device, dtype=torch.float64)
    turn = (
        kx[None, None, None, :] * t[:, 0, None, None, None]
        + k[None, None, :, None] * t[:, 1, None, None, None]
        + k[None, :, None, None] * t[:, 2, None, None, None]
    )
    ramp = torch.polar(torch.ones_like(turn), 2 * math.pi * turn).to(batch.data.dtype)
    return Subtomograms(batch.data * ramp, batch.weights)


def half_sums(batch: Subtomograms, sigma2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ D/σ²`` (rfft half grid) and ``Σ W/σ²`` (centred full grid) of a batch already in the reference frame."""
    b = batch.weights.shape[-1]
    inverse = inverse_noise_power(sigma2, batch.data.device)
    data = (batch.data * inverse[shell_index((b, b, b), batch.data.device)]).sum(dim=0)
    full = torch.fft.fftshift(shell_index((b, b, b), batch.data.device, rfft=False)).clamp(
        max=len(inverse) - 1
    )
    return data, (batch.weights * inverse[full]).sum(dim=0)


def _mean_per_shell(values: torch.Tensor, shells: torch.Tensor, n: int) -> torch.Tensor:
    total = torch.bincount(shells.flatten(), weights=values.flatten().double(), minlength=n)
    return total / torch.bincount(shells.flatten(), minlength=n).double().clamp(min=1)


def _wiener(data: torch.Tensor, weights: torch.Tensor, fsc: torch.Tensor, symmetry: str) -> torch.Tensor:
    b = weights.shape[-1]
    shells = shell_index((b, b, b), data.device)
    w = half_grid(weights).double()
    n = int(shells.max()) + 1
    mean = _mean_per_shell(w, shells, n)
    f = torch.ones(n, dtype=torch.float64)
    f[: len(fsc)] = fsc.double().clamp(0.001, 0.999)
    f[len(fsc) :] = 0.001
    constant = (mean * (1.0 - f) / f).to(data.device)
    informed = w > 1e-3 * float(w.max())
    spectrum = torch.where(informed, data.to(torch.complex128) / (w + constant[shells]).clamp(min=1e-30), 0.0)
    volume = torch.fft.fftshift(torch.fft.irfftn(spectrum, s=(b, b, b))).float()
    return symmetrize(volume, symmetry) if symmetry.upper() != "C1" else volume


def half_maps(
    sums: dict[int, tuple[torch.Tensor, torch.Tensor]], *, symmetry: str, mask: torch.Tensor
) -> HalfMaps:
    """The half maps and merged map from each half's sums, Wiener-filtered by their FSC within ``mask`` (first
    with a constant of 0.1 % of each shell's mean weight, then ``W̄·(1 − FSC)/FSC``; the merged map with the FSC of
    the whole, ``2·FSC/(1 + FSC)``), symmetrised by the point group."""
    b = mask.shape[-1]
    floor = torch.full((b // 2 + 1,), 0.999, dtype=torch.float64)
    first = [_wiener(*sums[h], floor, symmetry) for h in (1, 2)]
    fsc_first = fourier_shell_correlation(first[0].double(), first[1].double(), mask=mask.double()).cpu()
    maps = [_wiener(*sums[h], fsc_first, symmetry) for h in (1, 2)]
    whole_fsc = 2.0 * fsc_first.clamp(min=0.0) / (1.0 + fsc_first.clamp(min=0.0))
    merged = _wiener(sums[1][0] + sums[2][0], sums[1][1] + sums[2][1], whole_fsc, symmetry)
    fsc = fourier_shell_correlation(maps[0].double(), maps[1].double(), mask=mask.double()).cpu()
    return HalfMaps(merged, maps[0], maps[1], fsc, mask)
