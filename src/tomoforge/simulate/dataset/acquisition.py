"""The acquisition template and the true geometry of a tilt series (its deliberate errors)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tomoforge.io.mdoc import MdocOverrides, read_tilt_series_mdoc, serialem_frames_name
from tomoforge.models import TiltSeriesMovies, TiltTransform
from tomoforge.simulate.motion import beam_induced_motion
from tomoforge.simulate.presets import SimulationConfig

__all__ = ["SeriesPlan", "TiltPlan", "default_mdoc_path", "load_acquisition", "plan_tilt_series"]


def default_mdoc_path() -> Path:
    """The vendored real EMPIAR-10164 TS_01 mdoc (see ``simulate/data/PROVENANCE.md``)."""
    return Path(str(resources.files("tomoforge.simulate").joinpath("data", "TS_01.mrc.mdoc")))


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
