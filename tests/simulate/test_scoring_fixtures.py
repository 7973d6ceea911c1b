"""Synthetic export-layout folders for the scorer's tests, written with tomoforge's own writers.

:class:`Export` holds everything a truth folder holds (one tilt series); tests copy it, perturb a field with
:func:`dataclasses.replace` and write it as results. The tests at the end check that the folders read back.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.fourier import fftfreq_grid
from tomoforge.geometry import relion_euler_to_matrix, rotation_2d, tomoforge_to_imod_xf_shift_px
from tomoforge.io.convert import read_alignment
from tomoforge.io.imod import ctf_to_imod_defocus, write_imod_defocus, write_tlt, write_xf
from tomoforge.io.mrc import write_mrc
from tomoforge.io.relion5 import read_relion_particles, write_relion_particles
from tomoforge.models import CtfParameters, CtfTiltEstimate, CtfTiltSeries, Particle, ParticleSet

TS = "TS_01"
PIXEL = 2.0
SIZE_XY = (512, 480)
MOVIE_PIXEL = 0.5


def band_limited_blobs(
    n: int, centres_xyz: torch.Tensor, sigmas: torch.Tensor, amplitudes: torch.Tensor
) -> torch.Tensor:
    """``(n, n, n)`` sum of Gaussian blobs (centres in voxels from ``n // 2``), band-limited to the Nyquist sphere.

    Built in Fourier space, so a rotated, shifted or mirrored copy (blobs at transformed centres) is exactly the
    transformed band-limited map, with no sampling error of its own.
    """
    k = fftfreq_grid((n, n, n), rfft=True, dtype=torch.float64).flip(-1)  # (kx, ky, kz) cycles/voxel
    k2 = k.square().sum(-1)
    spectrum = torch.zeros(k.shape[:-1], dtype=torch.complex128)
    for centre, sigma, amplitude in zip(centres_xyz, sigmas, amplitudes, strict=True):
        envelope = amplitude * torch.exp(-2.0 * math.pi**2 * sigma**2 * k2)
        spectrum += envelope * torch.exp(-2j * math.pi * (k @ (centre + n // 2)))
    spectrum[k2.sqrt() >= 0.5] = 0
    return torch.fft.irfftn(spectrum, s=(n, n, n))


def random_blob_map(seed: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An asymmetric map of 12 blobs: ``(map, centres, sigmas, amplitudes)``."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(12, 3, generator=g, dtype=torch.float64) - 0.5) * 12.0
    sigmas = 0.9 + 0.6 * torch.rand(12, generator=g, dtype=torch.float64)
    amplitudes = 0.5 + torch.rand(12, generator=g, dtype=torch.float64)
    return band_limited_blobs(n, centres, sigmas, amplitudes), centres, sigmas, amplitudes


@dataclass(frozen=True)
class Export:
    """One tilt series' worth of export-layout content (arrays are numpy, lengths in Å unless ``_px``)."""

    tilt_angles_deg: np.ndarray  # (t,) in stack order (ascending)
    tilt_axis_deg: np.ndarray  # (t,)
    shifts_px: np.ndarray  # (t, 2) image position of the tomogram centre, px from the image centre
    x_tilt_deg: np.ndarray  # (t,)
    acquisition_order: np.ndarray  # (t,)
    motion_angstrom: np.ndarray  # (t, frames, 2), frame 0 = 0
    defocus_uv_angstrom: np.ndarray  # (t, 2)
    astigmatism_angle_deg: np.ndarray  # (t,)
    gold_angstrom: np.ndarray  # (g, 3)
    particle_ts: tuple[str, ...]
    particle_positions_angstrom: np.ndarray  # (p, 3)
    particle_rotations: np.ndarray  # (p, 3, 3)
    map_volume: np.ndarray | None  # (n, n, n)
    map_pixel_angstrom: float = 4.0
    pixel_size_angstrom: float = PIXEL
    excluded_views: tuple[int, ...] = ()

    def replace(self, **changes: object) -> Export:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def make_export(seed: int = 0, *, with_map: bool = True) -> Export:
    """A deterministic truth: 41 tilts (−60°…60°, dose-symmetric order), 8 frames, 24 gold beads, 60 particles."""
    rng = np.random.default_rng(seed)
    angles = np.arange(-60.0, 60.1, 3.0)
    n = len(angles)
    order = np.argsort(np.argsort(np.abs(angles) + 0.01 * (angles < 0)))  # 0° first, then alternating
    motion = np.cumsum(rng.normal(0.0, 0.6, (n, 8, 2)), axis=1)
    motion -= motion[:, :1]
    defocus = 30000.0 + rng.normal(0.0, 1000.0, n)
    astig = rng.uniform(0.0, 600.0, n)
    gold = np.concatenate(
        [rng.uniform(-350, 350, (24, 2)) * PIXEL, np.repeat([[-70.0], [70.0]], 12, axis=0) * PIXEL], axis=1
    )
    lattice = (
        np.stack(np.meshgrid(np.arange(-5, 5), np.arange(-3, 3), indexing="ij"), -1).reshape(-1, 2) * 75.0
    )
    positions = np.concatenate(
        [lattice + rng.normal(0, 3.0, lattice.shape), rng.normal(0, 50.0, (60, 1))], axis=1
    )
    eulers = torch.from_numpy(rng.uniform([-180, 0, -180], [180, 180, 180], (60, 3)))
    rotations = relion_euler_to_matrix(eulers).numpy()
    volume = random_blob_map(seed)[0].numpy() if with_map else None
    return Export(
        tilt_angles_deg=angles,
        tilt_axis_deg=np.full(n, 85.3),
        shifts_px=rng.normal(0.0, 15.0, (n, 2)),
        x_tilt_deg=np.zeros(n),
        acquisition_order=order,
        motion_angstrom=motion,
        defocus_uv_angstrom=np.stack([defocus + astig / 2, defocus - astig / 2], axis=-1),
        astigmatism_angle_deg=rng.uniform(-90.0, 90.0, n),
        gold_angstrom=gold,
        particle_ts=(TS,) * 60,
        particle_positions_angstrom=positions,
        particle_rotations=rotations,
        map_volume=volume,
    )


def write_export(root: Path, data: Export, *, truth: bool, ts: str = TS) -> Path:
    """Write ``data`` in the export layout under ``root`` (gold only for a truth)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_alignment(root, ts, data)
    _write_motion(root, ts, data)
    _write_ctf(root, ts, data)
    (root / "relion5").mkdir(exist_ok=True)
    particles = [
        Particle(ts_id=t, position_angstrom=tuple(p), rotation_matrix=tuple(map(tuple, r)))
        for t, p, r in zip(
            data.particle_ts, data.particle_positions_angstrom.tolist(), data.particle_rotations, strict=True
        )
    ]
    write_relion_particles(ParticleSet(particles=particles), root / "relion5" / "particles.star")
    if data.map_volume is not None:
        (root / "average").mkdir(exist_ok=True)
        write_mrc(data.map_volume.astype(np.float32), root / "average" / "map.mrc", data.map_pixel_angstrom)
    if truth:
        (root / "gold").mkdir(exist_ok=True)
        with (root / "gold" / f"{ts}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x_angstrom", "y_angstrom", "z_angstrom"])
            writer.writerows(data.gold_angstrom.tolist())
    return root


def _write_alignment(root: Path, ts: str, data: Export) -> None:
    folder = root / "alignment"
    folder.mkdir(exist_ok=True)
    keep = [i for i in range(len(data.tilt_angles_deg)) if i not in data.excluded_views]
    a = rotation_2d(-torch.from_numpy(data.tilt_axis_deg[keep]))
    d = -(a @ torch.from_numpy(data.shifts_px[keep]).unsqueeze(-1)).squeeze(-1)
    d_imod = tomoforge_to_imod_xf_shift_px(a, d, SIZE_XY)
    write_xf(np.concatenate([a.numpy(), d_imod.numpy()[..., None]], axis=-1), folder / f"{ts}.xf")
    write_tlt(data.tilt_angles_deg[keep], folder / f"{ts}.tlt")
    if np.any(data.x_tilt_deg != 0):
        write_tlt(data.x_tilt_deg[keep], folder / f"{ts}.xtilt")
    meta = {
        "pixel_size_angstrom": data.pixel_size_angstrom,
        "image_size_xy": list(SIZE_XY),
        "excluded_views": list(data.excluded_views),
    }
    (folder / f"{ts}.json").write_text(json.dumps(meta))


def _write_motion(root: Path, ts: str, data: Export) -> None:
    (root / "motion").mkdir(exist_ok=True)
    with (root / "motion" / f"{ts}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["acquisition_order", "tilt_angle_deg", "frame", "shift_x_angstrom", "shift_y_angstrom"]
        )
        for i, angle in enumerate(data.tilt_angles_deg):
            for frame, (x, y) in enumerate(data.motion_angstrom[i]):
                writer.writerow(
                    [int(data.acquisition_order[i]), angle, frame, repr(float(x)), repr(float(y))]
                )


def _write_ctf(root: Path, ts: str, data: Export) -> None:
    (root / "ctf").mkdir(exist_ok=True)
    estimates = [
        CtfTiltEstimate(
            tilt_index=i,
            parameters=CtfParameters(
                defocus_u_angstrom=float(u), defocus_v_angstrom=float(v), astigmatism_angle_deg=float(angle)
            ),
        )
        for i, ((u, v), angle) in enumerate(
            zip(data.defocus_uv_angstrom, data.astigmatism_angle_deg, strict=True)
        )
        if i not in data.excluded_views
    ]
    defocus = ctf_to_imod_defocus(CtfTiltSeries(ts_id=ts, tilts=estimates), data.tilt_angles_deg.tolist())
    write_imod_defocus(defocus, root / "ctf" / f"{ts}.defocus")


# ---------------------------------------------------------------------------------------------- the fixtures' own tests


def test_export_folder_reads_back(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    root = write_export(tmp_path / "truth", data, truth=True)
    alignment = read_alignment(
        root / "alignment" / f"{TS}.xf", pixel_size_angstrom=PIXEL, image_size_xy=SIZE_XY
    )
    assert alignment.n_tilts == 41
    assert alignment.transforms[0] is not None
    # α = atan2(A12, A11) (CONVENTIONS.md §6) and the tomogram centre projects to s (px).
    t = alignment.transforms[5]
    assert t is not None
    assert math.degrees(math.atan2(t.a12, t.a11)) == pytest.approx(85.3, abs=1e-6)
    a = np.array([[t.a11, t.a12], [t.a21, t.a22]])
    s = -np.linalg.solve(a, np.array([t.dx_angstrom, t.dy_angstrom]) / PIXEL)
    assert np.allclose(s, data.shifts_px[5], atol=1e-3)
    particles = read_relion_particles(root / "relion5" / "particles.star").particles
    assert particles.n_particles == 60
    assert np.allclose(particles.rotation_matrices(), data.particle_rotations, atol=1e-6)
    assert sorted(data.acquisition_order.tolist()) == list(range(41))
    assert data.acquisition_order[20] == 0  # 0° is acquired first
