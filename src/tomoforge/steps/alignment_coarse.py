"""Step ``alignment.coarse``: cross-correlation pre-alignment of tilt series (IMOD tiltxcorr + xftoxg) → ``tilt_series``.

Input and output are ``tilt_series`` folders (:mod:`tomoforge.steps._artifacts`); the stacks are not resampled
(hard-linked). Each included tilt gets a transform (IMOD ``.xf`` meaning about centres ``N // 2``, CONVENTIONS.md
§6) that first shifts the raw image onto the zero-tilt view, as tiltxcorr's chained ``.prexg`` does, and then
rotates the tilt axis ``α`` (the acquisition's, or ``tilt_axis_deg``) onto Y: ``A = Rz(−α)``, so that the
transform is a complete rigid alignment that reconstruction can use and ``atan2(A12, A11)`` gives the axis. The
translation-only ``<ts>.prexg`` is written too, for IMOD, along with ``<ts>.xf`` and ``<ts>.tlt``.

The correlation runs on a copy binned to at most ``max_size_px`` (tiltxcorr bins to ≤ 1180 px), with tiltxcorr's
filter. Two options go beyond tiltxcorr and are on by default because a thick specimen otherwise misleads the
pairwise correlation (on the simulated demo series: 10.2 px RMS with tiltxcorr's behaviour, 0.7 px with both):
``specimen_thickness_nm`` smooths each correlation across the axis by the parallax a specimen of that thickness
produces between the two views, and ``erase_outliers_sd`` replaces gold beads and hot pixels by the median before
correlating. Set them to None for plain tiltxcorr. See :func:`tomoforge.alignment.coarse.coarse_align`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["CoarseAlignmentParams", "alignment_coarse"]


class CoarseAlignmentParams(BaseModel):
    """Parameters of ``alignment.coarse`` (tiltxcorr's names in the descriptions)."""

    tilt_axis_deg: float | None = Field(
        None, description="Tilt-axis angle in degrees (-RotationAngle); None: the acquisition's (mdoc)."
    )
    sigma1: float = Field(
        0.03, ge=0, description="Low-frequency Gaussian roll-in, cycles/px (-FilterSigma1)."
    )
    sigma2: float = Field(
        0.05, ge=0, description="High-frequency Gaussian fall-off, cycles/px (-FilterSigma2)."
    )
    radius2: float = Field(
        0.25, gt=0, le=0.5, description="Start of the fall-off, cycles/px (-FilterRadius2)."
    )
    cumulative: bool = Field(
        False, description="Correlate with the sum of the views aligned so far (-CumulativeCorrelation)."
    )
    specimen_thickness_nm: float | None = Field(
        150.0,
        gt=0,
        description="Expected specimen thickness in nm for parallax smoothing; None: off (plain tiltxcorr).",
    )
    erase_outliers_sd: float | None = Field(
        4.0,
        gt=0,
        description="Replace pixels beyond this many robust SDs (gold, X-rays) before correlating; None: off.",
    )
    max_size_px: int = Field(
        1180, ge=128, description="Bin the images for correlation until no side exceeds this."
    )
    aligned_stack_binning: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Also write the interpolated aligned stack <ts>_ali.mrc at this binning.",
    )
    max_shift_nm: float | None = Field(
        None, gt=0, description="Largest shift searched between neighbours, in nm."
    )


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    import json

    result: dict[str, object] = {}
    folder = outputs["tilt_series"].path
    for path in sorted(folder.glob("*_coarse.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        result[record["ts_id"]] = {
            key: record[key]
            for key in (
                "tilt_axis_deg",
                "binning",
                "largest_shift_angstrom",
                "tilt_angle_deg",
                "shift_x_angstrom",
                "shift_y_angstrom",
                "peak_correlation",
                "low_correlation_views",
            )
        }
    return result


def _methods(params: CoarseAlignmentParams) -> str:
    text = (
        "Tilt series were pre-aligned by cross-correlating successive views after cosine stretching perpendicular to "
        f"the tilt axis (as IMOD tiltxcorr; Mastronarde & Held, 2017, doi:10.1016/j.jsb.2016.07.011), filter sigma1 "
        f"{params.sigma1:g}, sigma2 {params.sigma2:g}, radius2 {params.radius2:g} cycles/px"
    )
    if params.specimen_thickness_nm is not None:
        text += (
            f", with correlations smoothed for the parallax of a {params.specimen_thickness_nm:g} nm specimen"
        )
    if params.erase_outliers_sd is not None:
        text += f" and pixels beyond {params.erase_outliers_sd:g} SD replaced by the median"
    return text + "."


@step(
    name="alignment.coarse",
    version="1",
    inputs={"tilt_series": InputSpec(kind="tilt_series", description="The tilt series to pre-align.")},
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=_methods,
)
def alignment_coarse(params: CoarseAlignmentParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Pre-align tilt series by stretched cross-correlation of neighbouring views."""
    import json

    import numpy as np

    from tomoforge.alignment.coarse import coarse_align
    from tomoforge.io._atomic import write_text_atomic
    from tomoforge.io.imod.xf import transforms_to_xf, write_xf
    from tomoforge.models import TiltTransform
    from tomoforge.steps._alignment_io import (
        export_imod_alignment,
        rigid_transforms,
        working_stack,
        write_aligned_stack,
    )
    from tomoforge.steps._artifacts import pass_through, read_tilt_series

    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    all_series = read_tilt_series(source)
    progress = ctx.progress(len(all_series), "coarse alignment")
    for series in progress.wrap(all_series):
        if series.aligned:
            raise ValueError(
                f"{series.stack_file}: the stack is already aligned (interpolated); align the raw one"
            )
        axis = (
            series.acquisition.tilt_axis_angle_deg if params.tilt_axis_deg is None else params.tilt_axis_deg
        )
        work = working_stack(series, max_size_px=params.max_size_px)
        px = work.pixel_size_angstrom
        angles = [series.tilts[i].tilt_angle_deg for i in work.indices]
        result = coarse_align(
            work.images,
            angles,
            axis,
            pixel_size_angstrom=px,
            sigma1=params.sigma1,
            sigma2=params.sigma2,
            radius2=params.radius2,
            cumulative_reference=params.cumulative,
            binning=1,
            max_shift_px=None if params.max_shift_nm is None else params.max_shift_nm * 10.0 / px,
            specimen_thickness_px=None
            if params.specimen_thickness_nm is None
            else params.specimen_thickness_nm * 10.0 / px,
            erase_outliers_sd=params.erase_outliers_sd,
        )
        shifts_px = result.shifts_xy_px.double().cpu().numpy()  # working pixels, raw → aligned translation
        transforms = rigid_transforms(shifts_px, axis, px)
        by_index = dict(zip(work.indices, transforms, strict=True))
        tilts = [t.model_copy(update={"transform": by_index.get(t.index)}) for t in series.tilts]
        aligned = pass_through(source, out, series, update={"tilts": tilts})
        export_imod_alignment(out, aligned)
        if params.aligned_stack_binning is not None:
            write_aligned_stack(out, aligned, params.aligned_stack_binning)
        translations = [TiltTransform.identity()] * series.n_tilts
        for k, index in enumerate(work.indices):
            tx, ty = shifts_px[k] * px
            translations[index] = TiltTransform(dx_angstrom=tx, dy_angstrom=ty)
        h, w = series.image_shape_yx or (
            work.images.shape[-2] * work.factor,
            work.images.shape[-1] * work.factor,
        )
        prexg = transforms_to_xf(translations, series.pixel_size_angstrom, (w, h))
        write_xf(prexg, out / f"{series.ts_id}.prexg")
        peaks = result.peak_values.double().cpu().numpy()
        finite = peaks[np.isfinite(peaks)]
        low = [
            int(work.indices[k])
            for k, v in enumerate(peaks)
            if np.isfinite(v) and finite.size and v < 0.5 * float(np.median(finite))
        ]
        shift_angstrom = shifts_px * px
        record = {
            "ts_id": series.ts_id,
            "tilt_axis_deg": axis,
            "binning": work.factor,
            "stack_index": work.indices,
            "tilt_angle_deg": [round(a, 2) for a in angles],
            "shift_x_angstrom": [round(float(v), 2) for v in shift_angstrom[:, 0]],
            "shift_y_angstrom": [round(float(v), 2) for v in shift_angstrom[:, 1]],
            "peak_correlation": [None if not np.isfinite(v) else round(float(v), 4) for v in peaks],
            "largest_shift_angstrom": round(float(np.linalg.norm(shift_angstrom, axis=1).max()), 2),
            "low_correlation_views": low,
        }
        write_text_atomic(out / f"{series.ts_id}_coarse.json", json.dumps(record, indent=1))
        ctx.logger.info(
            "%s: coarse alignment at binning %d, largest shift %.1f Å, views with a weak peak: %s",
            series.ts_id,
            work.factor,
            record["largest_shift_angstrom"],
            low or "none",
        )
    return {"tilt_series": out}
