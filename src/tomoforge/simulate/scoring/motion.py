"""Motion-correction error: estimated per-frame shifts against the true beam-induced motion.

Both tracks are the specimen displacement of each frame relative to frame 0 (CONVENTIONS.md §8). A constant
offset per tilt (e.g. a different reference frame, MotionCor2's ``-FmRef``) carries no information about the
motion, so the mean difference of each tilt is removed before the error is measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from tomoforge.io import FormatError
from tomoforge.simulate.scoring._common import NotProvided, Scored, read_csv_columns

__all__ = [
    "MOTION_COLUMNS",
    "MotionErrors",
    "MotionScore",
    "MotionTiltScore",
    "MotionTrack",
    "motion_errors",
    "read_motion_csv",
    "score_motion",
]

MOTION_COLUMNS = ("acquisition_order", "tilt_angle_deg", "frame", "shift_x_angstrom", "shift_y_angstrom")
"""Columns of an export-layout ``motion/<ts>.csv``."""


class MotionErrors(NamedTuple):
    """Result of :func:`motion_errors` (units of the input shifts)."""

    per_tilt_rms: torch.Tensor
    """``(...)`` RMS length of the error vectors of each tilt, after removing its mean."""
    overall_rms: torch.Tensor
    """``()`` RMS over all tilts and frames."""
    offsets_xy: torch.Tensor
    """``(..., 2)`` removed mean difference (estimate − truth) of each tilt."""


def motion_errors(true_shifts_xy: torch.Tensor, estimated_shifts_xy: torch.Tensor) -> MotionErrors:
    """RMS error of per-frame shifts after removing each tilt's constant offset.

    Parameters
    ----------
    true_shifts_xy, estimated_shifts_xy
        ``(..., n_frames, 2)`` shifts ``(x, y)`` of each frame, any length unit (Å or pixels).

    Returns
    -------
    MotionErrors
        Per tilt (leading dims) and overall RMS of ``|e(t) − mean_t e|`` with ``e = estimate − truth``.
    """
    true_shifts, est = torch.broadcast_tensors(true_shifts_xy, estimated_shifts_xy)
    error = est - true_shifts
    offsets = error.mean(dim=-2)
    centred = error - offsets.unsqueeze(-2)
    squared = centred.square().sum(dim=-1)
    return MotionErrors(
        per_tilt_rms=squared.mean(dim=-1).sqrt(), overall_rms=squared.mean().sqrt(), offsets_xy=offsets
    )


class MotionTrack(NamedTuple):
    """One tilt's motion track read from a motion CSV."""

    tilt_angle_deg: float
    frames: np.ndarray
    """``(n,)`` frame indices, ascending."""
    shifts_xy_angstrom: np.ndarray
    """``(n, 2)`` displacement of each frame relative to frame 0, Å."""


def read_motion_csv(path: str | Path) -> dict[int, MotionTrack]:
    """Read an export-layout motion table (one row per tilt and frame).

    Parameters
    ----------
    path
        ``motion/<ts>.csv`` with the columns :data:`MOTION_COLUMNS`.

    Returns
    -------
    dict
        Acquisition order → :class:`MotionTrack`.

    Raises
    ------
    FormatError
        When a column is missing, a value is not a number, or a frame appears twice in a tilt.
    """
    p = Path(path)
    table = read_csv_columns(p, MOTION_COLUMNS)
    tracks: dict[int, MotionTrack] = {}
    orders = table["acquisition_order"].astype(np.int64)
    for order in np.unique(orders):
        rows = np.flatnonzero(orders == order)
        frames = table["frame"][rows].astype(np.int64)
        if len(np.unique(frames)) != len(frames):
            raise FormatError(p, f"lists a frame twice for acquisition order {int(order)}")
        sort = np.argsort(frames)
        shifts = np.stack([table["shift_x_angstrom"][rows], table["shift_y_angstrom"][rows]], axis=-1)
        tracks[int(order)] = MotionTrack(
            tilt_angle_deg=float(table["tilt_angle_deg"][rows[0]]),
            frames=frames[sort],
            shifts_xy_angstrom=shifts[sort],
        )
    if not tracks:
        raise FormatError(p, "holds no motion rows")
    return tracks


class MotionTiltScore(Scored):
    """Motion error of one tilt."""

    acquisition_order: int = Field(description="0-based acquisition order of the tilt.")
    tilt_angle_deg: float = Field(description="True tilt angle in degrees.")
    n_frames: int = Field(description="Frames compared.")
    rms_angstrom: float = Field(description="RMS error of the frame shifts after removing the mean, Å.")
    rms_movie_px: float | None = Field(
        description="The same in movie pixels (None if the pixel size is unknown)."
    )


class MotionScore(Scored):
    """Motion error of one tilt series."""

    n_tilts_truth: int = Field(description="Tilts in the truth.")
    n_tilts_matched: int = Field(description="Tilts present in both (by acquisition order).")
    movie_pixel_size_angstrom: float | None = Field(description="Movie pixel size used for pixel numbers.")
    rms_angstrom: float = Field(description="RMS error over all matched tilts and frames, Å.")
    rms_movie_px: float | None = Field(description="The same in movie pixels.")
    max_tilt_rms_angstrom: float = Field(description="Worst tilt's RMS error, Å.")
    tilts: list[MotionTiltScore] = Field(description="Per tilt, in acquisition order.")


def score_motion(
    truth_path: str | Path,
    results_path: str | Path,
    *,
    movie_pixel_size_angstrom: float | None = None,
) -> MotionScore | NotProvided:
    """Compare a results motion CSV with the truth's (tilts matched by acquisition order, frames by index).

    Parameters
    ----------
    truth_path, results_path
        ``motion/<ts>.csv`` of the truth and the results.
    movie_pixel_size_angstrom
        Pixel size of the movies, for errors in pixels (omitted from the result when None).

    Returns
    -------
    MotionScore or NotProvided
        NotProvided when the results file is missing or no tilt and frame matches.
    """
    results = Path(results_path)
    if not results.is_file():
        return NotProvided(reason=f"the results have no {results.parent.name}/{results.name}")
    truth = read_motion_csv(truth_path)
    estimate = read_motion_csv(results)
    tilts = []
    true_all, est_all = [], []
    for order, track in sorted(truth.items()):
        other = estimate.get(order)
        if other is None:
            continue
        common, i_true, i_est = np.intersect1d(track.frames, other.frames, return_indices=True)
        if len(common) == 0:
            continue
        t = torch.from_numpy(track.shifts_xy_angstrom[i_true])
        e = torch.from_numpy(other.shifts_xy_angstrom[i_est])
        err = motion_errors(t, e)
        true_all.append(t - t.mean(0))
        est_all.append(e - e.mean(0))
        value = float(err.per_tilt_rms)
        tilts.append(
            MotionTiltScore(
                acquisition_order=order,
                tilt_angle_deg=track.tilt_angle_deg,
                n_frames=len(common),
                rms_angstrom=value,
                rms_movie_px=value / movie_pixel_size_angstrom if movie_pixel_size_angstrom else None,
            )
        )
    if not tilts:
        return NotProvided(reason=f"{results.name} matches no tilt and frame of the truth")
    overall = float((torch.cat(est_all) - torch.cat(true_all)).square().sum(dim=-1).mean().sqrt())
    return MotionScore(
        n_tilts_truth=len(truth),
        n_tilts_matched=len(tilts),
        movie_pixel_size_angstrom=movie_pixel_size_angstrom,
        rms_angstrom=overall,
        rms_movie_px=overall / movie_pixel_size_angstrom if movie_pixel_size_angstrom else None,
        max_tilt_rms_angstrom=max(t.rms_angstrom for t in tilts),
        tilts=tilts,
    )
