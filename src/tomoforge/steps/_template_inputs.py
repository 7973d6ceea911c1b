"""What ``picking.template`` prepares around the kernel: the tilt range, the weighted reference, the surface
constraint, and the picks from the score map."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tomoforge.models import Particle, Tomogram
    from tomoforge.picking import MatchResult
    from tomoforge.steps.picking_template import TemplateMatchingParams

__all__ = ["peaks_to_particles", "prepare_reference", "surface_normals", "tilt_range"]


def tilt_range(tomogram: Tomogram, override: float | None) -> float:
    """Largest |tilt| of the series the tomogram came from: ``override``, or the reconstruction record's angles."""
    if override is not None:
        return override
    record = Path(tomogram.volume_file).with_name(f"{tomogram.ts_id}_reconstruction.json")
    if not record.is_file():
        raise ValueError(
            f"{tomogram.ts_id}: no reconstruction record {record.name} next to {tomogram.volume_file} to take "
            "the tilt range from; give tilt_range_deg"
        )
    angles = json.loads(record.read_text(encoding="utf-8")).get("tilt_angles_used_deg") or []
    if not angles:
        raise ValueError(f"{record}: holds no tilt_angles_used_deg; give tilt_range_deg")
    return float(max(abs(a) for a in angles))


def prepare_reference(
    path: Path, tomogram: Tomogram, wedge_deg: float, params: TemplateMatchingParams
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The reference at the tomogram's voxel size, its Fourier weight (wedge × CTF × low-pass) and the mask radius
    in voxels."""
    import torch

    from tomoforge.ctf.ctf2d import ctf_1d
    from tomoforge.picking import missing_wedge_weight, radial_weight, rescale_reference
    from tomoforge.steps._map_outputs import read_cubic_map

    data, reference_voxel = read_cubic_map(path)
    voxel = tomogram.voxel_size_angstrom
    template = rescale_reference(torch.from_numpy(data).to(torch.float32), reference_voxel, voxel)
    box = template.shape[0]
    if box < 5:
        raise ValueError(
            f"{path}: the reference is {box} voxels across at the tomogram's {voxel:g} Å; use a finer tomogram"
        )
    weight = missing_wedge_weight(box, wedge_deg)
    if params.defocus_um is not None:
        flip = tomogram.ctf_corrected
        defocus_angstrom = params.defocus_um * 1e4

        def ctf(frequency: torch.Tensor) -> torch.Tensor:
            values = ctf_1d(
                frequency / voxel,
                defocus_angstrom=defocus_angstrom,
                voltage_kv=params.voltage_kv,
                spherical_aberration_mm=params.spherical_aberration_mm,
                amplitude_contrast=params.amplitude_contrast,
            )
            return values.abs() if flip else values

        weight = weight * radial_weight(box, ctf)
    if params.low_pass_angstrom is not None:
        cutoff = voxel / params.low_pass_angstrom
        weight = weight * radial_weight(box, lambda f: (f <= cutoff).to(torch.float32))
    if params.mask_radius_angstrom is not None:
        radius = params.mask_radius_angstrom / voxel
    else:
        offsets = torch.arange(box, dtype=torch.float32) - box // 2
        zz, yy, xx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
        r = torch.sqrt(xx * xx + yy * yy + zz * zz)
        dense = template > 0.1 * template.max()
        radius = float(r[dense].max()) + 1.0 if bool(dense.any()) else box / 2.0
    return template, weight, min(radius, box / 2.0)


def surface_normals(
    folder: Path, tomogram: Tomogram, params: TemplateMatchingParams
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The surface constraint from ``models.json`` of a ``particles`` artifact: the normal field (zero away from
    the surfaces), the index of the nearest model per voxel (−1 away from them) and each model's group."""
    import torch

    from tomoforge.picking import ellipsoid_normal_field

    path = folder / "models.json"
    if not path.is_file():
        raise ValueError(
            f"the surfaces input {folder} holds no models.json (from picking.vesicles or picking.surfaces)"
        )
    models = [
        m
        for m in json.loads(path.read_text(encoding="utf-8"))["tomograms"].get(tomogram.ts_id, [])
        if not m.get("dropped", False)
    ]
    normals, which = ellipsoid_normal_field(
        tomogram.shape_zyx,
        tomogram.voxel_size_angstrom,
        [
            (
                torch.tensor(m["centre_angstrom"]),
                torch.tensor(m["radii_angstrom"]),
                torch.tensor(m["rotation"]),
            )
            for m in models
        ],
        max_distance=params.surface_distance_angstrom,
        offset=params.surface_offset_angstrom,
    )
    return normals, which, [str(m["group"]) for m in models]


def peaks_to_particles(
    result: MatchResult,
    rotations: torch.Tensor,
    tomogram: Tomogram,
    surfaces: tuple[torch.Tensor, torch.Tensor, list[str]] | None,
    params: TemplateMatchingParams,
) -> tuple[list[Particle], float]:
    """Picks from the score map: peaks ``min_distance`` apart above the threshold, best first."""
    import numpy as np

    from tomoforge.models import Particle
    from tomoforge.picking import false_alarm_threshold, find_peaks

    voxel = tomogram.voxel_size_angstrom
    threshold = (
        params.score_threshold
        if params.score_threshold is not None
        else false_alarm_threshold(result.score, len(rotations), false_alarms=params.false_alarms)
    )
    if not math.isfinite(threshold):
        return [], threshold
    index, values = find_peaks(
        result.score, min_distance_px=params.min_distance_angstrom / voxel, threshold=threshold,
        max_peaks=params.max_picks,
    )  # fmt: skip
    nz, ny, nx = tomogram.shape_zyx
    centre = np.array([nx // 2, ny // 2, nz // 2])
    picks: list[Particle] = []
    for (k, j, i), value in zip(index.tolist(), values.tolist(), strict=True):
        rotation = rotations[int(result.rotation_index[k, j, i])].numpy()
        group, normal = None, None
        if surfaces is not None:
            normals, which, groups = surfaces
            n = normals[:, k, j, i].double().numpy()
            normal = tuple(float(v) for v in n / np.linalg.norm(n))
            group = groups[int(which[k, j, i])]
        position = (np.array([i, j, k]) - centre) * voxel
        picks.append(
            Particle(
                ts_id=tomogram.ts_id,
                position_angstrom=tuple(float(v) for v in position),  # type: ignore[arg-type]
                rotation_matrix=tuple(tuple(float(v) for v in row) for row in rotation),  # type: ignore[arg-type]
                group=group,
                score=float(value),
                prior_normal=normal,  # type: ignore[arg-type]
            )
        )
    return picks, threshold
