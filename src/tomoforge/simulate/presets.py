"""Simulation settings (:class:`SimulationConfig`) and the named presets of ``tomoforge simulate``.

Presets
-------
``tiny``
    For tests: one tilt series of 9 tilts (every 5th tilt of the real acquisition, −60° … +60°), 4 frames each,
    192×192 frames of 5 Å (super-resolution; 10 Å after motion correction), one small virus (55–65 nm) in 80 nm
    of ice and 3 gold beads. Generates in a few seconds.
``small``
    The ``tiny`` specimen as a full tilt series, enough for every step of the workflow (the end-to-end test and
    the ``small`` workflow): 21 tilts (every 2nd of the real acquisition, −60° … +60°), 256×256 frames of 5 Å
    (128×128 at 10 Å after motion correction) and 14 gold beads. Generates in a few seconds.
``demo``
    The dataset of ``tomoforge demo``: one tilt series with the real acquisition (41 tilts, 3° steps,
    dose-symmetric, 8 frames, 3 e⁻/Å² per tilt), 1024×1024 super-resolution frames of 2.7 Å (5.4 Å after motion
    correction, a 2765 Å field), three immature-HIV-like viruses (90–120 nm, ≈ 830 hexamers) with their CA-SP1
    lattice in 140–150 nm of ice and 12 gold beads; simulated at 5.4 Å, tomogram truth at 10.8 Å (256×256×164).
    Sized so that the whole pipeline runs in minutes on two cores and the average still shows a hexamer (5.4 Å
    pixels, 10.8 Å Nyquist) and its lattice neighbours. Measured on two busy CPU cores: 1.5–2.5 min, 1.2 GB peak
    memory, 330 MB of movies (8-bit counts, 8.4 MB per tilt) and 44 MB of truth (mostly the tomogram).
``tutorial-small``, ``tutorial-large``
    One and five tilt series (TS_01, TS_03, TS_43, TS_45, TS_54) at the real sizes of EMPIAR-10164: 0.675 Å
    super-resolution frames of 7420×7676 (1.35 Å after motion correction), simulated at 2.7 Å (information beyond
    5.4 Å is not simulated), for GPU machines. Frames are streamed to disk; the simulated volume (≈ 2000×2000×700
    voxels, 11 GB in float32) is the largest object in memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PRESETS", "SimulationConfig", "preset_config"]

TUTORIAL_TS_IDS = ("TS_01", "TS_03", "TS_43", "TS_45", "TS_54")


def _integer_ratio(big: float, small: float) -> int | None:
    ratio = big / small
    return int(round(ratio)) if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1 else None


class SimulationConfig(BaseModel):
    """Every parameter of a simulated dataset, with its unit in its name (frozen; ``model_copy(update=…)`` or
    :func:`preset_config` with overrides derive variants)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # --- dataset ---
    seed: int = Field(default=0, description="Seed of every random choice; the dataset is a function of it.")
    n_tilt_series: int = Field(default=1, ge=1, description="Number of tilt series (the first of ts_ids).")
    ts_ids: tuple[str, ...] = Field(default=TUTORIAL_TS_IDS, description="Tilt-series ids, in order.")
    mdoc_path: Path | None = Field(
        default=None,
        description="SerialEM mdoc giving the acquisition (tilt angles and order, frames, axis); None for the "
        "vendored real EMPIAR-10164 TS_01 mdoc.",
    )
    tilt_stride: int = Field(
        default=1,
        ge=1,
        description="Keep every n-th tilt of the mdoc by angle (counted from the tilt nearest 0°).",
    )
    frames_per_tilt: int | None = Field(default=None, ge=1, description="Frames per movie; None: the mdoc's.")
    # --- optics and dose ---
    voltage_kv: float = Field(default=300.0, description="Acceleration voltage (200 or 300 kV).")
    spherical_aberration_mm: float = Field(default=2.7, ge=0.0)
    amplitude_contrast: float = Field(default=0.1, ge=0.0, lt=1.0)
    dose_per_tilt_e_per_angstrom2: float = Field(default=3.0, gt=0.0)
    envelope_b_factor_angstrom2: float = Field(
        default=20.0, ge=0.0, description="Envelope exp(−B k²/4) of partial coherence and other losses."
    )
    # --- detector and sampling ---
    detector_mtf: str = Field(
        default="k2_300kv", description="Measured MTF: k2_300kv, k3_300kv, falcon4ec_300kv."
    )
    super_resolution: bool = Field(
        default=True, description="Frames are super-resolution (half-detector pixels)."
    )
    frame_pixel_size_angstrom: float = Field(default=0.675, gt=0.0, description="Pixel size of the frames.")
    frame_size_xy_px: tuple[int, int] = Field(
        default=(7420, 7676), description="Frame size (x, y) in pixels."
    )
    motion_corrected_pixel_size_angstrom: float = Field(
        default=1.35, gt=0.0, description="Pixel of the motion-corrected stack the alignment truth refers to."
    )
    simulation_voxel_size_angstrom: float = Field(
        default=2.7,
        gt=0.0,
        description="Voxel of the simulated potential (an integer multiple of the frame pixel).",
    )
    tomogram_voxel_size_angstrom: float = Field(
        default=10.8,
        gt=0.0,
        description="Voxel of the noise-free tomogram truth (multiple of the simulation voxel).",
    )
    average_pixel_size_angstrom: float | None = Field(
        default=None,
        gt=0.0,
        description="Pixel of the reference map truth; None: the motion-corrected pixel.",
    )
    average_box_angstrom: float = Field(default=260.0, gt=0.0, description="Edge of the reference map box.")
    slab_thickness_angstrom: float = Field(
        default=200.0, gt=0.0, description="Depth slabs with their own defocus in the image formation."
    )
    # --- specimen ---
    ice_thickness_angstrom: float = Field(default=1500.0, gt=0.0)
    ice_structure_factor: float = Field(
        default=0.5,
        ge=0.0,
        description="Effective structure factor of the ice's molecular texture (0: none); water's S(0) is 0.06, "
        "0.5 also makes up for the loss of the texture's high frequencies to voxels and interpolation and gives "
        "0° images Thon rings to the simulation Nyquist, as real EMPIAR-10164 tilts have to 6-7 Å.",
    )
    n_viruses: int = Field(default=6, ge=0)
    virus_radius_range_angstrom: tuple[float, float] = Field(default=(500.0, 750.0))
    virus_ellipticity: float = Field(default=0.1, ge=0.0, lt=1.0)
    membrane_thickness_angstrom: float = Field(default=40.0, gt=0.0)
    lattice_coverage: float = Field(default=0.6, ge=0.0, le=1.0)
    lattice_spacing_angstrom: float = Field(default=75.0, gt=0.0)
    lattice_n_patches: int = Field(default=6, ge=1)
    n_gold: int = Field(default=20, ge=0)
    gold_diameter_angstrom: float = Field(default=100.0, gt=0.0)
    hexamer_b_factor_angstrom2: float = Field(default=30.0, gt=0.0)
    structure_path: Path | None = Field(
        default=None, description="PDB/mmCIF of the lattice particle; None for the vendored CA-SP1 hexamer."
    )
    # --- deliberate acquisition errors ---
    defocus_range_angstrom: tuple[float, float] = Field(
        default=(25000.0, 40000.0), description="Range of the nominal defocus of a tilt series (uniform)."
    )
    defocus_tilt_sd_angstrom: float = Field(default=500.0, ge=0.0, description="Per-tilt defocus scatter.")
    astigmatism_angstrom: float = Field(default=200.0, ge=0.0, description="Half difference (u − v)/2.")
    tilt_axis_error_deg: float = Field(default=0.7, description="True tilt axis minus the mdoc's.")
    tilt_angle_error_sd_deg: float = Field(default=0.2, ge=0.0)
    x_tilt_deg: float = Field(default=0.0, description="Specimen x-axis tilt φ (IMOD .xtilt) of every view.")
    stage_shift_sd_angstrom: float = Field(default=300.0, ge=0.0, description="Per-tilt image shift scatter.")
    # --- beam-induced motion (tomoforge.simulate.motion) ---
    drift_angstrom_per_frame: float = Field(default=0.2, ge=0.0)
    jitter_angstrom: float = Field(default=0.08, ge=0.0)
    initial_jump_angstrom: float = Field(default=2.0, ge=0.0)
    jump_time_constant_frames: float = Field(default=2.0, gt=0.0)
    # --- X-rays ---
    xray_rate_per_frame: float = Field(default=0.3, ge=0.0)
    xray_value_range_counts: tuple[float, float] = Field(default=(20.0, 90.0))

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if self.n_tilt_series > len(self.ts_ids):
            raise ValueError(
                f"n_tilt_series {self.n_tilt_series} exceeds the {len(self.ts_ids)} ts_ids given"
            )
        if len(set(self.ts_ids)) != len(self.ts_ids):
            raise ValueError("ts_ids must be unique")
        checks = [
            ("simulation_voxel_size_angstrom", "frame_pixel_size_angstrom"),
            ("motion_corrected_pixel_size_angstrom", "frame_pixel_size_angstrom"),
            ("tomogram_voxel_size_angstrom", "simulation_voxel_size_angstrom"),
        ]
        for big, small in checks:
            if _integer_ratio(getattr(self, big), getattr(self, small)) is None:
                raise ValueError(f"{big} must be an integer multiple of {small}")
        mc = _integer_ratio(self.motion_corrected_pixel_size_angstrom, self.frame_pixel_size_angstrom) or 1
        for size in self.frame_size_xy_px:
            if size % (2 * mc):
                raise ValueError(
                    f"frame sizes must be multiples of {2 * mc} so that the motion-corrected images have even "
                    f"sizes and the same centre, got {self.frame_size_xy_px}"
                )
        low, high = self.virus_radius_range_angstrom
        if not 0 < low <= high:
            raise ValueError("virus_radius_range_angstrom must be (low, high) with 0 < low <= high")
        if not 0 < self.defocus_range_angstrom[0] <= self.defocus_range_angstrom[1]:
            raise ValueError("defocus_range_angstrom must be (low, high) with 0 < low <= high (underfocus)")
        if self.xray_value_range_counts[0] > self.xray_value_range_counts[1]:
            raise ValueError("xray_value_range_counts must be (low, high)")
        if math.isclose(self.voltage_kv, 200.0) is False and math.isclose(self.voltage_kv, 300.0) is False:
            raise ValueError("voltage_kv must be 200 or 300 (the critical exposure is known there only)")
        return self

    @property
    def tilt_series_ids(self) -> tuple[str, ...]:
        """The ids of the tilt series simulated."""
        return self.ts_ids[: self.n_tilt_series]

    @property
    def upsampling(self) -> int:
        """Frame pixels per simulation voxel."""
        return int(round(self.simulation_voxel_size_angstrom / self.frame_pixel_size_angstrom))

    @property
    def motion_correction_binning(self) -> int:
        """Frame pixels per motion-corrected pixel."""
        return int(round(self.motion_corrected_pixel_size_angstrom / self.frame_pixel_size_angstrom))

    @property
    def tomogram_binning(self) -> int:
        """Simulation voxels per tomogram voxel."""
        return int(round(self.tomogram_voxel_size_angstrom / self.simulation_voxel_size_angstrom))

    @property
    def reference_pixel_size_angstrom(self) -> float:
        """Pixel of the reference map truth."""
        return self.average_pixel_size_angstrom or self.motion_corrected_pixel_size_angstrom


_TINY: dict[str, Any] = {
    "n_tilt_series": 1,
    "tilt_stride": 5,
    "frames_per_tilt": 4,
    "frame_pixel_size_angstrom": 5.0,
    "frame_size_xy_px": (192, 192),
    "motion_corrected_pixel_size_angstrom": 10.0,
    "simulation_voxel_size_angstrom": 10.0,
    "tomogram_voxel_size_angstrom": 20.0,
    "ice_thickness_angstrom": 800.0,
    "n_viruses": 1,
    "virus_radius_range_angstrom": (275.0, 325.0),
    "n_gold": 3,
    "defocus_range_angstrom": (25000.0, 35000.0),
    "stage_shift_sd_angstrom": 30.0,
    "slab_thickness_angstrom": 250.0,
}
_SMALL: dict[str, Any] = {**_TINY, "tilt_stride": 2, "frame_size_xy_px": (256, 256), "n_gold": 14}
_DEMO: dict[str, Any] = {
    "n_tilt_series": 1,
    "frame_pixel_size_angstrom": 2.7,
    "frame_size_xy_px": (1024, 1024),
    "motion_corrected_pixel_size_angstrom": 5.4,
    "simulation_voxel_size_angstrom": 5.4,
    "tomogram_voxel_size_angstrom": 10.8,
    "ice_thickness_angstrom": 1400.0,
    "n_viruses": 3,
    "virus_radius_range_angstrom": (450.0, 600.0),
    "n_gold": 12,
    "defocus_range_angstrom": (28000.0, 38000.0),
    "stage_shift_sd_angstrom": 100.0,
}
_TUTORIAL: dict[str, Any] = {}

PRESETS: dict[str, SimulationConfig] = {
    "tiny": SimulationConfig(**_TINY),
    "small": SimulationConfig(**_SMALL),
    "demo": SimulationConfig(**_DEMO),
    "tutorial-small": SimulationConfig(**_TUTORIAL, n_tilt_series=1),
    "tutorial-large": SimulationConfig(**_TUTORIAL, n_tilt_series=5),
}
"""The named presets (see the module docstring)."""


def preset_config(name: str, **overrides: Any) -> SimulationConfig:
    """A preset with some fields replaced (validated).

    Parameters
    ----------
    name
        ``tiny``, ``demo``, ``tutorial-small`` or ``tutorial-large``.
    **overrides
        Fields of :class:`SimulationConfig`.

    Returns
    -------
    SimulationConfig

    Raises
    ------
    ValueError
        For an unknown preset or invalid values.
    """
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    data = base.model_dump()
    data.update(overrides)
    return SimulationConfig.model_validate(data)
