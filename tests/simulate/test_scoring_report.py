"""The whole scorer: the truth scored against itself is perfect; missing and broken results are reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_scoring_fixtures import MOVIE_PIXEL, TS, make_export, write_export

from tomoforge.io import FormatError
from tomoforge.simulate.scoring import ScoreReport, score_results, summary_rows, write_score_json
from tomoforge.simulate.scoring._common import NotProvided
from tomoforge.simulate.scoring.alignment import AlignmentScore
from tomoforge.simulate.scoring.ctf import CtfScore
from tomoforge.simulate.scoring.maps import MapScore
from tomoforge.simulate.scoring.motion import MotionScore
from tomoforge.simulate.scoring.picking import PickingScore


def test_truth_scored_against_itself_is_perfect(tmp_path: Path) -> None:
    truth = write_export(tmp_path / "truth", make_export(), truth=True)
    (truth / "truth.json").write_text(
        json.dumps({"tilts": [], "config": {"frame_pixel_size_angstrom": MOVIE_PIXEL}})
    )
    report = score_results(truth, truth)
    [series] = report.tilt_series
    assert series.ts_id == TS
    assert isinstance(series.motion, MotionScore) and series.motion.rms_angstrom == 0.0
    assert series.motion.movie_pixel_size_angstrom == MOVIE_PIXEL and series.motion.rms_movie_px == 0.0
    assert isinstance(series.alignment, AlignmentScore) and series.alignment.rms_px == 0.0
    assert series.alignment.tilt_axis_angle_error_deg == 0.0 and series.alignment.tilt_angle_offset_deg == 0.0
    assert isinstance(series.ctf, CtfScore) and series.ctf.rms_defocus_error_angstrom == 0.0
    assert isinstance(report.picking, PickingScore)
    assert report.picking.recall == report.picking.precision == 1.0
    assert report.picking.median_rotation_error_deg == pytest.approx(0.0, abs=1e-4)
    assert isinstance(report.map, MapScore) and not report.map.mirrored
    assert min(report.map.fsc) > 1.0 - 1e-6 and report.map.rotation_angle_deg == 0.0
    assert report.map.resolution_fsc_0_143_angstrom == pytest.approx(8.0)  # Nyquist of 4 Å voxels
    summary = report.summary
    assert summary.motion_rms_angstrom == 0.0 and summary.alignment_rms_px == 0.0
    assert summary.ctf_rms_defocus_error_angstrom == 0.0 and summary.picking_f1 == 1.0
    assert summary.map_mirrored is False

    path = write_score_json(report, tmp_path / "score.json")
    again = ScoreReport.model_validate_json(path.read_text())
    assert again == report
    rows = summary_rows(report)
    assert [r[0] for r in rows] == ["motion", "alignment", "ctf", "picking", "map"]
    assert not any(r[2].startswith("not provided") for r in rows)


def test_missing_and_unreadable_results_are_not_provided(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    results = tmp_path / "results"
    (results / "motion").mkdir(parents=True)
    shutil.copy(truth / "motion" / f"{TS}.csv", results / "motion" / f"{TS}.csv")
    (results / "relion5").mkdir()
    (results / "relion5" / "particles.star").write_text("data_particles\n\nloop_\n_rlnSomething #1\n1\n")
    report = score_results(truth, results, movie_pixel_size_angstrom=MOVIE_PIXEL)
    [series] = report.tilt_series
    assert isinstance(series.motion, MotionScore) and series.motion.rms_movie_px == 0.0
    assert isinstance(series.alignment, NotProvided) and "alignment" in series.alignment.reason
    assert isinstance(series.ctf, NotProvided) and f"ctf/{TS}.defocus" in series.ctf.reason
    assert isinstance(report.picking, NotProvided) and "could not be read" in report.picking.reason
    assert isinstance(report.map, NotProvided) and "truth" in report.map.reason
    assert report.summary.alignment_rms_px is None and report.summary.picking_recall is None
    rows = summary_rows(report)
    assert sum(r[2].startswith("not provided") for r in rows) == 4
    json.loads(write_score_json(report, tmp_path / "s.json").read_text())


def test_bad_truth_is_an_error(tmp_path: Path) -> None:
    truth = write_export(tmp_path / "truth", make_export(with_map=False), truth=True)
    (truth / "ctf" / f"{TS}.defocus").write_text("not a defocus file\n")
    with pytest.raises(FormatError, match="defocus"):
        score_results(truth, truth)
    with pytest.raises(FileNotFoundError):
        score_results(tmp_path / "nowhere", truth)
    with pytest.raises(ValueError, match="Cn or Dn"):
        score_results(truth, truth, symmetry="I2")
