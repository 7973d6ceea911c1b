"""Step ``averaging.refine``: gold-standard local refinement of the particles' orientations and positions against
their own half maps, from the particles' views in the tilt images (RELION 5's 3D auto-refine on 2D stacks, local
searches only; ``../shared/docs/tutorial-steps.md`` §16.3).

Each iteration (:mod:`tomoforge.steps._refine`):

1. **References.** The two half sets (the particles' own, else alternating) are reconstructed independently from
   the current poses (:func:`tomoforge.averaging.particles.reconstruct_half_maps`, with the point group); at the
   first iteration a given ``reference`` map, low-passed to ``initial_low_pass_angstrom``, serves both halves
   instead (RELION's ``--ref`` with ``--ini_high``). Each reference is masked by a soft sphere of
   ``mask_diameter_angstrom``.
2. **Resolution.** The search uses frequencies up to the half maps' FSC 0.143 resolution (the low-pass at the
   first iteration with a reference).
3. **Local search.** Every particle is aligned to its own half's reference only (gold standard): its rotation is
   turned by each of the 27 small rotations of a grid of step ``s`` (rotation vectors in ``{−s, 0, s}³``) and its
   position shifted on a 3D grid of whole pixels within ``max_shift_angstrom``; the candidate with the best
   CTF-weighted correlation over all its visible views is kept (:func:`tomoforge.averaging.align.local_search`).
   The step halves every iteration, from ``initial_step_deg`` down to ``final_step_deg``.

The final half maps, map and FSC go to a ``map`` folder as ``averaging.reconstruct`` writes it, and the refined
particles (with half sets and scores) to a ``particles`` folder (``particles.json``, ``particles.star``), with
``refine.json`` recording each iteration's resolution, step and mean changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator

from tomoforge.steps._device import resolve_device
from tomoforge.steps._particle_views import PARTICLE_INPUTS, AveragingParams, point_group
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["RefineParams", "refine_particles"]


class RefineParams(AveragingParams):
    """Parameters of ``averaging.refine`` (RELION's in brackets): the box, binning, dose limit and device of
    :class:`~tomoforge.steps._particle_views.AveragingParams`, and the search."""

    symmetry: str = Field("C1", description="Point group of the references: C1, Cn or Dn (--sym).")
    iterations: int = Field(5, ge=1, description="Refinement iterations.")
    initial_step_deg: float = Field(4.0, gt=0, description="Angular step of the first local search, degrees.")
    final_step_deg: float = Field(0.5, gt=0, description="Smallest angular step, degrees.")
    max_shift_angstrom: float = Field(
        20.0, ge=0, description="Largest shift searched per iteration along each axis, Å (--offset_range)."
    )
    initial_low_pass_angstrom: float = Field(
        40.0, gt=0, description="Low-pass of a given reference at the first iteration, Å (--ini_high)."
    )
    mask_diameter_angstrom: float | None = Field(
        None,
        gt=0,
        description="Diameter of the soft circular/spherical masks of the particles and references, Å; "
        "default 0.8 × box (--particle_diameter).",
    )

    _point_group = field_validator("symmetry")(point_group)


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["map"].path / "refine.json").read_text(encoding="utf-8"))
    return {
        "particles": record["particles"],
        "iterations": [
            {
                k: it[k]
                for k in (
                    "resolution_angstrom",
                    "step_deg",
                    "mean_rotation_change_deg",
                    "mean_shift_angstrom",
                )
            }
            for it in record["iterations"]
        ],
        "final_resolution_angstrom": record["final"]["resolution_angstrom"],
        "pictures": ["map_slices.png", "map_isosurface.png", "angular_distribution.png", "fsc.svg"],
    }


def _methods(params: RefineParams) -> str:
    return (
        f"Particle poses were refined in {params.iterations} iterations of gold-standard local searches (angular "
        f"steps from {params.initial_step_deg:g}° to {params.final_step_deg:g}°, shifts up to "
        f"{params.max_shift_angstrom:g} Å), each half set against its own {params.symmetry} half map reconstructed "
        "from the particles' CTF-weighted views in the tilt images, with the search limited to the half maps' FSC "
        "0.143 resolution (after RELION's auto-refine; Scheres 2012, J. Struct. Biol. 180, 519-530; Burt et al. "
        "2024, Nat. Commun. 15, 1395)."
    )


@step(
    name="averaging.refine",
    version="1",
    inputs={
        **PARTICLE_INPUTS,
        "reference": InputSpec(
            kind="any", optional=True, description="A starting map (MRC), e.g. an initial model."
        ),
    },
    outputs={"map": "map", "particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def refine_particles(params: RefineParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Refine the particles' poses against their half maps, iteration by iteration."""
    from tomoforge.steps._refine import run_refinement

    device = resolve_device(params.device)
    return run_refinement(
        params,
        particles_folder=inputs.path("particles"),
        series_folder=inputs.path("tilt_series"),
        reference=inputs.path("reference") if "reference" in inputs else None,
        tomograms_folder=inputs.path("tomograms") if "tomograms" in inputs else None,
        ctx=ctx,
        device=device,
    )
