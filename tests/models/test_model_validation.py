"""Validation rejects bad metadata with messages that name the field and the problem."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from tomoforge.models import (
    Acquisition,
    CtfParameters,
    CtfTiltEstimate,
    CtfTiltSeries,
    FscCurve,
    HalfMaps,
    LandmarkChain,
    LandmarkModel,
    LandmarkPoint,
    Particle,
    ParticleSet,
    TiltImage,
    TiltSeries,
    TiltTransform,
    Tomogram,
    Volume,
)


def _error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("pixel_size_angstrom", -1.0, "greater than 0"),
        ("pixel_size_angstrom", 0.0, "greater than 0"),
        ("voltage_kv", 0.0, "greater than 0"),
        ("voltage_kv", 1000.5, "less than or equal to 1000"),
        ("amplitude_contrast", 1.0, "less than 1"),
        ("amplitude_contrast", -0.01, "greater than or equal to 0"),
        ("dose_per_tilt_e_per_angstrom2", -0.1, "greater than or equal to 0"),
        ("spherical_aberration_mm", math.nan, "finite number"),
        ("tilt_axis_angle_deg", math.inf, "finite number"),
    ],
)
def test_acquisition_rejects_bad_values(
    acquisition_factory: Callable[..., Acquisition], field: str, value: float, expected: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        acquisition_factory(**{field: value})
    errors = exc.value.errors()
    assert errors[0]["loc"] == (field,)
    assert expected in errors[0]["msg"]
    assert field in _error_text(exc)


def test_unknown_fields_are_rejected(acquisition_factory: Callable[..., Acquisition]) -> None:
    with pytest.raises(ValidationError, match="pixel_size_a"):
        acquisition_factory(pixel_size_a=1.0)


def test_frozen_models_refuse_assignment(acquisition_factory: Callable[..., Acquisition]) -> None:
    acq = acquisition_factory()
    with pytest.raises(ValidationError, match="frozen"):
        acq.voltage_kv = 200.0


def test_replace_validates(acquisition_factory: Callable[..., Acquisition]) -> None:
    acq = acquisition_factory()
    assert acq.replace(voltage_kv=200.0).voltage_kv == 200.0
    assert acq.voltage_kv == 300.0
    with pytest.raises(ValidationError, match="voltage_kv"):
        acq.replace(voltage_kv=-5.0)
    with pytest.raises(ValidationError, match="no_such_field"):
        acq.replace(no_such_field=1)


def _tilt(index: int, angle: float, order: int) -> TiltImage:
    return TiltImage(
        index=index,
        tilt_angle_deg=angle,
        acquisition_order=order,
        prior_dose_e_per_angstrom2=0.0,
        dose_e_per_angstrom2=3.0,
    )


def test_tilt_angle_out_of_range_names_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        _tilt(0, 120.0, 0)
    assert exc.value.errors()[0]["loc"] == ("tilt_angle_deg",)
    assert "less than or equal to 90" in _error_text(exc)
    with pytest.raises(ValidationError, match="refined_tilt_angle_deg"):
        _tilt(0, 10.0, 0).replace(refined_tilt_angle_deg=-91.0)


def test_negative_dose_is_rejected() -> None:
    with pytest.raises(ValidationError, match="prior_dose_e_per_angstrom2"):
        _tilt(0, 0.0, 0).replace(prior_dose_e_per_angstrom2=-1.0)


@pytest.mark.parametrize(
    ("tilts", "message"),
    [
        ([_tilt(0, -3.0, 0), _tilt(0, 0.0, 1), _tilt(2, 3.0, 2)], r"duplicate tilt indices: \[0\]"),
        ([_tilt(0, -3.0, 0), _tilt(2, 0.0, 1)], "tilt indices must run 0..1"),
        ([_tilt(1, -3.0, 0), _tilt(0, 0.0, 1)], "tilt indices must run 0..1"),
        ([_tilt(0, -3.0, 0), _tilt(1, 0.0, 0)], r"duplicate acquisition orders: \[0\]"),
        ([_tilt(0, 3.0, 0), _tilt(1, 0.0, 1)], "sorted by nominal tilt angle"),
        ([], "at least 1 item"),
    ],
)
def test_tilt_series_checks_its_tilt_list(
    tilt_series_factory: Callable[..., TiltSeries], tilts: list[TiltImage], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        tilt_series_factory(tilts=tilts)


def test_tilt_series_even_odd_and_aligned(tilt_series_factory: Callable[..., TiltSeries]) -> None:
    with pytest.raises(ValidationError, match="even_stack_file and odd_stack_file"):
        tilt_series_factory(even_stack_file=Path("even.mrc"))
    with pytest.raises(
        ValidationError, match=r"aligned is True but included tilts \[0, 2, 3\] have no transform"
    ):
        tilt_series_factory(aligned=True)


def test_failed_assignment_leaves_series_unchanged(tilt_series: TiltSeries) -> None:
    before = tilt_series.model_dump()
    with pytest.raises(ValidationError, match="duplicate acquisition orders"):
        tilt_series.replace_tilt(0, acquisition_order=tilt_series.tilts[1].acquisition_order)
    with pytest.raises(ValidationError, match="aligned is True"):
        tilt_series.aligned = True
    with pytest.raises(ValidationError, match="pixel_size_angstrom"):
        tilt_series.pixel_size_angstrom = -2.0
    assert tilt_series.model_dump() == before


def test_in_place_list_edit_is_caught_by_revalidate(tilt_series: TiltSeries) -> None:
    tilt_series.tilts.append(tilt_series.tilts[0])
    with pytest.raises(ValidationError, match="duplicate tilt indices"):
        tilt_series.revalidate()


def test_ts_id_must_be_file_safe(tilt_series_factory: Callable[..., TiltSeries]) -> None:
    for bad in ["", "a/b", "has space", "-lead"]:
        with pytest.raises(ValidationError, match="ts_id"):
            tilt_series_factory(ts_id=bad)
    assert tilt_series_factory(ts_id="Position_1.2-a").ts_id == "Position_1.2-a"


def test_singular_transform_is_rejected() -> None:
    with pytest.raises(ValidationError, match="singular"):
        TiltTransform(a11=1.0, a12=2.0, a21=2.0, a22=4.0)


@pytest.mark.parametrize(
    ("angle", "normalised"),
    [
        (0.0, 0.0),
        (-90.0, -90.0),
        (89.5, 89.5),
        (90.0, -90.0),
        (100.0, -80.0),
        (-100.0, 80.0),
        (270.0, -90.0),
        (-450.0, -90.0),
    ],
)
def test_astigmatism_angle_is_normalised(angle: float, normalised: float) -> None:
    ctf = CtfParameters(defocus_u_angstrom=2e4, defocus_v_angstrom=1.9e4, astigmatism_angle_deg=angle)
    assert ctf.astigmatism_angle_deg == pytest.approx(normalised, abs=1e-12)
    assert CtfParameters.model_validate_json(ctf.model_dump_json()) == ctf


def test_defocus_u_smaller_than_v_is_allowed() -> None:
    ctf = CtfParameters(defocus_u_angstrom=1.0e4, defocus_v_angstrom=1.2e4)
    assert ctf.astigmatism_angstrom == -1000.0


def test_ctf_estimates() -> None:
    with pytest.raises(ValidationError, match="must be marked excluded"):
        CtfTiltEstimate(tilt_index=0)
    ctf = CtfParameters(defocus_u_angstrom=2e4, defocus_v_angstrom=2e4)
    with pytest.raises(ValidationError, match=r"duplicate tilt indices in CTF estimates: \[1\]"):
        CtfTiltSeries(
            ts_id="TS_01",
            tilts=[
                CtfTiltEstimate(tilt_index=1, parameters=ctf),
                CtfTiltEstimate(tilt_index=1, parameters=ctf),
            ],
        )


def test_landmark_model_checks() -> None:
    point = LandmarkPoint(tilt_index=0, x_px=1.0, y_px=2.0)
    with pytest.raises(ValidationError, match=r"several points on tilt indices \[0\]"):
        LandmarkChain(bead_id=0, points=[point, point])
    common = {"ts_id": "TS_01", "pixel_size_angstrom": 5.0, "n_tilts": 3, "bead_diameter_angstrom": 100.0}
    with pytest.raises(ValidationError, match=r"duplicate bead ids: \[4\]"):
        LandmarkModel(chains=[LandmarkChain(bead_id=4), LandmarkChain(bead_id=4)], **common)
    with pytest.raises(ValidationError, match="tilt index 3, but the series has only 3 tilts"):
        LandmarkModel(chains=[LandmarkChain(bead_id=0, points=[point.replace(tilt_index=3)])], **common)


IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (((1.0, 0.1, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), "not orthonormal"),
        (((2.0, 0.0, 0.0), (0.0, 2.0, 0.0), (0.0, 0.0, 2.0)), "not orthonormal"),
        (((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)), "determinant -1"),
    ],
)
def test_particle_rotation_must_be_proper(matrix: tuple[tuple[float, ...], ...], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Particle(ts_id="TS_01", position_angstrom=(0.0, 0.0, 0.0), rotation_matrix=matrix)
    assert exc.value.errors()[0]["loc"] == ("rotation_matrix",)
    assert message in _error_text(exc)


def test_particle_rotation_within_tolerance_is_accepted() -> None:
    nearly = ((1.0, 2e-5, 0.0), (-2e-5, 1.0, 0.0), (0.0, 0.0, 1.0))
    assert (
        Particle(ts_id="TS_01", position_angstrom=(0.0, 0.0, 0.0), rotation_matrix=nearly).rotation_matrix
        == nearly
    )


def test_particle_labels() -> None:
    base = Particle(ts_id="TS_01", position_angstrom=(0.0, 0.0, 0.0))
    assert base.rotation_matrix == IDENTITY
    for bad in (0, 3, True):
        with pytest.raises(ValidationError, match="half_set"):
            base.replace(half_set=bad)
    with pytest.raises(ValidationError, match="class_number"):
        base.replace(class_number=0)
    with pytest.raises(ValidationError, match="prior_normal must be a unit vector"):
        base.replace(prior_normal=(0.0, 0.0, 2.0))


def test_particle_set_symmetry() -> None:
    assert ParticleSet(symmetry=" d7 ").symmetry == "D7"
    assert ParticleSet(symmetry="I2").symmetry == "I2"
    for bad in ("C0", "X3", "I5", ""):
        with pytest.raises(ValidationError, match="unknown symmetry"):
            ParticleSet(symmetry=bad)


def test_fsc_lengths_must_match() -> None:
    with pytest.raises(ValidationError) as exc:
        FscCurve(spatial_frequency_per_angstrom=[0.0, 0.1, 0.2], fsc=[1.0, 0.5])
    assert "spatial_frequency_per_angstrom has 3 values but fsc has 2" in _error_text(exc)


@pytest.mark.parametrize(
    ("freq", "fsc", "message"),
    [
        ([0.0, 0.1, 0.1], [1.0, 0.5, 0.1], "increase strictly"),
        ([-0.1, 0.1], [1.0, 0.5], ">= 0"),
        ([0.0, 0.1], [1.0, 1.5], r"within \[-1, 1\]"),
        ([0.0, 0.1], [1.0, math.nan], "finite number"),
    ],
)
def test_fsc_curve_checks(freq: list[float], fsc: list[float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FscCurve(spatial_frequency_per_angstrom=freq, fsc=fsc)


def test_half_maps_must_share_a_grid() -> None:
    v1 = Volume(file=Path("h1.mrc"), voxel_size_angstrom=2.0, shape_zyx=(32, 32, 32))
    with pytest.raises(ValidationError, match="differ in shape"):
        HalfMaps(half1=v1, half2=v1.replace(shape_zyx=(32, 32, 30)))
    with pytest.raises(ValidationError, match="differ in voxel size"):
        HalfMaps(half1=v1, half2=v1.replace(voxel_size_angstrom=2.1))


def test_volume_and_tomogram_shapes() -> None:
    with pytest.raises(ValidationError, match="shape_zyx"):
        Volume(file=Path("v.mrc"), voxel_size_angstrom=2.0, shape_zyx=(0, 32, 32))
    with pytest.raises(ValidationError, match="reconstruction_method"):
        Tomogram(
            ts_id="TS_01",
            volume_file=Path("t.mrc"),
            voxel_size_angstrom=10.0,
            shape_zyx=(10, 20, 30),
            reconstruction_method="magic",
            binning=8.0,
        )
    with pytest.raises(ValidationError, match="even_volume_file and odd_volume_file"):
        Tomogram(
            ts_id="TS_01",
            volume_file=Path("t.mrc"),
            voxel_size_angstrom=10.0,
            shape_zyx=(10, 20, 30),
            reconstruction_method="sirt",
            binning=8.0,
            odd_volume_file=Path("odd.mrc"),
        )
