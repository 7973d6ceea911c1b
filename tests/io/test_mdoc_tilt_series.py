"""Tilt-series mdocs as TiltSeriesMovies (Scipion's import semantics), and mdocs written from them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tomoforge.io import FormatError, format_for, read, write
from tomoforge.io.mdoc import (
    MdocOverrides,
    mdoc_to_tilt_series_movies,
    normalize_ts_id,
    read_mdoc,
    read_tilt_series_mdoc,
    serialem_frames_name,
    tilt_series_movies_to_mdoc,
    write_tilt_series_mdoc,
)
from tomoforge.models import Acquisition, TiltImageMovie, TiltSeriesMovies

DATA = Path(__file__).resolve().parents[1] / "data" / "mdoc"
TS01 = DATA / "TS_01.mrc.mdoc"
TUTORIAL = MdocOverrides(voltage_kv=300.0, dose_per_tilt_e_per_angstrom2=3.0)


def _write_mdoc(
    path: Path,
    sections: list[dict[str, str]],
    header: dict[str, str] | None = None,
    axis_title: str | None = "    Tilt axis angle = 85.3, binning = 1  spot = 8  camera = 0",
) -> Path:
    """A small hand-written tilt-series mdoc; each section gets a TiltAngle and SubFramePath unless given."""
    lines = [f"{k} = {v}" for k, v in (header or {"PixelSpacing": "2", "Voltage": "300"}).items()]
    lines += ["", "[T = SerialEM: test scope   01-Jan-24  10:00:00]"]
    if axis_title is not None:
        lines += ["", f"[T = {axis_title}]"]
    for z, values in enumerate(sections):
        full = {"TiltAngle": str(3 * z), "SubFramePath": f"X:\\frames\\m_{z}.tif", **values}
        lines += ["", f"[ZValue = {z}]"] + [f"{k} = {v}" for k, v in full.items()]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def _error(path: Path, err: pytest.ExceptionInfo[FormatError]) -> str:
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message


# --- the real EMPIAR-10164 TS_01 mdoc -------------------------------------------------------------------------


def test_ts01_tilts_axis_frames_and_pixel():
    series = read_tilt_series_mdoc(TS01, TUTORIAL)
    assert series.ts_id == "TS_01"
    assert series.mdoc_file == TS01
    assert series.n_tilts == 41
    nominal = [round(a / 3) * 3 for a in series.tilt_angles_deg]
    assert nominal == list(range(-60, 61, 3))  # sorted by angle, −60..+60 in 3° steps
    assert all(abs(a - n) < 0.01 for a, n in zip(series.tilt_angles_deg, nominal, strict=True))
    acquisition = series.acquisition
    assert acquisition.tilt_axis_angle_deg == pytest.approx(85.3)
    assert acquisition.pixel_size_angstrom == 5.4  # PixelSpacing of the bin-4 stack, as Scipion takes it
    assert acquisition.magnification == 105000
    assert acquisition.frames_per_tilt == 8
    assert acquisition.exposure_time_per_tilt_s == 0.8
    assert acquisition.voltage_kv == 300
    assert (acquisition.spherical_aberration_mm, acquisition.amplitude_contrast) == (2.7, 0.1)
    assert all(t.frame_count == 8 for t in series.tilts)
    for tilt, angle in zip(series.tilts, nominal, strict=True):
        assert tilt.frames_file.parent == DATA
        # EMPIAR-10164's movies are named <ts>_<acquisition order>_<nominal angle>.mrc
        assert tilt.frames_file.name == serialem_frames_name("TS_01", tilt.acquisition_order, angle)


def test_ts01_is_acquired_dose_symmetrically():
    series = read_tilt_series_mdoc(TS01, TUTORIAL)
    by_time = sorted(series.tilts, key=lambda t: t.acquisition_order)
    assert [t.acquisition_order for t in by_time] == list(range(41))
    sequence = [round(t.tilt_angle_deg / 3) * 3 for t in by_time]
    # Hagen scheme with groups of two: 0, +3, then −3 −6, +6 +9, −9 −12, … alternating sides, ending at +60
    expected = [0, 3]
    start, sign = 3, -1
    while len(expected) < 41:
        expected += [sign * start, sign * (start + 3)]
        start, sign = start + 3, -sign
    assert sequence == expected[:41]
    assert sequence[-1] == 60
    times = [t.acquired_at for t in by_time if t.acquired_at is not None]
    assert len(times) == 41
    assert times[0] == datetime(2015, 11, 30, 15, 21, 38)
    assert times == sorted(times)
    assert times[-1] - times[0] == timedelta(minutes=45, seconds=7)


def test_ts01_prior_dose_accumulates_in_acquisition_order():
    series = read_tilt_series_mdoc(TS01, TUTORIAL)
    doses = [t.dose_e_per_angstrom2 for t in series.tilts]
    assert 2.5 <= sum(doses) / len(doses) <= 3.5
    assert series.acquisition.dose_per_tilt_e_per_angstrom2 == pytest.approx(3.0)
    for tilt in series.tilts:
        assert tilt.prior_dose_e_per_angstrom2 == pytest.approx(3.0 * tilt.acquisition_order)
    zero = next(t for t in series.tilts if t.acquisition_order == 0)
    assert abs(zero.tilt_angle_deg) < 0.01
    assert max(t.prior_dose_e_per_angstrom2 for t in series.tilts) == pytest.approx(120.0)


def test_ts01_carries_no_dose_or_voltage_so_the_user_must_give_them():
    # ExposureDose is 0 on every section and there is no FrameDosesAndNumber, DoseRate or CountsPerElectron
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(TS01)
    message = _error(TS01, err)
    assert "no Voltage is given (set voltage_kv)" in message
    assert "no section has a positive dose" in message and "dose_per_tilt_e_per_angstrom2" in message


def test_ts01_with_counts_per_electron_uses_the_image_mean(tmp_path: Path):
    text = TS01.read_bytes().replace(b"DividedBy2 = 1\r\n", b"DividedBy2 = 1\r\nCountsPerElectron = 2\r\n")
    path = tmp_path / "TS_01.mrc.mdoc"
    path.write_bytes(text)
    series = read_tilt_series_mdoc(path, MdocOverrides(voltage_kv=300))
    mdoc = read_mdoc(path)
    for tilt in series.tilts:
        section = mdoc.z_values[tilt.acquisition_order]  # ZValue order is time order in this file
        mean = section.min_max_mean[2]  # type: ignore[index]
        assert tilt.dose_e_per_angstrom2 == pytest.approx(mean / 2 / 5.4**2 * 2)  # ×2: DividedBy2


def test_ts01_overrides():
    overrides = MdocOverrides(
        voltage_kv=200,
        spherical_aberration_mm=0.01,
        amplitude_contrast=0.07,
        pixel_size_angstrom=0.675,
        tilt_axis_angle_deg=-94.7,
        dose_per_tilt_e_per_angstrom2=2.5,
        magnification=81000,
        tomo5_axis_convention=True,  # ignored: the axis is the user's
    )
    acquisition = read_tilt_series_mdoc(TS01, overrides).acquisition
    assert acquisition.voltage_kv == 200
    assert acquisition.spherical_aberration_mm == 0.01
    assert acquisition.amplitude_contrast == 0.07
    assert acquisition.pixel_size_angstrom == 0.675
    assert acquisition.tilt_axis_angle_deg == -94.7
    assert acquisition.dose_per_tilt_e_per_angstrom2 == 2.5
    assert acquisition.magnification == 81000


def test_tomo5_axis_convention_turns_the_mdoc_axis():
    series = read_tilt_series_mdoc(
        TS01, MdocOverrides(voltage_kv=300, dose_per_tilt_e_per_angstrom2=3, tomo5_axis_convention=True)
    )
    assert series.acquisition.tilt_axis_angle_deg == pytest.approx(-85.3 - 90.0)


def test_ts01_frames_must_exist_when_checked(tmp_path: Path):
    path = tmp_path / "TS_01.mrc.mdoc"
    path.write_bytes(TS01.read_bytes())
    for name in ["TS_01_000_0.0.mrc", "TS_01_001_3.0.mrc"]:
        (tmp_path / name).write_bytes(b"")
    assert read_tilt_series_mdoc(path, TUTORIAL).n_tilts == 41  # not checked by default
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(path, TUTORIAL, check_frames_exist=True)
    message = _error(path, err)
    assert "the movie files TS_01_002_-3.0.mrc, TS_01_003_-6.0.mrc, TS_01_004_6.0.mrc and 36 more" in message
    assert f"missing from {tmp_path}" in message
    for i, angle in enumerate([-3.0, -6.0, 6.0]):
        (tmp_path / f"TS_01_{i + 2:03d}_{angle:.1f}.mrc").write_bytes(b"")
    for tilt in read_tilt_series_mdoc(path, TUTORIAL).tilts:
        tilt.frames_file.touch()
    assert read_tilt_series_mdoc(path, TUTORIAL, check_frames_exist=True).n_tilts == 41


def test_registry_reads_and_writes_tilt_series_mdocs(tmp_path: Path):
    assert format_for(tmp_path / "TS_01.mrc.mdoc").name == "serialem-mdoc"
    series = read(TS01, overrides=TUTORIAL)
    assert isinstance(series, TiltSeriesMovies) and series.n_tilts == 41
    out = write(series, tmp_path / "TS_01.mrc.mdoc")
    assert read_tilt_series_mdoc(out, MdocOverrides(dose_per_tilt_e_per_angstrom2=3.0)).n_tilts == 41


# --- Scipion's rules on small hand-written mdocs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dose"),
    [
        ({"ExposureDose": "3.5", "FrameDosesAndNumber": "1 10"}, 3.5),  # ExposureDose first
        ({"ExposureDose": "0", "FrameDosesAndNumber": "0.5 6 0.25 4"}, 4.0),  # Σ dose × frames
        ({"FrameDosesAndNumber": "0 6", "DoseRate": "8", "ExposureTime": "2"}, 4.0),  # 8 e/px/s · 2 s / 2² Å²
        ({"ExposureDose": "0", "MinMaxMean": "0 100 40", "CountsPerElectron": "5"}, 2.0),  # 40 / 5 / 2²
        ({"MinMaxMean": "0 100 40", "CountsPerElectron": "5", "DividedBy2": "1"}, 4.0),
        ({"MinMaxMean": "0 100 40", "CountsPerElectron": "5", "DividedBy2": "0"}, 2.0),
        ({"DoseRate": "8", "ExposureTime": "2", "MinMaxMean": "0 100 40", "CountsPerElectron": "5"}, 4.0),
    ],
)
def test_dose_sources_in_priority_order(tmp_path: Path, values: dict[str, str], dose: float):
    path = _write_mdoc(tmp_path / "TS_02.mdoc", [values])
    (tilt,) = read_tilt_series_mdoc(path).tilts
    assert tilt.dose_e_per_angstrom2 == pytest.approx(dose)
    assert tilt.prior_dose_e_per_angstrom2 == 0


def test_dose_rate_uses_the_pixel_size_in_use_and_the_user_dose_wins(tmp_path: Path):
    path = _write_mdoc(tmp_path / "TS_02.mdoc", [{"DoseRate": "8", "ExposureTime": "2"}])
    assert (
        read_tilt_series_mdoc(path, MdocOverrides(pixel_size_angstrom=1.0)).tilts[0].dose_e_per_angstrom2
        == 16
    )
    dose = MdocOverrides(dose_per_tilt_e_per_angstrom2=1.25)
    assert read_tilt_series_mdoc(path, dose).tilts[0].dose_e_per_angstrom2 == 1.25


def test_prior_dose_and_order_follow_datetime_not_zvalue(tmp_path: Path):
    sections = [
        {"TiltAngle": "0", "ExposureDose": "1", "DateTime": "05-Jan-24  10:00:00"},
        {"TiltAngle": "-30", "ExposureDose": "2", "DateTime": "05-Jan-24  10:02:00"},
        {"TiltAngle": "30", "ExposureDose": "4", "DateTime": "05-Jan-24  10:01:00"},
        {"TiltAngle": "-60", "ExposureDose": "8", "DateTime": "05-Jan-2024  10:03:00"},
    ]
    series = read_tilt_series_mdoc(_write_mdoc(tmp_path / "TS_02.mdoc", sections))
    assert series.tilt_angles_deg == [-60, -30, 0, 30]
    assert [t.acquisition_order for t in series.tilts] == [3, 2, 0, 1]
    assert [t.dose_e_per_angstrom2 for t in series.tilts] == [8, 2, 1, 4]
    assert [t.prior_dose_e_per_angstrom2 for t in series.tilts] == [7, 5, 0, 1]
    assert [t.frames_file.name for t in series.tilts] == ["m_3.tif", "m_1.tif", "m_0.tif", "m_2.tif"]
    assert series.acquisition.dose_per_tilt_e_per_angstrom2 == pytest.approx(15 / 4)


def test_without_datetime_the_order_is_the_zvalue_order(tmp_path: Path):
    sections = [{"TiltAngle": a, "ExposureDose": "2"} for a in ["0", "3", "-3"]]
    series = read_tilt_series_mdoc(_write_mdoc(tmp_path / "TS_02.mdoc", sections))
    assert [t.acquisition_order for t in series.tilts] == [2, 0, 1]
    assert [t.prior_dose_e_per_angstrom2 for t in series.tilts] == [4, 0, 2]
    assert all(t.acquired_at is None for t in series.tilts)


def test_voltage_pixel_and_magnification_come_from_the_first_acquired_section(tmp_path: Path):
    sections = [
        {"Voltage": "200", "PixelSpacing": "3", "Magnification": "1000", "ExposureDose": "1",
         "DateTime": "05-Jan-24  10:05:00"},
        {"Voltage": "300", "PixelSpacing": "4", "Magnification": "2000", "ExposureDose": "1",
         "DateTime": "05-Jan-24  10:00:00"},
    ]  # fmt: skip
    acquisition = read_tilt_series_mdoc(_write_mdoc(tmp_path / "TS_02.mdoc", sections)).acquisition
    assert (acquisition.voltage_kv, acquisition.pixel_size_angstrom, acquisition.magnification) == (
        300,
        4,
        2000,
    )
    header_only = _write_mdoc(
        tmp_path / "TS_03.mdoc", [{"ExposureDose": "1"}], header={"PixelSpacing": "2.5", "Voltage": "120"}
    )
    acquisition = read_tilt_series_mdoc(header_only).acquisition
    assert (acquisition.voltage_kv, acquisition.pixel_size_angstrom, acquisition.magnification) == (
        120,
        2.5,
        None,
    )


@pytest.mark.parametrize(
    ("name", "ts_id"),
    [
        ("TS_01.mrc.mdoc", "TS_01"),
        ("/data/run 1/TS_45.st.mdoc", "TS_45"),
        ("01.mdoc", "TS_01"),
        ("tomo-3.mrc.mdoc", "tomo_3"),
        ("grid[2]_ts-5.mdoc", "grid2_ts_5"),
        ("a--b.mdoc", "a_b"),
        ("Position_1_2.mdoc", "Position_1_2"),
    ],
)
def test_ts_id_is_normalised_as_scipion_does(name: str, ts_id: str):
    assert normalize_ts_id(name) == ts_id


def test_frame_set_mdocs_are_not_tilt_series(tmp_path: Path):
    single = DATA / "mdocfile_frame_set_single.mdoc"
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(single)
    assert "has no [ZValue = …] sections, so it is not a tilt-series mdoc" in _error(single, err)
    multiple = DATA / "mdocfile_frame_set_multiple.mdoc"
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(multiple)
    assert (
        "[ZValue = 0], [ZValue = 1], [ZValue = 2], [ZValue = 3] and 16 more have no SubFramePath"
        in _error(multiple, err)
    )


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ([{"ExposureDose": "1"}, {"TiltAngle": "abc", "ExposureDose": "1"}], "[ZValue = 1] has a non-numeric TiltAngle value 'abc'"),
        ([{"ExposureDose": "1", "TiltAngle": "95"}], "[ZValue = 0] has a TiltAngle 95 outside [-90, 90]"),
        ([{"ExposureDose": "0"}, {"ExposureDose": "1"}], "[ZValue = 0] has a positive dose"),
        ([{"ExposureDose": "1", "DateTime": "05-Jan-24  10:00:00"}, {"ExposureDose": "1"}], "[ZValue = 1] lack a readable DateTime"),
        ([{"ExposureDose": "1", "DateTime": "5 Jan 2024"}], "[ZValue = 0] has an unreadable DateTime"),
        ([{"ExposureDose": "1", "SubFramePath": ""}], "[ZValue = 0] has no SubFramePath"),
        ([{"ExposureDose": "1", "NumSubFrames": "2.5"}], "whole number for NumSubFrames"),
    ],
)  # fmt: skip
def test_bad_sections_are_named(tmp_path: Path, sections: list[dict[str, str]], words: str):
    path = _write_mdoc(tmp_path / "TS_02.mdoc", sections)
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(path)
    message = _error(path, err)
    assert message.startswith(f"{path}: cannot be imported as a tilt series: ")
    assert words in message


def test_every_problem_is_named_in_one_sentence(tmp_path: Path):
    path = _write_mdoc(
        tmp_path / "TS_02.mdoc", [{"ExposureDose": "0"}], header={"ImageFile": "x.mrc"}, axis_title=None
    )
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(path)
    message = _error(path, err)
    for words in [
        "no Voltage",
        "no positive PixelSpacing",
        "no [T = Tilt axis angle",
        "no section has a positive dose",
    ]:
        assert words in message


def test_non_consecutive_zvalues_are_refused(tmp_path: Path):
    path = tmp_path / "TS_02.mdoc"
    path.write_text(
        "PixelSpacing = 2\nVoltage = 300\n[T = Tilt axis angle = 0]\n"
        "[ZValue = 0]\nTiltAngle = 0\nExposureDose = 1\nSubFramePath = a.tif\n"
        "[ZValue = 2]\nTiltAngle = 3\nExposureDose = 1\nSubFramePath = b.tif\n"
    )
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(path)
    assert "[ZValue = 2] is section 1 of the file; Z values must run 0, 1, 2" in _error(path, err)


def test_values_the_model_refuses_become_format_errors(tmp_path: Path):
    path = _write_mdoc(
        tmp_path / "TS_02.mdoc", [{"ExposureDose": "1"}], header={"PixelSpacing": "2", "Voltage": "3000"}
    )
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(path)
    assert "voltage_kv: Input should be less than or equal to 1000" in _error(path, err)
    bad_name = _write_mdoc(tmp_path / "my tomo.mdoc", [{"ExposureDose": "1"}])
    with pytest.raises(FormatError) as err:
        read_tilt_series_mdoc(bad_name)
    assert "ts_id" in _error(bad_name, err)


# --- writing mdocs from TiltSeriesMovies ---------------------------------------------------------------------


def _dose_symmetric_series(folder: Path, n_side: int = 3) -> TiltSeriesMovies:
    """A dose-symmetric series of 2·n_side + 1 tilts, 3° apart, 60 s between exposures, 3 e/Å² each."""
    order = [0]
    for k in range(1, n_side + 1):
        order += [3 * k, -3 * k] if k % 2 else [-3 * k, 3 * k]
    start = datetime(2024, 5, 17, 9, 30, 0)
    tilts = [
        TiltImageMovie(
            index=0,
            tilt_angle_deg=angle,
            acquisition_order=i,
            prior_dose_e_per_angstrom2=3.0 * i,
            dose_e_per_angstrom2=3.0,
            acquired_at=start + timedelta(seconds=60 * i),
            frames_file=folder / serialem_frames_name("TS_01", i, angle),
            frame_count=8,
        )
        for i, angle in enumerate(order)
    ]
    tilts = [t.replace(index=i) for i, t in enumerate(sorted(tilts, key=lambda t: t.tilt_angle_deg))]
    acquisition = Acquisition(
        voltage_kv=300,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.07,
        pixel_size_angstrom=0.675,
        tilt_axis_angle_deg=85.3,
        dose_per_tilt_e_per_angstrom2=3.0,
        magnification=105000,
        frames_per_tilt=8,
        exposure_time_per_tilt_s=0.8,
    )
    return TiltSeriesMovies(
        ts_id="TS_01", acquisition=acquisition, tilts=tilts, mdoc_file=folder / "TS_01.mrc.mdoc"
    )


def test_written_mdoc_looks_like_serialem(tmp_path: Path):
    series = _dose_symmetric_series(tmp_path)
    path = write_tilt_series_mdoc(
        series, tmp_path / "TS_01.mrc.mdoc", frames_folder="X:\\DATA\\TS_01\\frames"
    )
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n")  # CRLF like SerialEM on Windows
    text = raw.decode()
    assert text.startswith(
        "PixelSpacing = 0.675\r\nVoltage = 300\r\nImageFile = TS_01.mrc\r\n\r\n[T = SerialEM: "
    )
    assert "[T =     Tilt axis angle = 85.3, binning = 1]" in text
    assert "\r\n\r\n[ZValue = 0]\r\nTiltAngle = 0\r\nMagnification = 105000\r\nExposureDose = 3\r\n" in text
    assert "SubFramePath = X:\\DATA\\TS_01\\frames\\TS_01_000_0.0.mrc\r\n" in text
    assert "SubFramePath = X:\\DATA\\TS_01\\frames\\TS_01_002_-3.0.mrc\r\n" in text
    assert "RotationAngle = 175.3\r\n" in text
    assert "NumSubFrames = 8\r\nFrameDosesAndNumber = 0.375 8\r\n" in text
    assert "DateTime = 17-May-24  09:30:00\r\n" in text
    assert re.findall(r"PriorRecordDose = (\S+)", text) == ["0", "3", "6", "9", "12", "15", "18"]
    assert re.findall(r"TiltAngle = (\S+)", text) == ["0", "3", "-3", "-6", "6", "9", "-9"]
    assert "17-May-24  09:30:00    ]" in text.split("\r\n")[4]


def test_written_mdoc_reads_back_as_the_same_series(tmp_path: Path):
    series = _dose_symmetric_series(tmp_path, n_side=10)
    path = write_tilt_series_mdoc(series, tmp_path / "TS_01.mrc.mdoc")
    again = read_tilt_series_mdoc(path, MdocOverrides(amplitude_contrast=0.07))
    assert again == series
    for tilt in again.tilts:
        tilt.frames_file.touch()
    assert (
        read_tilt_series_mdoc(path, MdocOverrides(amplitude_contrast=0.07), check_frames_exist=True) == series
    )


def test_builder_takes_extra_values_and_checks_times(tmp_path: Path):
    series = _dose_symmetric_series(tmp_path, n_side=1)
    extras = [{"Defocus": f"-{2 + 0.1 * t.index:.1f}", "TiltAngle": "9.5"} for t in series.tilts]
    mdoc = tilt_series_movies_to_mdoc(
        series, section_values=extras, image_size_xy=(3710, 3838), spot_size=8, camera_index=2
    )
    assert mdoc.header["ImageSize"] == "3710 3838" and mdoc.header["DataMode"] == "1"
    assert mdoc.titles[1] == "Tilt axis angle = 85.3, binning = 1  spot = 8  camera = 2"
    by_z = {t.acquisition_order: t for t in series.tilts}
    for section in mdoc.z_values:
        assert section.defocus_um == pytest.approx(-(2 + 0.1 * by_z[section.number].index))
        assert section.tilt_angle_deg == 9.5  # extras replace the built values
        assert section.spot_size == 8 and section.get("CameraIndex") == "2"
    with pytest.raises(ValueError, match="one entry per tilt|entries for"):
        tilt_series_movies_to_mdoc(series, section_values=extras[:1])
    first = next(t for t in series.tilts if t.acquisition_order == 0)
    late = first.replace(acquired_at=first.acquired_at + timedelta(hours=1))  # type: ignore[operator]
    shuffled = series.model_copy(update={"tilts": [late if t is first else t for t in series.tilts]})
    target = tmp_path / "bad.mdoc"
    with pytest.raises(FormatError) as err:
        write_tilt_series_mdoc(shuffled, target)
    assert "do not increase with their acquisition order" in _error(target, err)
    assert not target.exists()


def test_builder_without_times_keeps_the_order_in_zvalues(tmp_path: Path):
    series = _dose_symmetric_series(tmp_path, n_side=2)
    series.tilts = [t.replace(acquired_at=None) for t in series.tilts]
    path = write_tilt_series_mdoc(series, tmp_path / "TS_01.mrc.mdoc")
    assert "DateTime" not in path.read_text()
    again = mdoc_to_tilt_series_movies(read_mdoc(path), path, MdocOverrides(amplitude_contrast=0.07))
    assert again == series
