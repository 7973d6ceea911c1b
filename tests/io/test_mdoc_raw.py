"""The raw mdoc model: real SerialEM files parse, round-trip exactly, and broken files fail clearly."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tomoforge.io import FormatError
from tomoforge.io.mdoc import (
    Mdoc,
    MdocSection,
    format_mdoc_text,
    format_serialem_datetime,
    parse_serialem_datetime,
    read_mdoc,
    write_mdoc,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "mdoc"
REAL_FILES = sorted(DATA.glob("*.mdoc"))


def _one_sentence_error(path: Path, err: pytest.ExceptionInfo[FormatError]) -> str:
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "\r" not in message
    return message


def test_all_real_files_are_here():
    assert [p.name for p in REAL_FILES] == [
        "TS_01.mrc.mdoc",
        "mdocfile_frame_set_multiple.mdoc",
        "mdocfile_frame_set_single.mdoc",
        "mdocfile_montage_section.mdoc",
        "mdocfile_montage_section_multiple.mdoc",
    ]


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_files_round_trip_exactly(path: Path, tmp_path: Path):
    mdoc = read_mdoc(path)
    out = write_mdoc(mdoc, tmp_path / path.name)
    again = read_mdoc(out)
    assert again == mdoc
    assert again.sections == mdoc.sections and list(again.header.items()) == list(mdoc.header.items())
    # SerialEM's own layout comes back byte for byte (CRLF and LF files alike)
    assert out.read_bytes() == path.read_bytes()


def test_ts01_raw_structure():
    mdoc = read_mdoc(DATA / "TS_01.mrc.mdoc")
    assert mdoc.newline == "\r\n"
    assert mdoc.header == {
        "PixelSpacing": "5.4",
        "ImageFile": "TS_01.mrc",
        "ImageSize": "924 958",
        "DataMode": "1",
    }
    assert mdoc.titles == [
        "SerialEM: Digitized on EMBL Krios                       30-Nov-15  15:14:20",
        "Tilt axis angle = 85.3, binning = 4  spot = 8  camera = 2",
    ]
    assert mdoc.tilt_axis_angle_deg == pytest.approx(85.3)
    z_values = mdoc.z_values
    assert [s.number for s in z_values] == list(range(41))
    first = z_values[0]
    assert list(first.values)[:3] == ["TiltAngle", "StagePosition", "StageZ"]
    assert first.tilt_angle_deg == pytest.approx(0.000999877)
    assert first.magnification == 105000
    assert first.exposure_dose_e_per_angstrom2 == 0
    assert first.pixel_spacing_angstrom == 5.4
    assert first.spot_size == 8
    assert first.defocus_um == pytest.approx(2.68083)
    assert first.target_defocus_um == -4
    assert first.rotation_angle_deg == pytest.approx(175.3)
    assert first.exposure_time_s == 0.8
    assert first.binning == 4
    assert first.divided_by_2 is True
    assert first.min_max_mean == (5, 1403, pytest.approx(623.699))
    assert first.counts_per_electron is None
    assert first.num_sub_frames == 8
    assert first.sub_frame_name == "TS_01_000_0.0.mrc"
    assert first.get("SubFramePath") == "D:\\DATA\\Flo\\HGK149_20151130\\frames\\TS_01_000_0.0.mrc"
    assert first.date_time == datetime(2015, 11, 30, 15, 21, 38)
    assert first.get("StagePosition") == "20.7936 155.287"  # unknown keys stay strings
    assert first.label == "[ZValue = 0]"


def test_frame_set_single_fields():
    mdoc = read_mdoc(DATA / "mdocfile_frame_set_single.mdoc")
    # SerialEM's frame-saving mdoc starts with an unbracketed "T = ..." global line
    assert mdoc.header["T"].startswith("SerialEM: UMass_Krios Camera -> 0:Ceta 1:GIF-K3")
    assert mdoc.header_number("Voltage") == 300
    assert mdoc.titles == [] and mdoc.z_values == []
    (frame_set,) = mdoc.frame_sets
    assert frame_set.kind == "FrameSet" and frame_set.number == 0
    assert frame_set.gain_reference == "SuperRef_s_mmm_00000_-15.0_Oct08_01.59.24.dm4"
    assert frame_set.tilt_angle_deg == pytest.approx(32.984)
    assert frame_set.exposure_dose_e_per_angstrom2 == pytest.approx(7.65892)
    assert frame_set.dose_rate_e_per_pixel_s == pytest.approx(4.97858)
    assert frame_set.pixel_spacing_angstrom == pytest.approx(1.2827)
    assert frame_set.binning == 0.5
    assert frame_set.counts_per_electron == 1
    assert frame_set.divided_by_2 is False
    assert frame_set.sub_frame_name == "s_mmm_00993_33.0_Oct08_07.39.05.tif"
    assert frame_set.num_sub_frames == 12
    assert frame_set.frame_doses_and_numbers == [(pytest.approx(0.63824), 12)]
    # the per-frame doses add up to the exposure dose
    dose, n = frame_set.frame_doses_and_numbers[0]
    assert dose * n == pytest.approx(frame_set.exposure_dose_e_per_angstrom2, rel=1e-3)
    assert frame_set.date_time == datetime(2021, 10, 8, 7, 39, 8)
    assert frame_set.get("UncroppedSize") == "-2880 -2046"


def test_frame_set_multiple_fields():
    mdoc = read_mdoc(DATA / "mdocfile_frame_set_multiple.mdoc")
    (frame_set,) = mdoc.frame_sets
    assert frame_set.num_sub_frames == 243
    z_values = mdoc.z_values
    assert len(z_values) == 20
    assert z_values[0].frame_ts_start_end_frames == (0, 12)
    assert z_values[19].frame_ts_start_end_frames == (419, 431)
    # PriorRecordDose is the running sum of the ExposureDose of the earlier sections
    running = 0.0
    for section in z_values:
        assert section.prior_record_dose_e_per_angstrom2 == pytest.approx(running, abs=1e-3)
        running += section.exposure_dose_e_per_angstrom2 or 0.0


@pytest.mark.parametrize(
    ("name", "n_z", "n_montage", "axis_deg"),
    [
        ("mdocfile_montage_section.mdoc", 62, 1, -86.7),
        ("mdocfile_montage_section_multiple.mdoc", 90, 10, 85.5),
    ],
)
def test_montage_files_keep_their_montage_sections(name: str, n_z: int, n_montage: int, axis_deg: float):
    mdoc = read_mdoc(DATA / name)
    assert len(mdoc.z_values) == n_z
    montage = mdoc.montage_sections
    assert [s.number for s in montage] == list(range(n_montage))
    assert "FullMontSize" in montage[0].values
    assert mdoc.tilt_axis_angle_deg == pytest.approx(axis_deg)
    # SerialEM's RotationAngle is the tilt axis + 90°
    assert mdoc.z_values[0].rotation_angle_deg == pytest.approx(axis_deg + 90.0, abs=0.1)
    kinds = [s.kind for s in mdoc.sections]
    assert kinds[:2] == ["T", "T"]
    if n_montage > 1:  # the montage sections sit between the pieces, in file order
        assert kinds.index("MontSection") < len(kinds) - 1


def test_titles_with_other_spellings_give_the_tilt_axis():
    for title, expected in [
        ("    Tilt axis angle = 85.3, binning = 1  spot = 8  camera = 0", 85.3),
        ("  TiltAxisAngle = -91.81  Binning = 1  SpotSize = 7", -91.81),
        ("tilt axis angle=1.5e1,binning=2", 15.0),
    ]:
        mdoc = Mdoc(sections=[MdocSection("T", "SerialEM: x"), MdocSection("T", title)])
        assert mdoc.tilt_axis_angle_deg == pytest.approx(expected)
    assert Mdoc(sections=[MdocSection("T", "Tilt axis angle = nonsense")]).tilt_axis_angle_deg is None


def test_serialem_datetimes():
    assert parse_serialem_datetime("30-Nov-15  15:21:38") == datetime(2015, 11, 30, 15, 21, 38)
    assert parse_serialem_datetime("08-oct-2021 07:39:08") == datetime(2021, 10, 8, 7, 39, 8)
    assert format_serialem_datetime(datetime(2015, 11, 30, 15, 21, 38)) == "30-Nov-15  15:21:38"
    assert (
        format_serialem_datetime(datetime(2021, 3, 5, 1, 2, 3), four_digit_year=True)
        == "05-Mar-2021  01:02:03"
    )
    for bad in ["2015-11-30 15:21:38", "30-Foo-15  15:21:38", "31-Feb-15  10:00:00", "30-Nov-15  25:00:00"]:
        with pytest.raises(ValueError):
            parse_serialem_datetime(bad)


def test_values_keep_their_spacing_and_latin1_files_read(tmp_path: Path):
    path = tmp_path / "odd.mdoc"
    path.write_bytes(
        b"Note =  two spaces  \n# a comment line\n[ZValue=0]\nTiltAngle=3\nOperator = J\xfcrgen\n"
    )
    mdoc = read_mdoc(path)
    assert mdoc.header == {"Note": " two spaces  "}
    assert mdoc.z_values[0].values == {"TiltAngle": "3", "Operator": "Jürgen"}
    assert mdoc.newline == "\n"
    assert read_mdoc(write_mdoc(mdoc, tmp_path / "again.mdoc")) == mdoc
    assert (
        format_mdoc_text(mdoc) == "Note =  two spaces  \n\n[ZValue = 0]\nTiltAngle = 3\nOperator = Jürgen\n"
    )


def test_equality_depends_on_order_and_content():
    a = Mdoc(header={"A": "1", "B": "2"}, sections=[MdocSection("ZValue", "0", {"X": "1"})])
    b = Mdoc(header={"B": "2", "A": "1"}, sections=[MdocSection("ZValue", "0", {"X": "1"})])
    c = Mdoc(header={"A": "1", "B": "2"}, sections=[MdocSection("ZValue", "0", {"X": "2"})])
    assert a != b and a != c
    assert a == Mdoc(header={"A": "1", "B": "2"}, sections=[MdocSection("ZValue", "0", {"X": "1"})])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty"),
        (b"  \r\n\r\n", "is empty"),
        (b"PixelSpacing = 5.4\r\nImageFile = TS_01.mrc\r\n[T = SerialEM: title]\r\n", "has no [ZValue"),
        (b"[ZValue = 0]\nTiltAngle = 1\n[ZValue = 0]\nTiltAngle = 2\n", "repeats the section [ZValue = 0]"),
        (b"[ZValue = 0]\nTiltAngle = 1\nTiltAngle = 2\n", "repeats the key TiltAngle in [ZValue = 0]"),
        (b"[ZValue = 0\nTiltAngle = 1\n", "line 1 starts a section"),
        (b"[ = 0]\nTiltAngle = 1\n", "without a kind"),
        (b"[ZValue = 0]\nTiltAngle 1\n", "line 2 is neither"),
        (b"[ZValue = 0]\n = 1\n", "line 2 has a value without a key"),
        (b"[ZValue = 0]\nTiltAngle = 1\x00\n", "NUL bytes"),
    ],
)
def test_broken_files_raise_one_sentence(tmp_path: Path, content: bytes, words: str):
    path = tmp_path / "broken.mrc.mdoc"
    path.write_bytes(content)
    with pytest.raises(FormatError) as err:
        read_mdoc(path)
    assert words in _one_sentence_error(path, err)


def test_missing_file_is_a_format_error(tmp_path: Path):
    path = tmp_path / "absent.mdoc"
    with pytest.raises(FormatError) as err:
        read_mdoc(path)
    assert "cannot be read" in _one_sentence_error(path, err)


def test_bad_numbers_name_the_file_section_and_key(tmp_path: Path):
    path = tmp_path / "bad.mdoc"
    path.write_text("[ZValue = 0]\nTiltAngle = abc\nMinMaxMean = 1 2\nDateTime = yesterday\nDefocus = nan\n")
    section = read_mdoc(path).z_values[0]
    for accessor, words in [
        ("tilt_angle_deg", "[ZValue = 0] has a non-numeric TiltAngle value 'abc'"),
        ("min_max_mean", "three numbers for MinMaxMean"),
        ("date_time", "unreadable DateTime"),
        ("defocus_um", "non-finite Defocus"),
    ]:
        with pytest.raises(FormatError) as err:
            getattr(section, accessor)
        assert words in _one_sentence_error(path, err)


@pytest.mark.parametrize(
    "mdoc",
    [
        Mdoc(header={"Bad key": "1", "A=B": "2"}, sections=[MdocSection("ZValue", "0")]),
        Mdoc(header={" padded": "1"}, sections=[MdocSection("ZValue", "0")]),
        Mdoc(header={"A": "line\nbreak"}, sections=[MdocSection("ZValue", "0")]),
        Mdoc(sections=[MdocSection("ZValue", "0"), MdocSection("ZValue", "0")]),
        Mdoc(sections=[MdocSection("T", "only a title")]),
        Mdoc(sections=[MdocSection(" ZValue", "0")]),
        Mdoc(sections=[MdocSection("ZValue", "0")], newline="\n\n"),
    ],
)
def test_writer_refuses_what_would_not_read_back(tmp_path: Path, mdoc: Mdoc):
    target = tmp_path / "out.mdoc"
    target.write_text("previous content")
    with pytest.raises(FormatError) as err:
        write_mdoc(mdoc, target)
    assert "cannot be written" in _one_sentence_error(target, err)
    assert target.read_text() == "previous content"  # nothing the user had is lost
    assert [p.name for p in tmp_path.iterdir()] == ["out.mdoc"]
