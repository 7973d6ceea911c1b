"""``tomoforge demo`` and ``tomoforge export`` refuse bad input with one sentence (the whole run is tested in
``tests/test_end_to_end.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tomoforge.workflow import Project

Invoke = Callable[..., tuple[int, str, str]]


def test_an_unknown_preset_is_named(tmp_path: Path, cli: Invoke) -> None:
    code, _, err = cli("demo", str(tmp_path / "d"), "--preset", "huge")
    assert code == 2 and "expected demo or small" in err
    assert not (tmp_path / "d").exists()


def test_exporting_an_empty_project_lists_what_is_missing(tmp_path: Path, cli: Invoke) -> None:
    Project.init(tmp_path / "project").close()
    code, out, _ = cli("export", "--project", str(tmp_path / "project"), "--to", str(tmp_path / "out"))
    assert code == 0 and "Exported 0 files" in out
    for kind in ("motion", "alignment", "ctf", "tomograms", "particles", "average"):
        assert f"not exported: {kind}" in out
    assert (tmp_path / "out" / "export.json").is_file()


def test_the_report_of_an_empty_project_says_so(tmp_path: Path, cli: Invoke) -> None:
    Project.init(tmp_path / "project").close()
    code, out, _ = cli("report", "--project", str(tmp_path / "project"))
    assert code == 0 and "report.html" in out
    page = (tmp_path / "project" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "No tilt series were processed yet." in page
