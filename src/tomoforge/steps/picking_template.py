"""Step ``picking.template``: template matching of a reference in each tomogram, with per-pick scores.

As pytom-match-pick and GAPSTOP do (:mod:`tomoforge.picking.template_matching`): the reference (an MRC map,
density positive, its symmetry axis along z) is resampled to the tomogram's voxel size, rotated over an angular
sampling (``angular_step_deg``, reduced by the ``symmetry``), weighted by the tomogram's missing wedge (its tilt
range, from the reconstruction record) and optionally a radial CTF profile (``defocus_um``: ``|CTF|`` for a
CTF-corrected tomogram, the CTF otherwise), and correlated locally under a spherical mask. Peaks at least
``min_distance_angstrom`` apart above the one-false-alarm threshold (or ``score_threshold``) become the picks,
with the orientation that matched and the score.

With the optional ``surfaces`` input (a ``particles`` artifact holding ``models.json``, from
``picking.vesicles`` or ``picking.surfaces``) only voxels within ``surface_distance_angstrom`` of a model surface
moved by ``surface_offset_angstrom`` are searched, with orientations whose z axis lies within
``normal_range_deg`` of the surface normal there; picks get the model's group and the normal as ``prior_normal``.

Output: a ``particles`` artifact (``steps/_particles.py``), and per tomogram ``<ts>_scores.mrc`` (the best
correlation per voxel), ``<ts>_template_matching.json`` (threshold, orientations, time, pick scores) and a PNG of
the picks.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["TemplateMatchingParams", "match_templates"]


class TemplateMatchingParams(BaseModel):
    """Parameters of ``picking.template`` (pytom-match-pick terms in brackets)."""

    angular_step_deg: float = Field(15.0, gt=0, le=90, description="Angular sampling step, degrees.")
    symmetry: str = Field("C1", description="Point group of the reference about its z axis: C1, C2, … (Cn).")
    mask_radius_angstrom: float | None = Field(
        None,
        gt=0,
        description="Radius of the spherical mask the correlation is computed under, Å; by default the smallest "
        "sphere holding every voxel of the reference above 10 % of its maximum, plus a voxel.",
    )
    dense_is_dark: bool = Field(
        True, description="Dense matter is dark in the tomogram (images); False for a density map."
    )
    tilt_range_deg: float | None = Field(
        None,
        gt=0,
        le=90,
        description="Largest |tilt| of the series, for the missing wedge; by default from the reconstruction record.",
    )
    defocus_um: float | None = Field(
        None, gt=0, description="Defocus for a radial CTF weight of the reference, µm (none by default)."
    )
    voltage_kv: float = Field(300.0, gt=0, description="Acceleration voltage, kV (CTF weight).")
    spherical_aberration_mm: float = Field(2.7, ge=0, description="Spherical aberration, mm (CTF weight).")
    amplitude_contrast: float = Field(0.07, ge=0, lt=1, description="Amplitude contrast (CTF weight).")
    low_pass_angstrom: float | None = Field(
        None, gt=0, description="Low-pass the reference to this resolution, Å (none by default)."
    )
    min_distance_angstrom: float = Field(60.0, gt=0, description="Smallest distance between picks, Å.")
    score_threshold: float | None = Field(
        None, description="Keep peaks above this correlation; by default the one-false-alarm threshold."
    )
    false_alarms: float = Field(
        1.0, gt=0, description="Expected false peaks per tomogram for the default threshold."
    )
    max_picks: int | None = Field(None, ge=1, description="At most this many picks per tomogram, best first.")
    surface_distance_angstrom: float = Field(
        40.0, gt=0, description="With surfaces: search voxels within this distance of a model surface, Å."
    )
    surface_offset_angstrom: float = Field(
        0.0,
        description="With surfaces: the searched surface lies this far out along the normal, Å (negative: in).",
    )
    normal_range_deg: float = Field(
        20.0, gt=0, le=180, description="With surfaces: largest angle between a pick's z axis and the normal."
    )
    box_size_px: int | None = Field(
        None, ge=1, description="Box size recorded with the particles (display only)."
    )

    @field_validator("symmetry")
    @classmethod
    def _cyclic(cls, value: str) -> str:
        if not re.fullmatch(r"[Cc][1-9][0-9]*", value):
            raise ValueError(f"symmetry must be cyclic (C1, C2, …, Cn), not {value!r}")
        return value.upper()


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["particles"].path
    result: dict[str, object] = {}
    for path in sorted(folder.glob("*_template_matching.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        result[record["ts_id"]] = {
            "picks": record["picks"],
            "threshold": round(record["threshold"], 3),
            "orientations": record["orientations"],
            "seconds": round(record["seconds"], 1),
            "picture": f"{record['ts_id']}_picks.png",
        }
    return result


def _methods(params: TemplateMatchingParams) -> str:
    return (
        f"Particles were picked by template matching with a {params.angular_step_deg:g}° angular sampling "
        f"({params.symmetry} symmetry), the reference weighted by the missing wedge"
        f"{' and the CTF' if params.defocus_um else ''} and scored by the fast local correlation under a "
        "spherical mask (Roseman 2003, J. Struct. Biol. 142, 114-127), as in pytom-match-pick (Chaillet et al. "
        "2023, Int. J. Mol. Sci. 24, 13375); peaks were kept at least "
        f"{params.min_distance_angstrom:g} Å apart above "
        + (
            f"a correlation of {params.score_threshold:g}."
            if params.score_threshold is not None
            else f"the score expected to give {params.false_alarms:g} false peak(s) per tomogram from noise."
        )
    )


@step(
    name="picking.template",
    version="2",
    inputs={
        "tomograms": InputSpec(kind="tomograms", description="The tomograms to search."),
        "reference": InputSpec(kind="any", description="The reference map (MRC, density positive)."),
        "surfaces": InputSpec(
            kind="particles",
            optional=True,
            description="Surface models (models.json of picking.vesicles / picking.surfaces) to search near.",
        ),
    },
    outputs={"particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def match_templates(params: TemplateMatchingParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Search every tomogram with the reference and pick the peaks."""
    import numpy as np
    import torch

    from tomoforge.io.mrc import read_mrc, write_mrc
    from tomoforge.models import Particle, ParticleSet
    from tomoforge.picking import angular_sampling, match_template
    from tomoforge.steps._particles import write_particles_artifact
    from tomoforge.steps._template_inputs import (
        peaks_to_particles,
        prepare_reference,
        surface_normals,
        tilt_range,
    )
    from tomoforge.steps._tomograms import read_tomograms
    from tomoforge.workflow.fsutil import atomic_write_text

    tomograms = read_tomograms(inputs.path("tomograms"))
    surface_folder = inputs.path("surfaces") if "surfaces" in inputs else None
    out = ctx.work_dir / "particles"
    out.mkdir()
    order = int(params.symmetry[1:])
    rotations = angular_sampling(params.angular_step_deg, symmetry_order=order)
    ctx.logger.info(
        "%d orientations (%g° step, %s)", len(rotations), params.angular_step_deg, params.symmetry
    )
    particles: list[Particle] = []
    for tomogram in tomograms:
        start = time.perf_counter()
        voxel = tomogram.voxel_size_angstrom
        wedge = tilt_range(tomogram, params.tilt_range_deg)
        template, weight, mask_radius = prepare_reference(inputs.path("reference"), tomogram, wedge, params)
        volume = torch.from_numpy(np.array(read_mrc(tomogram.volume_file).data, dtype=np.float32))
        if params.dense_is_dark:
            volume = -volume
        surfaces = None if surface_folder is None else surface_normals(surface_folder, tomogram, params)
        bar = ctx.progress(len(rotations), f"{tomogram.ts_id}: template matching")
        result = match_template(
            volume,
            template,
            rotations,
            mask_radius_px=mask_radius,
            weight=weight,
            normals=None if surfaces is None else surfaces[0],
            max_tilt_deg=params.normal_range_deg,
            progress=bar.wrap,
        )
        write_mrc(result.score.numpy(), out / f"{tomogram.ts_id}_scores.mrc", voxel_size_angstrom=voxel)
        picked, threshold = peaks_to_particles(result, rotations, tomogram, surfaces, params)
        particles.extend(picked)
        seconds = time.perf_counter() - start
        record = {
            "ts_id": tomogram.ts_id,
            "orientations": len(rotations),
            "tilt_range_deg": wedge,
            "mask_radius_angstrom": mask_radius * voxel,
            "threshold": threshold,
            "picks": len(picked),
            "scores": [p.score for p in picked],
            "seconds": seconds,
        }
        atomic_write_text(
            out / f"{tomogram.ts_id}_template_matching.json", json.dumps(record, indent=1) + "\n"
        )
        ctx.logger.info(
            "%s: %d picks above %.3f (%d orientations, %.1f s)",
            tomogram.ts_id,
            len(picked),
            threshold,
            len(rotations),
            seconds,
        )
    particle_set = ParticleSet(
        particles=particles,
        pixel_size_angstrom=tomograms[0].voxel_size_angstrom,
        box_size_px=params.box_size_px,
    )
    write_particles_artifact(
        out, particle_set, tomograms, picture_half_depth_angstrom=params.min_distance_angstrom / 2
    )
    return {"particles": out}
