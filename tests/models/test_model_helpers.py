"""Derived properties and helpers of acquisition, CTF and tilt-series models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tomoforge.models import (
    Acquisition,
    CtfParameters,
    CtfTiltEstimate,
    CtfTiltSeries,
    TiltImage,
    TiltSeries,
    TiltSeriesMovies,
    TiltTransform,
)


def test_electron_wavelength(acquisition_factory: Callable[..., Acquisition]) -> None:
    acq = acquisition_factory()
    assert acq.electron_wavelength_angstrom == pytest.approx(0.019687, abs=2e-6)
    assert acq.replace(voltage_kv=200.0).electron_wavelength_angstrom == pytest.approx(0.025079, abs=2e-6)


def test_ctf_properties() -> None:
    ctf = CtfParameters(defocus_u_angstrom=32000.0, defocus_v_angstrom=28000.0, astigmatism_angle_deg=30.0)
    assert ctf.defocus_mean_angstrom == 30000.0
    assert ctf.astigmatism_angstrom == 2000.0
    assert ctf.phase_shift_deg == 0.0
    assert ctf.defocus_at_azimuth_angstrom(30.0) == pytest.approx(32000.0)
    assert ctf.defocus_at_azimuth_angstrom(120.0) == pytest.approx(28000.0)
    assert ctf.defocus_at_azimuth_angstrom(75.0) == pytest.approx(30000.0)


def test_ctf_tilt_series_lookup() -> None:
    good = CtfParameters(defocus_u_angstrom=2e4, defocus_v_angstrom=2e4)
    series = CtfTiltSeries(
        ts_id="TS_01",
        tilts=[
            CtfTiltEstimate(tilt_index=2, parameters=good),
            CtfTiltEstimate(tilt_index=0, parameters=good, excluded=True),
            CtfTiltEstimate(tilt_index=1, excluded=True),
        ],
    )
    assert series.parameters_for(2) == good
    assert series.parameters_for(0) is None
    assert series.parameters_for(1) is None
    assert series.parameters_for(7) is None
    assert series.excluded_indices() == [0, 1]
    assert sorted(series.by_index()) == [0, 1, 2]


def test_tilt_series_helpers(tilt_series: TiltSeries) -> None:
    assert tilt_series.n_tilts == 5
    assert tilt_series.tilt_angles_deg == [-6.0, -3.0, 0.0, 3.0, 6.0]
    assert tilt_series.effective_tilt_angles_deg == [-6.0, -3.2, 0.0, 3.0, 6.0]
    assert [t.index for t in tilt_series.included()] == [0, 1, 2, 3]
    assert tilt_series.excluded_indices() == [4]
    assert tilt_series.tilt(2).tilt_angle_deg == 0.0
    with pytest.raises(IndexError, match="no tilt index 5"):
        tilt_series.tilt(5)


def test_transform_matrices_default_to_identity(tilt_series: TiltSeries) -> None:
    mats = tilt_series.transform_matrices()
    assert mats.shape == (5, 3, 3)
    np.testing.assert_array_equal(mats[0], np.eye(3))
    transform = tilt_series.tilts[1].transform
    assert transform is not None
    np.testing.assert_allclose(mats[1], transform.as_matrix(1.35))
    np.testing.assert_allclose(tilt_series.transform_matrices(2.7)[1, :2, 2], mats[1, :2, 2] / 2.0)


def test_replace_tilt_and_align(tilt_series: TiltSeries) -> None:
    for i in (0, 2, 3):
        new = tilt_series.replace_tilt(i, transform=TiltTransform.from_rotation(1.0 * i))
        assert tilt_series.tilts[i] is new
    tilt_series.aligned = True
    assert tilt_series.aligned
    assert TiltSeries.model_validate_json(tilt_series.model_dump_json()) == tilt_series


def test_from_movies_copies_tilt_metadata(tilt_series_movies: TiltSeriesMovies) -> None:
    movies = tilt_series_movies
    assert movies.n_tilts == 5
    assert movies.tilt_angles_deg == [-6.0, -3.0, 0.0, 3.0, 6.0]
    assert len(movies.included()) == 5
    ts = TiltSeries.from_movies(
        movies, stack_file=Path("TS_01.mrc"), pixel_size_angstrom=1.35, image_shape_yx=(4092, 5760)
    )
    assert ts.ts_id == movies.ts_id
    assert ts.acquisition == movies.acquisition
    for movie, tilt in zip(movies.tilts, ts.tilts, strict=True):
        assert isinstance(tilt, TiltImage)
        assert tilt.frames_file == movie.frames_file
        assert (tilt.index, tilt.tilt_angle_deg, tilt.acquisition_order) == (
            movie.index,
            movie.tilt_angle_deg,
            movie.acquisition_order,
        )
        assert tilt.prior_dose_e_per_angstrom2 == movie.prior_dose_e_per_angstrom2
        assert tilt.acquired_at == movie.acquired_at
        assert tilt.transform is None and tilt.ctf is None
