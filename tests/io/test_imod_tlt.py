"""IMOD angle files (.tlt, .rawtlt, .xtilt): round trips on real files, extra columns, broken files, fuzz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError, format_for
from tomoforge.io.imod.tlt import read_tlt, read_tlt_columns, write_tlt

DATA = Path(__file__).resolve().parents[1] / "data"
FILES = sorted((DATA / "imod").glob("*.*tlt")) + sorted((DATA / "imod").glob("*.xtilt"))
FILES.append(DATA / "aretomo" / "alnfile_global_no_local.tlt")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _one_line_error(exc: FormatError, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_real_angle_files_round_trip(path: Path, tmp_path: Path):
    table = read_tlt_columns(path)
    out = write_tlt(table[:, 0], tmp_path / path.name, table[:, 1:])
    np.testing.assert_array_equal(read_tlt_columns(out), table)
    # files written with tiltalign's %7.2f come back byte for byte
    if path.name in ("etomofiles_TS_001.tlt", "etomofiles_TS_001.xtilt"):
        assert out.read_bytes() == path.read_bytes()


def test_known_angles():
    raw = read_tlt(DATA / "imod" / "etomofiles_TS_001.rawtlt")
    np.testing.assert_array_equal(raw[:3], [-60.0, -57.0, -54.0])
    refined = read_tlt(DATA / "imod" / "etomofiles_TS_001.tlt")
    assert len(raw) == len(refined) == 40 and refined[0] == -57.12
    xtilt = read_tlt(DATA / "imod" / "etomofiles_TS_001.xtilt")
    assert xtilt[0] == -0.01


def test_second_column_is_kept_but_read_tlt_returns_angles():
    path = DATA / "imod" / "cetsimod_TS_03.tlt"
    table = read_tlt_columns(path)
    assert table.shape == (40, 2)
    np.testing.assert_array_equal(read_tlt(path), table[:, 0])
    assert table[19].tolist() == [0.0, 3.0]  # zero tilt was the first exposure: 3 e/Å² accumulated


def test_write_formats_like_tiltalign(tmp_path: Path):
    out = write_tlt([-60.0, 0.0, 1.234, 12.5], tmp_path / "a.tlt")
    assert out.read_text() == " -60.00\n   0.00\n  1.234\n  12.50\n"


def test_registry():
    assert format_for("x.tlt").name == "imod-tlt"
    assert format_for("x.rawtlt").name == "imod-tlt"
    assert format_for("x.xtilt").name == "imod-xtilt"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-60\nsixty\n", "line 2: 'sixty' is not a number"),
        ("-60 1\n-57\n", "line 2 has 1 values but earlier lines have 2"),
        ("\n \n", "holds no angles"),
    ],
)
def test_broken_angle_files(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken.tlt"
    path.write_text(text)
    with pytest.raises(FormatError, match=expected) as err:
        read_tlt(path)
    _one_line_error(err.value, path)


def test_write_refuses_empty_or_mismatched(tmp_path: Path):
    with pytest.raises(FormatError):
        write_tlt([], tmp_path / "a.tlt")
    with pytest.raises(FormatError):
        write_tlt([1.0, 2.0], tmp_path / "a.tlt", np.zeros((3, 1)))
    assert not (tmp_path / "a.tlt").exists()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-tlt-fuzz")


_tokens = st.sampled_from(
    [
        "-60",
        "0.00",
        "3",
        "1e2",
        "x",
        "inf",
        " ",
        "\t",
        "-",
        "+1",
        "1,5",
        "\r",
        "1e-10",
        "-0.0",
        "0.123456789",
        "1e20",
    ]
)
_texts = st.lists(st.lists(_tokens, max_size=3).map(" ".join), max_size=6).map("\n".join)


@FUZZ
@given(text=st.one_of(_texts, st.text(max_size=60)))
def test_fuzz_tlt_parser(fuzz_dir: Path, text: str):
    path = fuzz_dir / "fuzz.tlt"
    path.write_text(text, encoding="utf-8")
    try:
        table = read_tlt_columns(path)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    np.testing.assert_array_equal(read_tlt_columns(write_tlt(table[:, 0], path, table[:, 1:])), table)
