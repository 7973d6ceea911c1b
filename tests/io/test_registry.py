"""The format registry: lookup by extension, clear errors, and every catalogued function exists."""

import importlib
from pathlib import Path

import pytest

from tomoforge.io import FormatError, FormatSpec, format_for, formats, register


def test_every_catalogued_reader_and_writer_exists():
    for spec in formats():
        module = importlib.import_module(spec.module)
        for attr in (spec.reader, spec.writer):
            if attr is not None:
                assert callable(getattr(module, attr)), f"{spec.name}: {spec.module}.{attr} is missing"


def test_extension_lookup_prefers_the_longest_ending_and_filters_by_kind(tmp_path: Path):
    register(FormatSpec("test-a", (".x",), "alpha", "json", "loads", None, "test"))
    register(FormatSpec("test-b", (".y.x",), "beta", "json", "loads", None, "test"))
    assert format_for(tmp_path / "f.y.x").name == "test-b"
    assert format_for(tmp_path / "F.Y.X", kind="alpha").name == "test-a"


def test_unknown_extension_is_one_clear_sentence(tmp_path: Path):
    with pytest.raises(FormatError) as err:
        format_for(tmp_path / "data.nonsense")
    message = str(err.value)
    assert message.startswith(str(tmp_path / "data.nonsense") + ": unknown file type")
    assert "\n" not in message


def test_same_name_twice_is_refused():
    register(FormatSpec("test-c", (".c",), "alpha", "json", "loads", None, "test"))
    with pytest.raises(ValueError, match="already registered"):
        register(FormatSpec("test-c", (".d",), "alpha", "json", "loads", None, "test"))
