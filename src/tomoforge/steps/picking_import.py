"""Step ``picking.import``: particles from another tool's file, matched to the project's tomograms.

As Scipion's "import 3D coordinates from Scipion" (``../shared/docs/tutorial-steps.md`` §15), generalised to every
particle format tomoforge reads (:func:`tomoforge.io.convert.read_particles`): a Scipion ``.sqlite``
SetOfCoordinates3D (e.g. the tutorial's provided picks), a RELION 5 particle ``.star``, a Dynamo ``.tbl`` (tomogram
number ``k`` = the ``k``-th tomogram in ``ts_id`` order) or a CSV (``ts_id,group,x,y,z`` in voxels, corner
origin; orientations identity). Orientations and groups are kept.

Matching (Scipion's rule): a particle's tomogram id equal to a tomogram's ``ts_id``, else one containing the other
(``TS_03`` ↔ ``TS_03_bin4``); particles of no tomogram are dropped and counted. Sampling: Scipion assumes the
coordinates were picked on tomograms like these (``sampling="tomograms"``: voxel positions are kept, so Å positions
scale by the ratio of voxel sizes); ``"file"`` keeps the file's Å positions instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    from tomoforge.models import ParticleSet, Tomogram

__all__ = ["ImportParticlesParams", "import_particles"]


class ImportParticlesParams(BaseModel):
    """Parameters of ``picking.import``."""

    sampling: Literal["tomograms", "file"] = Field(
        "tomograms",
        description="'tomograms': the file's voxel positions are voxels of these tomograms (Scipion's rule); "
        "'file': keep the file's positions in Å. RELION 5 centred coordinates are in Å from the tomogram's "
        "centre, physical positions, and are always kept.",
    )
    dynamo_one_based: bool = Field(False, description="Dynamo x, y, z are MATLAB 1-based indices.")
    box_size_px: int | None = Field(None, ge=1, description="Box size to record with the particles.")


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["particles"].path
    record = json.loads((folder / "import.json").read_text(encoding="utf-8"))
    result: dict[str, object] = {
        ts: {"particles": n, "picture": f"{ts}_picks.png"} for ts, n in record["per_tomogram"].items()
    }
    result["dropped"] = record["dropped"]
    return result


def _methods(params: ImportParticlesParams) -> str:
    return (
        "Particle coordinates and orientations were imported from another program's file and matched to the "
        "tomograms by name" + (" at the tomograms' sampling." if params.sampling == "tomograms" else ".")
    )


def _positions_are_voxels(path: Path) -> bool:
    """Whether the file gives voxel positions (Scipion, Dynamo, RELION ≤ 4 pixel coordinates), which Scipion's
    rule puts on the tomograms' voxels, rather than RELION 5's physical ``rlnCenteredCoordinate…Angst``."""
    if path.suffix.lower() == ".csv":
        return False  # read at the tomograms' sampling already
    if path.suffix.lower() == ".star":
        with path.open(encoding="utf-8", errors="replace") as handle:
            return not any("_rlnCenteredCoordinateXAngst" in line for line in handle)
    return True


def _match(name: str, tomograms: list[Tomogram]) -> Tomogram | None:
    exact = [t for t in tomograms if t.ts_id == name]
    if exact:
        return exact[0]
    partial = [t for t in tomograms if t.ts_id in name or name in t.ts_id]
    return partial[0] if partial else None


def _read(path: Path, tomograms: list[Tomogram], params: ImportParticlesParams) -> ParticleSet:
    from tomoforge.io.convert import read_particles
    from tomoforge.models import Particle, ParticleSet
    from tomoforge.steps._particles import read_points, tomograms_geometry

    if path.suffix.lower() == ".csv":
        points = read_points(path, tomograms)
        return ParticleSet(
            particles=[
                Particle(ts_id=ts_id, position_angstrom=tuple(float(v) for v in xyz), group=group)  # type: ignore[arg-type]
                for (ts_id, group), block in points.items()
                for xyz in block
            ]
        )
    return read_particles(path, tomograms_geometry(tomograms), dynamo_one_based=params.dynamo_one_based)


@step(
    name="picking.import",
    version="2",
    inputs={
        "tomograms": InputSpec(kind="tomograms", description="The tomograms the particles belong to."),
        "coordinates": InputSpec(
            kind="any", description="Scipion .sqlite, RELION .star, Dynamo .tbl or CSV."
        ),
    },
    outputs={"particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def import_particles(params: ImportParticlesParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Import particles (positions, orientations, groups) and match them to the tomograms."""
    from tomoforge.models import ParticleSet
    from tomoforge.steps._particles import write_particles_artifact
    from tomoforge.steps._tomograms import read_tomograms
    from tomoforge.workflow.fsutil import atomic_write_text

    tomograms = read_tomograms(inputs.path("tomograms"))
    source = inputs.path("coordinates")
    read = _read(source, tomograms, params)
    kept = []
    dropped: dict[str, int] = {}
    rescale = (
        params.sampling == "tomograms" and bool(read.pixel_size_angstrom) and _positions_are_voxels(source)
    )
    for particle in read.particles:
        tomogram = _match(particle.ts_id, tomograms)
        if tomogram is None:
            dropped[particle.ts_id] = dropped.get(particle.ts_id, 0) + 1
            continue
        update: dict[str, object] = {"ts_id": tomogram.ts_id}
        if rescale and read.pixel_size_angstrom:
            scale = tomogram.voxel_size_angstrom / read.pixel_size_angstrom
            update["position_angstrom"] = tuple(v * scale for v in particle.position_angstrom)
        kept.append(particle.model_copy(update=update))
    if not kept:
        raise ValueError(
            f"{source}: none of its particles belongs to the tomograms {[t.ts_id for t in tomograms]} "
            f"(its tomograms: {sorted(dropped)})"
        )
    for name, count in dropped.items():
        ctx.logger.warning(
            "%s: %d particles of tomogram %r match no tomogram; dropped", source.name, count, name
        )
    particles = ParticleSet(
        particles=kept,
        pixel_size_angstrom=tomograms[0].voxel_size_angstrom,
        box_size_px=params.box_size_px or read.box_size_px,
        symmetry=read.symmetry,
    )
    out = ctx.work_dir / "particles"
    out.mkdir()
    write_particles_artifact(out, particles, tomograms, picture_half_depth_angstrom=50.0)
    record = {"source": str(source), "per_tomogram": particles.count_per_tomogram(), "dropped": dropped}
    atomic_write_text(out / "import.json", json.dumps(record, indent=1) + "\n")
    ctx.logger.info(
        "imported %d particles from %s (%d dropped)", len(kept), source.name, sum(dropped.values())
    )
    return {"particles": out}
