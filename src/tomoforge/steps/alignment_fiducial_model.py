"""Step ``alignment.fiducial_model``: find and track gold beads (IMOD autofidseed + beadtrack) → ``tilt_series``.

Input: a ``tilt_series`` folder, normally pre-aligned by ``alignment.coarse`` (its transforms give the starting
translations; the images are not resampled). The beads are detected on a binned working copy (bead diameter kept
at ≥ 6 px), seeded near zero tilt spread over the field — on both surfaces with ``two_surfaces`` — and tracked
through all views with predictions from a 3D model refined as the track grows, with rescue of lost beads and gap
filling (:mod:`tomoforge.alignment.tracking`). Output: the series unchanged (stacks hard-linked) plus the bead model
``<ts>_fiducials.json`` (:class:`~tomoforge.models.LandmarkModel`, 0-based raw pixels of the stack), the same as an
IMOD model ``<ts>.fid``, and ``<ts>_fiducials.png``: the view nearest 0° with every tracked bead circled.

A series in which no bead can be found fails with a message that suggests patch tracking.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["FiducialModelParams", "alignment_fiducial_model"]


class FiducialModelParams(BaseModel):
    """Parameters of ``alignment.fiducial_model``."""

    bead_diameter_nm: float = Field(
        10.0, gt=0, description="Diameter of the gold beads in nm (-BeadDiameter)."
    )
    target_beads: int = Field(25, ge=3, le=500, description="Number of beads to seed (-TargetNumberOfBeads).")
    two_surfaces: bool = Field(
        True, description="Seed beads on both the top and the bottom surface (-TwoSurfaces)."
    )
    polarity: Literal["dark", "bright"] = Field("dark", description="Contrast of the beads in the images.")
    min_tracked_fraction: float = Field(
        0.3, ge=0.0, le=1.0, description="Drop beads found in fewer than this fraction of the included views."
    )
    binning: int | None = Field(
        None, ge=1, le=16, description="Binning of the working copy; None: ≤ 1200 px a side, beads ≥ 6 px."
    )


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    import numpy as np

    from tomoforge.models import LandmarkModel, load_json

    result: dict[str, object] = {}
    for path in sorted(outputs["tilt_series"].path.glob("*_fiducials.json")):
        model = load_json(LandmarkModel, path)
        points = model.to_array()
        seen = np.isfinite(points[..., 0])
        per_bead = seen.sum(axis=1) / max(model.n_tilts, 1)
        result[model.ts_id] = {
            "beads": model.n_beads,
            "bead_diameter_px": round(model.bead_diameter_px, 2),
            "views_per_bead_fraction": [round(float(f), 3) for f in per_bead],
            "beads_in_80pct_of_views": int((per_bead >= 0.8).sum()),
            "beads_per_view": [int(v) for v in seen.sum(axis=0)],
            "picture": f"{model.ts_id}_fiducials.png",
        }
    return result


def _stack_shape(path: Path) -> tuple[int, int]:
    from tomoforge.io.mrc import read_mrc

    data = read_mrc(path).data
    return int(data.shape[-2]), int(data.shape[-1])


def _working_binning(params: FiducialModelParams, shape_yx: tuple[int, int], bead_px: float) -> int:
    if params.binning is not None:
        return params.binning
    factor = max(1, math.ceil(max(shape_yx) / 1200))
    while factor > 1 and bead_px / factor < 6.0:
        factor -= 1
    return factor


@step(
    name="alignment.fiducial_model",
    version="1",
    inputs={
        "tilt_series": InputSpec(kind="tilt_series", description="Pre-aligned tilt series with gold beads.")
    },
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=lambda params: (
        f"Gold beads of {params.bead_diameter_nm:g} nm were detected by matched filtering, seeded "
        + ("on both surfaces " if params.two_surfaces else "")
        + "near zero tilt and tracked through the tilt series with predictions from a 3D bead model (as IMOD "
        "autofidseed and beadtrack; Mastronarde & Held, 2017, doi:10.1016/j.jsb.2016.07.011)."
    ),
)
def alignment_fiducial_model(params: FiducialModelParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Detect, seed and track gold beads in every tilt series."""
    import numpy as np
    import torch

    from tomoforge.alignment.tracking import seed_beads, track_beads
    from tomoforge.io.imod.model import landmarks_to_imod_model, write_imod_model
    from tomoforge.io.png import write_png
    from tomoforge.models import LandmarkModel, save_json
    from tomoforge.steps._alignment_io import working_stack
    from tomoforge.steps._artifacts import pass_through, read_tilt_series
    from tomoforge.steps._plots import COLOURS, draw_circle, to_rgb

    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    all_series = read_tilt_series(source)
    progress = ctx.progress(len(all_series), "tracking gold beads")
    for series in progress.wrap(all_series):
        if series.aligned:
            raise ValueError(
                f"{series.stack_file}: the stack is already aligned (interpolated); use the raw one"
            )
        shape = series.image_shape_yx or _stack_shape(series.stack_file)
        bead_px = params.bead_diameter_nm * 10.0 / series.pixel_size_angstrom
        work = working_stack(series, factor=_working_binning(params, shape, bead_px))
        work_bead_px = bead_px / work.factor
        angles = [series.tilts[i].tilt_angle_deg for i in work.indices]
        transformed = [t.transform for i in work.indices if (t := series.tilts[i]).transform is not None]
        # A pre-alignment's rigid transforms carry the tilt axis (CONVENTIONS.md §6); else the acquisition's.
        axis = transformed[0].tilt_axis_angle_deg if transformed else series.acquisition.tilt_axis_angle_deg
        coarse = work.translations_xf(series).to(torch.float32) if transformed else None
        seeds = seed_beads(
            work.images,
            angles,
            axis,
            bead_diameter_px=work_bead_px,
            target_number=params.target_beads,
            two_surfaces=params.two_surfaces,
            coarse_xf=coarse,
            polarity=params.polarity,
        )
        if seeds.positions_xy_px.shape[0] == 0:
            raise ValueError(
                f"{series.stack_file}: no gold beads of {params.bead_diameter_nm:g} nm ({bead_px:.1f} px) were found "
                "near zero tilt; check bead_diameter_nm and polarity, or align this series without fiducials with "
                "patch tracking (alignment.patch_tracking)"
            )
        tracks = track_beads(
            work.images,
            angles,
            axis,
            seeds_xy_px=seeds.positions_xy_px,
            bead_diameter_px=work_bead_px,
            seed_view=seeds.view_index,
            coarse_xf=coarse,
            polarity=params.polarity,
        )
        points = tracks.positions_xy_px.double().cpu().numpy()  # (b, m, 2) working px
        seen = np.isfinite(points[..., 0]).sum(axis=1)
        keep = seen >= max(3, params.min_tracked_fraction * len(work.indices))
        points = points[keep]
        if points.shape[0] < 3:
            raise ValueError(
                f"{series.stack_file}: only {points.shape[0]} gold beads could be tracked through enough views "
                "(at least 3 are needed); align this series with patch tracking (alignment.patch_tracking)"
            )
        full = np.full((points.shape[0], series.n_tilts, 2), np.nan)
        full[:, work.indices] = work.to_stack_px(points)
        model = LandmarkModel.from_array(
            full,
            ts_id=series.ts_id,
            pixel_size_angstrom=series.pixel_size_angstrom,
            bead_diameter_angstrom=params.bead_diameter_nm * 10.0,
        )
        pass_through(source, out, series, skip=("_fiducials.json", "_alignment.json"))
        save_json(model, out / f"{series.ts_id}_fiducials.json")
        write_imod_model(landmarks_to_imod_model(model, (shape[1], shape[0])), out / f"{series.ts_id}.fid")
        k0 = int(np.argmin(np.abs(angles)))
        picture = to_rgb(work.images[k0].cpu().numpy())
        for x, y in points[:, k0]:
            if np.isfinite(x):
                draw_circle(picture, x, y, work_bead_px / 2 + 2, COLOURS["green"], width=1.5)
        write_png(picture, out / f"{series.ts_id}_fiducials.png")
        fraction = seen[keep] / len(work.indices)
        ctx.logger.info(
            "%s: %d beads tracked (binning %d, axis %.2f°), %d in ≥ 80 %% of views",
            series.ts_id,
            points.shape[0],
            work.factor,
            tracks.tilt_axis_deg,
            int((fraction >= 0.8).sum()),
        )
    return {"tilt_series": out}
