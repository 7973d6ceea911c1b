"""Step ``averaging.initial_model``: a de novo map from 3D pseudo-subtomograms, as RELION 5's 3D initial model
(``relion_refine --denovo_3dref --grad`` then ``relion_align_symmetry``; ``../shared/docs/tutorial-steps.md``
§16.2).

The input is a ``subtomograms`` folder written by ``averaging.extract`` with ``dimension="3d"``: each particle's
``_data.mrc`` (its CTF- and dose-premultiplied views inserted in Fourier space, tomogram frame) and
``_weights.mrc`` (their squared transfer). The kernel (:mod:`tomoforge.averaging.initial_model`) runs stochastic
expectation-maximisation over orientations and shifts from a random start, in mini-batches, with a noise model,
Wiener-like regularisation (``tau2_fudge``) and a soft spherical mask; by default in C1, after which the map's
symmetry axis is found, turned to z and the point group applied (RELION's "run in C1 and apply symmetry later").
With ``sigma_tilt_deg`` (the tutorial: 10°) each particle's reference z axis stays near its picked normal.

Outputs:

* ``map``: ``map.mrc`` (voxel size in the header, the group's axis along z), ``map_slices.png``,
  ``map_isosurface.png``, ``angular_distribution.svg`` and ``initial_model.json`` (parameters, per-iteration
  resolution limit, step size, mean best posterior probability, mean tilt from the normal, model change, the
  symmetry axis' score, time);
* ``particles``: the particles with their most probable pose under the final model (``particles.json``,
  ``particles.star``; positions moved by the shift found), to start ``averaging.extract`` (2D) and
  ``averaging.refine`` from.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

from tomoforge.steps._device import checked_device, resolve_device
from tomoforge.steps._particle_views import point_group
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["InitialModelParams", "initial_model"]


class InitialModelParams(BaseModel):
    """Parameters of ``averaging.initial_model`` (RELION's in brackets)."""

    iterations: int = Field(
        40, ge=1, description="Mini-batch iterations (--iter; tutorial 40 small, 70 large)."
    )
    batch_size: int = Field(64, ge=2, description="Particles per mini-batch.")
    angular_step_deg: float = Field(
        15.0, gt=0, le=60, description="Angular sampling, degrees (--healpix_order 1 = 15°)."
    )
    offset_range_px: float = Field(
        6.0, ge=0, description="Largest shift searched, pixels of the subtomograms (--offset_range)."
    )
    sigma_tilt_deg: float | None = Field(
        None,
        gt=0,
        description="Gaussian prior on the tilt of the reference's z axis from the picked normal, degrees "
        "(--sigma_tilt; the tutorial: 10); none searches all orientations.",
    )
    symmetry: str = Field("C1", description="Point group of the model: C1, Cn or Dn (--sym).")
    symmetry_later: bool = Field(
        True,
        description="Run in C1, then align the symmetry axis to z and apply the group (relion_align_symmetry).",
    )
    tau2_fudge: float = Field(
        4.0, gt=0, description="Regularisation: higher trusts the data more (--tau2_fudge)."
    )
    mask_diameter_angstrom: float | None = Field(
        None,
        gt=0,
        description="Diameter of the soft spherical mask, Å (--particle_diameter); default 0.8 × box.",
    )
    initial_resolution_angstrom: float = Field(
        60.0, gt=0, description="Resolution limit of the first iterations, Å."
    )
    final_resolution_angstrom: float = Field(
        25.0,
        gt=0,
        description="Resolution limit reached after two thirds of the iterations, Å (never beyond 2.2 px).",
    )
    seed: int = Field(0, description="Random seed of the start and the mini-batches.")
    device: str = Field("auto", description="auto, cpu or cuda[:n].")

    _device = field_validator("device")(checked_device)
    _point_group = field_validator("symmetry")(point_group)

    @model_validator(mode="after")
    def _resolutions(self) -> InitialModelParams:
        if self.final_resolution_angstrom > self.initial_resolution_angstrom:
            raise ValueError(
                f"final_resolution_angstrom ({self.final_resolution_angstrom}) is coarser than "
                f"initial_resolution_angstrom ({self.initial_resolution_angstrom})"
            )
        return self


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["map"].path / "initial_model.json").read_text(encoding="utf-8"))
    last = record["iterations"][-1]
    return {
        "particles": record["particles"],
        "iterations": len(record["iterations"]),
        "final resolution limit (Å)": round(last["cutoff_angstrom"], 1),
        "mean best posterior probability": round(last["mean_best_probability"], 3),
        "symmetry axis score": round(record["axis_score"], 3),
        "time (s)": round(record["seconds"], 1),
        "pictures": ["map_slices.png", "map_isosurface.png", "angular_distribution.svg"],
    }


def _methods(params: InitialModelParams) -> str:
    prior = (
        f" with a Gaussian prior (σ {params.sigma_tilt_deg:g}°) keeping the reference's axis near the picked normal"
        if params.sigma_tilt_deg
        else ""
    )
    symmetry = (
        f"in C1; its {params.symmetry} axis was then aligned to z and the symmetry applied"
        if params.symmetry_later and params.symmetry != "C1"
        else f"in {params.symmetry}"
    )
    return (
        f"An initial model was computed de novo from 3D pseudo-subtomograms by stochastic expectation-maximisation "
        f"({params.iterations} mini-batches of {params.batch_size}, {params.angular_step_deg:g}° angular sampling"
        f"{prior}, shifts up to {params.offset_range_px:g} pixels, regularisation {params.tau2_fudge:g}) {symmetry}, "
        "after RELION's gradient-driven initial model (Punjani et al. 2017, Nat. Methods 14, 290-296; Kimanius et "
        "al. 2021, eLife 10, e68519; Burt et al. 2024, Nat. Commun. 15, 1395)."
    )


@step(
    name="averaging.initial_model",
    version="2",
    inputs={
        "subtomograms": InputSpec(
            kind="subtomograms", description="3D pseudo-subtomograms (averaging.extract, dimension 3d)."
        )
    },
    outputs={"map": "map", "particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def initial_model(params: InitialModelParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Build a map de novo from the subtomograms and give every particle its pose under it."""
    from tomoforge.steps._initial_model import run_initial_model

    return run_initial_model(params, inputs.path("subtomograms"), ctx, resolve_device(params.device))
