"""FSC resolution and the centre convention of volumes and tomograms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tomoforge.models import FscCurve, Tomogram, Volume
from tomoforge.models.volume import index_zyx_to_position, position_to_index_zyx


def test_resolution_interpolates_first_crossing() -> None:
    # Crosses 0.143 between 0.10 (fsc 0.5) and 0.15 (fsc 0.1): f = 0.10 + (0.5-0.143)/(0.5-0.1)*0.05 = 0.144625
    curve = FscCurve(
        spatial_frequency_per_angstrom=[0.0, 0.05, 0.10, 0.15, 0.20, 0.25],
        fsc=[1.0, 0.9, 0.5, 0.1, 0.2, 0.0],
    )
    assert curve.resolution_at() == pytest.approx(1.0 / 0.144625, rel=1e-12)
    # The later dip and recovery (0.1 -> 0.2) are ignored: only the first crossing counts.
    assert curve.resolution_at(0.15) == pytest.approx(1.0 / (0.10 + 0.35 / 0.4 * 0.05), rel=1e-12)
    # 0.9 -> 0.5 between 0.05 and 0.10 for threshold 0.7: halfway.
    assert curve.resolution_at(0.7) == pytest.approx(1.0 / 0.075, rel=1e-12)


def test_resolution_at_exact_sample_value() -> None:
    curve = FscCurve(spatial_frequency_per_angstrom=[0.0, 0.1, 0.2], fsc=[1.0, 0.5, 0.0])
    # 0.5 is not below 0.5, so the first sample below is at 0.2; interpolation puts the crossing at 0.1.
    assert curve.resolution_at(0.5) == pytest.approx(10.0, rel=1e-12)


def test_resolution_never_crossed_is_nan_and_immediately_below_is_inf() -> None:
    high = FscCurve(spatial_frequency_per_angstrom=[0.0, 0.1, 0.2], fsc=[1.0, 0.99, 0.98])
    assert math.isnan(high.resolution_at())
    low = FscCurve(spatial_frequency_per_angstrom=[0.01, 0.1], fsc=[0.1, 0.0])
    assert low.resolution_at() == math.inf


def test_fsc_arrays_round_trip() -> None:
    freq = np.linspace(0.0, 0.25, 11)
    fsc = np.cos(freq * 6.0)
    curve = FscCurve.from_arrays(freq, fsc)
    f2, c2 = curve.as_arrays()
    np.testing.assert_array_equal(f2, freq)
    np.testing.assert_array_equal(c2, fsc)


@pytest.mark.parametrize("shape", [(64, 64, 64), (63, 100, 101)])
def test_centre_is_n_over_2(shape: tuple[int, int, int]) -> None:
    vol = Volume(file=Path("v.mrc"), voxel_size_angstrom=2.0, shape_zyx=shape)
    assert vol.centre_index_zyx == (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    np.testing.assert_array_equal(
        position_to_index_zyx(np.zeros(3), shape, 2.0), np.array(vol.centre_index_zyx, dtype=float)
    )


def test_tomogram_position_index_conversion() -> None:
    tomo = Tomogram(
        ts_id="TS_01",
        volume_file=Path("t.mrc"),
        voxel_size_angstrom=10.0,
        shape_zyx=(101, 200, 300),
        reconstruction_method="wbp",
        binning=8.0,
    )
    assert tomo.centre_index_zyx == (50, 100, 150)
    assert tomo.size_angstrom == (3000.0, 2000.0, 1010.0)
    # x = +20 Å, y = -10 Å, z = +5 Å -> index (z, y, x) = (50.5, 99, 152)
    np.testing.assert_allclose(tomo.position_to_index_zyx(np.array([20.0, -10.0, 5.0])), [50.5, 99.0, 152.0])
    pts = np.random.default_rng(0).normal(scale=500.0, size=(7, 3))
    np.testing.assert_allclose(tomo.index_zyx_to_position(tomo.position_to_index_zyx(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(
        index_zyx_to_position(np.array([0.0, 0.0, 0.0]), (101, 200, 300), 10.0), [-1500.0, -1000.0, -500.0]
    )
