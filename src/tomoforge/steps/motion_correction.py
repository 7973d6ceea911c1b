"""Step ``motion.correct``: whole-frame and optional local (patch) motion correction of tilt movies → ``tilt_series``.

Input ``movies`` (kind ``tilt_series_movies``), optional input ``gain`` (kind ``gain_reference``, an MRC image
the frames are multiplied by after MotionCor2's ``-RotGain``/``-FlipGain`` transform, see
:func:`tomoforge.io.movies.apply_gain`).

Output ``tilt_series`` (kind ``tilt_series``, layout in :mod:`tomoforge.steps._artifacts`): per tilt series the
motion-corrected stack ``<ts>.mrc`` sorted by tilt angle, ``<ts>.json``, the per-frame shifts ``<ts>_motion.csv``
(Å, specimen displacement relative to the first aligned frame, in the movie's grid), a picture of those
trajectories ``<ts>_motion.png`` (one panel per tilt in stack order, left to right and top to bottom, all at the
scale of the largest shift; green first frame, red last), with patches the local
model per tilt ``<ts>_local_motion.json``, and with ``even_odd`` the half sums ``<ts>_even.mrc`` /
``<ts>_odd.mrc`` (of the even and odd frames of the summed range). Acquisition order and doses are copied from the
movies.

Local motion (``patches_x`` × ``patches_y`` > 1, MotionCor2 ``-Patch``) is fitted only where it is supported by the
data: :func:`tomoforge.motion.estimate_local_motion` chooses the model by leave-one-patch-out cross-validation and
falls back to the whole-frame correction for a tilt whose patches do not show local motion above their noise.

One movie is read at a time (memory is bounded by one tilt's frames); the stack is written section by section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tomoforge.steps._device import device_problems, resolve_device
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["MotionCorrectionParams", "motion_correct"]


class MotionCorrectionParams(BaseModel):
    """Parameters of ``motion.correct`` (MotionCor2's global alignment)."""

    b_factor_angstrom2: float = Field(
        500.0, ge=0, description="B-factor in Å² of the alignment filter (MotionCor2 -Bft, global)."
    )
    binning: int = Field(
        2,
        ge=1,
        le=16,
        description="Fourier binning of the output (MotionCor2 -FtBin; 2 for super-resolution).",
    )
    first_frame: int = Field(
        0, ge=0, description="First frame to align and sum (0-based; MotionCor2 -Throw)."
    )
    last_frame: int | None = Field(
        None, ge=0, description="Last frame to align and sum (0-based, inclusive); None: the movie's last."
    )
    sum_first_frame: int | None = Field(
        None,
        ge=0,
        description="First frame to sum (0-based); None: first_frame. Must lie in the aligned range.",
    )
    sum_last_frame: int | None = Field(
        None, ge=0, description="Last frame to sum (0-based, inclusive); None: the last aligned frame."
    )
    patches_x: int = Field(
        1,
        ge=1,
        le=20,
        description="Patches along x for local motion (MotionCor2 -Patch); 1 × 1: global only.",
    )
    patches_y: int = Field(
        1, ge=1, le=20, description="Patches along y for local motion; 1 × 1: global only."
    )
    patch_overlap: float = Field(
        0.0,
        ge=0.0,
        lt=0.9,
        description="Fraction of a patch shared with its neighbour (-PatchOverlap / 100).",
    )
    patch_b_factor_angstrom2: float = Field(
        150.0, ge=0, description="B-factor in Å² of the patch alignment filter (MotionCor2 -Bft, local)."
    )
    local_min_cv_gain: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Fraction by which a local model must predict held-out patches better than no local motion.",
    )
    max_iterations: int = Field(10, ge=1, le=100, description="Most alignment passes (MotionCor2 -Iter).")
    tolerance_px: float = Field(
        0.01, gt=0, description="Stop when no shift changes by more than this, in movie pixels (-Tol)."
    )
    max_shift_px: float = Field(40.0, gt=0, description="Largest shift searched per pass, in movie pixels.")
    dose_weighting: bool = Field(
        False, description="Weight the frames by Grant & Grigorieff's exposure filter when summing."
    )
    even_odd: bool = Field(False, description="Also write the sums of the even and of the odd frames.")
    gain_rotation_deg: Literal[0, 90, 180, 270] = Field(
        0,
        description="Rotation of the gain reference in degrees, counter-clockwise (MotionCor2 -RotGain × 90).",
    )
    gain_flip: Literal["none", "x", "y"] = Field(
        "none",
        description="Flip of the gain after rotating: 'y' upside down (-FlipGain 1), 'x' left-right (2).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to compute: 'auto' uses the GPU when one is present."
    )


def _validate(params: MotionCorrectionParams, inputs: Inputs) -> list[str]:
    problems = []
    if params.last_frame is not None and params.last_frame < params.first_frame:
        problems.append(f"last_frame {params.last_frame} comes before first_frame {params.first_frame}.")
    if params.sum_first_frame is not None and params.sum_first_frame < params.first_frame:
        problems.append(
            f"sum_first_frame {params.sum_first_frame} lies before the aligned range (first_frame {params.first_frame})."
        )
    if (
        params.sum_last_frame is not None
        and params.last_frame is not None
        and params.sum_last_frame > params.last_frame
    ):
        problems.append(
            f"sum_last_frame {params.sum_last_frame} lies after the aligned range (last_frame {params.last_frame})."
        )
    if (
        params.sum_first_frame is not None
        and params.sum_last_frame is not None
        and params.sum_last_frame < params.sum_first_frame
    ):
        problems.append(
            f"sum_last_frame {params.sum_last_frame} comes before sum_first_frame {params.sum_first_frame}."
        )
    if params.patches_x * params.patches_y == 2:
        problems.append("local motion needs at least 3 patches (e.g. patches_x 2 and patches_y 2), not 2.")
    problems += device_problems(params.device)
    return problems


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    import numpy as np

    from tomoforge.steps._artifacts import read_local_motion_record, read_motion_table, read_tilt_series

    folder = outputs["tilt_series"].path
    result: dict[str, object] = {}
    for series in read_tilt_series(folder):
        table = read_motion_table(folder / f"{series.ts_id}_motion.csv")
        by_order = {t.acquisition_order: t for t in series.tilts}
        # Per tilt (stack order): largest displacement from the first frame, and path length, in Å.
        max_shift = {o: float(np.linalg.norm(s, axis=1).max()) for o, (_, s) in table.items()}
        path = {o: float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum()) for o, (_, s) in table.items()}
        orders = [t.acquisition_order for t in series.tilts]
        result[series.ts_id] = {
            "tilts": series.n_tilts,
            "pixel_size_angstrom": series.pixel_size_angstrom,
            "image_shape_yx": list(series.image_shape_yx or ()),
            "tilt_angle_deg": [by_order[o].tilt_angle_deg for o in orders],
            "max_shift_angstrom": [round(max_shift[o], 3) for o in orders],
            "path_length_angstrom": [round(path[o], 3) for o in orders],
            "mean_max_shift_angstrom": round(float(np.mean(list(max_shift.values()))), 3),
            "largest_shift_angstrom": round(max(max_shift.values()), 3),
            "trajectory_plot": f"{series.ts_id}_motion.png",
        }
        local = read_local_motion_record(folder, series.ts_id)
        if local is not None:
            by_tilt = {t.acquisition_order: t for t in local.tilts}
            summary = result[series.ts_id]
            assert isinstance(summary, dict)
            summary["local_motion_patches_xy"] = list(local.patches_xy)
            summary["local_model_used"] = [by_tilt[o].significant for o in orders]
            summary["local_rms_angstrom"] = [round(by_tilt[o].rms_local_angstrom, 3) for o in orders]
            summary["tilts_with_local_model"] = sum(t.significant for t in local.tilts)
    return result


def _methods(params: MotionCorrectionParams) -> str:
    text = (
        "Beam-induced motion was corrected by whole-frame alignment of the movie frames against the sum of the "
        f"other frames (MotionCor2 scheme; Zheng et al., 2017, doi:10.1038/nmeth.4193) with a B-factor of "
        f"{params.b_factor_angstrom2:g} Å², and the aligned frames were summed with Fourier binning {params.binning}"
    )
    if params.dose_weighting:
        text += " and exposure weighting (Grant & Grigorieff, 2015, doi:10.7554/eLife.06980)"
    text += "."
    if params.patches_x * params.patches_y > 2:
        text += (
            f" Local motion was measured on {params.patches_x} × {params.patches_y} patches (B-factor "
            f"{params.patch_b_factor_angstrom2:g} Å²) and modelled by MotionCor2's polynomial in space and time, "
            "the model terms chosen by leave-one-patch-out cross-validation; tilts whose patches did not predict "
            "each other better than no local motion kept the whole-frame correction."
        )
    return text


def _load_gain(path: Path) -> Any:
    from tomoforge.io.mrc import read_mrc

    volume = read_mrc(path)
    data = volume.data
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(f"{path}: a gain reference must be one image, not data of shape {data.shape}")
    return data.astype("float32")


def _write_motion_plot(path: Path, tilts: list[Any], shifts_angstrom: list[Any]) -> None:
    """``<ts>_motion.png``: one panel per tilt in stack (tilt-angle) order, the frame trajectory at one scale."""
    import numpy as np

    from tomoforge.io.png import write_png
    from tomoforge.steps._plots import panel_grid

    order = np.argsort([t.index for t in tilts])
    write_png(panel_grid([shifts_angstrom[i] for i in order], columns=10), path)


def _local_record(acquisition_order: int, local: Any, pixel_angstrom: float) -> Any:
    """The :class:`LocalMotionTilt` entry of one tilt's :class:`tomoforge.motion.LocalMotion`, lengths in Å."""
    from tomoforge.steps._artifacts import LocalMotionTilt

    centres = local.centres_xy_px
    model = local.local_shifts_at(centres[:, 0], centres[:, 1])  # (p, n, 2) px
    return LocalMotionTilt(
        acquisition_order=acquisition_order,
        significant=local.significant,
        spatial_terms=[tuple(e) for e in local.spatial_exponents],
        time_degree=int(local.coefficients.shape[1]),
        cv_error_angstrom2=local.cv_error_px2 * pixel_angstrom**2,
        null_cv_error_angstrom2=local.null_cv_error_px2 * pixel_angstrom**2,
        rms_local_angstrom=float(model.square().sum(-1).mean().sqrt()) * pixel_angstrom,
        patch_centres_xy_px=centres.tolist(),
        patch_inliers=local.inliers.tolist(),
        patch_shifts_xy_angstrom=(local.patch_shifts_xy_px * pixel_angstrom).tolist(),
        coefficients_angstrom=(local.coefficients * pixel_angstrom).tolist(),
    )


@step(
    name="motion.correct",
    version="2",
    inputs={
        "movies": InputSpec(kind="tilt_series_movies", description="The imported tilt-series movies."),
        "gain": InputSpec(
            kind="gain_reference",
            optional=True,
            description="Gain reference (MRC image) the frames are multiplied by.",
        ),
    },
    outputs={"tilt_series": "tilt_series"},
    validate=_validate,
    summary=_summary,
    methods=_methods,
)
def motion_correct(params: MotionCorrectionParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Align the frames of every tilt movie (global motion) and sum them into a tilt-series stack."""
    import numpy as np
    import torch

    from tomoforge.fourier import fftfreq_grid, frame_dose_weights
    from tomoforge.io.errors import FormatError
    from tomoforge.io.movies import apply_gain, open_movie
    from tomoforge.io.mrc import MrcWriter
    from tomoforge.models import TiltSeries
    from tomoforge.motion import (
        aligned_shape,
        apply_local_motion,
        apply_motion,
        estimate_global_motion,
        estimate_local_motion,
    )
    from tomoforge.steps._artifacts import (
        LocalMotionRecord,
        read_tilt_series_movies,
        write_local_motion_record,
        write_motion_table,
        write_tilt_series,
    )

    device = resolve_device(params.device)
    gain = _load_gain(inputs.path("gain")) if "gain" in inputs else None
    flip = None if params.gain_flip == "none" else params.gain_flip
    use_patches = params.patches_x * params.patches_y > 1
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    all_series = read_tilt_series_movies(inputs.path("movies"))
    for movies in all_series:
        ts = movies.ts_id
        pixel = movies.acquisition.pixel_size_angstrom
        voltage = movies.acquisition.voltage_kv
        with open_movie(movies.tilts[0].frames_file) as first:
            frame_shape = first.shape[1:]
        shape = aligned_shape((int(frame_shape[0]), int(frame_shape[1])), params.binning)
        frequency = fftfreq_grid(shape, spacing_angstrom=pixel * params.binning, device=device).norm(dim=-1)
        n_tilts = movies.n_tilts
        names = {"": f"{ts}.mrc"}
        if params.even_odd:
            names.update({"even": f"{ts}_even.mrc", "odd": f"{ts}_odd.mrc"})
        writers = {
            key: MrcWriter(
                out / name, (n_tilts, *shape), voxel_size_angstrom=pixel * params.binning, is_stack=True
            )
            for key, name in names.items()
        }
        frames_used, shifts_angstrom = [], []
        local_tilts: list[Any] = []
        try:
            progress = ctx.progress(n_tilts, f"{ts}: aligning tilt movies")
            for tilt in progress.wrap(movies.tilts):
                path = tilt.frames_file
                with open_movie(path) as movie:
                    if movie.shape[1:] != frame_shape:
                        raise FormatError(
                            path,
                            f"has frames of {movie.shape[1:]} px, unlike the {frame_shape} px of the first movie",
                        )
                    last = movie.n_frames - 1 if params.last_frame is None else params.last_frame
                    if last >= movie.n_frames or params.first_frame > last:
                        raise FormatError(
                            path,
                            f"has {movie.n_frames} frames, so frames {params.first_frame} to {last} do not exist",
                        )
                    try:
                        data = movie.read_frames(params.first_frame, last + 1)
                    except (OSError, ValueError) as exc:
                        raise FormatError(path, f"cannot be read ({exc})") from exc
                    n_movie = movie.n_frames
                if gain is not None:
                    try:
                        data = apply_gain(data, gain, params.gain_rotation_deg, flip)
                    except ValueError as exc:
                        raise ValueError(f"{inputs.path('gain')}: {exc}") from None
                if not np.isfinite(data).all():
                    raise FormatError(path, "holds NaN or infinite values")
                frames = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(device)
                del data
                shifts = estimate_global_motion(
                    frames,
                    pixel_size_angstrom=pixel,
                    b_factor_angstrom2=params.b_factor_angstrom2,
                    binning=params.binning,
                    max_iterations=params.max_iterations,
                    tolerance_px=params.tolerance_px,
                    max_shift_px=params.max_shift_px,
                )
                local = None
                if use_patches:
                    local = estimate_local_motion(
                        frames,
                        pixel_size_angstrom=pixel,
                        global_shifts_xy_px=shifts,
                        patches_xy=(params.patches_x, params.patches_y),
                        patch_overlap=params.patch_overlap,
                        b_factor_angstrom2=params.patch_b_factor_angstrom2,
                        max_iterations=params.max_iterations,
                        tolerance_px=params.tolerance_px,
                        min_cv_gain=params.local_min_cv_gain,
                    )
                    local_tilts.append(_local_record(tilt.acquisition_order, local, pixel))
                sum_first = params.first_frame if params.sum_first_frame is None else params.sum_first_frame
                sum_last = last if params.sum_last_frame is None else params.sum_last_frame
                if sum_last > last or sum_first > sum_last:
                    raise FormatError(
                        path,
                        f"has {n_movie} frames and frames {params.first_frame} to {last} were aligned, so frames "
                        f"{sum_first} to {sum_last} cannot be summed",
                    )
                summed = range(sum_first - params.first_frame, sum_last - params.first_frame + 1)
                weights = None
                if params.dose_weighting:
                    frame_dose = tilt.dose_e_per_angstrom2 / n_movie
                    weights = frame_dose_weights(
                        frequency,
                        n_frames=len(summed),
                        prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2 + sum_first * frame_dose,
                        dose_per_frame_e_per_angstrom2=frame_dose,
                        voltage_kv=voltage,
                    )
                parts = {"": slice(None)}
                if params.even_odd:
                    parts.update({"even": slice(0, None, 2), "odd": slice(1, None, 2)})
                sums = {}
                for key, part in parts.items():
                    chosen = summed[part]
                    view = slice(chosen.start, chosen.stop, chosen.step)  # a view, not a copy of the frames
                    sub_weights = None if weights is None else weights[part]
                    if local is None:
                        sums[key] = apply_motion(
                            frames[view], shifts[view], binning=params.binning, dose_weights=sub_weights
                        )
                    else:
                        sums[key] = apply_local_motion(
                            frames[view],
                            shifts,
                            local,
                            binning=params.binning,
                            dose_weights=sub_weights,
                            frame_indices=chosen,
                        )
                for key, image in sums.items():
                    writers[key].write(image.cpu().numpy(), tilt.index)
                frames_used.append(np.arange(params.first_frame, last + 1))
                shifts_angstrom.append(shifts.double().cpu().numpy() * pixel)
                ctx.logger.info(
                    "%s tilt %d (%.1f°): largest shift %.2f Å%s",
                    ts,
                    tilt.index,
                    tilt.tilt_angle_deg,
                    float(np.linalg.norm(shifts_angstrom[-1], axis=1).max()),
                    ""
                    if local is None
                    else f"; local model {'used' if local.significant else 'not significant'} "
                    f"(held-out error {local.cv_error_px2:.3g} vs {local.null_cv_error_px2:.3g} px²)",
                )
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        series = TiltSeries.from_movies(
            movies,
            stack_file=out / names[""],
            pixel_size_angstrom=pixel * params.binning,
            image_shape_yx=shape,
            even_stack_file=out / names["even"] if params.even_odd else None,
            odd_stack_file=out / names["odd"] if params.even_odd else None,
        )
        write_tilt_series(out, series)
        if use_patches:
            record = LocalMotionRecord(
                patches_xy=(params.patches_x, params.patches_y),
                patch_overlap=params.patch_overlap,
                frame_shape_yx=(int(frame_shape[0]), int(frame_shape[1])),
                frame_pixel_size_angstrom=pixel,
                tilts=local_tilts,
            )
            write_local_motion_record(out, ts, record)
        _write_motion_plot(out / f"{ts}_motion.png", movies.tilts, shifts_angstrom)
        write_motion_table(
            out / f"{ts}_motion.csv",
            [t.acquisition_order for t in movies.tilts],
            [t.tilt_angle_deg for t in movies.tilts],
            frames_used,
            shifts_angstrom,
        )
    return {"tilt_series": out}
