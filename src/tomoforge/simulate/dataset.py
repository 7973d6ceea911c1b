"""Whole simulated datasets: raw movies and SerialEM mdocs as a microscope writes them, and their ground truth.

:func:`generate_dataset` writes, for every tilt series ``<ts>`` of a :class:`~tomoforge.simulate.presets.SimulationConfig`::

    frames/<ts>_<order>_<angle>.mrc      one movie per tilt (integer counts, MRC mode 0 or 6, frame pixel)
    frames/<ts>.mrc.mdoc                 SerialEM-style mdoc (nominal angles and axis, doses, times)
    truth/truth.json                     everything below, plus the config and the specimen
    truth/motion/<ts>.csv                per-frame specimen displacement relative to frame 0 (Å)
    truth/alignment/<ts>.xf, .tlt, .rawtlt (.xtilt)   IMOD alignment of the motion-corrected stack
    truth/alignment/<ts>.json            {"pixel_size_angstrom", "image_size_xy", "excluded_views"}
    truth/ctf/<ts>.defocus               IMOD defocus per tilt at the tomogram centre's height
    truth/tomograms/<ts>.mrc             the undamaged, noise-free potential (Fourier-binned)
    truth/relion5/tomograms.star, tilt_series/<ts>.star, particles.star
    truth/average/map.mrc, map_simulation_voxel.mrc    the clean reference (contrast against ice)
    truth/gold/<ts>.csv, truth/xrays/<ts>.csv

Truth conventions
-----------------
* Geometry follows CONVENTIONS.md §7 with the **true** tilt angles ``θᵢ = nominal + error``, tilt axis
  ``α = mdoc axis + tilt_axis_error_deg``, x-tilt ``φ`` and stage shifts ``sᵢ`` (the image position of the
  tomogram centre). The motion-corrected stack is taken to be aligned to frame 0 of each movie (the motion track
  is the displacement relative to frame 0), so its alignment is the rigid ``A = Rz(−α)``, ``d = −A·s``.
* Defocus is positive underfocus at the tomogram centre's height; a point at ``depth`` sees ``Δf − depth``
  (handedness +1, CONVENTIONS.md §8).
* Positions (particles, gold) are in Å relative to the tomogram centre; particle rotations map the reference box
  into the tomogram (``R·ẑ`` is the outward normal, the hexamer's NTD pointing to the membrane).
* The tomogram truth is the undamaged potential (volts, protein positive) without the per-tilt ice texture, over
  the field of view as the aligned images show it (frame width and height, swapped when the tilt axis is nearer
  x than y) and the whole simulated depth, Fourier-binned to ``tomogram_voxel_size_angstrom``; its header origin
  is the position of voxel 0 relative to the tomogram centre. Objects are placed inside that field; the simulated
  volume adds the image margins (CTF delocalisation, motion) and, beyond it, the ice goes on (tilted and shifted
  views see more ice, never more objects).
* The reference maps (``average/``) are the particle's potential as contrast against ice (volts): the central
  hexamer alone, without its lattice neighbours.

Memory: one potential volume and one tilt's slabs and frame spectra at a time; frames are streamed to disk
(:class:`tomoforge.io.mrc.MrcWriter`). The volume is the largest object: ≈ 0.5 GB for ``demo``, ≈ 15 GB for the
tutorial presets (≈ 2200×2200×780 voxels of 2.7 Å).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomoforge.ctf import electron_wavelength_angstrom
from tomoforge.io.convert import Alignment, write_alignment
from tomoforge.io.imod import ctf_to_imod_defocus, write_imod_defocus
from tomoforge.io.mdoc import (
    MdocOverrides,
    read_tilt_series_mdoc,
    serialem_frames_name,
    write_tilt_series_mdoc,
)
from tomoforge.io.mrc import MrcWriter, write_mrc
from tomoforge.io.relion5 import (
    RelionTomogram,
    write_relion_particles,
    write_relion_tilt_series,
    write_tomograms_star,
)
from tomoforge.io.structure import Structure, read_structure
from tomoforge.models import (
    Acquisition,
    CtfParameters,
    CtfTiltEstimate,
    CtfTiltSeries,
    ParticleSet,
    TiltImage,
    TiltImageMovie,
    TiltSeries,
    TiltSeriesMovies,
    TiltTransform,
)
from tomoforge.simulate.detector import detector_mtf
from tomoforge.simulate.hexamer import hexamer_frame, load_hexamer_structure, select_central_hexamer
from tomoforge.simulate.imaging import (
    add_ice_texture,
    contrast_spectrum,
    expose,
    fourier_bin,
    fourier_upsample_spectrum,
    frame_intensity,
    frequency_magnitude,
    mtf_transfer,
    project_tilt,
)
from tomoforge.simulate.motion import beam_induced_motion
from tomoforge.simulate.potential import ICE_MEAN_INNER_POTENTIAL_VOLT, atoms_to_potential, solvent_potential
from tomoforge.simulate.presets import SimulationConfig
from tomoforge.simulate.render import render_specimen
from tomoforge.simulate.scattering import implicit_hydrogen_counts
from tomoforge.simulate.specimen import Specimen, build_specimen

__all__ = [
    "DatasetSummary",
    "SeriesPlan",
    "TiltPlan",
    "default_mdoc_path",
    "generate_dataset",
    "load_acquisition",
    "particle_contrast_map",
    "plan_tilt_series",
]

ProgressCallback = Callable[[str, int, int], None]
"""``progress(ts_id, tilts_done, n_tilts)``, called after every tilt."""

_Z_MARGIN_ANGSTROM = 150.0  # vacuum above and below the ice in the simulated volume
_VIRUS_GAP_ANGSTROM = 100.0  # build_specimen's min_gap: the ice grows to the tallest virus plus this


def default_mdoc_path() -> Path:
    """The vendored real EMPIAR-10164 TS_01 mdoc (see ``simulate/data/PROVENANCE.md``)."""
    return Path(str(resources.files("tomoforge.simulate").joinpath("data", "TS_01.mrc.mdoc")))


# ------------------------------------------------------------------------------------------------------------
# The acquisition and its deliberate errors
# ------------------------------------------------------------------------------------------------------------


def load_acquisition(config: SimulationConfig) -> TiltSeriesMovies:
    """The acquisition template: the config's mdoc with its overrides, reduced to every ``tilt_stride``-th tilt.

    Prior doses are recomputed over the tilts kept (as if only they had been recorded).
    """
    path = config.mdoc_path or default_mdoc_path()
    overrides = MdocOverrides(
        voltage_kv=config.voltage_kv,
        spherical_aberration_mm=config.spherical_aberration_mm,
        amplitude_contrast=config.amplitude_contrast,
        pixel_size_angstrom=config.frame_pixel_size_angstrom,
        dose_per_tilt_e_per_angstrom2=config.dose_per_tilt_e_per_angstrom2,
    )
    series = read_tilt_series_mdoc(path, overrides)
    zero = int(np.argmin(np.abs(series.tilt_angles_deg)))
    kept = [t for t in series.tilts if (t.index - zero) % config.tilt_stride == 0]
    order = sorted(kept, key=lambda t: t.acquisition_order)
    rank = {t.index: r for r, t in enumerate(order)}
    prior: dict[int, float] = {}
    total = 0.0
    for t in order:
        prior[t.index] = total
        total += t.dose_e_per_angstrom2
    frames = config.frames_per_tilt
    tilts = [
        t.replace(
            index=i,
            acquisition_order=rank[t.index],
            prior_dose_e_per_angstrom2=prior[t.index],
            frame_count=frames or t.frame_count,
        )
        for i, t in enumerate(kept)
    ]
    acquisition = series.acquisition.replace(
        frames_per_tilt=frames or series.acquisition.frames_per_tilt,
        super_resolution=config.super_resolution,
    )
    return TiltSeriesMovies(
        ts_id=series.ts_id, acquisition=acquisition, tilts=tilts, mdoc_file=series.mdoc_file
    )


@dataclass(frozen=True)
class TiltPlan:
    """The truth of one tilt (stack order ``index``; angles in degrees, lengths in Å)."""

    index: int
    acquisition_order: int
    nominal_tilt_angle_deg: float
    tilt_angle_deg: float
    prior_dose_e_per_angstrom2: float
    dose_e_per_angstrom2: float
    acquired_at: datetime | None
    frames_file: str
    defocus_u_angstrom: float
    defocus_v_angstrom: float
    astigmatism_angle_deg: float
    shift_xy_angstrom: tuple[float, float]


@dataclass(frozen=True)
class SeriesPlan:
    """The true acquisition geometry of one tilt series; ``tilts`` in stack order (by nominal angle)."""

    ts_id: str
    nominal_tilt_axis_angle_deg: float
    tilt_axis_angle_deg: float
    x_tilt_deg: float
    frames_per_tilt: int
    tilts: tuple[TiltPlan, ...]
    motion_xy_px: np.ndarray = field(repr=False)  # (n_tilts, n_frames, 2) frame pixels, stack order


def plan_tilt_series(
    config: SimulationConfig, template: TiltSeriesMovies, ts_id: str, rng: np.random.Generator
) -> SeriesPlan:
    """Draw the true geometry, defocus and motion of one tilt series (deterministic for ``rng``'s state)."""
    n = template.n_tilts
    frames = template.acquisition.frames_per_tilt or template.tilts[0].frame_count or 1
    nominal_axis = template.acquisition.tilt_axis_angle_deg
    errors = rng.normal(0.0, config.tilt_angle_error_sd_deg, n)
    shifts = rng.normal(0.0, config.stage_shift_sd_angstrom, (n, 2))
    base_defocus = rng.uniform(*config.defocus_range_angstrom)
    defocus = base_defocus + rng.normal(0.0, config.defocus_tilt_sd_angstrom, n)
    base_angle = rng.uniform(-90.0, 90.0)
    angles = base_angle + rng.normal(0.0, 5.0, n)
    half_astig = config.astigmatism_angstrom * (1.0 + 0.1 * rng.standard_normal(n))
    motion_seed = int(rng.integers(0, 2**62))
    motion = beam_induced_motion(
        frames,
        generator=torch.Generator().manual_seed(motion_seed),
        pixel_size_angstrom=config.frame_pixel_size_angstrom,
        drift_angstrom_per_frame=config.drift_angstrom_per_frame,
        jitter_angstrom=config.jitter_angstrom,
        initial_jump_angstrom=config.initial_jump_angstrom,
        jump_time_constant_frames=config.jump_time_constant_frames,
        n_tilts=n,
    ).numpy()
    tilts = []
    for t in template.tilts:
        i = t.index
        tilts.append(
            TiltPlan(
                index=i,
                acquisition_order=t.acquisition_order,
                nominal_tilt_angle_deg=t.tilt_angle_deg,
                tilt_angle_deg=float(np.clip(t.tilt_angle_deg + errors[i], -90.0, 90.0)),
                prior_dose_e_per_angstrom2=t.prior_dose_e_per_angstrom2,
                dose_e_per_angstrom2=t.dose_e_per_angstrom2,
                acquired_at=t.acquired_at,
                frames_file=serialem_frames_name(ts_id, t.acquisition_order, t.tilt_angle_deg),
                defocus_u_angstrom=float(defocus[i] + half_astig[i]),
                defocus_v_angstrom=float(defocus[i] - half_astig[i]),
                astigmatism_angle_deg=float((angles[i] + 90.0) % 180.0 - 90.0),
                shift_xy_angstrom=(float(shifts[i, 0]), float(shifts[i, 1])),
            )
        )
    axis = math.remainder(nominal_axis + config.tilt_axis_error_deg, 360.0)
    return SeriesPlan(ts_id, nominal_axis, axis, config.x_tilt_deg, frames, tuple(tilts), motion)


def _transform(plan: SeriesPlan, tilt: TiltPlan) -> TiltTransform:
    """Raw (motion-corrected, frame-0 reference) → aligned: ``A = Rz(−α)``, ``d = −A·s`` (Å)."""
    a = math.radians(-plan.tilt_axis_angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    d = -rot @ np.asarray(tilt.shift_xy_angstrom)
    return TiltTransform.from_rotation(-plan.tilt_axis_angle_deg, float(d[0]), float(d[1]))


# ------------------------------------------------------------------------------------------------------------
# The particle map
# ------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _vendored_hexamer() -> tuple[Structure, np.ndarray, bool]:
    return _framed_structure(load_hexamer_structure())


def _framed_structure(structure: Structure | None) -> tuple[Structure, np.ndarray, bool]:
    """The atoms to simulate and their positions in the reference frame.

    A hexamer (six full chains) goes into the standard frame of :mod:`tomoforge.simulate.hexamer`; any other model
    is centred on its centroid with its own axes. Returns ``(atoms, positions, is_hexamer)``.
    """
    if structure is None:
        return _vendored_hexamer()
    source = structure
    try:
        hexamer = select_central_hexamer(source)
        frame = hexamer_frame(hexamer)
    except ValueError:
        positions = source.positions_xyz_angstrom - source.positions_xyz_angstrom.mean(axis=0)
        return source, positions, False
    return hexamer, frame.to_frame(hexamer.positions_xyz_angstrom), True


def particle_contrast_map(
    *,
    voxel_size_angstrom: float,
    box_size_px: int | None = None,
    b_factor_angstrom2: float = 30.0,
    structure: Structure | None = None,
) -> torch.Tensor:
    """The particle's potential as contrast against ice: atoms + displaced-solvent term − ice (volts).

    Parameters
    ----------
    voxel_size_angstrom
        Voxel size in Å.
    box_size_px
        Cubic box edge (even); default: the atoms' extent plus 30 Å.
    b_factor_angstrom2
        One B-factor for every atom.
    structure
        Another model (default: the vendored CA-SP1 hexamer in its standard frame).

    Returns
    -------
    torch.Tensor
        ``(box, box, box)`` float32 map centred at ``box // 2`` (the reference frame origin).
    """
    atoms, positions, _ = _framed_structure(structure)
    if box_size_px is None:
        extent = 2.0 * float(np.linalg.norm(positions, axis=1).max()) + 30.0
        box_size_px = 2 * int(math.ceil(extent / voxel_size_angstrom / 2.0))
    shape = (box_size_px,) * 3
    potential = atoms_to_potential(
        positions,
        atoms.elements,
        shape_zyx=shape,
        voxel_size_angstrom=voxel_size_angstrom,
        b_factors_angstrom2=b_factor_angstrom2,
        occupancies=atoms.occupancies,
        hydrogen_counts=implicit_hydrogen_counts(atoms.residue_names, atoms.atom_names),
    )
    solvent = solvent_potential(
        shape, voxel_size_angstrom=voxel_size_angstrom, positions_xyz_angstrom=positions
    )
    return potential + solvent - ICE_MEAN_INNER_POTENTIAL_VOLT


# ------------------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------------------


def _even_fast(n: float) -> int:
    """The smallest even 5-smooth integer ≥ n (a fast FFT size)."""
    m = max(2, int(math.ceil(n)))
    m += m % 2
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def _round_up(n: float, multiple: int) -> int:
    return multiple * int(math.ceil(n / multiple - 1e-9))


def _rotated_half_extent(width: float, height: float, angle_deg: float) -> tuple[float, float]:
    """Half extents (x, y) of the bounding box of a ``width × height`` rectangle rotated by ``angle_deg``."""
    c, s = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    return 0.5 * (c * width + s * height), 0.5 * (s * width + c * height)


@dataclass(frozen=True)
class _Sizes:
    frame_yx: tuple[int, int]
    grid_yx: tuple[int, int]  # simulation image grid (voxels), margins included, even
    fine_yx: tuple[int, int]  # the same at the frame pixel
    volume_zyx: tuple[int, int, int]
    field_xyz_angstrom: tuple[float, float, float]  # where objects are placed
    tomogram_zyx: tuple[int, int, int]  # tomogram voxels


def _sizes(config: SimulationConfig, plan: SeriesPlan) -> _Sizes:
    vs, pf, b = config.simulation_voxel_size_angstrom, config.frame_pixel_size_angstrom, config.upsampling
    fx, fy = config.frame_size_xy_px
    max_defocus = max(max(t.defocus_u_angstrom, t.defocus_v_angstrom) for t in plan.tilts)
    depth_reach = (
        0.5 * math.hypot(fx * pf, fy * pf) * math.sin(math.radians(60.0))
        + 2.0 * config.ice_thickness_angstrom
    )
    wavelength = float(electron_wavelength_angstrom(config.voltage_kv))
    delocalisation_px = wavelength * (max_defocus + depth_reach) / (2.0 * vs * vs)
    motion_px = float(np.abs(plan.motion_xy_px).max()) / b if plan.motion_xy_px.size else 0.0
    margin = int(math.ceil(delocalisation_px + motion_px)) + 4
    grid = (_even_fast(math.ceil(fy / b) + 2 * margin), _even_fast(math.ceil(fx / b) + 2 * margin))
    bt = config.tomogram_binning
    hx, hy = _rotated_half_extent(grid[1], grid[0], plan.tilt_axis_angle_deg)
    # Objects go into the field of view as the aligned images show it (tilt axis along y).
    swap = abs(math.sin(math.radians(plan.tilt_axis_angle_deg))) > abs(
        math.cos(math.radians(plan.tilt_axis_angle_deg))
    )
    field_x, field_y = (0.5 * fy * pf, 0.5 * fx * pf) if swap else (0.5 * fx * pf, 0.5 * fy * pf)
    tomo_x, tomo_y = (_round_up(2.0 * f / config.tomogram_voxel_size_angstrom, 2) for f in (field_x, field_y))
    # The volume covers the untilted, unshifted image grid; beyond it the ice goes on (border padding in
    # project_tilt), so stage shifts and high tilts see more ice but no more objects.
    nx = max(_round_up(2.0 * (hx + 2.0), 2 * bt), tomo_x * bt)
    ny = max(_round_up(2.0 * (hy + 2.0), 2 * bt), tomo_y * bt)
    r_max = config.virus_radius_range_angstrom[1] * (1.0 + config.virus_ellipticity)
    tallest = (
        2.0 * (r_max + config.membrane_thickness_angstrom / 2.0) + _VIRUS_GAP_ANGSTROM
        if config.n_viruses
        else 0.0
    )
    depth = max(config.ice_thickness_angstrom, tallest) + 2.0 * _Z_MARGIN_ANGSTROM
    nz = _round_up(depth / vs, 2 * bt)
    return _Sizes(
        frame_yx=(fy, fx),
        grid_yx=grid,
        fine_yx=(b * grid[0], b * grid[1]),
        volume_zyx=(nz, ny, nx),
        field_xyz_angstrom=(2.0 * field_x, 2.0 * field_y, nz * vs),
        tomogram_zyx=(nz // bt, tomo_y, tomo_x),
    )


# ------------------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`generate_dataset` wrote.

    Attributes
    ----------
    out_dir
        The dataset folder (``frames/`` and ``truth/``).
    ts_ids
        Tilt series written.
    n_tilts, frames_per_tilt
        Per tilt series.
    frame_shape_yx
        Frame size (pixels).
    frame_pixel_size_angstrom, motion_corrected_pixel_size_angstrom
        Pixel sizes.
    n_particles, n_gold
        Per tilt series.
    elapsed_s
        Wall time.
    bytes_written
        Size of everything under ``out_dir`` written by this call.
    """

    out_dir: Path
    ts_ids: tuple[str, ...]
    n_tilts: int
    frames_per_tilt: int
    frame_shape_yx: tuple[int, int]
    frame_pixel_size_angstrom: float
    motion_corrected_pixel_size_angstrom: float
    n_particles: dict[str, int]
    n_gold: dict[str, int]
    elapsed_s: float
    bytes_written: int


def _seed(seq: np.random.SeedSequence) -> int:
    """A 62-bit integer seed drawn from a seed sequence."""
    return int(seq.generate_state(1, dtype=np.uint64)[0]) >> 2


def _counts_mode(config: SimulationConfig) -> tuple[int, int]:
    """MRC mode and saturation of the frames: signed bytes when the counts fit, else unsigned 16 bit."""
    per_pixel = config.dose_per_tilt_e_per_angstrom2 * config.frame_pixel_size_angstrom**2
    per_frame = per_pixel / max(config.frames_per_tilt or 8, 1)
    peak = 4.0 * per_frame + 6.0 * math.sqrt(4.0 * per_frame) + 2.0
    if peak + (config.xray_value_range_counts[1] if config.xray_rate_per_frame > 0 else 0.0) <= 127:
        return 0, 127
    return 6, 65535


def generate_dataset(
    config: SimulationConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    device: torch.device | str | None = None,
) -> DatasetSummary:
    """Simulate a dataset: raw movies with mdocs under ``out_dir/frames``, the truth under ``out_dir/truth``.

    Parameters
    ----------
    config
        The settings (:mod:`tomoforge.simulate.presets`).
    out_dir
        Destination folder (created; files already there are replaced).
    progress
        Called as ``progress(ts_id, tilts_done, n_tilts)`` after every tilt.
    device
        Torch device of the simulation (default CPU; results are deterministic per device).

    Returns
    -------
    DatasetSummary
    """
    start = time.perf_counter()
    root = Path(out_dir)
    frames_dir, truth = root / "frames", root / "truth"
    for sub in ("motion", "alignment", "ctf", "tomograms", "relion5/tilt_series", "average", "gold", "xrays"):
        (truth / sub).mkdir(parents=True, exist_ok=True)
    frames_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else torch.device("cpu")
    template = load_acquisition(config)
    structure = read_structure(config.structure_path) if config.structure_path is not None else None
    vs = config.simulation_voxel_size_angstrom
    particle_map = particle_contrast_map(
        voxel_size_angstrom=vs, b_factor_angstrom2=config.hexamer_b_factor_angstrom2, structure=structure
    ).to(device)
    write_mrc(
        particle_map.cpu().numpy(), truth / "average" / "map_simulation_voxel.mrc", voxel_size_angstrom=vs
    )
    ref_pixel = config.reference_pixel_size_angstrom
    write_mrc(
        particle_contrast_map(
            voxel_size_angstrom=ref_pixel,
            box_size_px=2 * int(math.ceil(config.average_box_angstrom / ref_pixel / 2.0)),
            b_factor_angstrom2=config.hexamer_b_factor_angstrom2,
            structure=structure,
        ).numpy(),
        truth / "average" / "map.mrc",
        voxel_size_angstrom=ref_pixel,
    )
    children = np.random.SeedSequence(config.seed).spawn(len(config.tilt_series_ids))
    series_truth: dict[str, dict[str, Any]] = {}
    tomograms: list[RelionTomogram] = []
    particles: list[tuple[str, Specimen]] = []
    for ts_id, child in zip(config.tilt_series_ids, children, strict=False):
        record, tomogram, specimen = _simulate_series(
            config, template, ts_id, child, particle_map, root, device, progress
        )
        series_truth[ts_id] = record
        tomograms.append(tomogram)
        particles.append((ts_id, specimen))
    _write_dataset_truth(config, truth, series_truth, tomograms, particles)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return DatasetSummary(
        out_dir=root,
        ts_ids=config.tilt_series_ids,
        n_tilts=template.n_tilts,
        frames_per_tilt=template.acquisition.frames_per_tilt or 1,
        frame_shape_yx=(config.frame_size_xy_px[1], config.frame_size_xy_px[0]),
        frame_pixel_size_angstrom=config.frame_pixel_size_angstrom,
        motion_corrected_pixel_size_angstrom=config.motion_corrected_pixel_size_angstrom,
        n_particles={ts: len(s.particles) for ts, s in particles},
        n_gold={ts: len(s.gold) for ts, s in particles},
        elapsed_s=time.perf_counter() - start,
        bytes_written=size,
    )


def _simulate_series(
    config: SimulationConfig,
    template: TiltSeriesMovies,
    ts_id: str,
    seed: np.random.SeedSequence,
    particle_map: torch.Tensor,
    root: Path,
    device: torch.device,
    progress: ProgressCallback | None,
) -> tuple[dict[str, Any], RelionTomogram, Specimen]:
    s_geometry, s_specimen, s_ice, s_noise, s_xray, s_texture = seed.spawn(6)
    plan = plan_tilt_series(config, template, ts_id, np.random.default_rng(s_geometry))
    sizes = _sizes(config, plan)
    vs, pf = config.simulation_voxel_size_angstrom, config.frame_pixel_size_angstrom
    specimen = build_specimen(
        _seed(s_specimen),
        field_xyz_angstrom=sizes.field_xyz_angstrom,
        ice_thickness_angstrom=config.ice_thickness_angstrom,
        n_viruses=config.n_viruses,
        radius_range_angstrom=config.virus_radius_range_angstrom,
        ellipticity=config.virus_ellipticity,
        min_gap_angstrom=_VIRUS_GAP_ANGSTROM,
        membrane_thickness_angstrom=config.membrane_thickness_angstrom,
        lattice_spacing_angstrom=config.lattice_spacing_angstrom,
        coverage=config.lattice_coverage,
        n_patches=config.lattice_n_patches,
        n_gold=config.n_gold,
        gold_diameter_angstrom=config.gold_diameter_angstrom,
    )
    volume = render_specimen(
        specimen,
        particle_map,
        voxel_size_angstrom=vs,
        shape_zyx=sizes.volume_zyx,
        generator=torch.Generator().manual_seed(_seed(s_ice)),
        device=device,
    )
    truth = root / "truth"
    _write_tomogram(volume, sizes, config, truth / "tomograms" / f"{ts_id}.mrc")
    texture = torch.Generator().manual_seed(_seed(s_texture))

    mode, saturation = _counts_mode(config)
    n_frames = plan.frames_per_tilt
    curve = detector_mtf(config.detector_mtf)
    mtf = mtf_transfer(
        sizes.fine_yx,
        curve,
        detector_pixels_per_image_pixel=0.5 if config.super_resolution else 1.0,
        device=device,
    )
    frequency = frequency_magnitude(sizes.fine_yx, pixel_size_angstrom=pf, device=device)
    noise = torch.Generator(device=device).manual_seed(_seed(s_noise))
    xray_generator = torch.Generator().manual_seed(_seed(s_xray))
    xrays: list[dict[str, Any]] = []
    depth_extent = sizes.volume_zyx[0] * vs
    for done, tilt in enumerate(sorted(plan.tilts, key=lambda t: t.acquisition_order), start=1):
        theta = math.radians(tilt.tilt_angle_deg)
        extent = depth_extent / max(abs(math.cos(theta)), 0.05) + max(sizes.grid_yx) * vs * abs(
            math.sin(theta)
        )
        slabs, depths = project_tilt(
            volume,
            voxel_size_angstrom=vs,
            tilt_angle_deg=tilt.tilt_angle_deg,
            tilt_axis_angle_deg=plan.tilt_axis_angle_deg,
            x_tilt_deg=plan.x_tilt_deg,
            shift_xy_px=(tilt.shift_xy_angstrom[0] / vs, tilt.shift_xy_angstrom[1] / vs),
            out_shape_yx=sizes.grid_yx,
            n_slabs=max(1, int(math.ceil(extent / config.slab_thickness_angstrom))),
        )
        if config.ice_structure_factor > 0:
            slabs = add_ice_texture(
                slabs,
                depths,
                pixel_size_angstrom=vs,
                structure_factor=config.ice_structure_factor,
                generator=texture,
            )
        spectrum = contrast_spectrum(
            slabs,
            depths,
            pixel_size_angstrom=vs,
            defocus_u_angstrom=tilt.defocus_u_angstrom,
            defocus_v_angstrom=tilt.defocus_v_angstrom,
            astigmatism_angle_deg=tilt.astigmatism_angle_deg,
            voltage_kv=config.voltage_kv,
            spherical_aberration_mm=config.spherical_aberration_mm,
            amplitude_contrast=config.amplitude_contrast,
            b_factor_angstrom2=config.envelope_b_factor_angstrom2,
        )
        del slabs
        fine = fourier_upsample_spectrum(spectrum, sizes.grid_yx, config.upsampling)
        dose_frame = tilt.dose_e_per_angstrom2 / n_frames
        path = root / "frames" / tilt.frames_file
        with MrcWriter(
            path, (n_frames, *sizes.frame_yx), voxel_size_angstrom=pf, mode=mode, is_stack=True
        ) as out:
            for f in range(n_frames):
                intensity = frame_intensity(
                    fine,
                    shape_yx=sizes.fine_yx,
                    pixel_size_angstrom=pf,
                    voltage_kv=config.voltage_kv,
                    prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2 + f * dose_frame,
                    dose_e_per_angstrom2=dose_frame,
                    shift_xy_px=torch.from_numpy(plan.motion_xy_px[tilt.index, f]),
                    mtf=mtf,
                    crop_shape_yx=sizes.frame_yx,
                    frequency_per_angstrom=frequency,
                )
                counts, events = expose(
                    intensity,
                    electrons_per_pixel=dose_frame * pf * pf,
                    generator=noise,
                    xray_rate_per_frame=config.xray_rate_per_frame,
                    xray_generator=xray_generator,
                    xray_value_range=config.xray_value_range_counts,
                    max_count=saturation,
                )
                out.write(counts.cpu().numpy(), f)
                xrays += [
                    {
                        "acquisition_order": tilt.acquisition_order,
                        "tilt_angle_deg": tilt.nominal_tilt_angle_deg,
                        "frame": f,
                        "x_px": e.x_px,
                        "y_px": e.y_px,
                        "radius_px": e.radius_px,
                        "value_counts": e.value,
                    }
                    for e in events
                ]
        if progress is not None:
            progress(ts_id, done, len(plan.tilts))
    del volume
    _write_frames_mdoc(config, template, plan, root / "frames" / f"{ts_id}.mrc.mdoc")
    record = _write_series_truth(config, plan, sizes, specimen, xrays, truth)
    binning = config.tomogram_voxel_size_angstrom / config.motion_corrected_pixel_size_angstrom
    nz, ny, nx = sizes.tomogram_zyx
    tomogram = RelionTomogram(
        ts_id=ts_id,
        voltage_kv=config.voltage_kv,
        spherical_aberration_mm=config.spherical_aberration_mm,
        amplitude_contrast=config.amplitude_contrast,
        original_pixel_size_angstrom=pf,
        optics_group_name="optics1",
        tilt_series_pixel_size_angstrom=config.motion_corrected_pixel_size_angstrom,
        tilt_series_star_file=Path("tilt_series") / f"{ts_id}.star",
        binning=binning,
        size_xyz_px=(int(round(nx * binning)), int(round(ny * binning)), int(round(nz * binning))),
    )
    return record, tomogram, specimen


# ------------------------------------------------------------------------------------------------------------
# Writing the truth
# ------------------------------------------------------------------------------------------------------------


def _write_tomogram(volume: torch.Tensor, sizes: _Sizes, config: SimulationConfig, path: Path) -> None:
    bt = config.tomogram_binning
    nz, ny, nx = (n * bt for n in sizes.tomogram_zyx)
    vz, vy, vx = volume.shape
    crop = volume[
        vz // 2 - nz // 2 : vz // 2 - nz // 2 + nz,
        vy // 2 - ny // 2 : vy // 2 - ny // 2 + ny,
        vx // 2 - nx // 2 : vx // 2 - nx // 2 + nx,
    ]
    binned = fourier_bin(crop, bt, dims=(0, 1, 2), chunk_size=16).cpu().numpy().astype(np.float32)
    vt = config.tomogram_voxel_size_angstrom
    tz, ty, tx = binned.shape
    origin = (-(tx // 2) * vt, -(ty // 2) * vt, -(tz // 2) * vt)
    write_mrc(binned, path, voxel_size_angstrom=vt, origin_angstrom=origin)


def _write_frames_mdoc(
    config: SimulationConfig, template: TiltSeriesMovies, plan: SeriesPlan, path: Path
) -> None:
    acquisition = Acquisition.model_validate(
        {
            **template.acquisition.model_dump(),
            "microscope": "tomoforge simulator",
            "detector": f"simulated ({config.detector_mtf} MTF)",
        }
    )
    tilts = [
        TiltImageMovie(
            index=t.index,
            tilt_angle_deg=t.nominal_tilt_angle_deg,
            acquisition_order=t.acquisition_order,
            prior_dose_e_per_angstrom2=t.prior_dose_e_per_angstrom2,
            dose_e_per_angstrom2=t.dose_e_per_angstrom2,
            acquired_at=t.acquired_at,
            frames_file=Path(t.frames_file),
            frame_count=plan.frames_per_tilt,
        )
        for t in plan.tilts
    ]
    series = TiltSeriesMovies(ts_id=plan.ts_id, acquisition=acquisition, tilts=tilts)
    write_tilt_series_mdoc(series, path)


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_series_truth(
    config: SimulationConfig,
    plan: SeriesPlan,
    sizes: _Sizes,
    specimen: Specimen,
    xrays: list[dict[str, Any]],
    truth: Path,
) -> dict[str, Any]:
    ts_id, pf, pmc = plan.ts_id, config.frame_pixel_size_angstrom, config.motion_corrected_pixel_size_angstrom
    bin_mc = config.motion_correction_binning
    image_size_xy = (sizes.frame_yx[1] // bin_mc, sizes.frame_yx[0] // bin_mc)
    transforms = [_transform(plan, t) for t in plan.tilts]
    motion_rows = [
        [t.acquisition_order, t.nominal_tilt_angle_deg, f, *(plan.motion_xy_px[t.index, f] * pf).tolist()]
        for t in sorted(plan.tilts, key=lambda t: t.acquisition_order)
        for f in range(plan.frames_per_tilt)
    ]
    header = ["acquisition_order", "tilt_angle_deg", "frame", "shift_x_angstrom", "shift_y_angstrom"]
    (truth / "motion" / f"{ts_id}.csv").write_text(_csv_text(header, motion_rows))
    alignment = Alignment(
        ts_id=ts_id,
        tilt_angles_deg=tuple(t.tilt_angle_deg for t in plan.tilts),
        transforms=tuple(transforms),
        x_tilt_angles_deg=(plan.x_tilt_deg,) * len(plan.tilts),
        nominal_tilt_angles_deg=tuple(t.nominal_tilt_angle_deg for t in plan.tilts),
        prior_dose_e_per_angstrom2=tuple(t.prior_dose_e_per_angstrom2 for t in plan.tilts),
        pixel_size_angstrom=pmc,
        image_size_xy=image_size_xy,
    )
    write_alignment(alignment, truth / "alignment" / f"{ts_id}.xf")
    info = {"pixel_size_angstrom": pmc, "image_size_xy": list(image_size_xy), "excluded_views": []}
    (truth / "alignment" / f"{ts_id}.json").write_text(json.dumps(info, indent=2) + "\n")
    ctfs = [
        CtfParameters(
            defocus_u_angstrom=t.defocus_u_angstrom,
            defocus_v_angstrom=t.defocus_v_angstrom,
            astigmatism_angle_deg=t.astigmatism_angle_deg,
        )
        for t in plan.tilts
    ]
    ctf_series = CtfTiltSeries(
        ts_id=ts_id,
        tilts=[
            CtfTiltEstimate(tilt_index=t.index, parameters=c) for t, c in zip(plan.tilts, ctfs, strict=True)
        ],
    )
    nominal = [t.nominal_tilt_angle_deg for t in plan.tilts]
    write_imod_defocus(ctf_to_imod_defocus(ctf_series, nominal), truth / "ctf" / f"{ts_id}.defocus")
    acquisition = Acquisition(
        voltage_kv=config.voltage_kv,
        spherical_aberration_mm=config.spherical_aberration_mm,
        amplitude_contrast=config.amplitude_contrast,
        pixel_size_angstrom=pf,
        tilt_axis_angle_deg=plan.nominal_tilt_axis_angle_deg,
        dose_per_tilt_e_per_angstrom2=config.dose_per_tilt_e_per_angstrom2,
        frames_per_tilt=plan.frames_per_tilt,
        super_resolution=config.super_resolution,
    )
    series = TiltSeries(
        ts_id=ts_id,
        acquisition=acquisition,
        stack_file=Path(f"{ts_id}.mrc"),
        pixel_size_angstrom=pmc,
        image_shape_yx=(image_size_xy[1], image_size_xy[0]),
        tilts=[
            TiltImage(
                index=t.index,
                tilt_angle_deg=t.nominal_tilt_angle_deg,
                acquisition_order=t.acquisition_order,
                prior_dose_e_per_angstrom2=t.prior_dose_e_per_angstrom2,
                dose_e_per_angstrom2=t.dose_e_per_angstrom2,
                frames_file=Path("frames") / t.frames_file,
                transform=transform,
                refined_tilt_angle_deg=t.tilt_angle_deg,
                x_tilt_angle_deg=plan.x_tilt_deg,
                ctf=ctf,
            )
            for t, transform, ctf in zip(plan.tilts, transforms, ctfs, strict=True)
        ],
    )
    write_relion_tilt_series(series, truth / "relion5" / "tilt_series" / f"{ts_id}.star")
    gold = specimen.gold
    gold_rows = [
        [*p.tolist(), gold.diameter_angstrom, int(side)]
        for p, side in zip(gold.positions_xyz_angstrom, gold.surfaces, strict=True)
    ]
    header = ["x_angstrom", "y_angstrom", "z_angstrom", "diameter_angstrom", "surface"]
    (truth / "gold" / f"{ts_id}.csv").write_text(_csv_text(header, gold_rows))
    header = ["acquisition_order", "tilt_angle_deg", "frame", "x_px", "y_px", "radius_px", "value_counts"]
    (truth / "xrays" / f"{ts_id}.csv").write_text(_csv_text(header, [list(x.values()) for x in xrays]))
    vt = config.tomogram_voxel_size_angstrom
    return {
        "nominal_tilt_axis_angle_deg": plan.nominal_tilt_axis_angle_deg,
        "tilt_axis_angle_deg": plan.tilt_axis_angle_deg,
        "x_tilt_deg": plan.x_tilt_deg,
        "handedness": 1,
        "frames_per_tilt": plan.frames_per_tilt,
        "frame_shape_yx": list(sizes.frame_yx),
        "motion_corrected_image_size_xy": list(image_size_xy),
        "ice_thickness_angstrom": specimen.ice_thickness_angstrom,
        "simulated_volume_shape_zyx": list(sizes.volume_zyx),
        "tomogram": {
            "file": f"tomograms/{ts_id}.mrc",
            "shape_zyx": list(sizes.tomogram_zyx),
            "voxel_size_angstrom": vt,
        },
        "tilts": [
            {
                "index": t.index,
                "acquisition_order": t.acquisition_order,
                "nominal_tilt_angle_deg": t.nominal_tilt_angle_deg,
                "tilt_angle_deg": t.tilt_angle_deg,
                "prior_dose_e_per_angstrom2": t.prior_dose_e_per_angstrom2,
                "dose_e_per_angstrom2": t.dose_e_per_angstrom2,
                "frames_file": f"frames/{t.frames_file}",
                "defocus_u_angstrom": t.defocus_u_angstrom,
                "defocus_v_angstrom": t.defocus_v_angstrom,
                "astigmatism_angle_deg": t.astigmatism_angle_deg,
                "shift_xy_angstrom": list(t.shift_xy_angstrom),
                "transform": transform.model_dump(),
                "motion_xy_angstrom": (plan.motion_xy_px[t.index] * pf).tolist(),
            }
            for t, transform in zip(plan.tilts, transforms, strict=True)
        ],
        "viruses": [
            {
                "id": v.id,
                "centre_xyz_angstrom": list(v.centre_xyz_angstrom),
                "radii_xyz_angstrom": list(v.radii_xyz_angstrom),
                "rotation": [list(r) for r in v.rotation],
                "membrane_thickness_angstrom": v.membrane_thickness_angstrom,
            }
            for v in specimen.viruses
        ],
        "particles": {
            "positions_xyz_angstrom": specimen.particles.positions_xyz_angstrom.tolist(),
            "rotations": specimen.particles.rotations.tolist(),
            "virus_ids": specimen.particles.virus_ids.tolist(),
            "patch_ids": specimen.particles.patch_ids.tolist(),
        },
        "gold": {
            "diameter_angstrom": gold.diameter_angstrom,
            "positions_xyz_angstrom": gold.positions_xyz_angstrom.tolist(),
            "surfaces": gold.surfaces.tolist(),
        },
        "xrays": xrays,
    }


def _write_dataset_truth(
    config: SimulationConfig,
    truth: Path,
    series: dict[str, dict[str, Any]],
    tomograms: list[RelionTomogram],
    specimens: list[tuple[str, Specimen]],
) -> None:
    write_tomograms_star(tomograms, truth / "relion5" / "tomograms.star")
    ts_ids = [ts for ts, s in specimens for _ in range(len(s.particles))]
    positions = np.concatenate([s.particles.positions_xyz_angstrom for _, s in specimens]).reshape(-1, 3)
    rotations = np.concatenate([s.particles.rotations for _, s in specimens]).reshape(-1, 3, 3)
    ref_pixel = config.reference_pixel_size_angstrom
    particle_set = ParticleSet.from_arrays(
        ts_ids,
        positions,
        rotations,
        pixel_size_angstrom=ref_pixel,
        box_size_px=2 * int(math.ceil(config.average_box_angstrom / ref_pixel / 2.0)),
        symmetry="C6",
    )
    write_relion_particles(particle_set, truth / "relion5" / "particles.star")
    document = {
        "format": "tomoforge simulation truth",
        "version": 1,
        "config": config.model_dump(mode="json"),
        "conventions": {
            "projection": "(x, y, depth) = Rz(alpha) Ry(theta) Rx(phi) X + (s, 0), CONVENTIONS.md section 7",
            "defocus": "underfocus positive, at the tomogram centre's height; point defocus = defocus - depth",
            "motion": "specimen displacement of each frame relative to frame 0, frame pixels x Å per pixel",
            "positions": "Å relative to the tomogram centre (voxel N//2 of each axis)",
            "rotations": "reference box -> tomogram, R z = outward membrane normal",
            "motion_corrected_reference": "frame 0 of each movie",
        },
        "frame_pixel_size_angstrom": config.frame_pixel_size_angstrom,
        "motion_corrected_pixel_size_angstrom": config.motion_corrected_pixel_size_angstrom,
        "simulation_voxel_size_angstrom": config.simulation_voxel_size_angstrom,
        "tomogram_voxel_size_angstrom": config.tomogram_voxel_size_angstrom,
        "reference_pixel_size_angstrom": ref_pixel,
        "tilt_series": series,
    }
    (truth / "truth.json").write_text(json.dumps(document, indent=1) + "\n")
