"""Step ``picking.vesicles``: find the viruses (vesicles) in each tomogram and pick on them, with no clicking.

:func:`tomoforge.picking.find_vesicles` searches each tomogram with spherical shells over a range of radii,
traces the dense layer of every vesicle found along rays and fits an ellipsoid to it; the picks are then placed
on each fitted surface as ``picking.surfaces`` does (:mod:`tomoforge.steps._placement`). On HIV the densest closed
layer in a tomogram is the CA-SP1 lattice just inside the membrane, so the default offset is 0: the picks land on
the lattice. Vesicles found in error can be dropped by name (``drop``, e.g. ``["TS_01/2"]``) after a look at the
pictures, and the step rerun.

Input: ``tomograms`` (``tomogram.reconstruct``; a WBP, SIRT-like or SIRT tomogram at a bin where the layer is a
few voxels thick). Output: a ``particles`` artifact with ``models.json`` (each vesicle's ellipsoid, its search
score and the number of traced points) and a PNG of the picks per tomogram; groups are ``<ts>/<k>``, vesicles
numbered from 1 strongest first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tomoforge.steps._placement import PlacementParams
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["VesiclePickingParams", "pick_on_vesicles"]


class VesiclePickingParams(PlacementParams):
    """Parameters of ``picking.vesicles``: the search, the fit, then where the picks go (:class:`PlacementParams`)."""

    min_radius_angstrom: float = Field(250.0, gt=0, description="Smallest radius of the layer looked for, Å.")
    max_radius_angstrom: float = Field(800.0, gt=0, description="Largest radius of the layer looked for, Å.")
    layer_width_angstrom: float = Field(
        40.0, gt=0, description="Thickness of the dense layer (a membrane, a capsid lattice), Å."
    )
    dense_is_dark: bool = Field(
        True, description="Dense matter is dark, as in tomograms from images; False for a density map."
    )
    min_score: float = Field(
        6.0, gt=0, description="A vesicle's search peak must exceed this many robust standard deviations."
    )
    relative_score: float = Field(
        0.4, ge=0, le=1, description="… and this fraction of the strongest peak in the tomogram."
    )
    max_elevation_deg: float = Field(
        50.0,
        gt=0,
        le=90,
        description="The surface is searched and traced where its normal is within this angle of the xy plane "
        "(the missing wedge hides the tops and bottoms).",
    )
    max_vesicles: int = Field(50, ge=1, description="At most this many per tomogram, strongest first.")
    shape: Literal["ellipsoid", "sphere"] = Field(
        "ellipsoid", description="Model fitted to each traced layer."
    )
    roundness_prior: float = Field(
        0.1,
        ge=0,
        description="Standard deviation of the log radii about their mean for the ellipsoid fit (0: none).",
    )
    drop: list[str] = Field(
        default_factory=list,
        description="Vesicles to leave out after review, as '<ts>/<k>' (e.g. 'TS_01/2').",
    )

    @model_validator(mode="after")
    def _radius_range(self) -> VesiclePickingParams:
        if self.min_radius_angstrom > self.max_radius_angstrom:
            raise ValueError(
                f"min_radius_angstrom ({self.min_radius_angstrom:g}) exceeds max_radius_angstrom "
                f"({self.max_radius_angstrom:g})"
            )
        return self


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["particles"].path
    record = json.loads((folder / "models.json").read_text(encoding="utf-8"))
    return {
        ts_id: {
            "vesicles": len(models),
            "picks": sum(m["picks"] for m in models if not m["dropped"]),
            "picks_per_vesicle": {m["group"]: m["picks"] for m in models if not m["dropped"]},
            "radii_angstrom": {m["group"]: [round(r) for r in m["radii_angstrom"]] for m in models},
            "dropped": [m["group"] for m in models if m["dropped"]],
            "picture": f"{ts_id}_picks.png",
        }
        for ts_id, models in record["tomograms"].items()
    }


def _methods(params: VesiclePickingParams) -> str:
    return (
        "Vesicles were found without manual input by a cross-correlation search of each tomogram with thin "
        f"spherical shells of radius {params.min_radius_angstrom:g}–{params.max_radius_angstrom:g} Å, restricted "
        "to the band of surface normals the missing wedge leaves visible; the dense layer of each vesicle was "
        f"traced along rays and fitted by an {params.shape}, and particles were placed every "
        f"{params.spacing_angstrom:g} Å on it with their z axis along the {params.direction} surface normal "
        "(the geometry of Dynamo's vesicle models; Castaño-Díez et al. 2017, J. Struct. Biol. 197, 135-144)."
    )


@step(
    name="picking.vesicles",
    version="1",
    inputs={"tomograms": InputSpec(kind="tomograms", description="The tomograms to search.")},
    outputs={"particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def pick_on_vesicles(params: VesiclePickingParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Find the vesicles in every tomogram, fit each and place oriented particles on them."""
    import numpy as np
    import torch

    from tomoforge.io.mrc import read_mrc
    from tomoforge.models import Particle, ParticleSet
    from tomoforge.picking import find_vesicles
    from tomoforge.steps._particles import write_particles_artifact
    from tomoforge.steps._placement import model_record, place_particles
    from tomoforge.steps._tomograms import read_tomograms
    from tomoforge.workflow.fsutil import atomic_write_text

    tomograms = read_tomograms(inputs.path("tomograms"))
    known = {f"{t.ts_id}/" for t in tomograms}
    unknown = [name for name in params.drop if not any(name.startswith(prefix) for prefix in known)]
    if unknown:
        raise ValueError(f"drop names tomograms that are not in the input: {', '.join(unknown)}")
    out = ctx.work_dir / "particles"
    out.mkdir()
    rng = np.random.default_rng(params.seed)
    particles: list[Particle] = []
    models: dict[str, list[dict[str, object]]] = {}
    for tomogram in ctx.progress(len(tomograms), "finding vesicles").wrap(tomograms):
        volume = torch.from_numpy(np.array(read_mrc(tomogram.volume_file).data, dtype=np.float32))
        found = find_vesicles(
            volume,
            tomogram.voxel_size_angstrom,
            radius_range_angstrom=(params.min_radius_angstrom, params.max_radius_angstrom),
            layer_width_angstrom=params.layer_width_angstrom,
            dense_is_dark=params.dense_is_dark,
            min_score=params.min_score,
            relative_score=params.relative_score,
            max_elevation_deg=params.max_elevation_deg,
            max_vesicles=params.max_vesicles,
            shape=params.shape,
            roundness_prior=params.roundness_prior,
        )
        models[tomogram.ts_id] = []
        for k, vesicle in enumerate(found, start=1):
            group = f"{tomogram.ts_id}/{k}"
            dropped = group in params.drop
            placed = [] if dropped else place_particles(tomogram.ts_id, group, vesicle.fit, params, rng)
            particles.extend(placed)
            models[tomogram.ts_id].append(
                model_record(
                    group,
                    vesicle.fit,
                    len(placed),
                    score=vesicle.score,
                    traced_points=len(vesicle.points_xyz_angstrom),
                    dropped=dropped,
                )
            )
            ctx.logger.info(
                "%s vesicle %s: score %.1f, radii %s Å, %d traced points (RMS %.1f Å), %d picks%s",
                tomogram.ts_id,
                group,
                vesicle.score,
                "/".join(f"{r:.0f}" for r in vesicle.fit.radii.tolist()),
                len(vesicle.points_xyz_angstrom),
                vesicle.fit.rms_distance,
                len(placed),
                " (dropped)" if dropped else "",
            )
        if not found:
            ctx.logger.warning("%s: no vesicle found (min_score %g)", tomogram.ts_id, params.min_score)
    voxel = tomograms[0].voxel_size_angstrom
    particle_set = ParticleSet(particles=particles, pixel_size_angstrom=voxel, box_size_px=params.box_size_px)
    write_particles_artifact(
        out, particle_set, tomograms, picture_half_depth_angstrom=params.spacing_angstrom / 2
    )
    atomic_write_text(out / "models.json", json.dumps({"tomograms": models}, indent=1) + "\n")
    return {"particles": out}
