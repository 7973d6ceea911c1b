"""Writing the ground truth of a simulated dataset (``truth/``) and the movies' mdoc (``frames/``)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomoforge.io.convert import Alignment, write_alignment
from tomoforge.io.imod import ctf_to_imod_defocus, write_imod_defocus
from tomoforge.io.mdoc import write_tilt_series_mdoc
from tomoforge.io.mrc import write_mrc
from tomoforge.io.relion5 import (
    RelionTomogram,
    write_relion_particles,
    write_relion_tilt_series,
    write_tomograms_star,
)
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
)
from tomoforge.simulate.dataset.acquisition import SeriesPlan, _transform
from tomoforge.simulate.dataset.sizes import _Sizes
from tomoforge.simulate.imaging import fourier_bin
from tomoforge.simulate.presets import SimulationConfig
from tomoforge.simulate.specimen import Specimen


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
