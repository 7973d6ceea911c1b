"""Step ``averaging.reconstruct``: the particles' map from the tilt images, with gold-standard half maps and FSC.

As RELION 5's ``relion_tomo_reconstruct_particle`` (``../shared/docs/tutorial-steps.md`` §16.4): every particle is
cut out of every visible tilt image of the (non-dose-filtered, motion-corrected) tilt series at its projected
position, centred to the sub-pixel, and inserted into Fourier space with its rotation, its CTF at the particle's
depth and a dose weight (Grant & Grigorieff's critical exposure over the tilt's exposure); each tilt image is
first made a contrast image (``I/⟨I⟩ − 1``), and the CTF's sign turns the image's dark protein into positive
density in the map, as in the simulator's oracle; tilts whose
pre-exposure exceeds ``max_dose_e_per_angstrom2`` are left out, as RELION's ``--max_dose``. Half sets are the
particles' own (random halves when none are given, by order), each half is reconstructed with a Wiener filter from
the half-map FSC, and the point group is applied to the accumulators
(:func:`tomoforge.averaging.particles.reconstruct_half_maps`).

Inputs: ``particles`` (positions in Å from the tomogram centre, rotations reference → tomogram, CONVENTIONS.md
§4), ``tilt_series`` (with alignment and CTF per tilt; aligned or raw stacks with transforms) and, optionally,
``tomograms`` (whose centre positions ``origin_angstrom`` are added to the particles'). Output: a ``map`` folder
with ``map.mrc``, ``half1.mrc``, ``half2.mrc`` (voxel size in the header), ``fsc.csv``, ``fsc.svg``,
``map_slices.png`` (central sections) and ``reconstruction.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator

from tomoforge.steps._device import resolve_device
from tomoforge.steps._particle_views import PARTICLE_INPUTS, AveragingParams, point_group
from tomoforge.workflow import Artifact, Inputs, RunContext, step

__all__ = ["ReconstructParticleParams", "reconstruct_particle"]


class ReconstructParticleParams(AveragingParams):
    """Parameters of ``averaging.reconstruct`` (RELION's in brackets): the box, binning, dose limit and device of
    :class:`~tomoforge.steps._particle_views.AveragingParams`, and the point group."""

    symmetry: str = Field("C1", description="Point group: C1, Cn or Dn (--sym).")

    _point_group = field_validator("symmetry")(point_group)


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["map"].path / "reconstruction.json").read_text(encoding="utf-8"))
    return {
        "particles": record["particles"],
        "views": record["views"],
        "views_outside": record["views_outside"],
        "resolution_angstrom (FSC 0.143)": record["resolution_angstrom"],
        "pixel_size_angstrom": record["pixel_size_angstrom"],
        "pictures": ["map_slices.png", "map_isosurface.png", "angular_distribution.svg", "fsc.svg"],
    }


def _methods(params: ReconstructParticleParams) -> str:
    return (
        f"The map was reconstructed in {params.symmetry} from the particles' views in every tilt image (pre-exposure "
        f"up to {params.max_dose_e_per_angstrom2:g} e⁻/Å²), each inserted in Fourier space with its CTF"
        f"{' and dose weight (Grant & Grigorieff 2015, eLife 4, e06980)' if params.dose_weighting else ''}, "
        "as RELION 5's relion_tomo_reconstruct_particle does; half maps were reconstructed independently with a "
        "Wiener filter from their FSC, and the resolution taken where the FSC falls below 0.143 (Scheres 2012, "
        "J. Struct. Biol. 180, 519-530; Rosenthal & Henderson 2003, J. Mol. Biol. 333, 721-745)."
    )


@step(
    name="averaging.reconstruct",
    version="1",
    inputs=PARTICLE_INPUTS,
    outputs={"map": "map"},
    summary=_summary,
    methods=_methods,
)
def reconstruct_particle(
    params: ReconstructParticleParams, inputs: Inputs, ctx: RunContext
) -> dict[str, Path]:
    """Reconstruct the map and half maps from the particles' views in the tilt images."""
    from tomoforge.averaging.particles import ParticleAccumulators, reconstruct_half_maps
    from tomoforge.steps._map_outputs import write_map_folder
    from tomoforge.steps._particle_views import insert_views, read_particle_inputs, tilt_images

    device = resolve_device(params.device)
    read = read_particle_inputs(
        inputs.path("particles"),
        inputs.path("tilt_series"),
        inputs.path("tomograms") if "tomograms" in inputs else None,
        params.binning,
        params.half_sets,
    )
    table, pixel = read.table, read.pixel_size_angstrom
    accumulators = ParticleAccumulators(params.box_size_px, device=device)
    for series in ctx.progress(len(read.series), "inserting views").wrap(read.series):
        if series.ts_id not in table:
            continue
        images = tilt_images(series, params, device)
        insert_views(accumulators, series, images, table[series.ts_id], params, pixel)
        ctx.logger.info(
            "%s: %d particles, %d tilts used", series.ts_id, len(table[series.ts_id][0]), len(images)
        )
    if accumulators.n_views == 0:
        raise ValueError(
            "no particle view lies inside any tilt image; check the box size and the particles' tomograms"
        )
    maps = reconstruct_half_maps(accumulators, symmetry=params.symmetry)
    out = ctx.work_dir / "map"
    out.mkdir()
    record = write_map_folder(
        out,
        maps,
        pixel_size_angstrom=pixel,
        extra={
            "particles": sum(len(v[0]) for v in table.values()),
            "views": accumulators.n_views,
            "views_outside": accumulators.n_views_outside,
            "symmetry": params.symmetry,
        },
        rotations=read.particles.rotation_matrices(),
    )
    ctx.logger.info(
        "map of %d particles from %d views: %.1f Å at FSC 0.143",
        record["particles"],
        record["views"],
        record["resolution_angstrom"] or float("inf"),
    )
    return {"map": out}
