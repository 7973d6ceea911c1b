"""Step ``averaging.refine_3d``: gold-standard refinement on 3D pseudo-subtomograms (RELION 5's 3D auto-refine run on
``averaging.extract``'s ``dimension="3d"`` output; ``../shared/docs/tutorial-steps.md`` §16.3).

Each iteration (kernel :mod:`tomoforge.averaging.subtomogram_refine`, loop in ``steps/_refine_3d.py``):

1. **References.** Each half set's subtomograms, turned into their current poses and moved back by their current
   shifts, are summed into its half map (Wiener-filtered by the half maps' FSC, the point group applied); at the
   first iteration a given ``reference`` (an MRC or a ``map`` folder), low-passed to
   ``initial_low_pass_angstrom``, serves both halves. Maps are masked by a soft sphere of
   ``mask_diameter_angstrom``.
2. **Resolution.** The search uses frequencies up to the half maps' FSC 0.143 resolution.
3. **Local search.** Every particle's posterior over the 27 small rotations of step ``s`` about its pose and the
   whole-pixel shifts within ``max_shift_angstrom``, against its own half's reference only, with the noise model
   of the initial model and, with ``sigma_tilt_deg``, a Gaussian prior on the tilt of its axis from its starting
   pose (none beyond 3σ); the most probable candidate is kept. The step follows ``averaging.refine``'s
   ladder (halving from ``initial_step_deg`` to ``final_step_deg``, never coarser than resolution / diameter).
4. **Convergence** as ``averaging.refine``: the final step reached, no resolution gained, mean changes below the
   step and a pixel.

Outputs: a ``map`` folder as ``averaging.reconstruct`` writes it plus ``refine.json``, and a ``particles`` folder
with the refined poses and positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from tomoforge.steps._device import checked_device, resolve_device
from tomoforge.steps._particle_views import point_group
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["Refine3dParams", "refine_subtomograms"]


class Refine3dParams(BaseModel):
    """Parameters of ``averaging.refine_3d`` (RELION's in brackets)."""

    symmetry: str = Field("C1", description="Point group of the references: C1, Cn or Dn (--sym).")
    iterations: int = Field(10, ge=1, description="Most iterations; the refinement stops when it converges.")
    initial_step_deg: float = Field(4.0, gt=0, description="Angular step of the first local search, degrees.")
    final_step_deg: float = Field(0.5, gt=0, description="Smallest angular step, degrees.")
    max_shift_angstrom: float = Field(
        20.0, ge=0, description="Largest shift searched per iteration, Å (--offset_range)."
    )
    sigma_tilt_deg: float | None = Field(
        None,
        gt=0,
        description="Gaussian prior on the tilt from each particle's starting axis, degrees (--sigma_tilt).",
    )
    initial_low_pass_angstrom: float = Field(
        40.0, gt=0, description="Low-pass of a given reference at the first iteration, Å (--ini_high)."
    )
    mask_diameter_angstrom: float | None = Field(
        None,
        gt=0,
        description="Diameter of the soft spherical mask, Å (--particle_diameter); default 0.8 × box.",
    )
    half_sets: Literal["alternate", "by_group"] = Field(
        "alternate",
        description="Gold-standard halves when the particles have none: alternate, or whole groups.",
    )
    device: str = Field("auto", description="auto, cpu or cuda[:n].")

    _device = field_validator("device")(checked_device)
    _point_group = field_validator("symmetry")(point_group)


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["map"].path / "refine.json").read_text(encoding="utf-8"))
    return {
        "particles": record["particles"],
        "iterations": len(record["iterations"]),
        "converged": record["converged"],
        "final_resolution_angstrom": record["final"]["resolution_angstrom"],
        "pictures": ["map_slices.png", "map_isosurface.png", "angular_distribution.svg", "fsc.svg"],
    }


def _methods(params: Refine3dParams) -> str:
    return (
        f"Particle poses were refined on 3D pseudo-subtomograms in up to {params.iterations} iterations of "
        f"gold-standard local searches (angular steps from {params.initial_step_deg:g}° to "
        f"{params.final_step_deg:g}°, shifts up to {params.max_shift_angstrom:g} Å"
        f"{f', tilt prior σ {params.sigma_tilt_deg:g}°' if params.sigma_tilt_deg else ''}), each half set against "
        f"its own {params.symmetry} half map, by the posterior under a Gaussian noise model, after RELION's "
        "auto-refine (Scheres 2012, J. Struct. Biol. 180, 519-530; Bharat et al. 2015, Structure 23, 1743-1753)."
    )


@step(
    name="averaging.refine_3d",
    version="2",
    inputs={
        "subtomograms": InputSpec(
            kind="subtomograms", description="3D pseudo-subtomograms (averaging.extract, dimension 3d)."
        ),
        "reference": InputSpec(kind="any", optional=True, description="A starting map (MRC or map folder)."),
    },
    outputs={"map": "map", "particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def refine_subtomograms(params: Refine3dParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Refine the particles' poses on their 3D subtomograms, iteration by iteration."""
    from tomoforge.steps._refine_3d import run_refinement_3d

    return run_refinement_3d(
        params,
        inputs.path("subtomograms"),
        inputs.path("reference") if "reference" in inputs else None,
        ctx,
        resolve_device(params.device),
    )
