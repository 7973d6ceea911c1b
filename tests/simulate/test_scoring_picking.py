"""Picking score: recall and precision of a known set of picks, orientation errors modulo C6, the frame map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_scoring_fixtures import TS, make_export, write_export

from tomoforge.geometry import rotation_z
from tomoforge.simulate.scoring import match_points, orientation_errors_deg, score_picking
from tomoforge.simulate.scoring._common import NotProvided, rotation_from_vector
from tomoforge.simulate.scoring.picking import PickingScore, symmetry_operators


def _score(tmp_path: Path, results: object, **kwargs: object) -> PickingScore:
    truth = write_export(tmp_path / "truth", make_export(with_map=False), truth=True)
    out = write_export(tmp_path / "results", results, truth=False)  # type: ignore[arg-type]
    score = score_picking(truth / "relion5" / "particles.star", out / "relion5" / "particles.star", **kwargs)
    assert isinstance(score, PickingScore)
    return score


def test_truth_against_itself(tmp_path: Path) -> None:
    score = _score(tmp_path, make_export(with_map=False))
    assert score.recall == score.precision == score.f1 == 1.0
    assert score.n_matched == score.n_truth == 60
    assert score.rms_position_error_angstrom < 1e-4  # STAR files keep ~6 decimals
    assert score.median_axis_error_deg == pytest.approx(0.0, abs=1e-4)
    assert score.median_rotation_error_deg == pytest.approx(0.0, abs=1e-4)


def test_dropped_and_false_picks(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    rng = np.random.default_rng(1)
    keep = np.sort(rng.permutation(60)[:48])  # drop 20 %
    false = rng.uniform(-400, 400, (6, 3)) + np.array([0.0, 0.0, 1000.0])  # 10 % false picks, far from any
    positions = np.concatenate([data.particle_positions_angstrom[keep] + rng.normal(0, 5.0, (48, 3)), false])
    rotations = np.concatenate([data.particle_rotations[keep], np.repeat(np.eye(3)[None], 6, axis=0)])
    results = data.replace(
        particle_ts=(TS,) * 54, particle_positions_angstrom=positions, particle_rotations=rotations
    )
    score = _score(tmp_path, results)
    assert score.n_picked == 54 and score.n_matched == 48
    assert score.recall == pytest.approx(0.8) and score.precision == pytest.approx(0.8 / 0.9)
    assert score.f1 == pytest.approx(2 * 0.8 * (0.8 / 0.9) / (0.8 + 0.8 / 0.9))
    assert 5.0 < score.rms_position_error_angstrom < 12.0  # 5 Å per axis → ~8.7 Å
    assert score.tilt_series[0].ts_id == TS and not score.tilt_series[0].frame_corrected


def test_orientations_modulo_c6(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    k = np.arange(60) % 6
    spun = (
        data.particle_rotations @ rotation_z(torch.from_numpy(60.0 * k)).numpy()
    )  # R·Rz(60k): same particle
    score = _score(tmp_path / "c6", data.replace(particle_rotations=spun))
    assert score.median_rotation_error_deg == pytest.approx(0.0, abs=1e-4)
    assert score.median_axis_error_deg == pytest.approx(0.0, abs=1e-4)
    c1 = _score(tmp_path / "c1", data.replace(particle_rotations=spun), symmetry="C1")
    assert c1.median_rotation_error_deg == pytest.approx(90.0, abs=1e-3)  # k = 0…5 → 0, 60, 120, 180, 120, 60
    axis, full = orientation_errors_deg(
        torch.eye(3, dtype=torch.float64),
        rotation_from_vector(torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)),
    )
    assert float(axis) == pytest.approx(np.degrees(0.1)) and float(full) == pytest.approx(np.degrees(0.1))


def test_picks_in_the_results_frame_are_mapped_back(tmp_path: Path) -> None:
    data = make_export(with_map=False)
    m = rotation_from_vector(
        torch.tensor([0.0, 0.05, 0.0], dtype=torch.float64)
    ).numpy()  # a ~2.9° tilt offset
    t = np.array([10.0, -20.0, 30.0])
    moved = data.replace(
        particle_positions_angstrom=data.particle_positions_angstrom @ m.T + t,
        particle_rotations=m @ data.particle_rotations,
    )
    plain = _score(tmp_path / "plain", moved)
    assert plain.recall < 0.9
    mapped = _score(tmp_path / "mapped", moved, frames={TS: (m, t)})
    assert mapped.recall == 1.0 and mapped.rms_position_error_angstrom < 1e-4
    assert mapped.median_rotation_error_deg == pytest.approx(0.0, abs=1e-4)
    assert mapped.tilt_series[0].frame_corrected
    missing = score_picking(
        tmp_path / "plain" / "truth" / "relion5" / "particles.star", tmp_path / "none.star"
    )
    assert isinstance(missing, NotProvided)


def test_greedy_matching_takes_closest_pairs_first() -> None:
    ref = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], dtype=torch.float64)
    query = torch.tensor([[6.0, 0.0, 0.0], [9.0, 0.0, 0.0], [50.0, 0.0, 0.0]], dtype=torch.float64)
    for chunk in (1, 2, 4096):
        m = match_points(ref, query, max_distance=7.0, chunk_size=chunk)
        pairs = sorted(zip(m.reference_indices.tolist(), m.query_indices.tolist(), strict=True))
        assert pairs == [(0, 0), (1, 1)]
    assert symmetry_operators("C6").shape == (6, 3, 3) and symmetry_operators("d2").shape == (4, 3, 3)
    with pytest.raises(ValueError, match="Cn or Dn"):
        symmetry_operators("O")
