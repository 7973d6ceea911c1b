"""Step ``averaging.refine``: gold-standard local refinement of the particles' orientations and positions against
their own half maps, from the particles' views in the tilt images (RELION 5's 3D auto-refine on 2D stacks, local
searches only; ``../shared/docs/tutorial-steps.md`` §16.3).

Each iteration (:mod:`tomoforge.steps._refine`):

1. **References.** The two half sets (the particles' own, else alternating) are reconstructed independently from
   the current poses (:func:`tomoforge.averaging.particles.reconstruct_half_maps`, with the point group); at the
   first iteration a given ``reference`` map (an MRC file, or a ``map`` folder of ``averaging.reconstruct``,
   ``averaging.refine`` or ``averaging.initial_model``, whose ``map.mrc`` is read), low-passed to
   ``initial_low_pass_angstrom``, serves both halves instead (RELION's ``--ref`` with ``--ini_high``). Each
   reference is masked by a soft sphere of ``mask_diameter_angstrom``.
2. **Resolution.** The search uses frequencies up to the half maps' FSC 0.143 resolution ``d`` (the low-pass at the
   first iteration with a reference).
3. **Angular step.** ``initial_step_deg / 2^k`` with ``k`` the iteration (0-based), halving like RELION's HEALPix
   orders, but never coarser than ``d / D`` radians for the mask diameter ``D`` (a turn that moves the particle's rim
   by half a resolution element; coarser steps could step over the correlation peak, so a good reference starts on
   a finer order, as RELION's auto-sampling goes finer when the resolution allows), and never finer than
   ``final_step_deg``.
4. **Local search.** Every particle is aligned to its own half's reference only (gold standard): its rotation is
   turned by each of the 27 small rotations of a grid of the step ``s`` (rotation vectors in ``{−s, 0, s}³``) and
   its position shifted on a 3D grid of whole pixels within ``max_shift_angstrom``; the candidate with the best
   CTF-weighted correlation over all its visible views is kept (:func:`tomoforge.averaging.align.local_search`).
   With ``sigma_tilt_deg`` or ``sigma_psi_deg`` (RELION's ``--sigma_tilt``, ``--sigma_psi``) the candidates are
   instead ranked by the correlation's log-likelihood plus Gaussian log-priors centred on the particle's **starting
   pose** (its rotation in the input): *tilt* is the angle between the candidate's z axis and the starting z axis
   (for picks on a surface the starting z axis is the surface normal, ``prior_normal``), *psi* the spin about the
   particle's own z axis relative to the start, modulo ``360°/n`` for an n-fold axis (Cn, Dn), both as
   :func:`tomoforge.averaging.align.prior_angles_deg` defines them. Candidates beyond three sigmas are never chosen,
   as RELION samples no orientation beyond ``3σ`` of its priors. The likelihood scale is the variance of the score
   on noise, estimated from each particle's own views (:func:`tomoforge.averaging.align.score_noise_variance`).
5. **Convergence.** The refinement stops before ``iterations`` (a maximum) once the step is ``final_step_deg``,
   the resolution gained less than 1 % over the previous iteration's, the mean rotation change is below the step
   and the mean shift below one pixel (after RELION's auto-refine, which stops when its sampling is fine enough and
   neither the resolution nor the poses change any more). With the default steps (4° halving to 0.5°) the final
   step is reached at iteration 4, so convergence can be declared from then on; the default maximum of 10 leaves
   six iterations at the final step for the poses to settle, and runs that converge stop earlier (the tiny test
   preset at iteration 5).

The final half maps, map and FSC go to a ``map`` folder as ``averaging.reconstruct`` writes it, and the refined
particles (with half sets and scores) to a ``particles`` folder (``particles.json``, ``particles.star``), with
``refine.json`` recording each iteration's resolution, step, mean changes, angles from the starting poses and
convergence checks, and whether (``converged``) and why (``stopped_because``) the refinement stopped.
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
    iterations: int = Field(
        10,
        ge=1,
        description="Maximum number of refinement iterations; it stops earlier once converged (module docstring).",
    )
    initial_step_deg: float = Field(4.0, gt=0, description="Angular step of the first local search, degrees.")
    final_step_deg: float = Field(0.5, gt=0, description="Smallest angular step, degrees.")
    max_shift_angstrom: float = Field(
        20.0, ge=0, description="Largest shift searched per iteration along each axis, Å (--offset_range)."
    )
    sigma_tilt_deg: float | None = Field(
        None,
        gt=0,
        description="Gaussian prior on the tilt of the particle's z axis from its starting z axis (e.g. the "
        "surface normal), degrees; no candidate beyond 3 sigma (--sigma_tilt). None: no prior.",
    )
    sigma_psi_deg: float | None = Field(
        None,
        gt=0,
        description="Gaussian prior on the spin about the particle's z axis from its starting pose, degrees, modulo "
        "360°/n for an n-fold symmetry; no candidate beyond 3 sigma (--sigma_psi). None: no prior.",
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
        "converged": record["converged"],
        "stopped_because": record["stopped_because"],
        "final_resolution_angstrom": record["final"]["resolution_angstrom"],
        "pictures": ["map_slices.png", "map_isosurface.png", "angular_distribution.svg", "fsc.svg"],
    }


def _methods(params: RefineParams) -> str:
    priors = [
        f"{name} {sigma:g}°"
        for name, sigma in (("tilt", params.sigma_tilt_deg), ("psi", params.sigma_psi_deg))
        if sigma is not None
    ]
    prior_text = (
        f" Orientations were restrained by Gaussian priors around the starting poses (sigma {' and '.join(priors)},"
        " no orientation beyond three sigmas)."
        if priors
        else ""
    )
    return (
        f"Particle poses were refined in up to {params.iterations} iterations of gold-standard local searches "
        f"(angular steps halving from {params.initial_step_deg:g}° to {params.final_step_deg:g}°, never coarser "
        f"than the resolution over the particle diameter; shifts up to {params.max_shift_angstrom:g} Å), each half "
        f"set against its own {params.symmetry} half map reconstructed from the particles' CTF-weighted views in the "
        "tilt images, with the search limited to the half maps' FSC 0.143 resolution, until the step was final, "
        "the resolution no longer improved and the poses no longer moved (after RELION's auto-refine; Scheres "
        f"2012, J. Struct. Biol. 180, 519-530; Burt et al. 2024, Nat. Commun. 15, 1395).{prior_text}"
    )


@step(
    name="averaging.refine",
    version="2",
    inputs={
        **PARTICLE_INPUTS,
        "reference": InputSpec(
            kind="any",
            optional=True,
            description="A starting map: an MRC file or a map folder (its map.mrc), e.g. an initial model.",
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
