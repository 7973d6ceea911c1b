"""The report's pieces a reader relies on: pictures scale instead of being cropped, small images are magnified
sharply, per-iteration records read as a table, and the quality words are unambiguous."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from tomoforge.io.png import write_png
from tomoforge.report.html import (
    _angles_text,
    _handedness_text,
    _png_image,
    _summary_table,
    _svg_image,
    _views_text,
)


def test_an_svg_without_a_viewbox_gets_one_so_the_page_scales_it(tmp_path: Path) -> None:
    path = tmp_path / "plot.svg"
    path.write_text(
        '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="560" height="320"><rect/></svg>\n'
    )
    inline = _svg_image(path)
    root = ElementTree.fromstring(inline)
    assert root.get("viewBox") == "0 0 560 320" and not inline.startswith("<?xml")
    with_box = tmp_path / "boxed.svg"
    with_box.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="5" viewBox="0 0 20 10"/>')
    assert ElementTree.fromstring(_svg_image(with_box)).get("viewBox") == "0 0 20 10"


def test_small_pngs_are_magnified_by_a_whole_factor_and_large_ones_not(tmp_path: Path) -> None:
    small = write_png(np.zeros((48, 150, 3), dtype=np.uint8), tmp_path / "small.png", origin="upper")
    large = write_png(np.zeros((300, 400, 3), dtype=np.uint8), tmp_path / "large.png", origin="upper")
    tag = _png_image(small)
    assert 'class="pixels"' in tag and re.search(r"width: (\d+)px", tag).group(1) == "450"  # type: ignore[union-attr]
    assert "style" not in _png_image(large) and _png_image(large).startswith(
        '<img src="data:image/png;base64,'
    )


def test_records_read_as_a_table_with_a_row_per_iteration() -> None:
    html = _summary_table(
        {
            "iterations": [
                {"resolution_angstrom": 40.0, "step_deg": 4.0},
                {"resolution_angstrom": 20.123456, "step_deg": 2.0},
            ],
            "particles": 74,
        }
    )
    table = ElementTree.fromstring(html)
    inner = table.find("tr/td/table")
    assert inner is not None
    rows = [[cell.text for cell in row] for row in inner.findall("tr")]
    assert rows == [["#", "resolution_angstrom", "step_deg"], ["1", "40", "4"], ["2", "20.12", "2"]]


def test_quality_words() -> None:
    assert _handedness_text(1) == "+1 (conventional)" and _handedness_text(-1) == "−1 (mirrored)"
    assert _handedness_text(0) == "undetermined"
    assert (
        _views_text([]) == "none"
        and _views_text([3]) == "index 3"
        and _views_text([3, 17]) == "indices 3, 17"
    )
    assert _angles_text([-60.0, 57.2]) == "2: −60°, 57°" and _angles_text([]) == "none"


def test_without_a_browser_the_pdf_is_refused_with_what_to_do(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from tomoforge.report.html import print_pdf

    page = tmp_path / "report.html"
    page.write_text("<html><body><p>hello</p></body></html>")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(
        RuntimeError, match=r"No Chromium or Chrome was found on the PATH .*report\.html to PDF"
    ):
        print_pdf(page, tmp_path / "report.pdf")
    assert not list(tmp_path.glob("*.pdf")) and not list(tmp_path.glob(".*partial"))
    fails = tmp_path / "fails"
    fails.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fails.chmod(0o755)
    with pytest.raises(RuntimeError, match="could not print .* cannot open display"):
        print_pdf(page, tmp_path / "report.pdf", browser=str(fails))
    assert not list(tmp_path.glob("*.pdf"))


def test_a_local_chromium_prints_the_report_to_pdf(tmp_path: Path) -> None:
    import shutil

    import pytest

    from tomoforge.report.html import BROWSERS, print_pdf

    if not any(shutil.which(name) for name in BROWSERS):
        pytest.skip("no Chromium on this machine (Debian: apt install chromium)")
    page = tmp_path / "report.html"
    page.write_text("<html><body><h1>tomoforge report</h1></body></html>")
    pdf = print_pdf(page, tmp_path / "out" / "report.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 500
