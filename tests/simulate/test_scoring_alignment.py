"""Alignment score: perfect on itself; known perturbations of axis, tilt angles, specimen frame and shifts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_scoring_fixtures import PIXEL, SIZE_XY, TS, make_export, write_export

from tomoforge.geometry import projection_matrices, rotation_x, rotation_y, rotation_z
from tomoforge.io.convert import read_alignment, write_alignment
from tomoforge.io.relion5 import RelionTomogram, write_tomograms_star
from tomoforge.simulate.scoring import fit_rigid_specimen_transform, score_alignment, score_ctf
from tomoforge.simulate.scoring._common import NotProvided, rotation_angle_deg, rotation_from_vector
from tomoforge.simulate.scoring.alignment import AlignmentScore


def _score(tmp_path: Path, **changes: object) -> AlignmentScore:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    results = write_export(tmp_path / "results", data.replace(**changes), truth=False)
    score = score_alignment(truth, results, TS)
    assert isinstance(score, AlignmentScore)
    return score


def test_truth_against_itself_is_perfect(tmp_path: Path) -> None:
    score = _score(tmp_path)
    assert score.rms_px == 0.0 and score.max_view_rms_px == 0.0
    assert score.tilt_axis_angle_error_deg == 0.0 and score.tilt_angle_offset_deg == 0.0
    assert score.tilt_angle_rms_error_deg == 0.0 and score.frame_rotation_deg == 0.0
    assert not score.mirrored and not score.tilt_axis_flipped_180 and not score.tilt_angles_negated
    assert score.n_views_matched == score.n_views_truth == 41 and score.n_gold == 24


def test_tilt_axis_error_is_measured(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    score = _score(tmp_path, tilt_axis_deg=data.tilt_axis_deg + 0.5)
    assert score.tilt_axis_angle_error_deg == pytest.approx(0.5, abs=1e-6)
    assert all(v.tilt_axis_error_deg == pytest.approx(0.5, abs=1e-6) for v in score.views)
    # Not absorbable by a rigid specimen motion: beads 350 px from the centre move by up to ~3 px.
    assert 0.3 < score.rms_px < 5.0


def test_constant_tilt_offset_is_absorbed_and_reported(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    score = _score(tmp_path, tilt_angles_deg=data.tilt_angles_deg + 2.0)
    assert score.tilt_angle_offset_deg == pytest.approx(2.0, abs=1e-9)
    assert score.tilt_angle_rms_error_deg < 1e-9
    assert score.rms_px < 1e-6
    assert score.frame_rotation_deg == pytest.approx(2.0, abs=1e-6)


def test_rigid_motion_of_the_specimen_is_absorbed(tmp_path: Path) -> None:
    """Results in another specimen frame X' = Q·X + c: their views are P'ᵢ = Pᵢ·T⁻¹, written as .xf/.tlt/.xtilt."""
    data = make_export(with_map=False)
    q = rotation_from_vector(torch.tensor([0.2, -0.35, 0.6], dtype=torch.float64))
    c = torch.tensor([40.0, -25.0, 15.0], dtype=torch.float64)  # px
    p = projection_matrices(data.tilt_angles_deg, data.tilt_axis_deg, torch.from_numpy(data.shifts_px))
    rot = p[:, :, :3] @ q.T  # Rz(α')·Ry(θ')·Rx(φ') of each view
    shift = p[:, :2, 3] - (rot @ c)[:, :2]
    theta = torch.rad2deg(torch.asin(-rot[:, 2, 0]))  # ZYX decomposition: R[2,0] = −sin θ'
    alpha = torch.rad2deg(torch.atan2(rot[:, 1, 0], rot[:, 0, 0]))
    phi = torch.rad2deg(torch.atan2(rot[:, 2, 1], rot[:, 2, 2]))
    check = rotation_z(alpha) @ rotation_y(theta) @ rotation_x(phi)
    assert torch.allclose(check, rot, atol=1e-12)
    score = _score(
        tmp_path,
        tilt_angles_deg=theta.numpy(),
        tilt_axis_deg=alpha.numpy(),
        x_tilt_deg=phi.numpy(),
        shifts_px=shift.numpy(),
    )
    assert score.rms_px < 1e-3  # .xf shifts are written with 3 decimals
    assert score.frame_rotation_deg == pytest.approx(float(rotation_angle_deg(q)), abs=1e-4)
    assert np.allclose(score.frame_translation_angstrom, (c * PIXEL).numpy(), atol=0.05)
    assert not score.mirrored


def test_random_view_shifts_of_one_pixel(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    rng = np.random.default_rng(3)
    direction = rng.uniform(0.0, 2 * np.pi, len(data.shifts_px))
    kicks = np.stack([np.cos(direction), np.sin(direction)], axis=-1)  # 1 px each
    score = _score(tmp_path, shifts_px=data.shifts_px + kicks)
    assert score.rms_px == pytest.approx(1.0, abs=0.08)  # the rigid fit absorbs a little of random kicks
    assert score.rms_angstrom == pytest.approx(score.rms_px * PIXEL)
    assert score.tilt_axis_angle_error_deg == pytest.approx(0.0, abs=1e-9)


def test_mirror_and_axis_ambiguities(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    # Negated tilt angles: the mirror image of the specimen projects identically.
    mirrored = _score(tmp_path / "a", tilt_angles_deg=-data.tilt_angles_deg)
    assert mirrored.mirrored and mirrored.tilt_angles_negated and mirrored.rms_px < 1e-6
    # Axis turned by 180° with negated tilts: the specimen rotated by 180° about z, not mirrored.
    turned = _score(
        tmp_path / "b", tilt_axis_deg=data.tilt_axis_deg + 180.0, tilt_angles_deg=-data.tilt_angles_deg
    )
    assert not turned.mirrored and turned.tilt_axis_flipped_180 and turned.rms_px < 1e-6
    assert turned.tilt_axis_angle_error_deg == pytest.approx(0.0, abs=1e-6)
    assert turned.frame_rotation_deg == pytest.approx(180.0, abs=1e-6)


def test_excluded_views_and_missing_files(tmp_path: Path) -> None:
    score = _score(tmp_path, excluded_views=(0, 1, 40))
    assert score.n_views_matched == 38 and score.n_views_excluded == 3 and score.rms_px == 0.0
    assert [v.index for v in score.views] == list(range(2, 40))
    missing = score_alignment(tmp_path / "truth", tmp_path / "nothing", TS)
    assert isinstance(missing, NotProvided) and "alignment" in missing.reason
    (tmp_path / "results" / "alignment" / f"{TS}.json").unlink()  # falls back to the truth's sidecar
    fallback = score_alignment(tmp_path / "truth", tmp_path / "results", TS)
    assert isinstance(fallback, AlignmentScore) and fallback.notes


def test_rigid_fit_recovers_a_known_transform() -> None:
    g = torch.Generator().manual_seed(2)
    points = torch.randn(30, 3, generator=g, dtype=torch.float64) * 100.0
    angles = torch.arange(-60.0, 61.0, 10.0, dtype=torch.float64)
    true = projection_matrices(angles, 80.0, torch.randn(13, 2, generator=g, dtype=torch.float64) * 5)
    m = rotation_from_vector(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64))
    t = torch.tensor([5.0, -7.0, 12.0], dtype=torch.float64)
    # est(T·X) = true(X)  ⇔  est = true ∘ T⁻¹
    est = true.clone()
    est[:, :, :3] = true[:, :, :3] @ m.T
    est[:, :, 3] = true[:, :, 3] - (est[:, :, :3] @ t)
    fit = fit_rigid_specimen_transform(points, est, true)
    assert torch.allclose(fit.matrix, m, atol=1e-9) and torch.allclose(fit.translation_xyz, t, atol=1e-7)
    assert float(fit.residuals_xy.abs().max()) < 1e-8 and not fit.mirrored


def test_relion_tilt_series_results_are_read_when_there_is_no_xf(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    alignment = read_alignment(
        truth / "alignment" / f"{TS}.xf", pixel_size_angstrom=PIXEL, image_size_xy=SIZE_XY
    )
    folder = tmp_path / "results" / "relion5" / "tilt_series"
    folder.mkdir(parents=True)
    write_alignment(
        alignment.replace(tilt_angles_deg=tuple(data.tilt_angles_deg + 1.0)),
        folder / f"{TS}.star",
        zero_dose=True,
    )
    row = RelionTomogram(
        ts_id=TS,
        voltage_kv=300.0,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.1,
        original_pixel_size_angstrom=PIXEL / 2,
        tilt_series_pixel_size_angstrom=PIXEL,
    )
    write_tomograms_star([row], tmp_path / "results" / "relion5" / "tomograms.star")
    score = score_alignment(truth, tmp_path / "results", TS)
    assert isinstance(score, AlignmentScore) and score.source == f"relion5/tilt_series/{TS}.star"
    assert score.rms_px < 1e-6 and score.tilt_angle_offset_deg == pytest.approx(1.0)
    ctf = score_ctf(truth, tmp_path / "results", TS)
    assert isinstance(ctf, NotProvided) and "no CTF" in ctf.reason
