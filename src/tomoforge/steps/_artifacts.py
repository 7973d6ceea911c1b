"""Reading and writing the artifacts the preprocessing steps pass to each other.

Artifact kinds
--------------
``movies_folder``
    An external folder of SerialEM ``.mdoc`` files with their movies next to them (the input of
    ``import.movies``).
``tilt_series_movies``
    A folder with one ``<ts>.json`` per tilt series: the :class:`~tomoforge.models.TiltSeriesMovies` model dump
    (movie files by absolute path, as imported).
``tilt_series``
    A folder with, per tilt series:

    * ``<ts>.mrc``: the image stack, one image per tilt, sorted by tilt angle (stack index order);
    * ``<ts>.json``: the :class:`~tomoforge.models.TiltSeries` model; its stack paths are stored relative to the
      folder (the folder moves into the run folder after the step) and made absolute by :func:`read_tilt_series`;
    * optionally ``<ts>_even.mrc`` / ``<ts>_odd.mrc``: the stacks of the even (0, 2, …) and odd frames;
    * optionally ``<ts>_motion.csv`` (from ``motion.correct``): columns ``acquisition_order, tilt_angle_deg,
      frame, shift_x_angstrom, shift_y_angstrom``, the specimen displacement of each frame relative to the first
      aligned frame, in Å, in the grid of the movie (the simulator's ``truth/motion/<ts>.csv`` convention);
    * optionally ``<ts>_local_motion.json`` (from ``motion.correct`` with patches): per tilt, the patch
      trajectories and the cross-validated local motion model (see :class:`LocalMotionRecord`);
    * optionally ``<ts>_coarse.json`` (from ``alignment.coarse``: shifts and correlation peaks per view),
      ``<ts>_fiducials.json`` (the bead model, :class:`~tomoforge.models.LandmarkModel`) and ``<ts>_alignment.json``
      (the solved fiducial alignment and its residuals), with IMOD exports ``<ts>.xf``, ``<ts>.tlt``, ``<ts>.prexg``;
    * optionally ``<ts>_dose_filter.json`` (from ``dose.filter``): the series is dose filtered; the
      :class:`~tomoforge.models.TiltSeries` model has no field for that, so the flag, the filter settings and the
      original prior doses live in this sidecar (see :class:`DoseFilterRecord`).

Later steps copy the sidecars they do not change (:func:`copy_sidecars`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tomoforge.models import TiltSeries, TiltSeriesMovies, load_json, save_json

__all__ = [
    "DoseFilterRecord",
    "LocalMotionRecord",
    "LocalMotionTilt",
    "SIDECAR_SUFFIXES",
    "copy_sidecars",
    "link_or_copy",
    "pass_through",
    "map_stacks",
    "series_stacks",
    "subset_dose_filter_record",
    "read_dose_filter_record",
    "read_local_motion_record",
    "read_motion_table",
    "read_tilt_series",
    "read_tilt_series_movies",
    "write_dose_filter_record",
    "write_local_motion_record",
    "write_motion_table",
    "write_tilt_series",
    "write_tilt_series_movies",
]

SIDECAR_SUFFIXES = (
    "_motion.csv",
    "_local_motion.json",
    "_dose_filter.json",
    "_xrays.csv",
    "_coarse.json",
    "_fiducials.json",
    "_alignment.json",
    "_patch_tracking.json",
    "_exclusions.json",
    "_ctf.json",
)
"""File endings (after ``<ts>``) of the per-series sidecars a ``tilt_series`` folder may hold."""

MOTION_HEADER = "acquisition_order,tilt_angle_deg,frame,shift_x_angstrom,shift_y_angstrom"


def _json_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the {what} folder does not exist")
    files = sorted(p for p in folder.glob("*.json") if not p.name.endswith(SIDECAR_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"{folder}: the {what} folder holds no <ts>.json file")
    return files


def write_tilt_series_movies(folder: Path, series: Sequence[TiltSeriesMovies]) -> None:
    """Write one ``<ts>.json`` per tilt series into ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for movies in series:
        save_json(movies, folder / f"{movies.ts_id}.json")


def read_tilt_series_movies(folder: Path) -> list[TiltSeriesMovies]:
    """Read the ``<ts>.json`` files of a ``tilt_series_movies`` folder, sorted by file name."""
    return [load_json(TiltSeriesMovies, path) for path in _json_files(folder, "tilt-series movies")]


def _relative(path: Path | None, folder: Path) -> Path | None:
    if path is None:
        return None
    return Path(os.path.relpath(path, folder)) if path.is_absolute() else path


def _absolute(path: Path | None, folder: Path) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else folder / path


def write_tilt_series(folder: Path, series: TiltSeries) -> Path:
    """Write ``<ts>.json`` with its stack paths made relative to ``folder``; return the JSON path."""
    stored = series.model_copy(
        update={
            "stack_file": _relative(series.stack_file, folder),
            "even_stack_file": _relative(series.even_stack_file, folder),
            "odd_stack_file": _relative(series.odd_stack_file, folder),
        }
    )
    return save_json(stored, folder / f"{series.ts_id}.json")


def read_tilt_series(folder: Path) -> list[TiltSeries]:
    """Read the ``<ts>.json`` files of a ``tilt_series`` folder with their stack paths made absolute.

    Raises
    ------
    FileNotFoundError
        When the folder, its JSON files or a stack they name is missing (the message names the file).
    """
    result = []
    for path in _json_files(folder, "tilt-series"):
        series = load_json(TiltSeries, path)
        series = series.model_copy(
            update={
                "stack_file": _absolute(series.stack_file, folder),
                "even_stack_file": _absolute(series.even_stack_file, folder),
                "odd_stack_file": _absolute(series.odd_stack_file, folder),
            }
        )
        if not series.stack_file.is_file():
            raise FileNotFoundError(f"{series.stack_file}: the stack named by {path.name} is missing")
        result.append(series)
    return result


def write_motion_table(
    path: Path,
    acquisition_order: Sequence[int],
    tilt_angle_deg: Sequence[float],
    frames: Sequence[np.ndarray],
    shifts_xy_angstrom: Sequence[np.ndarray],
) -> None:
    """Write ``<ts>_motion.csv``: per tilt, the frame indices ``(n,)`` and their shifts ``(n, 2)`` in Å."""
    lines = [MOTION_HEADER]
    for order, angle, frame, shift in zip(
        acquisition_order, tilt_angle_deg, frames, shifts_xy_angstrom, strict=True
    ):
        for f, (sx, sy) in zip(frame, np.asarray(shift, dtype=np.float64), strict=True):
            lines.append(f"{int(order)},{float(angle)!r},{int(f)},{float(sx)!r},{float(sy)!r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_motion_table(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Read ``<ts>_motion.csv`` into ``{acquisition order: (frames (n,), shifts (n, 2) in Å)}``."""
    rows = path.read_text(encoding="utf-8").splitlines()
    if not rows or rows[0].strip() != MOTION_HEADER:
        raise ValueError(f"{path}: not a motion table (expected the header {MOTION_HEADER})")
    table: dict[int, list[tuple[int, float, float]]] = {}
    for row in rows[1:]:
        order, _, frame, sx, sy = row.split(",")
        table.setdefault(int(order), []).append((int(frame), float(sx), float(sy)))
    return {
        order: (np.array([r[0] for r in values]), np.array([[r[1], r[2]] for r in values]))
        for order, values in table.items()
    }


class LocalMotionTilt(BaseModel):
    """Local (patch) motion of one tilt movie, as ``motion.correct`` measured and modelled it."""

    acquisition_order: int = Field(description="Acquisition order of the tilt (1-based, as in the movies).")
    significant: bool = Field(
        description="A local model beat zero local motion in leave-one-patch-out cross-validation and was applied."
    )
    spatial_terms: list[tuple[int, int]] = Field(description="Exponents (a, b) of the model's terms x^a y^b.")
    time_degree: int = Field(description="Highest power of time t = frame / (n − 1) in the model.")
    cv_error_angstrom2: float = Field(
        description="Held-out patch prediction error of the model (Å², mean square)."
    )
    null_cv_error_angstrom2: float = Field(description="The same for zero local motion (Å², mean square).")
    rms_local_angstrom: float = Field(
        description="RMS local displacement the model applies, over patches and frames (Å)."
    )
    patch_centres_xy_px: list[tuple[float, float]] = Field(
        description="Patch centres (x, y) in movie pixels."
    )
    patch_inliers: list[bool] = Field(
        description="Whether each patch was used (False: rejected as an outlier)."
    )
    patch_shifts_xy_angstrom: list[list[tuple[float, float]]] = Field(
        description="Measured residual displacement of each patch (after global correction), per frame, in Å."
    )
    coefficients_angstrom: list[list[tuple[float, float]]] = Field(
        description="Model coefficients [term][time power] = (x, y) in Å (see tomoforge.motion.LocalMotion)."
    )


class LocalMotionRecord(BaseModel):
    """Contents of ``<ts>_local_motion.json``."""

    patches_xy: tuple[int, int] = Field(description="Patch grid along x and y.")
    patch_overlap: float = Field(description="Fraction of a patch shared with its neighbour.")
    frame_shape_yx: tuple[int, int] = Field(description="Shape of the movie frames the positions refer to.")
    frame_pixel_size_angstrom: float = Field(description="Pixel size of the movie frames in Å.")
    tilts: list[LocalMotionTilt] = Field(description="One entry per tilt, in stack order.")


def write_local_motion_record(folder: Path, ts_id: str, record: LocalMotionRecord) -> None:
    """Write ``<ts>_local_motion.json``."""
    save_json(record, folder / f"{ts_id}_local_motion.json")


def read_local_motion_record(folder: Path, ts_id: str) -> LocalMotionRecord | None:
    """Read ``<ts>_local_motion.json``, or None when no local motion was estimated."""
    path = folder / f"{ts_id}_local_motion.json"
    if not path.is_file():
        return None
    return LocalMotionRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))


class DoseFilterRecord(BaseModel):
    """Contents of ``<ts>_dose_filter.json``: the series was exposure filtered, and with what."""

    dose_filtered: bool = Field(True, description="The images were exposure (dose) filtered.")
    mode: str = Field(
        description="Exposure the filter was evaluated at: 'mean', 'start' or 'end' of each tilt."
    )
    voltage_kv: float = Field(description="Voltage in kV used for the critical exposures.")
    initial_dose_e_per_angstrom2: float = Field(description="Dose in e⁻/Å² added to every prior dose.")
    prior_dose_e_per_angstrom2: list[float] = Field(
        description="Original prior dose of each tilt in e⁻/Å², stack order (the series now holds 0)."
    )
    dose_e_per_angstrom2: list[float] = Field(description="Own dose of each tilt in e⁻/Å², stack order.")


def write_dose_filter_record(folder: Path, ts_id: str, record: DoseFilterRecord) -> None:
    """Write ``<ts>_dose_filter.json``."""
    save_json(record, folder / f"{ts_id}_dose_filter.json")


def subset_dose_filter_record(source: Path, out: Path, ts_id: str, keep: Sequence[int]) -> None:
    """Copy ``<ts>_dose_filter.json`` from ``source`` to ``out`` for the stack images ``keep`` only (in that order),
    for steps that drop views from the stack; nothing when the series was not dose filtered."""
    record = read_dose_filter_record(source, ts_id)
    if record is None:
        return
    write_dose_filter_record(
        out,
        ts_id,
        record.model_copy(
            update={
                "prior_dose_e_per_angstrom2": [record.prior_dose_e_per_angstrom2[i] for i in keep],
                "dose_e_per_angstrom2": [record.dose_e_per_angstrom2[i] for i in keep],
            }
        ),
    )


def read_dose_filter_record(folder: Path, ts_id: str) -> DoseFilterRecord | None:
    """Read ``<ts>_dose_filter.json``, or None when the series was not dose filtered."""
    path = folder / f"{ts_id}_dose_filter.json"
    if not path.is_file():
        return None
    return DoseFilterRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))


def copy_sidecars(source: Path, target: Path, ts_id: str, *, skip: Sequence[str] = ()) -> None:
    """Copy the sidecars of ``ts_id`` (see :data:`SIDECAR_SUFFIXES`) from ``source`` to ``target``."""
    for suffix in SIDECAR_SUFFIXES:
        path = source / f"{ts_id}{suffix}"
        if suffix not in skip and path.is_file():
            shutil.copyfile(path, target / path.name)


def link_or_copy(source: Path, target: Path) -> Path:
    """Make ``target`` hold the contents of ``source``: a hard link when possible (no copy), else a copy.

    Steps that pass a stack through unchanged use it, so that the output folder is self-contained (it can be
    moved) without duplicating gigabytes. Run folders are never modified after their run, so sharing is safe.
    """
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def pass_through(
    source: Path,
    out: Path,
    series: TiltSeries,
    *,
    update: dict[str, object] | None = None,
    skip: Sequence[str] = (),
) -> TiltSeries:
    """Write ``series`` into ``out`` with its stacks unchanged: the steps that only add metadata use it.

    The stacks are hard-linked (:func:`link_or_copy`), the model is written with the fields in ``update`` changed,
    and the sidecars of ``source`` are copied except those in ``skip``. Returns the series as written (stack
    paths in ``out``).
    """
    links = {field: link_or_copy(path, out / path.name) for field, path in series_stacks(series).items()}
    written = series.model_copy(update={**(update or {}), **links})
    write_tilt_series(out, written)
    copy_sidecars(source, out, series.ts_id, skip=skip)
    return written


def series_stacks(series: TiltSeries) -> dict[str, Path]:
    """The stacks of a tilt series by model field: the full stack, plus the even/odd halves when both exist."""
    stacks = {"stack_file": series.stack_file}
    if series.even_stack_file is not None and series.odd_stack_file is not None:
        stacks.update(even_stack_file=series.even_stack_file, odd_stack_file=series.odd_stack_file)
    return stacks


def map_stacks(
    series: TiltSeries,
    out: Path,
    transform: Callable[[str, int, np.ndarray], np.ndarray] | None,
    *,
    progress: Callable[[], object],
    out_shape_yx: tuple[int, int] | None = None,
    pixel_size_angstrom: float | None = None,
    indices: Sequence[int] | None = None,
) -> dict[str, Path]:
    """Write every stack of ``series`` into ``out`` image by image, through ``transform``.

    Parameters
    ----------
    series
        The input tilt series; each of its stacks (:func:`series_stacks`) is read lazily and must hold one image
        per tilt.
    out
        The output folder; each stack keeps its file name.
    transform
        ``transform(field, tilt_index, image (h, w) float32) -> image (h', w')``; called for the full stack first,
        then for the even and odd halves, so a step can reuse what it found on the full stack. None copies the
        images unchanged, in the input's data mode and with its origin.
    progress
        Called once per image written.
    out_shape_yx, pixel_size_angstrom
        Shape and pixel size of the output images (default: those of the input).
    indices
        Stack indices of the images to write, in output order (default: all); e.g. the views kept by a re-stack.

    Returns
    -------
    dict
        The written stack paths by model field, ready for ``series.model_copy(update=...)``.
    """
    from tomoforge.io.mrc import MrcWriter, read_mrc

    order = list(range(series.n_tilts)) if indices is None else list(indices)
    written: dict[str, Path] = {}
    for field, path in series_stacks(series).items():
        volume = read_mrc(path)
        data = volume.data if volume.data.ndim == 3 else volume.data[np.newaxis]
        if data.shape[0] != series.n_tilts:
            raise ValueError(f"{path}: holds {data.shape[0]} images for a series of {series.n_tilts} tilts")
        shape = out_shape_yx if out_shape_yx is not None else (int(data.shape[1]), int(data.shape[2]))
        pixel = pixel_size_angstrom if pixel_size_angstrom is not None else series.pixel_size_angstrom
        options: dict[str, Any] = {}
        if transform is None:
            options = {
                "mode": 1 if data.dtype == np.uint8 else volume.mode,
                "origin_angstrom": volume.origin_angstrom,
            }
        target = out / path.name
        with MrcWriter(
            target, (len(order), *shape), voxel_size_angstrom=pixel, is_stack=True, **options
        ) as writer:
            for k, i in enumerate(order):
                if transform is None:
                    writer.write(np.asarray(data[i]), k)
                else:
                    image = transform(field, i, np.array(data[i], dtype=np.float32))
                    writer.write(np.asarray(image, dtype=np.float32), k)
                progress()
        written[field] = target
    return written
