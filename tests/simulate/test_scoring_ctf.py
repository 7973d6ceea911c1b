"""CTF score: a defocus offset is measured, tilts are matched by angle, the astigmatism angle is taken mod 180°."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_scoring_fixtures import TS, make_export, write_export

from tomoforge.simulate.scoring import ctf_errors, score_ctf
from tomoforge.simulate.scoring._common import NotProvided
from tomoforge.simulate.scoring.ctf import CtfScore, match_tilt_angles


def _score(tmp_path: Path, **changes: object) -> CtfScore:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    results = write_export(tmp_path / "results", data.replace(**changes), truth=False)
    score = score_ctf(truth, results, TS)
    assert isinstance(score, CtfScore)
    return score


def test_truth_against_itself_and_a_defocus_offset(tmp_path: Path) -> None:
    same = _score(tmp_path / "same")
    assert same.n_tilts_matched == same.n_tilts_truth == 41
    assert same.rms_defocus_error_angstrom == 0.0 and same.rms_astigmatism_error_angstrom == 0.0
    assert same.rms_angle_error_deg == pytest.approx(0.0, abs=1e-9)
    data = make_export(with_map=False)
    off = _score(tmp_path / "off", defocus_uv_angstrom=data.defocus_uv_angstrom + 500.0)
    assert off.mean_defocus_error_angstrom == pytest.approx(500.0, abs=1e-6)
    assert off.rms_defocus_error_angstrom == pytest.approx(500.0, abs=1e-6)
    assert off.rms_astigmatism_error_angstrom == pytest.approx(0.0, abs=1e-6)
    assert all(t.defocus_error_angstrom == pytest.approx(500.0, abs=1e-6) for t in off.tilts)


def test_excluded_tilts_are_matched_by_angle(tmp_path: Path) -> None:
    score = _score(tmp_path, excluded_views=(0, 7, 40))
    assert score.n_tilts_matched == 38 and score.rms_defocus_error_angstrom == 0.0
    assert -60.0 not in [t.tilt_angle_deg for t in score.tilts]
    missing = score_ctf(tmp_path / "truth", tmp_path / "nothing", TS)
    assert isinstance(missing, NotProvided)


def test_astigmatism_angle_modulo_180_and_swapped_axes() -> None:
    uv = torch.tensor([[31000.0, 30000.0], [30020.0, 30000.0]], dtype=torch.float64)
    angle = torch.tensor([30.0, 10.0], dtype=torch.float64)
    # The same ellipses described with u and v swapped (angle + 90°) and with the angle + 180°.
    same = ctf_errors(uv, angle, uv.flip(-1), angle + 90.0)
    assert torch.allclose(same.defocus_angstrom, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(same.astigmatism_angstrom, torch.zeros(2, dtype=torch.float64))
    assert float(same.angle_deg[0]) == pytest.approx(0.0, abs=1e-9)
    assert torch.isnan(same.angle_deg[1])  # 20 Å of astigmatism: angle not meaningful
    turned = ctf_errors(uv, angle, uv, angle + 180.0 - 5.0)
    assert float(turned.angle_deg[0]) == pytest.approx(-5.0, abs=1e-9)


def test_match_tilt_angles_is_one_to_one() -> None:
    pairs = match_tilt_angles(np.array([-3.0, 0.0, 3.0]), np.array([0.2, 2.9, 0.1, 9.0]), tolerance_deg=1.0)
    assert pairs == [(1, 2), (2, 1)]
