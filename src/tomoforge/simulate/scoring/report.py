"""Score a pipeline's exported results against the simulator's truth: every section, per tilt series and overall.

Both folders use the export layout (``motion/``, ``alignment/``, ``ctf/``, ``relion5/``, ``average/``; the truth also
``gold/``, ``truth.json``). What the results lack is reported as "not provided"; a results file that cannot be
read is reported the same way with the reader's message, while a bad truth file is an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tomoforge.io import FormatError
from tomoforge.simulate.scoring._common import NotProvided
from tomoforge.simulate.scoring.alignment import AlignmentScore, score_alignment
from tomoforge.simulate.scoring.ctf import CtfScore, score_ctf
from tomoforge.simulate.scoring.maps import MapScore, score_map
from tomoforge.simulate.scoring.motion import MotionScore, score_motion
from tomoforge.simulate.scoring.picking import PickingScore, score_picking, symmetry_operators

__all__ = [
    "DEFAULT_DISTANCE_THRESHOLD_ANGSTROM",
    "ScoreReport",
    "ScoreSummary",
    "TiltSeriesScores",
    "score_results",
    "summary_rows",
    "truth_ts_ids",
    "write_score_json",
]

DEFAULT_DISTANCE_THRESHOLD_ANGSTROM = 37.5
"""Half the ~75 Å spacing of the CA-SP1 hexamer lattice: a pick closer than this to a true hexamer is that one."""

_S = TypeVar("_S")

Motion = Annotated[MotionScore | NotProvided, Field(discriminator="status")]
Alignment = Annotated[AlignmentScore | NotProvided, Field(discriminator="status")]
Ctf = Annotated[CtfScore | NotProvided, Field(discriminator="status")]
Picking = Annotated[PickingScore | NotProvided, Field(discriminator="status")]
Map = Annotated[MapScore | NotProvided, Field(discriminator="status")]


class TiltSeriesScores(BaseModel):
    """The per-tilt-series sections."""

    model_config = ConfigDict(extra="forbid")

    ts_id: str = Field(description="Tilt-series id.")
    motion: Motion = Field(description="Motion-correction error.")
    alignment: Alignment = Field(description="Tilt-series alignment error.")
    ctf: Ctf = Field(description="CTF estimation error.")


class ScoreSummary(BaseModel):
    """Headline numbers over all tilt series (None where nothing was scored)."""

    model_config = ConfigDict(extra="forbid")

    motion_rms_angstrom: float | None = Field(default=None, description="RMS frame-shift error, Å.")
    motion_rms_movie_px: float | None = Field(default=None, description="The same in movie pixels.")
    alignment_rms_px: float | None = Field(
        default=None, description="RMS gold reprojection error, truth pixels."
    )
    alignment_max_abs_tilt_axis_error_deg: float | None = Field(
        default=None, description="Largest |tilt-axis angle error| of a tilt series, degrees."
    )
    alignment_tilt_angle_rms_error_deg: float | None = Field(
        default=None, description="RMS tilt-angle error after each series' offset, degrees."
    )
    ctf_rms_defocus_error_angstrom: float | None = Field(default=None, description="RMS defocus error, Å.")
    picking_recall: float | None = Field(default=None, description="Recall of the picks.")
    picking_precision: float | None = Field(default=None, description="Precision of the picks.")
    picking_f1: float | None = Field(default=None, description="F1 of the picks.")
    map_resolution_fsc_0_143_angstrom: float | None = Field(
        default=None, description="FSC 0.143 resolution of the map against the truth, Å."
    )
    map_support_resolution_fsc_0_143_angstrom: float | None = Field(
        default=None, description="FSC 0.143 resolution of the map against the truth within its support, Å."
    )
    map_mirrored: bool | None = Field(default=None, description="Whether the map has the other hand.")


class ScoreReport(BaseModel):
    """Everything :func:`score_results` measured."""

    model_config = ConfigDict(extra="forbid")

    truth_dir: str = Field(description="The truth folder.")
    results_dir: str = Field(description="The results folder.")
    symmetry: str = Field(description="Point group of the particle.")
    distance_threshold_angstrom: float = Field(description="Picking match distance, Å.")
    tilt_series: list[TiltSeriesScores] = Field(description="Per tilt series of the truth.")
    picking: Picking = Field(description="Picking and orientations.")
    map: Map = Field(description="The average against the true map.")
    summary: ScoreSummary = Field(description="Headline numbers.")


def truth_ts_ids(truth_dir: str | Path) -> list[str]:
    """Tilt-series ids of a truth folder: the stems of its per-tilt-series files."""
    root = Path(truth_dir)
    patterns = ("motion/*.csv", "alignment/*.xf", "ctf/*.defocus", "gold/*.csv", "relion5/tilt_series/*.star")
    return sorted({p.stem for pattern in patterns for p in root.glob(pattern)})


_MOVIE_PIXEL_KEYS = ("movie_pixel_size_angstrom", "frame_pixel_size_angstrom")
"""Keys of ``truth.json`` that give the pixel size of the movie frames (searched at any depth, in this order)."""


def _movie_pixel_from_truth(truth_dir: Path) -> float | None:
    """The movie pixel size recorded anywhere in ``truth.json`` (:data:`_MOVIE_PIXEL_KEYS`), if any."""
    path = truth_dir / "truth.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise FormatError(path, f"is not JSON ({exc})") from None
    for key in _MOVIE_PIXEL_KEYS:
        stack: list[Any] = [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, dict):
                value = item.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                    return float(value)
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def _guarded(truth_dir: Path, score: Callable[..., _S], *args: Any, **kwargs: Any) -> _S | NotProvided:
    """Run a scorer; a results file that cannot be read becomes "not provided", a bad truth file an error."""
    try:
        return score(*args, **kwargs)
    except FormatError as exc:
        if exc.path.resolve().is_relative_to(truth_dir.resolve()):
            raise
        return NotProvided(reason=f"a results file could not be read ({exc})")


def _pooled_rms(pairs: Iterable[tuple[float, float]]) -> float | None:
    """RMS of several RMS values weighted by their counts: ``(rms, count)`` pairs."""
    items = [(r, w) for r, w in pairs if w > 0]
    total = sum(w for _, w in items)
    return math.sqrt(sum(w * r * r for r, w in items) / total) if total else None


def _summary(series: list[TiltSeriesScores], picking: Any, map_score: Any) -> ScoreSummary:
    motion = [s.motion for s in series if isinstance(s.motion, MotionScore)]
    align = [s.alignment for s in series if isinstance(s.alignment, AlignmentScore)]
    ctf = [s.ctf for s in series if isinstance(s.ctf, CtfScore)]
    frames = [(m.rms_angstrom, float(sum(t.n_frames for t in m.tilts))) for m in motion]
    movie_px = [
        (m.rms_movie_px, float(sum(t.n_frames for t in m.tilts)))
        for m in motion
        if m.rms_movie_px is not None
    ]
    return ScoreSummary(
        motion_rms_angstrom=_pooled_rms(frames),
        motion_rms_movie_px=_pooled_rms(movie_px) if len(movie_px) == len(motion) else None,
        alignment_rms_px=_pooled_rms((a.rms_px, float(a.n_views_matched * a.n_gold)) for a in align),
        alignment_max_abs_tilt_axis_error_deg=max(
            (abs(a.tilt_axis_angle_error_deg) for a in align), default=None
        ),
        alignment_tilt_angle_rms_error_deg=_pooled_rms(
            (a.tilt_angle_rms_error_deg, float(a.n_views_matched)) for a in align
        ),
        ctf_rms_defocus_error_angstrom=_pooled_rms(
            (c.rms_defocus_error_angstrom, float(c.n_tilts_matched)) for c in ctf
        ),
        picking_recall=picking.recall if isinstance(picking, PickingScore) else None,
        picking_precision=picking.precision if isinstance(picking, PickingScore) else None,
        picking_f1=picking.f1 if isinstance(picking, PickingScore) else None,
        map_resolution_fsc_0_143_angstrom=(
            map_score.resolution_fsc_0_143_angstrom if isinstance(map_score, MapScore) else None
        ),
        map_support_resolution_fsc_0_143_angstrom=(
            map_score.support_resolution_fsc_0_143_angstrom if isinstance(map_score, MapScore) else None
        ),
        map_mirrored=map_score.mirrored if isinstance(map_score, MapScore) else None,
    )


def score_results(
    truth_dir: str | Path,
    results_dir: str | Path,
    *,
    symmetry: str = "C6",
    distance_threshold_angstrom: float = DEFAULT_DISTANCE_THRESHOLD_ANGSTROM,
    movie_pixel_size_angstrom: float | None = None,
    ctf_tilt_tolerance_deg: float = 1.0,
    min_astigmatism_angstrom: float = 100.0,
    map_search_step_deg: float = 15.0,
    picks_in_alignment_frame: bool = True,
) -> ScoreReport:
    """Score an export-layout results folder against a truth folder.

    Parameters
    ----------
    truth_dir, results_dir
        The simulator's truth and a pipeline's exported results.
    symmetry
        Point group of the particle (Cn or Dn), for orientation errors and the map search.
    distance_threshold_angstrom
        Largest distance of a pick from its true particle, Å.
    movie_pixel_size_angstrom
        Movie pixel size for motion errors in pixels; default ``movie_pixel_size_angstrom`` or
        ``frame_pixel_size_angstrom`` from ``truth.json``.
    ctf_tilt_tolerance_deg
        Largest tilt-angle difference when matching CTF estimates to true tilts.
    min_astigmatism_angstrom
        True astigmatism below which the astigmatism angle is not scored.
    map_search_step_deg
        Spacing of the global rotation search of the map.
    picks_in_alignment_frame
        Map the picks back from the results' specimen frame with the rigid transform the alignment score fitted
        (a pipeline's tomogram, and so its picks, is turned by e.g. its tilt-angle offset); off: compare as given.

    Returns
    -------
    ScoreReport

    Raises
    ------
    FileNotFoundError
        When the truth folder does not exist.
    FormatError
        For a bad file in the truth.
    ValueError
        For a symmetry other than Cn or Dn.
    """
    truth, results = Path(truth_dir), Path(results_dir)
    if not truth.is_dir():
        raise FileNotFoundError(2, "No such truth folder", str(truth))
    symmetry_operators(symmetry)
    movie_pixel = movie_pixel_size_angstrom or _movie_pixel_from_truth(truth)
    series = []
    for ts in truth_ts_ids(truth):
        motion_truth = truth / "motion" / f"{ts}.csv"
        motion: MotionScore | NotProvided = NotProvided(reason=f"the truth has no motion/{ts}.csv")
        if motion_truth.is_file():
            results_csv = results / "motion" / f"{ts}.csv"
            motion = _guarded(
                truth, score_motion, motion_truth, results_csv, movie_pixel_size_angstrom=movie_pixel
            )
        series.append(
            TiltSeriesScores(
                ts_id=ts,
                motion=motion,
                alignment=_guarded(truth, score_alignment, truth, results, ts),
                ctf=_guarded(
                    truth,
                    score_ctf,
                    truth,
                    results,
                    ts,
                    tilt_tolerance_deg=ctf_tilt_tolerance_deg,
                    min_astigmatism_angstrom=min_astigmatism_angstrom,
                ),
            )
        )
    frames = {
        s.ts_id: (_array(s.alignment.frame_matrix), _array(s.alignment.frame_translation_angstrom))
        for s in series
        if isinstance(s.alignment, AlignmentScore)
    }
    truth_particles = truth / "relion5" / "particles.star"
    picking: PickingScore | NotProvided = NotProvided(reason="the truth has no relion5/particles.star")
    if truth_particles.is_file():
        picking = _guarded(
            truth,
            score_picking,
            truth_particles,
            results / "relion5" / "particles.star",
            distance_threshold_angstrom=distance_threshold_angstrom,
            symmetry=symmetry,
            frames=frames if picks_in_alignment_frame else None,
        )
    truth_map = truth / "average" / "map.mrc"
    map_score: MapScore | NotProvided = NotProvided(reason="the truth has no average/map.mrc")
    if truth_map.is_file():
        map_score = _guarded(
            truth, score_map, truth_map, results, symmetry=symmetry, step_deg=map_search_step_deg
        )
    return ScoreReport(
        truth_dir=str(truth),
        results_dir=str(results),
        symmetry=symmetry.upper(),
        distance_threshold_angstrom=distance_threshold_angstrom,
        tilt_series=series,
        picking=picking,
        map=map_score,
        summary=_summary(series, picking, map_score),
    )


def _array(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _fmt(value: float | None, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}g}{'' if unit in ('', '°') else ' '}{unit}"


def summary_rows(report: ScoreReport) -> list[tuple[str, str, str]]:
    """The report as ``(section, tilt series or "all", result)`` rows for a table."""
    rows: list[tuple[str, str, str]] = []
    for s in report.tilt_series:
        m = s.motion
        rows.append(
            (
                "motion",
                s.ts_id,
                f"RMS {_fmt(m.rms_angstrom, 'Å')} ({_fmt(m.rms_movie_px, 'px')}), {m.n_tilts_matched}/{m.n_tilts_truth} tilts"
                if isinstance(m, MotionScore)
                else f"not provided: {m.reason}",
            )
        )
        a = s.alignment
        rows.append(
            (
                "alignment",
                s.ts_id,
                f"RMS {_fmt(a.rms_px, 'px')} ({_fmt(a.rms_angstrom, 'Å')}), axis error {a.tilt_axis_angle_error_deg:+.3f}°, "
                f"tilt offset {a.tilt_angle_offset_deg:+.3f}° (RMS {a.tilt_angle_rms_error_deg:.3f}°), "
                f"{a.n_views_matched}/{a.n_views_truth} views" + (", mirrored" if a.mirrored else "")
                if isinstance(a, AlignmentScore)
                else f"not provided: {a.reason}",
            )
        )
        c = s.ctf
        rows.append(
            (
                "ctf",
                s.ts_id,
                f"defocus error mean {c.mean_defocus_error_angstrom:+.1f} Å, RMS {c.rms_defocus_error_angstrom:.1f} Å, "
                f"astigmatism RMS {c.rms_astigmatism_error_angstrom:.1f} Å, angle RMS {_fmt(c.rms_angle_error_deg, '°')}, "
                f"{c.n_tilts_matched}/{c.n_tilts_truth} tilts"
                if isinstance(c, CtfScore)
                else f"not provided: {c.reason}",
            )
        )
    p = report.picking
    rows.append(
        (
            "picking",
            "all",
            f"recall {p.recall:.3f}, precision {p.precision:.3f}, F1 {p.f1:.3f} ({p.n_matched} of {p.n_truth} true, "
            f"{p.n_picked} picked, within {p.distance_threshold_angstrom:g} Å); axis error median "
            f"{_fmt(p.median_axis_error_deg, '°')}, rotation error median {_fmt(p.median_rotation_error_deg, '°')}"
            if isinstance(p, PickingScore)
            else f"not provided: {p.reason}",
        )
    )
    m2 = report.map
    rows.append(
        (
            "map",
            "all",
            f"FSC 0.143 {_fmt(m2.support_resolution_fsc_0_143_angstrom, 'Å')} in the true map's support "
            f"({_fmt(m2.resolution_fsc_0_143_angstrom, 'Å')} in a sphere, 0.5 at "
            f"{_fmt(m2.resolution_fsc_0_5_angstrom, 'Å')}){', mirrored' if m2.mirrored else ''}, rotation "
            f"{m2.rotation_angle_deg:.1f}° (mod {m2.symmetry}), correlation {m2.search_score:.3f} "
            f"(other hand {_fmt(m2.other_hand_search_score)}); half maps "
            f"{_fmt(m2.half_map_resolution_0_143_angstrom, 'Å')}"
            if isinstance(m2, MapScore)
            else f"not provided: {m2.reason}",
        )
    )
    return rows


def write_score_json(report: ScoreReport, path: str | Path) -> Path:
    """Write the report as JSON (via a temporary file, then renamed); infinite resolutions are written as null."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    partial.replace(target)
    return target
