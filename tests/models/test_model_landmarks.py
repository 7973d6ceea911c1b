"""LandmarkModel <-> (n_beads, n_tilts, 2) arrays with NaN gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tomoforge.models import LandmarkChain, LandmarkModel, LandmarkPoint

COMMON = {"ts_id": "TS_07", "pixel_size_angstrom": 5.4, "bead_diameter_angstrom": 108.0}


def _gappy_array() -> np.ndarray:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0.0, 1000.0, size=(4, 6, 2))
    xy[0, 0] = np.nan
    xy[1, 2:5] = np.nan
    xy[3, :] = np.nan  # a bead never observed
    return xy


def test_array_round_trip_with_nan_gaps() -> None:
    xy = _gappy_array()
    model = LandmarkModel.from_array(xy, bead_ids=[10, 11, 12, 13], **COMMON)
    assert model.n_beads == 4 and model.n_tilts == 6
    assert [c.bead_id for c in model.chains] == [10, 11, 12, 13]
    assert [len(c.points) for c in model.chains] == [5, 3, 6, 0]
    np.testing.assert_array_equal(model.to_array(), xy)  # NaN == NaN for assert_array_equal
    restored = LandmarkModel.model_validate_json(model.model_dump_json())
    np.testing.assert_array_equal(restored.to_array(), xy)


def test_model_to_array_places_points_by_tilt_index() -> None:
    model = LandmarkModel(
        n_tilts=4,
        chains=[
            LandmarkChain(
                bead_id=3,
                points=[
                    LandmarkPoint(tilt_index=3, x_px=30.0, y_px=31.0, residual_xy_px=(0.3, 0.4)),
                    LandmarkPoint(tilt_index=1, x_px=10.0, y_px=11.0),
                ],
                position_angstrom=(1.0, 2.0, 3.0),
            )
        ],
        **COMMON,
    )
    arr = model.to_array()
    assert arr.shape == (1, 4, 2)
    np.testing.assert_array_equal(arr[0, 1], [10.0, 11.0])
    np.testing.assert_array_equal(arr[0, 3], [30.0, 31.0])
    assert np.isnan(arr[0, [0, 2]]).all()
    res = model.residuals_array()
    np.testing.assert_array_equal(res[0, 3], [0.3, 0.4])
    assert np.isnan(res[0, :3]).all()
    assert model.computed_mean_residual_px() == pytest.approx(0.5)
    np.testing.assert_array_equal(model.positions_angstrom(), [[1.0, 2.0, 3.0]])
    assert model.bead_diameter_px == pytest.approx(20.0)


def test_residuals_and_positions_round_trip() -> None:
    xy = _gappy_array()
    res = np.where(np.isfinite(xy), 0.25, np.nan)
    res[2, 1] = np.nan  # observed but without residual
    pos = np.array([[1.0, 2.0, 3.0], [np.nan] * 3, [4.0, 5.0, 6.0], [np.nan] * 3])
    model = LandmarkModel.from_array(
        xy, residuals_xy_px=res, positions_angstrom=pos, mean_residual_px=0.35, **COMMON
    )
    np.testing.assert_array_equal(model.residuals_array(), res)
    np.testing.assert_array_equal(model.positions_angstrom(), pos)
    assert model.chains[2].points[1].residual_xy_px is None
    assert model.computed_mean_residual_px() == pytest.approx(math.hypot(0.25, 0.25))


def test_from_array_rejects_half_points_and_bad_shapes() -> None:
    xy = _gappy_array()
    xy[2, 4, 1] = np.nan
    with pytest.raises(ValueError, match="bead row 2, tilt 4 has only one finite coordinate"):
        LandmarkModel.from_array(xy, **COMMON)
    with pytest.raises(ValueError, match=r"shape \(n_beads, n_tilts, 2\)"):
        LandmarkModel.from_array(np.zeros((3, 4)), **COMMON)
    with pytest.raises(ValueError, match="bead ids"):
        LandmarkModel.from_array(_gappy_array(), bead_ids=[1, 2], **COMMON)


def test_empty_model_has_nan_mean_residual() -> None:
    model = LandmarkModel(n_tilts=3, **COMMON)
    assert model.to_array().shape == (0, 3, 2)
    assert math.isnan(model.computed_mean_residual_px())
