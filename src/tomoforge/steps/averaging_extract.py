"""Step ``averaging.extract``: pseudo-subtomograms of the particles, as RELION 5's ``relion_tomo_subtomo``.

(``../shared/docs/tutorial-steps.md`` §16.1.) For each particle, each tilt of its (non-dose-filtered) tilt series
is visible when the tilt is included, its pre-exposure is at most ``max_dose_e_per_angstrom2`` (RELION's
``--max_dose``) and the particle's box lies inside the image; particles with fewer than ``min_frames`` visible
tilts are dropped. In each visible tilt a ``box_size_px`` box is cut around the particle's projection (images
binned by ``binning`` first and made contrast images ``I/⟨I⟩ − 1``), moved onto the box centre to the sub-pixel,
multiplied in Fourier space by its CTF at the particle's depth and by its dose weight (the CTF-premultiplied
images of RELION's 2D stacks), and cropped to ``crop_size_px`` in real space.

* ``dimension="2d"`` (RELION's ``--stack2d``, what its refinement reads): ``Subtomograms/<ts>/<n>_stack2d.mrcs``
  holds a particle's visible premultiplied boxes in the order of the series' included tilts.
* ``dimension="3d"`` (RELION's default, for the initial model): the raw centred boxes are inserted into Fourier
  space with their views' rotations, in the tomogram's frame, and CTF × dose as transfer; ``<n>_data.mrc`` is the
  inverse transform of the premultiplied sum and ``<n>_weights.mrc`` the summed squared transfer (the transform's
  origin at the centre voxel), RELION's ``rlnImageName`` and ``rlnCtfImage``.

Output: a ``subtomograms`` folder with ``particles.star`` (RELION 5: ``rlnImageName``, ``rlnTomoVisibleFrames``
over the included tilts; ``data_general`` ``rlnTomoSubTomosAre2DStacks 1``), ``particles.json`` (the kept
particles, pixel size and box of the stacks) and ``extraction.json`` (pixel size, box, crop, and each particle's
file and visible tilt indices), and a ``particles`` folder with the kept particles alone (``particles.json``,
``particles.star``) for the steps that read particles (``averaging.refine``, ``averaging.reconstruct``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tomoforge.steps._device import resolve_device
from tomoforge.steps._particle_views import PARTICLE_INPUTS, AveragingParams
from tomoforge.workflow import Artifact, Inputs, RunContext, step

__all__ = ["ExtractParams", "extract_subtomograms"]


class ExtractParams(AveragingParams):
    """Parameters of ``averaging.extract`` (RELION's in brackets): the box, binning, dose limit and device of
    :class:`~tomoforge.steps._particle_views.AveragingParams`, the crop and the fewest visible tilts."""

    crop_size_px: int | None = Field(
        None, ge=4, description="Real-space crop of the processed box, pixels (--crop); default: the box."
    )
    min_frames: int = Field(
        1, ge=1, description="Particles with fewer visible tilts are dropped (--min_frames)."
    )
    dimension: Literal["2d", "3d"] = Field(
        "2d", description="2D stacks (--stack2d, for refinement) or 3D subtomograms with CTF² weights."
    )

    @model_validator(mode="after")
    def _sizes(self) -> ExtractParams:
        if self.crop_size_px is not None and self.crop_size_px > self.box_size_px:
            raise ValueError(f"crop_size_px ({self.crop_size_px}) exceeds box_size_px ({self.box_size_px})")
        return self


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["subtomograms"].path / "extraction.json").read_text(encoding="utf-8"))
    return {
        "particles": len(record["particles"]),
        "dropped": record["dropped"],
        "pixel_size_angstrom": record["pixel_size_angstrom"],
        "box / crop": f"{record['box_size_px']} / {record['crop_size_px']}",
        "dimension": record["dimension"],
    }


def _methods(params: ExtractParams) -> str:
    kind = "2D stacks of per-tilt boxes" if params.dimension == "2d" else "3D subtomograms with CTF² weights"
    return (
        f"Pseudo-subtomograms were extracted as {kind} (box {params.box_size_px}, binning {params.binning}), "
        "each tilt's box centred on the particle's projection and weighted by its CTF at the particle's depth"
        f"{' and its dose weight' if params.dose_weighting else ''}, leaving out tilts with more than "
        f"{params.max_dose_e_per_angstrom2:g} e⁻/Å² of prior exposure, as RELION 5's relion_tomo_subtomo does "
        "(Burt et al. 2024, Nat. Commun. 15, 1395)."
    )


@step(
    name="averaging.extract",
    version="2",
    inputs=PARTICLE_INPUTS,
    outputs={"subtomograms": "subtomograms", "particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def extract_subtomograms(params: ExtractParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Cut, centre, CTF-premultiply and store every particle's views."""
    from tomoforge.steps._particle_views import read_particle_inputs
    from tomoforge.steps._subtomograms import extract_series, write_extraction

    device = resolve_device(params.device)
    read = read_particle_inputs(
        inputs.path("particles"),
        inputs.path("tilt_series"),
        inputs.path("tomograms") if "tomograms" in inputs else None,
        params.binning,
        params.half_sets,
    )
    particles, table = read.particles, read.table
    out = ctx.work_dir / "subtomograms"
    out.mkdir()
    results = {}
    for series in read.series:
        if series.ts_id not in table:
            continue
        index = [i for i, p in enumerate(particles.particles) if p.ts_id == series.ts_id]
        bar = ctx.progress(len(index), f"{series.ts_id}: extracting")
        results[series.ts_id] = extract_series(out, series, table[series.ts_id], index, params, bar, device)
        kept = sum(1 for r in results[series.ts_id] if r is not None)
        ctx.logger.info("%s: %d of %d particles extracted", series.ts_id, kept, len(index))
    write_extraction(out, particles, results, params, read.pixel_size_angstrom)
    kept_folder = ctx.work_dir / "particles"
    kept_folder.mkdir()
    for name in ("particles.json", "particles.star"):
        shutil.copyfile(out / name, kept_folder / name)
    return {"subtomograms": out, "particles": kept_folder}
