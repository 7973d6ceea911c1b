"""Step ``xray.erase``: find and erase X-ray hits, hot and dead pixels in every tilt → ``tilt_series``.

Input and output are ``tilt_series`` folders (:mod:`tomoforge.steps._artifacts`). Each image is scanned with
:func:`tomoforge.preprocess.find_xrays` and the patches found are replaced by a polynomial fitted to a ring around
them (:func:`tomoforge.preprocess.erase_xrays`), as IMOD's ``ccderaser -FindPeaks`` does in the tutorial
(``../shared/docs/tutorial-steps.md`` §3; defaults are Scipion's form defaults). Like ``ccderaser``, which "finds
and erases peaks a criterion # of SDs above or below background", it erases outliers of both polarities: bright
X-rays and hot pixels, and dark (dead, cold) pixels; ``ccderaser`` has no option to restrict the polarity, so
neither has this step. Pixels outside the patches are
unchanged; metadata and sidecars are copied. Even/odd stacks get the mask found on the full stack (the fit is
linear in the data, so the erased halves still sum to the erased full stack).

Besides the stacks the step writes ``<ts>_xrays.csv``, the erased patches (the "point model" of ccderaser):
columns ``tilt_index, tilt_angle_deg, y_px, x_px, radius_px, n_pixels, polarity`` (stack index; centroid in array
pixels; polarity ``1`` bright, ``-1`` dark). :func:`read_xray_table` also reads tables written before the polarity
column existed (polarity ``1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["XRAY_HEADER", "XrayEraseParams", "read_xray_table", "xray_erase"]

XRAY_HEADER = "tilt_index,tilt_angle_deg,y_px,x_px,radius_px,n_pixels,polarity"
_XRAY_HEADER_V1 = "tilt_index,tilt_angle_deg,y_px,x_px,radius_px,n_pixels"  # before dark pixels were erased


class XrayEraseParams(BaseModel):
    """Parameters of ``xray.erase`` (ccderaser options in brackets)."""

    peak_criterion_sd: float = Field(
        8.0,
        gt=0,
        description="Peak criterion in SDs above or below the annulus around a peak (-PeakCriterion).",
    )
    difference_criterion_sd: float = Field(
        6.0,
        gt=0,
        description="Criterion in SDs for a pixel's difference from its neighbours, either sign (-DiffCriterion).",
    )
    grow_criterion_sd: float = Field(
        4.0,
        gt=0,
        description="Pixels beyond this many SDs, on the peak's side, join a patch as it grows (-GrowCriterion).",
    )
    scan_criterion_sd: float = Field(
        3.0,
        gt=0,
        description="Pixels above or below this many SDs of their scan box are candidate peaks (-ScanCriterion).",
    )
    max_radius_px: float = Field(
        4.2,
        gt=0,
        description="Largest radius in pixels of an erased patch; the annulus starts here (-MaximumRadius).",
    )
    giant_criterion_sd: float = Field(
        12.0, gt=0, description="Peak criterion in SDs for giant peaks (-GiantCriterion)."
    )
    extra_large_radius_px: float = Field(
        8.0, gt=0, description="Largest radius in pixels of a giant peak's patch (-ExtraLargeRadius)."
    )
    big_difference_criterion_sd: float = Field(
        19.0,
        gt=0,
        description="Giant peaks need adjacent-pixel differences above this many SDs (-BigDiffCriterion).",
    )
    annulus_width_px: float = Field(
        2.0, gt=0, description="Width in pixels of the annulus for the peak statistics (-AnnulusWidth)."
    )
    scan_box_px: int = Field(
        100, ge=8, description="Size in pixels of the boxes for local statistics (-XYScanSize)."
    )
    edge_exclusion_px: int = Field(
        4, ge=0, description="Peaks within this many pixels of an edge are ignored (-EdgeExclusionWidth)."
    )
    border_px: int = Field(
        2, ge=1, description="Width in pixels of the ring fitted around each patch (-BorderSize)."
    )
    polynomial_order: int = Field(
        2,
        ge=0,
        le=3,
        description="Order of the 2-D polynomial fitted to the ring; 0 is its mean (-PolynomialOrder).",
    )

    def find_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`tomoforge.preprocess.find_xrays`."""
        return self.model_dump()


def read_xray_table(path: Path) -> list[dict[str, float]]:
    """Read ``<ts>_xrays.csv`` into one dict per erased patch (columns of :data:`XRAY_HEADER`).

    Tables without the ``polarity`` column (written by version 1 of the step, which erased bright outliers only)
    are read with ``polarity`` 1.
    """
    rows = path.read_text(encoding="utf-8").splitlines()
    header = rows[0].strip() if rows else ""
    if header not in (XRAY_HEADER, _XRAY_HEADER_V1):
        raise ValueError(f"{path}: not an X-ray table (expected the header {XRAY_HEADER})")
    names = header.split(",")
    table = [dict(zip(names, map(float, row.split(",")), strict=True)) for row in rows[1:] if row.strip()]
    for row in table:
        row.setdefault("polarity", 1.0)
    return table


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    from tomoforge.steps._artifacts import read_tilt_series

    folder = outputs["tilt_series"].path
    result: dict[str, object] = {}
    for series in read_tilt_series(folder):
        table = folder / f"{series.ts_id}_xrays.csv"
        per_tilt = [0] * series.n_tilts
        pixels = dark = 0
        for row in read_xray_table(table) if table.is_file() else []:
            per_tilt[int(row["tilt_index"])] += 1
            pixels += int(row["n_pixels"])
            dark += row["polarity"] < 0
        result[series.ts_id] = {
            "tilts": series.n_tilts,
            "objects_erased_per_tilt": per_tilt,
            "objects_erased": sum(per_tilt),
            "dark_objects_erased": dark,
            "pixels_erased": pixels,
        }
    return result


def _methods(params: XrayEraseParams) -> str:
    return (
        "X-ray hits, hot and dead pixels were found and replaced by a polynomial fit to their surroundings as IMOD "
        f"ccderaser does (Kremer et al., 1996, doi:10.1006/jsbi.1996.0013), with a peak criterion of "
        f"{params.peak_criterion_sd:g} SD, a difference criterion of {params.difference_criterion_sd:g} SD and a "
        f"maximum radius of {params.max_radius_px:g} px."
    )


@step(
    name="xray.erase",
    version="3",
    inputs={"tilt_series": InputSpec(kind="tilt_series", description="The tilt series to clean.")},
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=_methods,
)
def xray_erase(params: XrayEraseParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Find X-rays, hot and dead pixels in every tilt image and replace them by a fit to their surroundings."""
    import numpy as np
    import torch

    from tomoforge.preprocess import erase_xrays, find_xrays
    from tomoforge.steps._artifacts import (
        copy_sidecars,
        map_stacks,
        read_tilt_series,
        series_stacks,
        write_tilt_series,
    )

    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    for series in read_tilt_series(source):
        angles = series.tilt_angles_deg
        masks: list[torch.Tensor] = []
        lines = [XRAY_HEADER]
        progress = ctx.progress(
            len(series_stacks(series)) * series.n_tilts, f"{series.ts_id}: erasing X-rays"
        )

        def _erase(
            field: str,
            i: int,
            image: np.ndarray,
            angles: list[float] = angles,
            masks: list[torch.Tensor] = masks,
            lines: list[str] = lines,
        ) -> np.ndarray:
            tensor = torch.from_numpy(image)
            if field == "stack_file":  # the full stack comes first; its masks serve the even/odd halves too
                mask, objects = find_xrays(tensor, **params.find_kwargs())
                masks.append(mask)
                lines += [
                    f"{i},{float(angles[i])!r},{o.y_px:.3f},{o.x_px:.3f},{o.radius_px:.3f},{o.n_pixels},"
                    f"{o.polarity}"
                    for o in objects
                ]
            erased = erase_xrays(
                tensor, masks[i], border_px=params.border_px, polynomial_order=params.polynomial_order
            )
            return erased.numpy()

        written = map_stacks(series, out, _erase, progress=progress)
        progress.close()
        (out / f"{series.ts_id}_xrays.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_tilt_series(out, type(series).model_validate(series.model_copy(update=written).model_dump()))
        copy_sidecars(source, out, series.ts_id, skip=("_xrays.csv",))
        ctx.logger.info("%s: %d X-ray and dead-pixel patches erased", series.ts_id, len(lines) - 1)
    return {"tilt_series": out}
