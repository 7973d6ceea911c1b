"""Step ``ctf.estimate``: the CTF of every tilt, tilt-aware, with the defocus handedness measured → ``tilt_series``.

The tutorial runs CTFFIND on the unfiltered, motion-corrected series (``../shared/docs/tutorial-steps.md`` §9: box
512, resolution 50–5 Å, defocus 10 000–50 000 Å in steps of 500 Å, astigmatism restrained to 200 Å, no phase
shift). Here every included tilt is fitted by :func:`tomoforge.ctf.estimate_ctf`. With ``tilt_geometry`` on, each
tile of a tilted image gets its own defocus from the view's geometry (CONVENTIONS.md §7–8): the series' transforms
and refined tilt angles when it carries an alignment (e.g. after ``alignment.assign``), else the nominal tilt axis
and angles. The reported defocus is the view's defocus at the specimen mid-plane under the tomogram centre.

**Defocus handedness** (``handedness="auto"``, CONVENTIONS.md §8): the tilts of at least
``handedness_min_tilt_deg`` are fitted with both signs of the defocus gradient and the sign whose fits correlate
better with the spectra, summed over those tilts, is kept and stored as the series' ``defocus_handedness``. The
evidence (score difference, tilts voting each way) is in the sidecar and the summary.

Outputs next to the tilt series (whose tilts now carry ``ctf``): ``<ts>.defocus`` (IMOD ctfphaseflip format,
version 3 with astigmatism; tilt angles refined where available), ``<ts>.star`` (RELION 5 tilt-series table with
``rlnDefocusU/V/Angle``, ``rlnCtfAstigmatism``, ``rlnCtfMaxResolution``, ``rlnCtfFigureOfMerit``; only when the
series' transforms are rigid or absent), ``<ts>_ctf.json`` (per tilt: fit, score, fit resolution, gradient scale
and apparent tilt; the handedness evidence), ``<ts>_ctf.svg`` (defocus and fit resolution against tilt angle) and
``<ts>_ctf_psd.png`` (per-tilt spectra: data left, fit right, as CTFFIND's diagnostic images).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tomoforge.steps._alignment_io import view_projection_matrix
from tomoforge.steps._device import device_problems, resolve_device
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["CtfEstimateParams", "estimate_tilt_series_ctf"]


class CtfEstimateParams(BaseModel):
    """Parameters of ``ctf.estimate`` (defaults: the tutorial's CTFFIND settings)."""

    tile_size_px: int = Field(512, ge=32, description="Box of the tile spectra in pixels (CTFFIND's box).")
    tile_overlap: float = Field(
        0.5, ge=0.0, lt=1.0, description="Fraction of a tile shared with its neighbours."
    )
    min_resolution_angstrom: float = Field(50.0, gt=0, description="Low-resolution end of the fit band, Å.")
    max_resolution_angstrom: float = Field(
        5.0, gt=0, description="High-resolution end of the fit band, Å (capped at 0.95 × Nyquist)."
    )
    defocus_min_angstrom: float = Field(10000.0, gt=0, description="Lowest defocus searched, Å (underfocus).")
    defocus_max_angstrom: float = Field(50000.0, gt=0, description="Highest defocus searched, Å.")
    defocus_step_angstrom: float = Field(500.0, gt=0, description="Step of the 1D defocus search, Å.")
    astigmatism_tolerance_angstrom: float | None = Field(
        200.0, gt=0, description="Astigmatism |u − v| tolerated without penalty, Å; null: unrestrained."
    )
    fit_phase_shift: bool = Field(False, description="Fit an additional phase shift (phase plate data).")
    phase_shift_range_deg: tuple[float, float, float] = Field(
        (0.0, 180.0, 10.0), description="Phase shifts searched (min, max, step) in degrees when fitted."
    )
    tilt_geometry: bool = Field(
        True, description="Give every tile of a tilted image its own defocus from the view's geometry."
    )
    handedness: Literal["auto", "+1", "-1"] = Field(
        "auto",
        description="Sign of the defocus gradient (CONVENTIONS.md §8): measured ('auto') or imposed.",
    )
    handedness_min_tilt_deg: float = Field(
        20.0, ge=0, description="Tilts at least this steep vote on the handedness."
    )
    fit_gradient: bool = Field(
        False,
        description="Also fit the strength of the defocus gradient (CTFFIND5's tilt fit): reports the apparent "
        "tilt of each view as a check of the alignment.",
    )
    specimen_thickness_nm: float | Literal["auto"] = Field(
        "auto",
        description="Specimen thickness whose defocus spread damps the rings; 'auto': the alignment's "
        "two-surface estimate when the series carries one, else 0.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the fits run.")

    @model_validator(mode="after")
    def _check(self) -> CtfEstimateParams:
        if self.defocus_min_angstrom > self.defocus_max_angstrom:
            raise ValueError("defocus_min_angstrom must not exceed defocus_max_angstrom")
        if self.min_resolution_angstrom <= self.max_resolution_angstrom:
            raise ValueError(
                "min_resolution_angstrom (low-resolution end) must exceed max_resolution_angstrom"
            )
        return self


def _validate(params: CtfEstimateParams, inputs: Inputs) -> list[str]:
    return device_problems(params.device)


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["tilt_series"].path
    result: dict[str, object] = {}
    for path in sorted(folder.glob("*_ctf.json")):
        record = json.loads(path.read_text())
        tilts = record["tilts"]
        defocus = [t["defocus_mean_angstrom"] for t in tilts]
        resolution = [t["fit_resolution_angstrom"] for t in tilts]
        ordered = sorted(resolution)
        result[record["ts_id"]] = {
            "tilts_fitted": len(tilts),
            "defocus_um": f"{min(defocus) / 1e4:.2f}–{max(defocus) / 1e4:.2f}",
            "median_fit_resolution_angstrom": round(ordered[len(ordered) // 2], 1),
            "worst_fit_resolution_angstrom": round(ordered[-1], 1),
            "handedness": record["handedness"]["value"],
            "handedness_evidence": record["handedness"]["verdict"],
            "plot": f"{record['ts_id']}_ctf.svg",
            "spectra": f"{record['ts_id']}_ctf_psd.png",
        }
    return result


def _methods(params: CtfEstimateParams) -> str:
    geometry = (
        " Every tile of a tilted image was given its own defocus from the tilt geometry, as in CTFFIND5 "
        "(Elferich et al. 2024, doi:10.7554/eLife.97227) and ctfplotter (Xiong et al. 2009, "
        "doi:10.1016/j.jsb.2009.08.016)."
        if params.tilt_geometry
        else ""
    )
    return (
        "The CTF of every tilt image was estimated with tomoforge's CTFFIND4-like fit (Rohou & Grigorieff 2015, "
        f"doi:10.1016/j.jsb.2015.08.008) on {params.tile_size_px}-pixel tiles between "
        f"{params.min_resolution_angstrom:g} and {params.max_resolution_angstrom:g} Å, searching defocus from "
        f"{params.defocus_min_angstrom:g} to {params.defocus_max_angstrom:g} Å in steps of "
        f"{params.defocus_step_angstrom:g} Å"
        + (
            f" with astigmatism restrained to {params.astigmatism_tolerance_angstrom:g} Å."
            if params.astigmatism_tolerance_angstrom
            else "."
        )
        + geometry
    )


def _thickness_angstrom(params: CtfEstimateParams, folder: Path, ts_id: str) -> float:
    if params.specimen_thickness_nm != "auto":
        return 10.0 * float(params.specimen_thickness_nm)
    path = folder / f"{ts_id}_alignment.json"
    if not path.is_file():
        return 0.0
    surfaces = json.loads(path.read_text()).get("surfaces") or {}
    value = surfaces.get("thickness_nm")
    return 10.0 * float(value) if value else 0.0


def _sign_test(agree: int, n: int) -> float:
    """One-sided binomial probability of at least ``agree`` of ``n`` votes for one side by chance."""
    return sum(math.comb(n, k) for k in range(agree, n + 1)) / 2.0**n


def _fit(
    params: CtfEstimateParams,
    series: Any,
    tilt: Any,
    image: Any,
    hand: int,
    thickness: float,
    *,
    gradient: bool = False,
    start: float = 1.0,
) -> Any:
    """Fit one tilt image with the step's settings."""
    from tomoforge.ctf import estimate_ctf

    acq = series.acquisition
    matrix = view_projection_matrix(series, tilt) if params.tilt_geometry else None
    return estimate_ctf(
        image,
        pixel_size_angstrom=series.pixel_size_angstrom,
        voltage_kv=acq.voltage_kv,
        spherical_aberration_mm=acq.spherical_aberration_mm,
        amplitude_contrast=acq.amplitude_contrast,
        tile_size_px=min(params.tile_size_px, *image.shape),
        tile_overlap=params.tile_overlap,
        min_resolution_angstrom=params.min_resolution_angstrom,
        max_resolution_angstrom=params.max_resolution_angstrom,
        defocus_min_angstrom=params.defocus_min_angstrom,
        defocus_max_angstrom=params.defocus_max_angstrom,
        defocus_step_angstrom=params.defocus_step_angstrom,
        astigmatism_tolerance_angstrom=params.astigmatism_tolerance_angstrom,
        fit_phase_shift=params.fit_phase_shift,
        phase_shift_range_deg=params.phase_shift_range_deg,
        projection_matrix=matrix,
        handedness=hand,
        fit_gradient=gradient,
        gradient_start=start,
        specimen_thickness_angstrom=thickness,
    )


@step(
    name="ctf.estimate",
    version="1",
    inputs={
        "tilt_series": InputSpec(
            kind="tilt_series",
            description="Motion-corrected, not dose-filtered tilt series (with its alignment assigned, if any).",
        )
    },
    outputs={"tilt_series": "tilt_series"},
    validate=_validate,
    summary=_summary,
    methods=_methods,
)
def estimate_tilt_series_ctf(params: CtfEstimateParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Fit the CTF of every included tilt and measure the defocus handedness of each series."""
    import numpy as np
    import torch

    from tomoforge.io.imod import ctf_to_imod_defocus, write_imod_defocus
    from tomoforge.io.mrc import read_mrc
    from tomoforge.io.png import write_png
    from tomoforge.io.relion5 import write_relion_tilt_series
    from tomoforge.models import CtfParameters, CtfTiltEstimate, CtfTiltSeries
    from tomoforge.steps._artifacts import pass_through, read_tilt_series
    from tomoforge.steps._ctf_plots import ctf_series_svg, psd_montage
    from tomoforge.workflow.fsutil import atomic_write_text

    device = resolve_device(params.device)
    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    for series in read_tilt_series(source):
        data = read_mrc(series.stack_file).data
        thickness = _thickness_angstrom(params, source, series.ts_id)
        tilts = series.included()

        steep = [t for t in tilts if abs(t.effective_tilt_angle_deg) >= params.handedness_min_tilt_deg]
        vote = params.handedness == "auto" and params.tilt_geometry and bool(steep)
        fits: dict[int, Any] = {}
        votes: dict[int, float] = {}
        progress = ctx.progress(len(tilts) + (len(steep) if vote else 0), f"{series.ts_id}: CTF estimation")

        def image_of(tilt: Any, stack: Any = data) -> torch.Tensor:
            return torch.from_numpy(np.array(stack[tilt.index], dtype=np.float32)).to(device)

        hand = 1 if params.handedness in ("auto", "+1") else -1
        if vote:
            # The gradient is fitted freely from 0 (no sign presumed); its sign on each steep tilt is a vote.
            for tilt in steep:
                votes[tilt.index] = _fit(
                    params, series, tilt, image_of(tilt), 1, thickness, gradient=True, start=0.0
                ).gradient_scale
                progress()
            hand = 1 if float(np.median(list(votes.values()))) >= 0 else -1
        for tilt in tilts:
            if params.fit_gradient and params.tilt_geometry:
                fits[tilt.index] = _fit(params, series, tilt, image_of(tilt), hand, thickness, gradient=True)
            else:
                fits[tilt.index] = _fit(params, series, tilt, image_of(tilt), hand, thickness)
            progress()
        progress.close()

        estimates = []
        rows = []
        new_tilts = list(series.tilts)
        for tilt in tilts:
            f = fits[tilt.index]
            parameters = CtfParameters(
                defocus_u_angstrom=f.defocus_u_angstrom,
                defocus_v_angstrom=f.defocus_v_angstrom,
                astigmatism_angle_deg=f.astigmatism_angle_deg,
                phase_shift_deg=f.phase_shift_deg,
                fit_resolution_angstrom=f.fit_resolution_angstrom,
                score=f.score,
            )
            new_tilts[tilt.index] = tilt.replace(ctf=parameters)
            estimates.append(CtfTiltEstimate(tilt_index=tilt.index, parameters=parameters))
            theta = math.radians(tilt.effective_tilt_angle_deg)
            rows.append(
                {
                    "index": tilt.index,
                    "acquisition_order": tilt.acquisition_order,
                    "tilt_angle_deg": round(tilt.effective_tilt_angle_deg, 3),
                    "defocus_u_angstrom": round(f.defocus_u_angstrom, 1),
                    "defocus_v_angstrom": round(f.defocus_v_angstrom, 1),
                    "defocus_mean_angstrom": round(0.5 * (f.defocus_u_angstrom + f.defocus_v_angstrom), 1),
                    "astigmatism_angle_deg": round(f.astigmatism_angle_deg, 2),
                    "phase_shift_deg": round(f.phase_shift_deg, 2),
                    "score": round(f.score, 4),
                    "fit_resolution_angstrom": round(f.fit_resolution_angstrom, 2),
                    "gradient_scale": round(f.gradient_scale, 3),
                    "apparent_tilt_deg": round(
                        math.degrees(math.atan(f.gradient_scale * math.tan(theta))), 2
                    ),
                    "free_gradient_scale": round(votes[tilt.index], 3) if tilt.index in votes else None,
                }
            )
        if votes:
            agree = sum(g * hand > 0 for g in votes.values())
            verdict = (
                f"the defocus gradient of {agree} of {len(votes)} tilts ≥ {params.handedness_min_tilt_deg:g}° "
                f"points the {hand:+d} way (sign test p = {_sign_test(agree, len(votes)):.2g}; median free "
                f"gradient scale {float(np.median(list(votes.values()))):+.2f})"
            )
        else:
            verdict = (
                f"imposed ({params.handedness})" if params.handedness != "auto" else "not measured (no tilt)"
            )
        fitted = pass_through(source, out, series, update={"tilts": new_tilts, "defocus_handedness": hand})

        angles = [t.effective_tilt_angle_deg for t in series.tilts]
        ctf_series = CtfTiltSeries(ts_id=series.ts_id, tilts=estimates)
        write_imod_defocus(ctf_to_imod_defocus(ctf_series, angles), out / f"{series.ts_id}.defocus")
        try:
            write_relion_tilt_series(fitted, out / f"{series.ts_id}.star")
        except ValueError as exc:
            ctx.logger.warning("%s: no RELION tilt-series table written: %s", series.ts_id, exc)
        record = {
            "ts_id": series.ts_id,
            "pixel_size_angstrom": series.pixel_size_angstrom,
            "specimen_thickness_angstrom": round(thickness, 1),
            "handedness": {"value": hand, "verdict": verdict, "mode": params.handedness},
            "tilts": rows,
        }
        atomic_write_text(out / f"{series.ts_id}_ctf.json", json.dumps(record, indent=1))
        mean = [r["defocus_mean_angstrom"] for r in rows]
        atomic_write_text(
            out / f"{series.ts_id}_ctf.svg",
            ctf_series_svg(
                [r["tilt_angle_deg"] for r in rows],
                mean,
                [r["fit_resolution_angstrom"] for r in rows],
                defocus_u_angstrom=[r["defocus_u_angstrom"] for r in rows],
                defocus_v_angstrom=[r["defocus_v_angstrom"] for r in rows],
                title=f"{series.ts_id}: CTF per tilt",
                handedness_note=f"defocus handedness {hand:+d} ({verdict})",
            ),
        )
        write_png(
            psd_montage(
                [fits[t.index].spectrum_display.cpu().numpy() for t in tilts],
                labels=[f"{t.effective_tilt_angle_deg:.0f}" for t in tilts],
            ),
            out / f"{series.ts_id}_ctf_psd.png",
            origin="lower",
        )
        ctx.logger.info(
            "%s: %d tilts, defocus %.2f–%.2f µm, median fit resolution %.1f Å, handedness %+d (%s)",
            series.ts_id,
            len(rows),
            min(mean) / 1e4,
            max(mean) / 1e4,
            float(np.median([r["fit_resolution_angstrom"] for r in rows])),
            hand,
            verdict,
        )
    return {"tilt_series": out}
