"""Scoring a pipeline's exported results against the simulator's ground truth (``tomoforge score``).

One module per section, each a pure kernel plus a reader-level wrapper: :mod:`.motion` (frame shifts),
:mod:`.alignment` (gold reprojection after a rigid fit, tilt-axis and tilt-angle errors), :mod:`.ctf` (defocus per
tilt), :mod:`.picking` (recall, precision, orientations), :mod:`.maps` (FSC after a rotation/shift/hand search) and
:mod:`.report` (all of them, a table and JSON).
"""

from tomoforge.simulate.scoring.alignment import (
    AlignmentScore,
    fit_rigid_specimen_transform,
    score_alignment,
    tilt_angle_errors,
    tilt_axis_angles_deg,
)
from tomoforge.simulate.scoring.ctf import CtfScore, ctf_errors, score_ctf
from tomoforge.simulate.scoring.maps import (
    MapAlignment,
    MapScore,
    align_maps,
    apply_map_alignment,
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    score_map,
)
from tomoforge.simulate.scoring.motion import MotionScore, motion_errors, score_motion
from tomoforge.simulate.scoring.picking import (
    PickingScore,
    match_points,
    orientation_errors_deg,
    score_picking,
)
from tomoforge.simulate.scoring.report import (
    ScoreReport,
    score_results,
    summary_rows,
    write_score_json,
)

__all__ = [
    "AlignmentScore",
    "CtfScore",
    "MapAlignment",
    "MapScore",
    "MotionScore",
    "PickingScore",
    "ScoreReport",
    "align_maps",
    "apply_map_alignment",
    "ctf_errors",
    "fit_rigid_specimen_transform",
    "fourier_shell_correlation",
    "fsc_resolution_angstrom",
    "match_points",
    "motion_errors",
    "orientation_errors_deg",
    "score_alignment",
    "score_ctf",
    "score_map",
    "score_motion",
    "score_picking",
    "score_results",
    "summary_rows",
    "tilt_angle_errors",
    "tilt_axis_angles_deg",
    "write_score_json",
]
