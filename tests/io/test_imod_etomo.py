"""etomo .edf dataset files and IMOD .com command files: known values, broken files, fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError, format_for
from tomoforge.io.imod.com import read_imod_com
from tomoforge.io.imod.edf import etomo_dataset, parse_view_list, read_etomo_edf

DATA = Path(__file__).resolve().parents[1] / "data" / "imod"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _one_line_error(exc: FormatError, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc)


def test_edf_values():
    values = read_etomo_edf(DATA / "etomofiles_TS_001.edf")
    assert len(values) == 109 and values["Setup.DataSource"] == "CCD"
    dataset = etomo_dataset(values)
    assert dataset.dataset_name == "TS_001"
    assert dataset.pixel_size_angstrom == pytest.approx(6.192)  # Setup.PixelSize=0.6192 nm
    assert dataset.tilt_axis_angle_deg == 83.9
    assert dataset.excluded_views == (39,)  # Setup.AxisA.ExcludeProjections=40 (1-based)
    assert dataset.fiducial_diameter_nm == 6.0 and dataset.binning == 1.0


def test_view_lists():
    assert parse_view_list("1-3, 7,40") == [0, 1, 2, 6, 39]
    assert parse_view_list("") == []
    for bad in ("0", "3-1", "a"):
        with pytest.raises(ValueError):
            parse_view_list(bad)


def test_com_files():
    tilt = [c for c in read_imod_com(DATA / "cryoetalign_imod1_tilt.com") if c.program == "tilt"][0]
    assert tilt.arguments == ("-StandardInput",)
    assert tilt.option("FULLIMAGE") == "3708 3832" and tilt.option("imagebinned") == "4"
    assert tilt.option("PERPENDICULAR") == "" and tilt.option("EXCLUDELIST") is None
    newst = [c for c in read_imod_com(DATA / "cryoetalign_imod1_newst.com") if c.program == "newstack"][0]
    assert newst.option("SizeToOutputInXandY") == "928,958" and newst.option("BinByFactor") == "4"
    assert newst.option("TransformFile") == "mka2018-10-01-1.xf"


def test_registry():
    assert format_for("TS_001.edf").name == "etomo-edf"
    assert format_for("tilt.com").name == "imod-com"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.edf", "Setup.PixelSize 0.6\n", "is not a key=value entry"),
        ("a.edf", "Other.Key=1\n", "no Setup.* entries"),
        ("a.com", "InputFile a.mrc\n$tilt\n", "comes before any \\$program"),
        ("a.com", "# only comments\n", "holds no \\$program line"),
        ("a.com", "$\n", "'\\$' without a program name"),
    ],
)
def test_broken_files(tmp_path: Path, name: str, text: str, expected: str):
    path = tmp_path / name
    path.write_text(text)
    reader = read_etomo_edf if name.endswith(".edf") else read_imod_com
    with pytest.raises(FormatError, match=expected) as err:
        reader(path)
    _one_line_error(err.value, path)


def test_bad_values_in_a_readable_edf(tmp_path: Path):
    path = tmp_path / "a.edf"
    for text, expected in (
        ("Setup.PixelSize=abc\n", "is not a number"),
        ("Setup.AxisA.ExcludeProjections=0\n", "1-based"),
    ):
        path.write_text(text)
        with pytest.raises(FormatError, match=expected) as err:
            etomo_dataset(read_etomo_edf(path), path)
        _one_line_error(err.value, path)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-etomo-fuzz")


_pieces = st.sampled_from(
    ["Setup.", "PixelSize", "=", "$", "tilt", " ", "#", "1-3", "0.6", "\n", "\t", "x", "!", ","]
)
_texts = st.lists(_pieces, max_size=30).map("".join)


@FUZZ
@given(text=st.one_of(_texts, st.text(max_size=60)))
def test_fuzz_edf_and_com_parsers(fuzz_dir: Path, text: str):
    for name, reader in (("fuzz.edf", read_etomo_edf), ("fuzz.com", read_imod_com)):
        path = fuzz_dir / name
        path.write_text(text, encoding="utf-8")
        try:
            result = reader(path)
            if isinstance(result, dict):
                etomo_dataset(result, path)
        except FormatError as exc:
            _one_line_error(exc, path)
