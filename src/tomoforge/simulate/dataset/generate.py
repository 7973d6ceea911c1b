"""The orchestration: a whole dataset, tilt series by tilt series, tilt by tilt, frame by frame."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomoforge.io.mrc import MrcWriter, write_mrc
from tomoforge.io.relion5 import RelionTomogram
from tomoforge.io.structure import read_structure
from tomoforge.models import TiltSeriesMovies
from tomoforge.simulate.dataset.acquisition import load_acquisition, plan_tilt_series
from tomoforge.simulate.dataset.reference import particle_contrast_map
from tomoforge.simulate.dataset.sizes import _VIRUS_GAP_ANGSTROM, _sizes
from tomoforge.simulate.dataset.truth import (
    _write_dataset_truth,
    _write_frames_mdoc,
    _write_series_truth,
    _write_tomogram,
)
from tomoforge.simulate.detector import detector_mtf
from tomoforge.simulate.imaging import (
    add_ice_texture,
    contrast_spectrum,
    expose,
    fourier_upsample_spectrum,
    frame_intensity,
    frequency_magnitude,
    mtf_transfer,
    project_tilt,
)
from tomoforge.simulate.presets import SimulationConfig
from tomoforge.simulate.render import render_specimen
from tomoforge.simulate.specimen import Specimen, build_specimen

__all__ = ["DatasetSummary", "ProgressCallback", "generate_dataset"]

ProgressCallback = Callable[[str, int, int], None]
"""``progress(ts_id, tilts_done, n_tilts)``, called after every tilt."""


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
