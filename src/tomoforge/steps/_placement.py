"""Oriented particles on fitted ellipsoids: the placement shared by ``picking.surfaces`` and ``picking.vesicles``.

Points are laid ``spacing_angstrom`` apart on the surface moved by ``offset_angstrom`` along the normal
(negative = inside), and each gets the orientation whose z axis is the outward (or inward) normal with a spin about
it (Dynamo's narot; random by default, as the lattice's in-plane angle is unknown). The normal is also the
particle's ``prior_normal`` (the tilt prior of RELION's refinement).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import numpy as np

    from tomoforge.models import Particle
    from tomoforge.picking import EllipsoidFit

__all__ = ["PlacementParams", "model_record", "place_particles"]


class PlacementParams(BaseModel):
    """Where the picks go on each model (Dynamo model-workflow terms in brackets)."""

    spacing_angstrom: float = Field(
        60.0, gt=0, description="Distance between neighbouring picks in Å (crop mesh)."
    )
    offset_angstrom: float = Field(
        0.0,
        description="Distance of the picks from the fitted surface along the outward normal, Å (negative: inside).",
    )
    direction: Literal["outward", "inward"] = Field(
        "outward", description="Which way the particles' z axis points along the normal."
    )
    spin: Literal["random", "zero"] = Field(
        "random", description="In-plane angle about the normal (narot): random (seeded) or 0."
    )
    seed: int = Field(0, description="Seed of the random spins.")
    box_size_px: int | None = Field(
        None, ge=1, description="Box size recorded with the particles (display only)."
    )


def place_particles(
    ts_id: str, group: str, fit: EllipsoidFit, params: PlacementParams, rng: np.random.Generator
) -> list[Particle]:
    """Oriented particles on the ellipsoid ``fit`` (Å from the tomogram's centre voxel), labelled ``group``."""
    import numpy as np
    import torch

    from tomoforge.models import Particle
    from tomoforge.picking import ellipsoid_surface_points, orientations_along_normals

    positions, normals = ellipsoid_surface_points(
        fit.centre_xyz,
        fit.radii,
        fit.rotation,
        spacing=params.spacing_angstrom,
        offset=params.offset_angstrom,
    )
    spins = (
        rng.uniform(-180.0, 180.0, len(positions)) if params.spin == "random" else np.zeros(len(positions))
    )
    rotations = orientations_along_normals(
        normals, spin_deg=torch.from_numpy(spins), inward=params.direction == "inward"
    ).numpy()
    return [
        Particle(
            ts_id=ts_id,
            position_angstrom=tuple(float(v) for v in position),  # type: ignore[arg-type]
            rotation_matrix=tuple(tuple(float(v) for v in row) for row in rotation),  # type: ignore[arg-type]
            group=group,
            prior_normal=tuple(float(v) for v in normal),  # type: ignore[arg-type]
        )
        for position, rotation, normal in zip(positions.numpy(), rotations, normals.numpy(), strict=True)
    ]


def model_record(group: str, fit: EllipsoidFit, picks: int, **extra: object) -> dict[str, object]:
    """One model of ``models.json``: the fitted ellipsoid (Å) and its number of picks."""
    return {
        "group": group,
        **extra,
        "centre_angstrom": fit.centre_xyz.tolist(),
        "radii_angstrom": fit.radii.tolist(),
        "rotation": fit.rotation.tolist(),
        "rms_distance_angstrom": fit.rms_distance,
        "picks": picks,
    }
