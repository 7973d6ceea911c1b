"""Factories of small, valid example models shared by the model tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel

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
    TiltImageMovie,
    TiltSeries,
    TiltSeriesMovies,
    TiltTransform,
    Tomogram,
    Volume,
)

# Dose-symmetric order for nominal angles -6, -3, 0, 3, 6 (stack order): 0 first, then 3, -3, 6, -6.
ANGLES = [-6.0, -3.0, 0.0, 3.0, 6.0]
ORDERS = [4, 2, 0, 1, 3]
DOSE = 3.5


def make_acquisition(**changes: object) -> Acquisition:
    data: dict[str, object] = {
        "voltage_kv": 300.0,
        "spherical_aberration_mm": 2.7,
        "amplitude_contrast": 0.07,
        "pixel_size_angstrom": 0.675,
        "tilt_axis_angle_deg": 85.3,
        "dose_per_tilt_e_per_angstrom2": DOSE,
    }
    data.update(changes)
    return Acquisition.model_validate(data)


def make_movies(n: int = 5) -> list[TiltImageMovie]:
    start = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    return [
        TiltImageMovie(
            index=i,
            tilt_angle_deg=ANGLES[i],
            acquisition_order=ORDERS[i],
            prior_dose_e_per_angstrom2=DOSE * ORDERS[i],
            dose_e_per_angstrom2=DOSE,
            acquired_at=start + timedelta(seconds=30 * ORDERS[i]),
            frames_file=Path(f"frames/TS_01_{ORDERS[i]:03d}_{ANGLES[i]:.1f}.tif"),
            frame_count=8,
        )
        for i in range(n)
    ]


def make_tilt_series_movies() -> TiltSeriesMovies:
    return TiltSeriesMovies(
        ts_id="TS_01", acquisition=make_acquisition(), tilts=make_movies(), mdoc_file=Path("TS_01.mdoc")
    )


def make_tilt_series(**changes: object) -> TiltSeries:
    tilts = [TiltImage.from_movie(m) for m in make_movies()]
    tilts[1] = tilts[1].replace(
        transform=TiltTransform.from_rotation(-4.5, dx_angstrom=12.5, dy_angstrom=-3.25),
        refined_tilt_angle_deg=-3.2,
        ctf=CtfParameters(defocus_u_angstrom=31000.0, defocus_v_angstrom=29500.0, astigmatism_angle_deg=33.0),
    )
    tilts[4] = tilts[4].replace(excluded=True)
    data: dict[str, object] = {
        "ts_id": "TS_01",
        "acquisition": make_acquisition(),
        "stack_file": Path("stacks/TS_01.mrc"),
        "pixel_size_angstrom": 1.35,
        "tilts": tilts,
    }
    data.update(changes)
    return TiltSeries.model_validate(data)


@pytest.fixture
def tilt_series() -> TiltSeries:
    return make_tilt_series()


@pytest.fixture
def tilt_series_movies() -> TiltSeriesMovies:
    return make_tilt_series_movies()


@pytest.fixture
def acquisition_factory() -> Callable[..., Acquisition]:
    return make_acquisition


@pytest.fixture
def tilt_series_factory() -> Callable[..., TiltSeries]:
    return make_tilt_series


def make_examples() -> dict[str, BaseModel]:
    """One fully populated, valid instance of every public model class, keyed by class name."""
    ts = make_tilt_series(
        even_stack_file=Path("stacks/TS_01_even.mrc"),
        odd_stack_file=Path("stacks/TS_01_odd.mrc"),
        image_shape_yx=(4092, 5760),
    )
    ctf = CtfParameters(
        defocus_u_angstrom=31000.0,
        defocus_v_angstrom=29500.0,
        astigmatism_angle_deg=-41.25,
        phase_shift_deg=12.0,
        fit_resolution_angstrom=6.1,
        score=0.123456789,
    )
    point = LandmarkPoint(tilt_index=2, x_px=101.25, y_px=-0.5, residual_xy_px=(0.1, -0.2))
    chain = LandmarkChain(
        bead_id=7,
        points=[point, LandmarkPoint(tilt_index=0, x_px=99.0, y_px=1.0)],
        position_angstrom=(10.0, -20.5, 33.3),
    )
    volume1 = Volume(
        file=Path("avg/half1.mrc"),
        voxel_size_angstrom=2.7,
        shape_zyx=(64, 64, 64),
        origin_angstrom=(1.0, 2.0, 3.0),
    )
    volume2 = volume1.replace(file=Path("avg/half2.mrc"))
    particle = Particle(
        ts_id="TS_01",
        position_angstrom=(120.5, -3.25, 1e-3),
        rotation_matrix=((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
        group="virus_3",
        score=0.87,
        half_set=2,
        class_number=1,
        prior_normal=(0.0, 0.6, 0.8),
    )
    return {
        "Acquisition": make_acquisition(
            magnification=81000.0,
            frames_per_tilt=8,
            exposure_time_per_tilt_s=0.6,
            super_resolution=True,
            gain_reference_file=Path("/data/gain/gain.mrc"),
            defects_file=Path("defects.txt"),
            microscope="Krios G4",
            detector="K3",
        ),
        "TiltImageMovie": make_movies()[0],
        "TiltImage": ts.tilts[1],
        "TiltSeriesMovies": make_tilt_series_movies(),
        "TiltSeries": ts,
        "TiltTransform": TiltTransform(
            a11=0.99, a12=-0.1, a21=0.11, a22=1.01, dx_angstrom=5.5, dy_angstrom=-7.0
        ),
        "CtfParameters": ctf,
        "CtfTiltEstimate": CtfTiltEstimate(tilt_index=3, parameters=ctf),
        "CtfTiltSeries": CtfTiltSeries(
            ts_id="TS_01",
            tilts=[
                CtfTiltEstimate(tilt_index=1, parameters=ctf),
                CtfTiltEstimate(tilt_index=0, parameters=None, excluded=True),
            ],
        ),
        "LandmarkPoint": point,
        "LandmarkChain": chain,
        "LandmarkModel": LandmarkModel(
            ts_id="TS_01",
            pixel_size_angstrom=5.4,
            n_tilts=5,
            bead_diameter_angstrom=100.0,
            chains=[chain, LandmarkChain(bead_id=2)],
            mean_residual_px=0.4,
        ),
        "Tomogram": Tomogram(
            ts_id="TS_01",
            volume_file=Path("tomograms/TS_01.mrc"),
            voxel_size_angstrom=10.8,
            shape_zyx=(300, 1023, 1440),
            origin_angstrom=(0.0, 0.0, -150.0),
            reconstruction_method="wbp",
            binning=16.0,
            ctf_corrected=True,
            even_volume_file=Path("tomograms/TS_01_even.mrc"),
            odd_volume_file=Path("tomograms/TS_01_odd.mrc"),
        ),
        "Particle": particle,
        "ParticleSet": ParticleSet(
            particles=[particle, Particle(ts_id="TS_02", position_angstrom=(0.0, 0.0, 0.0), half_set=1)],
            pixel_size_angstrom=2.7,
            box_size_px=64,
            symmetry="c6",
        ),
        "Volume": volume1,
        "HalfMaps": HalfMaps(half1=volume1, half2=volume2, mask_file=Path("avg/mask.mrc")),
        "FscCurve": FscCurve(
            spatial_frequency_per_angstrom=[0.0, 0.05, 0.1, 0.15], fsc=[1.0, 0.9, 0.3, -0.05]
        ),
    }


@pytest.fixture
def examples() -> dict[str, BaseModel]:
    return make_examples()
