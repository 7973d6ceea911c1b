"""Step ``picking.surfaces``: oriented particles on ellipsoids fitted to a few points per virus.

As Dynamo's vectorial picking with an "ellipsoidal vesicle" model and its model workflow
(``../shared/docs/tutorial-steps.md`` §14): the points given for each model (a virus; the ``group`` of a point)
are fitted by an ellipsoid (:func:`tomoforge.picking.fit_ellipsoid`, orthogonal distances, with a roundness prior
for the handful of points people click), points are laid ``spacing_angstrom`` apart on the surface moved by
``offset_angstrom`` along the normal (negative = inside, e.g. −110 Å for HIV's CA-SP1 lattice under the membrane),
and each gets the orientation whose z axis is the outward (or inward) normal with a free spin about it (Dynamo's
narot; random by default, as the lattice's in-plane angle is unknown). The normal is also stored as the particle's
``prior_normal`` (the tilt prior of RELION's refinement). Duplicates between neighbouring picks are expected; the
averaging removes them.

Inputs: ``tomograms`` (``tomogram.reconstruct``) and ``points``, a CSV (``ts_id,group,x,y,z`` in voxels of that
tomogram, corner origin as in IMOD/Dynamo; or ``x_angstrom, …`` from its centre) or a particle file with groups
(RELION ``.star``, Dynamo ``.tbl``, Scipion ``.sqlite``, e.g. Dynamo's meshes). Output: a ``particles`` artifact
(``steps/_particles.py``) with ``models.json`` (every fitted ellipsoid) and a PNG of the picks per tomogram.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from tomoforge.steps._placement import PlacementParams
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["SurfacePickingParams", "pick_on_surfaces"]


class SurfacePickingParams(PlacementParams):
    """Parameters of ``picking.surfaces``: the fit, then where the picks go (:class:`PlacementParams`)."""

    shape: Literal["ellipsoid", "sphere"] = Field(
        "ellipsoid", description="Model fitted to each group of points."
    )
    roundness_prior: float = Field(
        0.1,
        ge=0,
        description="Standard deviation of the log radii about their mean for the ellipsoid fit (0: none); keeps fits "
        "from a handful of points near-spherical.",
    )
    min_points: int = Field(6, ge=4, description="Groups with fewer points are skipped (and reported).")


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["particles"].path
    record = json.loads((folder / "models.json").read_text(encoding="utf-8"))
    result: dict[str, object] = {}
    for ts_id, models in record["tomograms"].items():
        result[ts_id] = {
            "picks": sum(m["picks"] for m in models),
            "picks_per_model": {m["group"]: m["picks"] for m in models},
            "fit_rms_angstrom": {m["group"]: round(m["rms_distance_angstrom"], 1) for m in models},
            "skipped_groups": record["skipped"].get(ts_id, []),
            "picture": f"{ts_id}_picks.png",
        }
    return result


def _methods(params: SurfacePickingParams) -> str:
    where = (
        "on the fitted surfaces"
        if params.offset_angstrom == 0
        else f"on surfaces {abs(params.offset_angstrom):g} Å {'inside' if params.offset_angstrom < 0 else 'outside'} "
        "the fitted ones"
    )
    return (
        f"Particles were picked {where} every {params.spacing_angstrom:g} Å: an {params.shape} was fitted by "
        "orthogonal-distance least squares to the points given on each virus, as Dynamo's ellipsoidal vesicle "
        "models do (Castaño-Díez et al. 2017, J. Struct. Biol. 197, 135-144), and each particle was oriented with "
        f"its z axis along the {params.direction} surface normal."
    )


@step(
    name="picking.surfaces",
    version="1",
    inputs={
        "tomograms": InputSpec(kind="tomograms", description="The tomograms the points were given in."),
        "points": InputSpec(
            kind="any", description="Points per model: a CSV or a particle file with groups."
        ),
    },
    outputs={"particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def pick_on_surfaces(params: SurfacePickingParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Fit an ellipsoid to the points of each model and place oriented particles on it."""
    import numpy as np
    import torch

    from tomoforge.models import Particle, ParticleSet
    from tomoforge.picking import fit_ellipsoid
    from tomoforge.steps._particles import read_points, write_particles_artifact
    from tomoforge.steps._placement import model_record, place_particles
    from tomoforge.steps._tomograms import read_tomograms
    from tomoforge.workflow.fsutil import atomic_write_text

    tomograms = read_tomograms(inputs.path("tomograms"))
    points = read_points(inputs.path("points"), tomograms)
    out = ctx.work_dir / "particles"
    out.mkdir()
    rng = np.random.default_rng(params.seed)
    particles: list[Particle] = []
    models: dict[str, list[dict[str, object]]] = {t.ts_id: [] for t in tomograms}
    skipped: dict[str, list[str]] = {}
    for (ts_id, group), xyz in sorted(points.items()):
        if len(xyz) < params.min_points:
            skipped.setdefault(ts_id, []).append(group)
            ctx.logger.warning(
                "%s: model %s has %d points (< %d); skipped", ts_id, group, len(xyz), params.min_points
            )
            continue
        fit = fit_ellipsoid(
            torch.from_numpy(xyz), shape=params.shape, roundness_prior=params.roundness_prior or None
        )
        placed = place_particles(ts_id, group, fit, params, rng)
        particles.extend(placed)
        models[ts_id].append(model_record(group, fit, len(placed), points=len(xyz)))
        ctx.logger.info(
            "%s model %s: %d points, radii %s Å, RMS %.1f Å, %d picks",
            ts_id,
            group,
            len(xyz),
            "/".join(f"{r:.0f}" for r in fit.radii.tolist()),
            fit.rms_distance,
            len(placed),
        )
    voxel = tomograms[0].voxel_size_angstrom
    particle_set = ParticleSet(particles=particles, pixel_size_angstrom=voxel, box_size_px=params.box_size_px)
    write_particles_artifact(
        out, particle_set, tomograms, picture_half_depth_angstrom=params.spacing_angstrom / 2
    )
    record = {"tomograms": models, "skipped": skipped}
    atomic_write_text(out / "models.json", json.dumps(record, indent=1) + "\n")
    return {"particles": out}
