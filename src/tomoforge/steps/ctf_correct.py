"""Step ``ctf.correct``: interpolate the present views through their alignment and correct them for the CTF.

As Scipion's "IMOD CTF correction" (``../shared/docs/tutorial-steps.md`` §11): the views that are present (not
excluded; each must carry a transform and CTF parameters) are resampled through their raw → aligned transforms as
``newstack -xform`` does (:func:`tomoforge.alignment.transform_images`, optionally binned), then every aligned view
is phase flipped (or Wiener filtered) strip by strip along the tilt axis with the defocus the tilt geometry gives
each strip (:func:`tomoforge.ctf.correct.phase_flip_tilted`, IMOD ``ctfphaseflip``): refined tilt angle (nominal
when not refined), x-axis tilt and the series' defocus handedness (+1 when not measured, CONVENTIONS.md §8).

The CTF of a view was fitted on the raw image, so its astigmatism angle is carried into the aligned frame through
the transform's linear part ``A``: a raw direction at angle ``φ`` becomes the aligned direction ``A·(cos φ, sin φ)``
(as ctfphaseflip adds each view's rotation from its ``-TransformFile``). Magnification in ``A`` is ignored for the
CTF, as in IMOD.

Output: a ``tilt_series`` with the present views only, renumbered ``0 … m − 1`` in stack order (acquisition order,
doses, transforms, refined angles and CTF kept; Scipion keeps "only present views" too), ``aligned`` set, the stack
``<ts>.mrc`` at the (binned) pixel size, an IMOD angle file ``<ts>.tlt`` of the present views, and
``<ts>_ctf_correction.csv`` with one row per input view (:data:`CORRECTION_HEADER`: what was done to it, the defocus
used and the strips). Sidecars keyed by acquisition order (``<ts>_motion.csv``) are copied and the dose-filter
record is restricted to the present views; sidecars that refer to raw-image positions or input stack indices are
not carried over. Even/odd half stacks are corrected too when ``even_odd`` is set, otherwise dropped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from tomoforge.steps._device import device_problems, resolve_device
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    import torch

    from tomoforge.models import TiltImage, TiltSeries, TiltTransform

__all__ = ["CORRECTION_HEADER", "CtfCorrectParams", "aligned_astigmatism_angle_deg", "ctf_correct"]

CORRECTION_HEADER = (
    "input_index,output_index,acquisition_order,tilt_angle_deg,status,defocus_u_angstrom,defocus_v_angstrom,"
    "astigmatism_angle_aligned_deg,strips,strip_width_min_px,strip_width_max_px"
)
"""Columns of ``<ts>_ctf_correction.csv``; ``status`` is ``corrected`` or ``excluded`` (then ``output_index`` is −1
and the CTF columns are empty)."""


class CtfCorrectParams(BaseModel):
    """Parameters of ``ctf.correct`` (IMOD ctfphaseflip options in brackets)."""

    defocus_tolerance_nm: float = Field(
        200.0, gt=0, description="Largest defocus change across one strip, in nm (-DefocusTol)."
    )
    interpolation_width_px: int = Field(
        15,
        ge=1,
        description="Width in output pixels over which neighbouring strips are blended linearly (-InterpolationWidth).",
    )
    mode: Literal["flip", "wiener"] = Field(
        "flip",
        description="'flip': phase flipping (ctfphaseflip); 'wiener': Wiener filter with a constant SNR.",
    )
    wiener_snr: float = Field(
        10.0, gt=0, description="Spectral signal-to-noise ratio of the Wiener filter (mode 'wiener' only)."
    )
    binning: int = Field(
        1, ge=1, description="Binning of the interpolated stack (Fourier binning before interpolation)."
    )
    even_odd: bool = Field(
        False,
        description="Also correct the even/odd half stacks when the series has them (else they are dropped).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to compute: 'auto' uses the GPU when one is present."
    )


def aligned_astigmatism_angle_deg(transform: TiltTransform, raw_angle_deg: float) -> float:
    """Angle in the aligned image of the direction at ``raw_angle_deg`` in the raw image, in [−90, 90).

    The direction ``(cos φ, sin φ)`` maps to ``A·(cos φ, sin φ)`` (``A`` the linear part of the raw → aligned
    transform); for a rotation by ``β`` this is ``φ + β``. The astigmatism angle is defined modulo 180°.
    """
    phi = math.radians(raw_angle_deg)
    x = transform.a11 * math.cos(phi) + transform.a12 * math.sin(phi)
    y = transform.a21 * math.cos(phi) + transform.a22 * math.sin(phi)
    angle = math.degrees(math.atan2(y, x))
    return (angle + 90.0) % 180.0 - 90.0


def _validate(params: CtfCorrectParams, inputs: Inputs) -> list[str]:
    return device_problems(params.device)


def _read_rows(path: Path) -> list[dict[str, str]]:
    rows = path.read_text(encoding="utf-8").splitlines()
    if not rows or rows[0].strip() != CORRECTION_HEADER:
        raise ValueError(f"{path}: not a CTF-correction table (expected the header {CORRECTION_HEADER})")
    names = CORRECTION_HEADER.split(",")
    return [dict(zip(names, row.split(","), strict=True)) for row in rows[1:] if row.strip()]


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    from tomoforge.steps._artifacts import read_tilt_series

    folder = outputs["tilt_series"].path
    result: dict[str, object] = {}
    for series in read_tilt_series(folder):
        rows = _read_rows(folder / f"{series.ts_id}_ctf_correction.csv")
        done = [r for r in rows if r["status"] == "corrected"]
        strips = [int(r["strips"]) for r in done]
        result[series.ts_id] = {
            "views_corrected": len(done),
            "views_excluded": len(rows) - len(done),
            "excluded_acquisition_orders": [
                int(r["acquisition_order"]) for r in rows if r["status"] != "corrected"
            ],
            "strips_per_view_min": min(strips),
            "strips_per_view_max": max(strips),
            "pixel_size_angstrom": series.pixel_size_angstrom,
            "image_shape_yx": list(series.image_shape_yx or ()),
        }
    return result


def _methods(params: CtfCorrectParams) -> str:
    how = (
        "phase flipping"
        if params.mode == "flip"
        else f"Wiener filtering (constant SNR {params.wiener_snr:g})"
    )
    binning = f", binned by {params.binning}," if params.binning > 1 else ""
    return (
        f"The tilt series were interpolated through their alignment transforms{binning} and corrected for the "
        f"contrast transfer function by {how} in strips parallel to the tilt axis, each with the defocus of its "
        "centre from the tilt geometry, as IMOD ctfphaseflip does (Xiong et al., 2009, J. Struct. Biol. 168, "
        f"378-387, doi:10.1016/j.jsb.2009.08.016), with a defocus tolerance of {params.defocus_tolerance_nm:g} nm "
        f"and an interpolation width of {params.interpolation_width_px} pixels; excluded views were left out."
    )


def _present_tilts(series: TiltSeries) -> list[TiltImage]:
    """The views to correct, with a clear error for included views lacking a transform or a CTF."""
    if series.aligned:
        raise ValueError(
            f"{series.stack_file}: the stack of {series.ts_id} is already aligned; ctf.correct interpolates raw "
            "stacks through their transforms (give it the output of alignment.assign or ctf.estimate)"
        )
    present = series.included()
    if not present:
        raise ValueError(f"{series.stack_file}: every view of {series.ts_id} is excluded, nothing to correct")
    unaligned = [t.index for t in present if t.transform is None]
    if unaligned:
        raise ValueError(
            f"{series.stack_file}: views {unaligned} of {series.ts_id} are included but have no alignment "
            "transform; align the series (or exclude those views) first"
        )
    no_ctf = [t.index for t in present if t.ctf is None]
    if no_ctf:
        raise ValueError(
            f"{series.stack_file}: views {no_ctf} of {series.ts_id} are included but have no CTF parameters; "
            "estimate the CTF (or exclude those views) first"
        )
    return present


class _ViewCorrector:
    """The present views of one series, their aligned geometry and the CTF correction of each."""

    def __init__(self, series: TiltSeries, params: CtfCorrectParams) -> None:
        from tomoforge.steps._alignment_io import AlignedViews

        self.series, self.params = series, params
        self.present = _present_tilts(series)
        raw_shape = series.image_shape_yx or _stack_shape(series.stack_file)
        self.views = AlignedViews(series, params.binning, raw_shape, self.present)
        self.shape_yx = self.views.shape_yx
        self.pixel_size_angstrom = self.views.pixel_size_angstrom

    def ctf_options(self, tilt: TiltImage) -> dict[str, float | int | str]:
        """Keyword arguments of :func:`phase_flip_tilted` for one view."""
        assert tilt.ctf is not None and tilt.transform is not None
        acquisition, ctf, p = self.series.acquisition, tilt.ctf, self.params
        return {
            "defocus_u_angstrom": ctf.defocus_u_angstrom,
            "defocus_v_angstrom": ctf.defocus_v_angstrom,
            "astigmatism_angle_deg": aligned_astigmatism_angle_deg(tilt.transform, ctf.astigmatism_angle_deg),
            "phase_shift_deg": ctf.phase_shift_deg,
            "tilt_angle_deg": tilt.effective_tilt_angle_deg,
            "x_tilt_angle_deg": tilt.x_tilt_angle_deg,
            "handedness": self.series.defocus_handedness or 1,
            "pixel_size_angstrom": self.pixel_size_angstrom,
            "voltage_kv": acquisition.voltage_kv,
            "spherical_aberration_mm": acquisition.spherical_aberration_mm,
            "amplitude_contrast": acquisition.amplitude_contrast,
            "defocus_tolerance_angstrom": 10.0 * p.defocus_tolerance_nm,
            "interpolation_width_px": p.interpolation_width_px,
            "mode": p.mode,
            "wiener_snr": p.wiener_snr,
        }

    def correct(self, aligned: torch.Tensor, tilt: TiltImage) -> torch.Tensor:
        """Correct the aligned image of view ``tilt`` for its CTF."""
        from tomoforge.ctf.correct import phase_flip_tilted

        return phase_flip_tilted(aligned, **self.ctf_options(tilt))  # type: ignore[arg-type]


def _stack_shape(path: Path) -> tuple[int, int]:
    from tomoforge.io.mrc import read_mrc

    data = read_mrc(path).data
    return int(data.shape[-2]), int(data.shape[-1])


def _table(series: TiltSeries, corrector: _ViewCorrector) -> str:
    from tomoforge.ctf.correct import strip_layout

    output_index = {t.index: k for k, t in enumerate(corrector.present)}
    lines = [CORRECTION_HEADER]
    for tilt in series.tilts:
        k = output_index.get(tilt.index)
        head = f"{tilt.index},{-1 if k is None else k},{tilt.acquisition_order},{tilt.effective_tilt_angle_deg!r}"
        if k is None:
            lines.append(f"{head},excluded,,,,,,")
            continue
        options = corrector.ctf_options(tilt)
        layout = strip_layout(
            corrector.shape_yx[1],
            tilt_angle_deg=float(options["tilt_angle_deg"]),
            pixel_size_angstrom=corrector.pixel_size_angstrom,
            x_tilt_angle_deg=float(options["x_tilt_angle_deg"]),
            defocus_tolerance_angstrom=float(options["defocus_tolerance_angstrom"]),
            interpolation_width_px=int(options["interpolation_width_px"]),
        )
        lines.append(
            f"{head},corrected,{float(options['defocus_u_angstrom'])!r},{float(options['defocus_v_angstrom'])!r},"
            f"{float(options['astigmatism_angle_deg']):.4f},{layout.n_strips},{min(layout.widths_px)},"
            f"{max(layout.widths_px)}"
        )
    return "\n".join(lines) + "\n"


def _carry_sidecars(source: Path, out: Path, series: TiltSeries, present: list[TiltImage]) -> None:
    import shutil

    from tomoforge.steps._artifacts import subset_dose_filter_record

    motion = source / f"{series.ts_id}_motion.csv"
    if motion.is_file():
        shutil.copyfile(motion, out / motion.name)
    subset_dose_filter_record(source, out, series.ts_id, [t.index for t in present])


@step(
    name="ctf.correct",
    version="1",
    inputs={
        "tilt_series": InputSpec(
            kind="tilt_series",
            description="Raw (not yet interpolated) tilt series whose views carry transforms and CTF parameters.",
        )
    },
    outputs={"tilt_series": "tilt_series"},
    validate=_validate,
    summary=_summary,
    methods=_methods,
)
def ctf_correct(params: CtfCorrectParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Interpolate the present views through their alignment and correct them for the CTF (IMOD ctfphaseflip)."""

    from tomoforge.io.imod.tlt import write_tlt
    from tomoforge.models import TiltSeries
    from tomoforge.steps._alignment_io import write_aligned_stack
    from tomoforge.steps._artifacts import read_tilt_series, write_tilt_series

    device = resolve_device(params.device)
    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    for series in read_tilt_series(source):
        corrector = _ViewCorrector(series, params)
        present = corrector.present
        stacks = {"stack_file": (series.stack_file, out / f"{series.ts_id}.mrc")}
        if params.even_odd and series.even_stack_file is not None and series.odd_stack_file is not None:
            stacks["even_stack_file"] = (series.even_stack_file, out / f"{series.ts_id}_even.mrc")
            stacks["odd_stack_file"] = (series.odd_stack_file, out / f"{series.ts_id}_odd.mrc")
        progress = ctx.progress(len(stacks) * len(present), f"{series.ts_id}: CTF correction")
        written: dict[str, Path | None] = {"even_stack_file": None, "odd_stack_file": None}
        for field, (input_stack, output_stack) in stacks.items():
            written[field] = write_aligned_stack(
                out,
                series,
                params.binning,
                tilts=present,
                stack=input_stack,
                path=output_stack,
                process=corrector.correct,
                device=device,
                progress=progress,
            )
        progress.close()
        corrected = series.model_copy(
            update={
                **written,
                "tilts": [t.model_copy(update={"index": k}) for k, t in enumerate(present)],
                "pixel_size_angstrom": corrector.pixel_size_angstrom,
                "image_shape_yx": corrector.shape_yx,
                "aligned": True,
            }
        )
        write_tilt_series(out, TiltSeries.model_validate(corrected.model_dump()))
        (out / f"{series.ts_id}_ctf_correction.csv").write_text(_table(series, corrector), encoding="utf-8")
        write_tlt([t.effective_tilt_angle_deg for t in present], out / f"{series.ts_id}.tlt")
        _carry_sidecars(source, out, series, present)
        ctx.logger.info(
            "%s: %d views CTF-corrected (%s), %d excluded, %s px at %.3f Å",
            series.ts_id,
            len(present),
            params.mode,
            series.n_tilts - len(present),
            corrector.shape_yx,
            corrector.pixel_size_angstrom,
        )
    return {"tilt_series": out}
