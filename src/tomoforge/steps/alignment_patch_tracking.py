"""Step ``alignment.patch_tracking``: a landmark model from tracked image patches, for series without gold.

As IMOD's patch tracking (tiltxcorr ``-SizeOfPatchesXandY``/``-OverlapOfPatchesXandY`` with iterated correlations,
then ``imodchopconts``; ``../shared/docs/tutorial-steps.md`` §6): a grid of patches laid on the view nearest 0° is
followed outward view by view by stretched cross-correlation, starting from the pre-alignment's translations, and
the contours are cut into overlapping pieces of a few views, because what a patch shows drifts with depth over a
large tilt range (:func:`tomoforge.alignment.patches.track_patches`). The pieces are written as the landmark model
``<ts>_fiducials.json`` (0-based raw pixels of the stack; the "bead diameter" is the patch size), so the same
bundle adjustment, ``alignment.fiducial``, solves the geometry from them. ``<ts>_patch_tracking.json`` records the
settings and tells ``alignment.fiducial`` that the points are patches (no two-surface analysis).
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["PatchTrackingParams", "alignment_patch_tracking"]


class PatchTrackingParams(BaseModel):
    """Parameters of ``alignment.patch_tracking`` (tiltxcorr's names in the descriptions)."""

    patch_size_nm: float | None = Field(
        None,
        gt=0,
        description="Patch side in nm (-SizeOfPatchesXandY); None: the kernel's choice for the image.",
    )
    overlap: float = Field(
        0.33, ge=0.0, lt=0.9, description="Fractional overlap of patches (-OverlapOfPatchesXandY)."
    )
    iterations: int = Field(
        2, ge=1, le=5, description="Correlations per view, re-cut at the refined position."
    )
    min_peak: float = Field(
        0.2, description="End a contour where the correlation coefficient falls below this."
    )
    piece_views: int | None = Field(
        None, ge=4, description="Views per contour piece (imodchopconts -LengthOfPieces); None: the kernel's."
    )
    max_size_px: int = Field(
        1200, ge=128, description="Bin the images for tracking until no side exceeds this."
    )


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    import json

    result: dict[str, object] = {}
    for path in sorted(outputs["tilt_series"].path.glob("*_patch_tracking.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        result[record["ts_id"]] = {k: v for k, v in record.items() if k != "ts_id"}
    return result


@step(
    name="alignment.patch_tracking",
    version="1",
    inputs={
        "tilt_series": InputSpec(kind="tilt_series", description="Pre-aligned tilt series (no gold needed).")
    },
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=lambda params: (
        "Landmarks were obtained by tracking a grid of image patches "
        f"(overlap {params.overlap:g}) by stretched cross-correlation and cutting the tracks into overlapping "
        "pieces (as IMOD tiltxcorr patch tracking and imodchopconts; Mastronarde & Held, 2017, "
        "doi:10.1016/j.jsb.2016.07.011)."
    ),
)
def alignment_patch_tracking(params: PatchTrackingParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Track patches through every tilt series and store the pieces as a landmark model."""
    import json

    import numpy as np
    import torch

    from tomoforge.alignment.patches import track_patches
    from tomoforge.io._atomic import write_text_atomic
    from tomoforge.models import LandmarkModel, save_json
    from tomoforge.steps._alignment_io import working_stack
    from tomoforge.steps._artifacts import pass_through, read_tilt_series

    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    all_series = read_tilt_series(source)
    progress = ctx.progress(len(all_series), "patch tracking")
    for series in progress.wrap(all_series):
        if series.aligned:
            raise ValueError(
                f"{series.stack_file}: the stack is already aligned (interpolated); use the raw one"
            )
        work = working_stack(series, max_size_px=params.max_size_px)
        angles = [series.tilts[i].tilt_angle_deg for i in work.indices]
        transformed = [t.transform for i in work.indices if (t := series.tilts[i]).transform is not None]
        axis = transformed[0].tilt_axis_angle_deg if transformed else series.acquisition.tilt_axis_angle_deg
        patch = None
        if params.patch_size_nm is not None:
            patch = max(16, int(round(params.patch_size_nm * 10.0 / work.pixel_size_angstrom)))
        tracks = track_patches(
            work.images,
            angles,
            axis,
            coarse_xf=work.translations_xf(series).to(torch.float32) if transformed else None,
            patch_size_px=patch,
            overlap=params.overlap,
            iterations=params.iterations,
            min_peak=params.min_peak,
            chunk_views=params.piece_views,
        )
        points = tracks.points_xy_px.double().cpu().numpy()
        if points.shape[0] < 3:
            raise ValueError(
                f"{series.stack_file}: only {points.shape[0]} patch tracks could be followed through enough views; "
                "check the pre-alignment, or lower min_peak"
            )
        full = np.full((points.shape[0], series.n_tilts, 2), np.nan)
        full[:, work.indices] = work.to_stack_px(points)
        size_px = tracks.patch_size_xy[0] * work.factor
        model = LandmarkModel.from_array(
            full,
            ts_id=series.ts_id,
            pixel_size_angstrom=series.pixel_size_angstrom,
            bead_diameter_angstrom=size_px * series.pixel_size_angstrom,
        )
        pass_through(source, out, series, skip=("_fiducials.json", "_alignment.json", "_patch_tracking.json"))
        save_json(model, out / f"{series.ts_id}_fiducials.json")
        tracked = tracks.tracked_views().cpu().numpy()
        record = {
            "ts_id": series.ts_id,
            "binning": work.factor,
            "patch_size_px": [s * work.factor for s in tracks.patch_size_xy],
            "patches": int(len(tracked)),
            "chains": int(points.shape[0]),
            "patches_in_half_the_views": int((tracked >= math.ceil(0.5 * len(work.indices))).sum()),
            "points_per_view": [int(v) for v in np.isfinite(full[..., 0]).sum(axis=0)],
        }
        write_text_atomic(out / f"{series.ts_id}_patch_tracking.json", json.dumps(record, indent=1))
        ctx.logger.info(
            "%s: %d patches tracked, %d chains (binning %d)",
            series.ts_id,
            record["patches"],
            record["chains"],
            work.factor,
        )
    return {"tilt_series": out}
