"""What the averaging steps share: their common parameters, the particles and tilt series they read, each
series' usable tilt images, and the insertion of the particles' views into Fourier accumulators."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, Field, field_validator

from tomoforge.steps._device import checked_device
from tomoforge.workflow import InputSpec

if TYPE_CHECKING:
    import torch

    from tomoforge.averaging.particles import ParticleAccumulators
    from tomoforge.models import ParticleSet, TiltImage, TiltSeries

__all__ = [
    "PARTICLE_INPUTS",
    "AveragingParams",
    "ParticleInputs",
    "ParticleTable",
    "insert_views",
    "particle_table",
    "read_particle_inputs",
    "tilt_images",
    "view_transfers",
]

PARTICLE_INPUTS = {
    "particles": InputSpec(kind="particles", description="Particles with their positions and orientations."),
    "tilt_series": InputSpec(kind="tilt_series", description="Aligned tilt series with CTF per tilt."),
    "tomograms": InputSpec(
        kind="tomograms",
        optional=True,
        description="Tomograms whose centres the particle positions refer to.",
    ),
}
"""The inputs of the averaging steps that read particles' views from tilt series."""

ParticleTable = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Positions ``(n, 3)`` in Å from the specimen origin, rotations ``(n, 3, 3)`` and half sets ``(n,)`` (1 or 2)."""


class AveragingParams(BaseModel):
    """Parameters every averaging step that reads tilt images has (RELION's in brackets)."""

    box_size_px: int = Field(64, ge=8, description="Box edge in pixels of the binned images (--b).")
    binning: int = Field(1, ge=1, description="Binning of the tilt images (--bin).")
    max_dose_e_per_angstrom2: float = Field(
        50.0, gt=0, description="Tilts with more pre-exposure than this are left out (--max_dose), e⁻/Å²."
    )
    dose_weighting: bool = Field(True, description="Weight each tilt by its radiation damage.")
    half_sets: Literal["alternate", "by_group"] = Field(
        "alternate",
        description="Gold-standard halves when the particles have none: alternate in file order, or whole groups "
        "(viruses) alternately, so that no box holds particles of both halves.",
    )
    device: str = Field("auto", description="auto, cpu or cuda[:n].")

    _device = field_validator("device")(checked_device)


def point_group(value: str) -> str:
    """Validate a point-group name (C1, Cn, Dn) for a params model; returns it upper-cased."""
    from tomoforge.averaging import symmetry_rotations

    symmetry_rotations(value.upper())  # raises a clear ValueError for a bad one
    return value.upper()


class ParticleInputs(NamedTuple):
    """The inputs of an averaging step, read and checked."""

    particles: ParticleSet
    series: list[TiltSeries]
    origins: dict[str, np.ndarray]
    """Specimen position of each tomogram's centre, Å (zero without a ``tomograms`` input)."""
    table: dict[str, ParticleTable]
    pixel_size_angstrom: float
    """Of the binned images."""


def read_particle_inputs(
    particles: Path, tilt_series: Path, tomograms: Path | None, binning: int, half_sets: str = "alternate"
) -> ParticleInputs:
    """Read the particles, tilt series and optional tomograms of an averaging step."""
    from tomoforge.steps._artifacts import read_tilt_series
    from tomoforge.steps._particles import read_particles_artifact
    from tomoforge.steps._tomograms import read_tomograms

    particle_set = read_particles_artifact(particles)
    series_list = read_tilt_series(tilt_series)
    origins = {t.ts_id: np.array(t.origin_angstrom) for t in read_tomograms(tomograms)} if tomograms else {}
    table = particle_table(particle_set, {s.ts_id for s in series_list}, origins, half_sets)
    pixel = series_list[0].pixel_size_angstrom * binning
    if any(abs(s.pixel_size_angstrom * binning - pixel) > 1e-3 * pixel for s in series_list):
        raise ValueError("the tilt series have different pixel sizes; process them separately")
    return ParticleInputs(particle_set, series_list, origins, table, pixel)


def particle_table(
    particles: ParticleSet, ts_ids: set[str], origins: dict[str, np.ndarray], half_sets: str = "alternate"
) -> dict[str, ParticleTable]:
    """The particles per tilt series. Half sets are the particles' own when every one has one; else, with
    ``"alternate"``, 1, 2, 1, 2, … in file order (RELION's random halves need a seed; order keeps reruns
    identical), and with ``"by_group"`` whole groups (tomogram and group label, sorted) alternately."""
    missing = sorted({p.ts_id for p in particles.particles} - ts_ids)
    if missing:
        raise ValueError(f"particles refer to tilt series that are not in the input: {', '.join(missing)}")
    own = [p.half_set for p in particles.particles]
    if all(h in (1, 2) for h in own):
        halves = np.array([int(h) for h in own])  # type: ignore[arg-type]
    elif half_sets == "by_group":
        keys = sorted({(p.ts_id, p.group or "") for p in particles.particles})
        if len(keys) < 2:
            raise ValueError("half_sets 'by_group' needs particles of at least two groups (viruses)")
        number = {key: k % 2 + 1 for k, key in enumerate(keys)}
        halves = np.array([number[(p.ts_id, p.group or "")] for p in particles.particles])
    else:
        halves = np.arange(len(own)) % 2 + 1
    table: dict[str, ParticleTable] = {}
    for ts_id in sorted({p.ts_id for p in particles.particles}):
        index = [i for i, p in enumerate(particles.particles) if p.ts_id == ts_id]
        origin = origins.get(ts_id, np.zeros(3))
        positions = np.array([particles.particles[i].position_angstrom for i in index]) + origin
        rotations = np.array([particles.particles[i].rotation_matrix for i in index])
        table[ts_id] = (positions, rotations, halves[index])
    return table


def tilt_images(
    series: TiltSeries, params: Any, device: torch.device
) -> list[tuple[TiltImage, torch.Tensor, torch.Tensor]]:
    """``(tilt, contrast image, projection matrix in binned pixels)`` of every included tilt with pre-exposure up to
    ``params.max_dose_e_per_angstrom2``, binned by ``params.binning``. Contrast is ``I/⟨I⟩ − 1`` (mean-subtracted
    and scaled by the standard deviation when the mean is not positive)."""
    import torch

    from tomoforge.fourier import fourier_bin_2d
    from tomoforge.io.mrc import read_mrc_array
    from tomoforge.steps._alignment_io import view_projection_matrix
    from tomoforge.steps.preprocess import binned_window

    b = params.binning
    images = []
    for tilt in series.included():
        if tilt.prior_dose_e_per_angstrom2 > params.max_dose_e_per_angstrom2:
            continue
        if tilt.ctf is None:
            raise ValueError(f"{series.ts_id} tilt {tilt.index} has no CTF: run ctf.estimate first")
        raw = read_mrc_array(series.stack_file, (tilt.index, tilt.index + 1))[0].astype(np.float32)
        image = torch.from_numpy(raw)
        if b > 1:
            (y0, my), (x0, mx) = binned_window(image.shape[0], b), binned_window(image.shape[1], b)
            image = fourier_bin_2d(image[y0 : y0 + b * my, x0 : x0 + b * mx], b)
        mean = float(image.mean())
        image = image / mean - 1.0 if mean > 0 else (image - mean) / float(image.std().clamp(min=1e-12))
        matrix = view_projection_matrix(series, tilt).clone()
        matrix[:, 3] /= b
        images.append((tilt, image.to(device), matrix))
    return images


def insert_views(
    accumulators: ParticleAccumulators,
    series: TiltSeries,
    images: list[tuple[TiltImage, torch.Tensor, torch.Tensor]],
    table: ParticleTable,
    params: Any,
    pixel: float,
) -> None:
    """Insert the particles' views from every image of ``series`` (:func:`tilt_images`) with their CTF at depth
    and, with ``params.dose_weighting``, their dose weight."""
    import torch

    from tomoforge.averaging.particles import Optics, insert_tilt_particles
    from tomoforge.fourier import fftfreq_grid
    from tomoforge.fourier.dose import dose_weights

    a = series.acquisition
    optics = Optics(a.voltage_kv, a.spherical_aberration_mm, a.amplitude_contrast)
    g = accumulators.transform_size
    device = accumulators.device
    frequencies = torch.linalg.vector_norm(
        fftfreq_grid((g, g), spacing_angstrom=pixel, device=device, dtype=torch.float32), dim=-1
    )
    for tilt, image, matrix in images:
        transfer = (
            dose_weights(
                frequencies,
                prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2,
                dose_e_per_angstrom2=tilt.dose_e_per_angstrom2,
                voltage_kv=a.voltage_kv,
            ).to(torch.float32)
            if params.dose_weighting
            else None
        )
        insert_tilt_particles(
            accumulators,
            image,
            projection_matrix=matrix,
            positions_xyz_px=torch.from_numpy(table[0] / pixel),
            rotations=torch.from_numpy(table[1]),
            half_sets=torch.from_numpy(table[2]),
            defocus=tilt.ctf,  # type: ignore[arg-type]
            optics=optics,
            pixel_size_angstrom=pixel,
            handedness=series.defocus_handedness or 1,
            transfer=transfer,
        )


def view_transfers(
    series: TiltSeries, tilt: TiltImage, depth_px: torch.Tensor, params: Any, pixel: float, box: int
) -> torch.Tensor:
    """``(k, box, box // 2 + 1)`` transfer of particle views in one tilt: the CTF at each particle's depth and,
    with ``params.dose_weighting``, the tilt's dose weight."""
    import torch

    from tomoforge.averaging.particles import Optics, view_ctfs
    from tomoforge.fourier import fftfreq_grid
    from tomoforge.fourier.dose import dose_weights

    a = series.acquisition
    optics = Optics(a.voltage_kv, a.spherical_aberration_mm, a.amplitude_contrast)
    transfer = view_ctfs(
        depth_px,
        tilt.ctf,  # type: ignore[arg-type]
        optics,
        pixel_size_angstrom=pixel,
        size=box,
        handedness=series.defocus_handedness or 1,
    )
    if params.dose_weighting:
        frequencies = torch.linalg.vector_norm(
            fftfreq_grid((box, box), spacing_angstrom=pixel, device=depth_px.device, dtype=torch.float32),
            dim=-1,
        )
        transfer = transfer * dose_weights(
            frequencies,
            prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2,
            dose_e_per_angstrom2=tilt.dose_e_per_angstrom2,
            voltage_kv=a.voltage_kv,
        ).to(torch.float32)
    return transfer
