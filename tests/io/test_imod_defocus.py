"""ctfplotter .defocus files: every flavour round-trips byte for byte, nm ↔ Å, per-view CTF, broken files, fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError, format_for
from tomoforge.io.imod.defocus import (
    FLAG_ASTIGMATISM,
    FLAG_ASTIGMATISM_RADIANS,
    FLAG_PHASE_RADIANS,
    FLAG_PHASE_SHIFT,
    ImodDefocusFile,
    ctf_to_imod_defocus,
    imod_defocus_to_ctf,
    read_imod_defocus,
    write_imod_defocus,
)
from tomoforge.models import CtfParameters, CtfTiltEstimate, CtfTiltSeries

DATA = Path(__file__).resolve().parents[1] / "data" / "imod"
FLAVOURS = {
    "plain_estimation": (2, 0),
    "only_astigmatism": (3, 1),
    "only_phase_shift": (3, 4),
    "astigmatism_and_phase_shift": (3, 5),
    "astigmatism_phase_shift_and_cutoff_freq": (3, 37),
}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _path(flavour: str) -> Path:
    return DATA / f"cetsimod_TS_03_{flavour}.defocus"


def _one_line_error(exc: FormatError, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_flavour_round_trips_byte_for_byte(flavour: str, tmp_path: Path):
    defocus = read_imod_defocus(_path(flavour))
    assert (defocus.version, defocus.flags) == FLAVOURS[flavour]
    assert len(defocus.entries) == 40
    out = write_imod_defocus(defocus, tmp_path / "a.defocus")
    assert out.read_bytes() == _path(flavour).read_bytes()
    assert read_imod_defocus(out) == defocus


def test_defocus_is_converted_from_nm_to_angstrom():
    astig = read_imod_defocus(_path("astigmatism_and_phase_shift")).entries[0]
    # file line: 1 1 -57.00 -57.00 1483.9 1068.7 32.44 26.49
    assert (astig.start_view, astig.end_view, astig.start_tilt_deg) == (1, 1, -57.0)
    assert astig.ctf.defocus_u_angstrom == 14839.0 and astig.ctf.defocus_v_angstrom == 10687.0
    assert astig.ctf.astigmatism_angle_deg == 32.44 and astig.ctf.phase_shift_deg == 26.49
    plain = read_imod_defocus(_path("plain_estimation")).entries[0]  # 1 1 -57.00 -57.00 1360 2
    assert plain.ctf.defocus_u_angstrom == plain.ctf.defocus_v_angstrom == 13600.0
    assert plain.ctf.astigmatism_angle_deg == 0.0
    cut_on = read_imod_defocus(_path("astigmatism_phase_shift_and_cutoff_freq")).entries[0]
    assert cut_on.cut_on_frequency_per_nm == 0.4912


def test_per_view_ctf_series_uses_zero_based_tilt_indices():
    ctf = imod_defocus_to_ctf(read_imod_defocus(_path("only_astigmatism")), "TS_03")
    assert [t.tilt_index for t in ctf.tilts] == list(range(40))
    first = ctf.parameters_for(0)
    assert first is not None and first.defocus_u_angstrom == 16516.0 and first.defocus_v_angstrom == 12067.0
    # defocus 1 is along the astigmatism angle: tomoforge's defocus_u direction (CONVENTIONS.md §8)
    assert first.defocus_at_azimuth_angstrom(31.76) == pytest.approx(16516.0)
    padded = imod_defocus_to_ctf(read_imod_defocus(_path("only_astigmatism")), "TS_03", n_views=42)
    assert padded.excluded_indices() == [40, 41]


def test_ranges_cover_several_views_and_nearest_centre_wins(tmp_path: Path):
    path = tmp_path / "ranges.defocus"
    path.write_text("1\t3\t-3.00\t3.00\t1000\t2\n3\t5\t3.00\t9.00\t2000\n")
    ctf = imod_defocus_to_ctf(read_imod_defocus(path), "TS")
    assert [t.parameters.defocus_u_angstrom for t in ctf.tilts if t.parameters] == [1e4, 1e4, 1e4, 2e4, 2e4]
    path.write_text("1\t5\t-3.00\t9.00\t1000\t2\n3\t4\t3.00\t6.00\t2000\n")
    ctf = imod_defocus_to_ctf(read_imod_defocus(path), "TS")
    assert [t.parameters.defocus_u_angstrom for t in ctf.tilts if t.parameters] == [1e4, 1e4, 1e4, 2e4, 1e4]


def test_ctf_series_to_defocus_file_and_back(tmp_path: Path):
    params = [
        CtfParameters(defocus_u_angstrom=31234.5, defocus_v_angstrom=30012.3, astigmatism_angle_deg=-40.25),
        CtfParameters(defocus_u_angstrom=29000.0, defocus_v_angstrom=28000.0, astigmatism_angle_deg=10.0),
    ]
    series = CtfTiltSeries(
        ts_id="TS",
        tilts=[
            CtfTiltEstimate(tilt_index=0, parameters=params[0]),
            CtfTiltEstimate(tilt_index=1, excluded=True),
            CtfTiltEstimate(tilt_index=2, parameters=params[1]),
        ],
    )
    defocus = ctf_to_imod_defocus(series, [-3.0, 0.0, 3.0])
    assert (defocus.version, defocus.flags) == (3, FLAG_ASTIGMATISM)
    out = write_imod_defocus(defocus, tmp_path / "a.defocus")
    assert out.read_text().splitlines()[:2] == [
        "1\t0\t0.0\t0.0\t0.0\t3",
        "1\t1\t-3.00\t-3.00\t3123.45\t3001.23\t -40.25",
    ]
    back = imod_defocus_to_ctf(read_imod_defocus(out), "TS", n_views=3)
    assert back.parameters_for(0) == params[0] and back.parameters_for(2) == params[1]
    assert back.excluded_indices() == [1]
    plain = ctf_to_imod_defocus(series, [-3.0, 0.0, 3.0], astigmatism=False)
    assert (plain.version, plain.flags) == (2, 0)
    assert write_imod_defocus(plain, out).read_text().splitlines()[0] == "1\t1\t-3.00\t-3.00\t3062.34   2"


def test_radian_flags_are_converted_to_degrees_and_back(tmp_path: Path):
    path = tmp_path / "rad.defocus"
    flags = FLAG_ASTIGMATISM | FLAG_ASTIGMATISM_RADIANS | FLAG_PHASE_SHIFT | FLAG_PHASE_RADIANS
    text = f"{flags}\t0\t0.0\t0.0\t0.0\t3\n1\t1\t 0.00\t 0.00\t 1500.0\t 1400.0\t   0.50\t     1.57\n"
    path.write_text(text)
    entry = read_imod_defocus(path).entries[0]
    assert entry.ctf.astigmatism_angle_deg == pytest.approx(28.6479, abs=1e-4)
    assert entry.ctf.phase_shift_deg == pytest.approx(89.9544, abs=1e-4)
    assert write_imod_defocus(read_imod_defocus(path), tmp_path / "b.defocus").read_text() == text


def test_registry():
    assert format_for("TS_03.defocus").name == "imod-defocus"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1\t0\t0.0\t0.0\t0.0\t3\n1\t1\t0.0\t0.0\t1500.0\n", "line 2 has 5 values; flags 1 call for 7"),
        ("5\t0\t0.0\t0.0\t0.0\t3\n1\t1\t0.0\t0.0\t1500.0\t1400.0\t30.0\n", "flags 5 call for 8"),
        ("1\t1\t0.0\t0.0\t1500\n", "does not end with a format version"),
        ("1\t1\t0.0\t0.0\t1500\t2\n2\t2\t3.0\t3.0\n", "line 2 has 4 values"),
        ("0\t1\t0.0\t0.0\t1500\t2\n", "view range 0-1"),
        ("1\t1\t0.0\t0.0\tabc\t2\n", "'abc' is not a number"),
        ("99\t0\t0.0\t0.0\t0.0\t3\n", "unknown defocus-file flags 99"),
        ("1\t0\t0.0\t0.0\t0.0\t3\n", "no defocus lines"),
        ("", "is empty"),
    ],
)
def test_broken_defocus_files(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken.defocus"
    path.write_text(text)
    with pytest.raises(FormatError, match=expected) as err:
        read_imod_defocus(path)
    _one_line_error(err.value, path)


def test_writer_refuses_inconsistent_flavours(tmp_path: Path):
    entry = read_imod_defocus(_path("only_astigmatism")).entries[0]
    with pytest.raises(FormatError, match="version 2 has flags 0"):
        write_imod_defocus(ImodDefocusFile(version=2, flags=1, entries=(entry,)), tmp_path / "a.defocus")
    with pytest.raises(FormatError, match="call for a cut-on frequency"):
        write_imod_defocus(ImodDefocusFile(version=3, flags=37, entries=(entry,)), tmp_path / "a.defocus")
    assert not (tmp_path / "a.defocus").exists()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-defocus-fuzz")


_REAL_LINES = _path("astigmatism_phase_shift_and_cutoff_freq").read_text().splitlines()[:4]
_tokens = st.sampled_from(
    [
        "1",
        "0",
        "3",
        "2",
        "5",
        "37",
        "63",
        "-57.00",
        "1483.9",
        "x",
        "nan",
        "",
        "0.0",
        "99",
        "1e-10",
        "-0.0",
        "0.123456789",
        "7",
    ]
)
_rows = st.lists(_tokens, min_size=0, max_size=10).map("\t".join)


@st.composite
def _defocus_texts(draw: st.DrawFn) -> str:
    lines = list(_REAL_LINES) if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        index = draw(st.integers(0, max(len(lines) - 1, 0)))
        if action == "insert" or not lines:
            lines.insert(index, draw(_rows))
        elif action == "delete":
            del lines[index]
        else:
            lines[index] = draw(_rows)
    return "\n".join(lines)


@FUZZ
@given(text=st.one_of(_defocus_texts(), st.text(max_size=60)))
def test_fuzz_defocus_parser(fuzz_dir: Path, text: str):
    path = fuzz_dir / "fuzz.defocus"
    path.write_text(text, encoding="utf-8")
    try:
        defocus = read_imod_defocus(path)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    assert read_imod_defocus(write_imod_defocus(defocus, path)) == defocus
