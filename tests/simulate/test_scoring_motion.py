"""Motion score: per-tilt offsets removed, a known noise level measured exactly, missing results reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_scoring_fixtures import MOVIE_PIXEL, TS, make_export, write_export

from tomoforge.simulate.scoring import motion_errors, score_motion
from tomoforge.simulate.scoring._common import NotProvided
from tomoforge.simulate.scoring.motion import MotionScore


def test_motion_errors_remove_each_tilts_offset() -> None:
    truth = torch.randn(5, 8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = motion_errors(truth, truth + torch.tensor([3.0, -1.0], dtype=torch.float64))
    assert torch.all(errors.per_tilt_rms < 1e-12) and float(errors.overall_rms) < 1e-12
    assert torch.allclose(errors.offsets_xy, torch.tensor([3.0, -1.0], dtype=torch.float64).expand(5, 2))
    # One frame off by (3, 4): its error after removing the mean is (3, 4)·7/8, the others (3, 4)/8.
    est = truth.clone()
    est[0, 2] += torch.tensor([3.0, 4.0], dtype=torch.float64)
    errors = motion_errors(truth, est)
    expected = 5.0 * np.sqrt((7 / 8) ** 2 / 8 + 7 * (1 / 8) ** 2 / 8)
    assert float(errors.per_tilt_rms[0]) == pytest.approx(expected, rel=1e-12)
    assert float(errors.per_tilt_rms[1]) == pytest.approx(0.0, abs=1e-12)


def test_noise_of_known_rms_is_measured(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    # Noise with exactly 0.3 movie px RMS per tilt after its mean is removed, plus an arbitrary offset per tilt.
    rng = np.random.default_rng(5)
    noise = rng.normal(size=data.motion_angstrom.shape)
    noise -= noise.mean(axis=1, keepdims=True)
    noise *= 0.3 * MOVIE_PIXEL / np.sqrt((noise**2).sum(-1).mean(-1, keepdims=True))[..., None]
    offsets = rng.normal(0.0, 5.0, (len(noise), 1, 2))
    results = write_export(
        tmp_path / "results",
        data.replace(motion_angstrom=data.motion_angstrom + noise + offsets),
        truth=False,
    )
    score = score_motion(
        truth / "motion" / f"{TS}.csv",
        results / "motion" / f"{TS}.csv",
        movie_pixel_size_angstrom=MOVIE_PIXEL,
    )
    assert isinstance(score, MotionScore)
    assert score.n_tilts_matched == score.n_tilts_truth == 41
    assert score.rms_movie_px == pytest.approx(0.3, rel=1e-9)
    assert score.rms_angstrom == pytest.approx(0.3 * MOVIE_PIXEL, rel=1e-9)
    assert all(t.rms_movie_px == pytest.approx(0.3, rel=1e-9) for t in score.tilts)
    assert [t.acquisition_order for t in score.tilts] == list(range(41))
    assert score.tilts[0].tilt_angle_deg == 0.0

    same = score_motion(truth / "motion" / f"{TS}.csv", truth / "motion" / f"{TS}.csv")
    assert isinstance(same, MotionScore) and same.rms_angstrom == 0.0 and same.rms_movie_px is None


def test_missing_results_and_partial_tilts(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    missing = score_motion(truth / "motion" / f"{TS}.csv", tmp_path / "nothing" / "motion" / f"{TS}.csv")
    assert isinstance(missing, NotProvided) and "motion" in missing.reason
    lines = (truth / "motion" / f"{TS}.csv").read_text().splitlines()
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(lines[: 1 + 8 * 10]) + "\n")  # the first 10 tilts of the file only
    score = score_motion(truth / "motion" / f"{TS}.csv", partial)
    assert isinstance(score, MotionScore) and score.n_tilts_matched == 10 and score.rms_angstrom == 0.0
