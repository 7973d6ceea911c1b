"""Fuzzing the mdoc parser and importer: any text either parses (and round-trips) or raises FormatError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError
from tomoforge.io.mdoc import (
    MdocOverrides,
    format_mdoc_text,
    mdoc_to_tilt_series_movies,
    parse_mdoc_text,
    read_mdoc,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "mdoc"
_ALL_LINES = (DATA / "TS_01.mrc.mdoc").read_text(encoding="utf-8").split("\n")
# header, titles and 3 tilts, with a dose so that unbroken mutants import
_TS01_LINES = [
    line.replace("ExposureDose = 0", "ExposureDose = 3")
    for line in _ALL_LINES[: _ALL_LINES.index("[ZValue = 3]")]
]
REAL_TEXT = "\n".join(_TS01_LINES) + "\n"
PATH = Path("fuzz") / "TS_01.mrc.mdoc"
OVERRIDES = MdocOverrides(voltage_kv=300.0)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_KEYS = st.sampled_from(
    ["TiltAngle", "ExposureDose", "DateTime", "SubFramePath", "PixelSpacing", "Voltage", "NumSubFrames",
     "FrameDosesAndNumber", "DoseRate", "ExposureTime", "MinMaxMean", "CountsPerElectron", "DividedBy2"]
)  # fmt: skip
_pieces = st.sampled_from(
    ["[", "]", "=", " = ", "\n", "\r\n", "\r", "#", "T", "ZValue", "FrameSet", "TiltAngle", "ExposureDose",
     "DateTime", "SubFramePath", "PixelSpacing", "Voltage", "0", "1", "-3.5", "1e999", "nan", "Tilt axis angle",
     "30-Nov-15  15:21:38", "X:\\a\\b.mrc", "\x00", "\ufeff", "é", " "]
)  # fmt: skip
_words = st.one_of(_pieces, st.text(max_size=5))
_key_value_line = st.builds(
    lambda k, v: f"{k} = {v}", st.one_of(_KEYS, _words), st.lists(_words, max_size=3).map("".join)
)
_section_line = st.builds(
    lambda k, n: f"[{k} = {n}]",
    st.sampled_from(["ZValue", "T", "FrameSet", "MontSection"]),
    st.one_of(st.integers(-1, 3).map(str), _words),
)
_mdoc_like_text = st.lists(
    st.one_of(_key_value_line, _key_value_line, _section_line, st.just(""), _words), max_size=25
).flatmap(lambda lines: st.sampled_from(["\n", "\r\n"]).map(lambda nl: nl.join(lines)))


def _check(text: str) -> None:
    """Parse, round-trip and import: only FormatError may come out."""
    try:
        mdoc = parse_mdoc_text(text, PATH)
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    assert parse_mdoc_text(format_mdoc_text(mdoc), PATH) == mdoc
    try:
        series = mdoc_to_tilt_series_movies(mdoc, PATH, OVERRIDES)
    except FormatError as exc:
        assert str(exc).startswith(f"{PATH}: ") and "\n" not in str(exc)
        return
    assert series.n_tilts == len(mdoc.z_values)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_parses_or_raises_format_error(text: str):
    _check(text)


@FUZZ
@given(_mdoc_like_text)
def test_mdoc_like_text_parses_or_raises_format_error(text: str):
    _check(text)


@st.composite
def _mutated_real_text(draw: st.DrawFn) -> str:
    lines = list(_TS01_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "replace_value", "insert", "cut", "swap"]))
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "replace_value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(st.one_of(_pieces, st.text(max_size=8)))}"
        elif action == "insert":
            lines.insert(i, draw(_mdoc_like_text))
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    return "\n".join(lines)


@FUZZ
@given(_mutated_real_text())
def test_mutated_real_mdoc_parses_or_raises_format_error(text: str):
    _check(text)


def test_unmutated_fuzz_seed_imports():
    series = mdoc_to_tilt_series_movies(parse_mdoc_text(REAL_TEXT, PATH), PATH, OVERRIDES)
    assert series.n_tilts == 3


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_read_or_raise_format_error(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.mdoc"
        path.write_bytes(data)
        try:
            mdoc = read_mdoc(path)
        except FormatError as exc:
            assert str(exc).startswith(f"{path}: ")
            return
        assert mdoc.sections
