"""Particles' views in tilt images, for the averaging steps: the particle table per tilt series and the insertion of
every visible tilt (:func:`tomoforge.averaging.particles.insert_tilt_particles`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from tomoforge.averaging.particles import ParticleAccumulators
    from tomoforge.models import ParticleSet, TiltSeries
    from tomoforge.workflow.context import ProgressTracker

__all__ = ["ParticleTable", "insert_series", "particle_table"]

ParticleTable = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Positions ``(n, 3)`` in Å from the specimen origin, rotations ``(n, 3, 3)`` and half sets ``(n,)`` (1 or 2)."""


def particle_table(
    particles: ParticleSet, ts_ids: Iterable[str], origins: dict[str, np.ndarray]
) -> dict[str, ParticleTable]:
    """The particles per tilt series. Half sets are the particles' own when every one has one, else 1, 2, 1, 2, …
    in file order (RELION's random halves need a seed; order keeps reruns identical)."""
    known = set(ts_ids)
    missing = sorted({p.ts_id for p in particles.particles} - known)
    if missing:
        raise ValueError(f"particles refer to tilt series that are not in the input: {', '.join(missing)}")
    own = [p.half_set for p in particles.particles]
    halves = (
        np.array([int(h) for h in own])  # type: ignore[arg-type]
        if all(h in (1, 2) for h in own)
        else np.arange(len(own)) % 2 + 1
    )
    table: dict[str, ParticleTable] = {}
    for ts_id in sorted({p.ts_id for p in particles.particles}):
        index = [i for i, p in enumerate(particles.particles) if p.ts_id == ts_id]
        origin = origins.get(ts_id, np.zeros(3))
        positions = np.array([particles.particles[i].position_angstrom for i in index]) + origin
        rotations = np.array([particles.particles[i].rotation_matrix for i in index])
        table[ts_id] = (positions, rotations, halves[index])
    return table


def insert_series(
    accumulators: ParticleAccumulators,
    series: TiltSeries,
    table: ParticleTable,
    params: Any,
    progress: ProgressTracker,
    device: torch.device,
) -> int:
    """Insert the particles' views from every included tilt of ``series`` with pre-exposure up to the maximum;
    returns the number of tilts used. ``params`` has ``binning``, ``max_dose_e_per_angstrom2`` and
    ``dose_weighting``. Each image is made a contrast image, ``I/⟨I⟩ − 1`` (mean-subtracted and scaled by its
    standard deviation when its mean is not positive)."""
    import torch

    from tomoforge.averaging.particles import Optics, insert_tilt_particles
    from tomoforge.fourier import fftfreq_grid, fourier_bin_2d
    from tomoforge.fourier.dose import dose_weights
    from tomoforge.io.mrc import read_mrc_array
    from tomoforge.steps._alignment_io import view_projection_matrix
    from tomoforge.steps.preprocess import binned_window

    acquisition = series.acquisition
    optics = Optics(
        acquisition.voltage_kv, acquisition.spherical_aberration_mm, acquisition.amplitude_contrast
    )
    b = params.binning
    pixel = series.pixel_size_angstrom * b
    positions = torch.from_numpy(table[0] / pixel)
    rotations = torch.from_numpy(table[1])
    halves = torch.from_numpy(table[2])
    g = accumulators.transform_size
    frequencies = torch.linalg.vector_norm(
        fftfreq_grid((g, g), spacing_angstrom=pixel, device=device, dtype=torch.float32), dim=-1
    )
    used = 0
    for tilt in series.tilts:
        progress()
        if tilt.excluded or tilt.prior_dose_e_per_angstrom2 > params.max_dose_e_per_angstrom2:
            continue
        if tilt.ctf is None:
            raise ValueError(f"{series.ts_id} tilt {tilt.index} has no CTF: run ctf.estimate first")
        image = torch.from_numpy(
            read_mrc_array(series.stack_file, (tilt.index, tilt.index + 1))[0].astype(np.float32)
        )
        if b > 1:
            (y0, my), (x0, mx) = binned_window(image.shape[0], b), binned_window(image.shape[1], b)
            image = fourier_bin_2d(image[y0 : y0 + b * my, x0 : x0 + b * mx], b)
        mean = float(image.mean())
        image = image / mean - 1.0 if mean > 0 else (image - mean) / float(image.std().clamp(min=1e-12))
        matrix = view_projection_matrix(series, tilt).clone()
        matrix[:, 3] /= b
        transfer = (
            dose_weights(
                frequencies,
                prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2,
                dose_e_per_angstrom2=tilt.dose_e_per_angstrom2,
                voltage_kv=acquisition.voltage_kv,
            ).to(torch.float32)
            if params.dose_weighting
            else None
        )
        insert_tilt_particles(
            accumulators,
            image.to(device),
            projection_matrix=matrix,
            positions_xyz_px=positions,
            rotations=rotations,
            half_sets=halves,
            defocus=tilt.ctf,
            optics=optics,
            pixel_size_angstrom=pixel,
            handedness=series.defocus_handedness or 1,
            transfer=transfer,
        )
        used += 1
    return used
