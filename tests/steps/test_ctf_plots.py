"""Tests of the CTF diagnostic pictures: the per-tilt SVG chart and the power-spectrum montage."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tomoforge.steps._ctf_plots import (
    FONT_HEIGHT_PX,
    _resize_nan,
    ctf_series_svg,
    nice_ticks,
    psd_montage,
    text_bitmap,
)

_SVG = "{http://www.w3.org/2000/svg}"


def _series(n: int = 21) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    tilts = np.linspace(-60.0, 60.0, n)
    defocus = 31_000.0 + 5_000.0 * np.sin(np.deg2rad(tilts)) + rng.normal(0.0, 200.0, n)  # 2.6–3.6 µm
    resolution = 6.0 + 0.1 * np.abs(tilts) + rng.uniform(0.0, 1.0, n)  # 6–13 Å
    return tilts, defocus, resolution


def _group(root: ET.Element, name: str) -> ET.Element:
    groups = [g for g in root.iter(f"{_SVG}g") if g.get("id") == name]
    assert len(groups) == 1
    return groups[0]


def _points(group: ET.Element) -> tuple[list[ET.Element], list[ET.Element]]:
    circles = [c for c in group.iter(f"{_SVG}circle") if "point" in (c.get("class") or "").split()]
    excluded = [c for c in circles if "excluded" in (c.get("class") or "").split()]
    return circles, excluded


def _tick_texts(group: ET.Element, kind: str) -> list[str]:
    return [t.text or "" for t in group.iter(f"{_SVG}text") if t.get("class") == kind]


def test_nice_ticks_use_1_2_5_steps_and_cover_the_range() -> None:
    np.testing.assert_allclose(nice_ticks(2.63, 3.58), [2.6, 2.8, 3.0, 3.2, 3.4, 3.6])
    np.testing.assert_allclose(nice_ticks(4.2, 19.0), [0.0, 5.0, 10.0, 15.0, 20.0])
    np.testing.assert_allclose(nice_ticks(-0.013, 0.041), [-0.02, 0.0, 0.02, 0.04, 0.06])
    np.testing.assert_allclose(nice_ticks(120.0, 880.0), [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        low, span = rng.uniform(-1e3, 1e3), 10.0 ** rng.uniform(-3, 4)
        ticks = nice_ticks(low, low + span)
        step = ticks[1] - ticks[0]
        mantissa = step / 10.0 ** np.floor(np.log10(step) + 1e-9)
        assert min(abs(mantissa - m) for m in (1.0, 2.0, 5.0)) < 1e-6
        assert ticks[0] <= low + 1e-9 * abs(low) and ticks[-1] >= low + span - 1e-9 * abs(low + span)
        assert 3 <= len(ticks) <= 12
        np.testing.assert_allclose(np.diff(ticks), step, rtol=1e-6)
    assert len(nice_ticks(5.0, 5.0)) >= 2  # a single value still gets an axis
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, float("nan"))


def test_series_svg_parses_with_one_marker_per_finite_value_and_hollow_excluded_views() -> None:
    tilts, defocus, resolution = _series(21)
    defocus[4] = np.nan
    resolution_list: list[float | None] = [float(r) for r in resolution]
    resolution_list[7] = None
    resolution_list[8] = float("nan")
    excluded = np.zeros(21, dtype=bool)
    excluded[[0, 1, 20]] = True
    svg = ctf_series_svg(
        tilts,
        defocus,
        resolution_list,
        excluded=excluded,
        defocus_u_angstrom=defocus + 500.0,
        defocus_v_angstrom=defocus - 500.0,
        title="TS_01",
    )
    root = ET.fromstring(svg)
    assert root.tag == f"{_SVG}svg" and root.get("width") == "720" and root.get("height") == "420"

    top, excluded_top = _points(_group(root, "defocus"))
    bottom, excluded_bottom = _points(_group(root, "resolution"))
    assert (len(top), len(excluded_top)) == (20, 3)
    assert (len(bottom), len(excluded_bottom)) == (19, 3)
    for circle in excluded_top + excluded_bottom:
        assert circle.get("fill") == "white" and circle.get("stroke") != "none"
    for circle in set(top) - set(excluded_top):
        assert circle.get("fill") not in ("white", "none")
    # mean, u and v lines in the top panel, drawn through the 17 included finite views
    lines = list(_group(root, "defocus").iter(f"{_SVG}polyline"))
    assert len(lines) == 3 and all(len(line.get("points", "").split()) == 17 for line in lines)
    # a point sits where the axes put it: higher defocus is higher on the page (smaller SVG y)
    ys = {float(c.get("cy", "nan")) for c in top}
    assert min(ys) >= 74.0 and max(ys) <= 206.0
    assert ctf_series_svg(
        tilts, defocus, resolution_list, excluded=excluded, title="TS_01"
    ) == ctf_series_svg(tilts, defocus, resolution_list, excluded=excluded, title="TS_01")


def test_series_svg_tick_labels_are_nice_values_for_the_data_range() -> None:
    tilts = np.linspace(-60.0, 60.0, 9)
    defocus = np.linspace(26_300.0, 35_800.0, 9)  # 2.63–3.58 µm
    resolution = np.linspace(4.2, 19.0, 9)
    root = ET.fromstring(ctf_series_svg(tilts, defocus[::-1], resolution))
    top, bottom = _group(root, "defocus"), _group(root, "resolution")
    assert _tick_texts(bottom, "tick-x") == ["-60", "-45", "-30", "-15", "0", "15", "30", "45", "60"]
    assert _tick_texts(top, "tick-x") == []  # shared axis: labels only under the bottom panel
    assert _tick_texts(top, "tick-y") == ["2.6", "2.8", "3.0", "3.2", "3.4", "3.6"]
    assert _tick_texts(bottom, "tick-y") == ["0", "5", "10", "15", "20"]
    # the first view (−60°, 3.58 µm) is left and high, the last (60°, 2.63 µm) right and low
    first, *_, last = _points(top)[0]
    assert float(first.get("cx", "0")) < float(last.get("cx", "0"))
    assert float(first.get("cy", "0")) < float(last.get("cy", "0"))
    labels = " ".join(t.text or "" for t in root.iter(f"{_SVG}text"))
    assert "µm" in labels and "Å" in labels and "smaller is better" in labels and "Tilt angle (°)" in labels

    wide = ET.fromstring(ctf_series_svg(np.array([-70.0, 0.0, 70.0]), [3e4] * 3, [8.0] * 3))
    assert _tick_texts(_group(wide, "resolution"), "tick-x") == [str(v) for v in range(-80, 81, 20)]


def test_series_svg_escapes_text_and_survives_missing_data() -> None:
    title = 'TS <1> & "two"'
    note = "handedness: flip? <b>no</b>\x00"
    svg = ctf_series_svg([0.0, 10.0], [None, None], [float("nan"), 7.5], title=title, handedness_note=note)
    assert "<b>" not in svg and "&lt;1&gt; &amp;" in svg and "\x00" not in svg
    root = ET.fromstring(svg)
    texts = {t.get("class"): t.text for t in root.iter(f"{_SVG}text")}
    assert texts["title"] == title and texts["note"] == note.rstrip("\x00")
    assert _points(_group(root, "defocus"))[0] == []
    assert "no data" in [t.text for t in _group(root, "defocus").iter(f"{_SVG}text")]
    assert len(_points(_group(root, "resolution"))[0]) == 1


def test_series_svg_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3 tilt angles"):
        ctf_series_svg([0.0, 1.0, 2.0], [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="boolean"):
        ctf_series_svg([0.0, 1.0], [1.0, 2.0], [1.0, 2.0], excluded=np.array([0, 1]))
    with pytest.raises(ValueError, match="one-dimensional"):
        ctf_series_svg(np.zeros((2, 2)), [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="numbers"):
        ctf_series_svg([0.0, 1.0], np.array(["a", "b"], dtype=object), [1.0, 2.0])


def test_text_bitmap_draws_the_digits_of_the_font() -> None:
    one = np.array(
        [[c == "#" for c in row] for row in "..#..|.##..|..#..|..#..|..#..|..#..|.###.".split("|")]
    )
    seven = np.array(
        [[c == "#" for c in row] for row in "#####|....#|...#.|..#..|.#...|.#...|.#...".split("|")]
    )
    bitmap = text_bitmap("17")
    assert bitmap.shape == (FONT_HEIGHT_PX, 11)
    np.testing.assert_array_equal(bitmap[:, :5], one)
    assert not bitmap[:, 5].any()
    np.testing.assert_array_equal(bitmap[:, 6:], seven)
    glyphs = {ch: text_bitmap(ch) for ch in "0123456789-+.° AÅnmµ"}
    assert len({g.tobytes() + bytes(g.shape) for g in glyphs.values()}) == len(glyphs)  # all distinct
    np.testing.assert_array_equal(text_bitmap("μ"), glyphs["µ"])  # Greek mu = micro sign
    with pytest.raises(ValueError, match="glyph"):
        text_bitmap("TS_01")


def test_resize_averages_areas_down_repeats_samples_up_and_keeps_nan_majority() -> None:
    blocks = np.arange(16, dtype=np.float64).reshape(4, 4)
    big = np.kron(blocks, np.ones((3, 3)))
    np.testing.assert_allclose(_resize_nan(big, 4), blocks)
    np.testing.assert_allclose(_resize_nan(blocks, 8), np.kron(blocks, np.ones((2, 2))))
    ramp = np.add.outer(np.arange(6.0), np.arange(6.0))
    np.testing.assert_allclose(_resize_nan(ramp, 3), np.add.outer([0.5, 2.5, 4.5], [0.5, 2.5, 4.5]))
    with_nan = big.copy()
    with_nan[:3, :3] = np.nan  # one whole output pixel
    with_nan[3, 3] = np.nan  # one of nine inputs of another
    resized = _resize_nan(with_nan, 4)
    assert np.isnan(resized[0, 0]) and np.isfinite(resized[1:, 1:]).all()
    assert resized[1, 1] == pytest.approx(blocks[1, 1])


def _noise_spectra(n: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.normal(size=(size, size)) for _ in range(n)]


def _panel_top_down(image: np.ndarray, index: int, *, panel_px: int, columns: int) -> np.ndarray:
    """Panel ``index`` of a montage (row 0 at the bottom), returned top-down (row 0 at the top)."""
    top_down = image[::-1]
    row, col = divmod(index, columns)
    pitch = panel_px + 2
    return top_down[row * pitch : row * pitch + panel_px, col * pitch : col * pitch + panel_px]


def test_montage_shape_gaps_and_nan_is_dark_grey() -> None:
    spectra = _noise_spectra(11)
    image = psd_montage(spectra, panel_px=24, columns=4)
    assert image.dtype == np.uint8 and image.shape == (3 * 24 + 2 * 2, 4 * 24 + 3 * 2, 3)
    assert (image[:, 24:26] == 255).all() and (image[24:26] == 255).all()  # gaps between panels
    assert psd_montage(spectra[:3], panel_px=24, columns=4).shape == (24, 3 * 24 + 2 * 2, 3)

    spectrum = np.random.default_rng(1).normal(size=(64, 64))
    spectrum[:, :20] = np.nan  # outside the fit band: the left 20 of 64 columns → 7.5 of 24 panel columns
    panel = _panel_top_down(psd_montage([spectrum], panel_px=24), 0, panel_px=24, columns=1)
    assert (panel[:, :7] == 64).all()
    greys = panel[:, 8:12]
    assert (greys[..., 0] == greys[..., 1]).all() and greys.min() == 0 and greys.max() == 255
    assert (panel[:, 12] == (40, 210, 230)).all()  # the data | model separator in the centre column


def test_montage_places_the_first_tilt_top_left_and_keeps_row_0_at_the_bottom() -> None:
    n, columns, px = 7, 3, 16
    for nan_index in range(n):
        spectra = _noise_spectra(n)
        spectra[nan_index][:] = np.nan
        image = psd_montage(spectra, panel_px=px, columns=columns)
        for k in range(n):
            panel = _panel_top_down(image, k, panel_px=px, columns=columns)
            data = np.delete(panel, px // 2, axis=1)
            assert (data == 64).all() == (k == nan_index)
    ramp = np.zeros((32, 32))
    ramp[:4] = 1.0  # rows y = 0…3 bright: the bottom of the panel (y up)
    image = psd_montage([ramp], panel_px=16, low_percentile=0.0, high_percentile=100.0)
    assert (image[:2, :8] == 255).all() and (image[2:, :8] == 0).all()


def test_montage_scales_each_panel_and_each_half_by_its_own_percentiles() -> None:
    rng = np.random.default_rng(5)
    quiet, loud = rng.normal(size=(32, 32)), 1000.0 * rng.normal(size=(32, 32))
    loud[:, 16:] *= 1e-3  # the model half in other units
    image = psd_montage([quiet, loud], panel_px=32, columns=2)
    for k in range(2):
        panel = _panel_top_down(image, k, panel_px=32, columns=2)[..., 0].astype(np.float64)
        left, right = panel[:, :16], panel[:, 17:]
        for half in (left, right):
            assert half.min() == 0 and half.max() == 255 and 80 < half.mean() < 175
    joint = psd_montage([loud], panel_px=32, scale_halves_separately=False)[..., 0]
    assert np.std(joint[:, 17:]) < 0.1 * np.std(joint[:, :16])  # one scale for both halves squashes the model


def test_montage_labels_draw_the_font_in_the_top_left_corner() -> None:
    spectra = _noise_spectra(2)
    image = psd_montage(spectra, ["7", "-1°"], panel_px=32, columns=2)
    seven = np.array(
        [[c == "#" for c in row] for row in "#####|....#|...#.|..#..|.#...|.#...|.#...".split("|")]
    )
    first = _panel_top_down(image, 0, panel_px=32, columns=2)
    ink = (first == (250, 220, 40)).all(axis=-1)
    np.testing.assert_array_equal(ink[2:9, 2:7], seven)
    assert not ink[:, 8:].any() and not ink[9:].any()
    assert (first[1:10, 1:8][~ink[1:10, 1:8]] == 0).all()  # black box behind the text
    second = _panel_top_down(image, 1, panel_px=32, columns=2)
    ink2 = (second == (250, 220, 40)).all(axis=-1)
    np.testing.assert_array_equal(ink2[2:9, 2 : 2 + text_bitmap("-1°").shape[1]], text_bitmap("-1°"))
    with pytest.raises(ValueError, match="2 labels for 1"):
        psd_montage(spectra[:1], ["a", "b"])
    with pytest.raises(ValueError, match="glyph"):
        psd_montage(spectra[:1], ["x"])
    with pytest.raises(ValueError, match="2D"):
        psd_montage([np.zeros(4)])
    with pytest.raises(ValueError, match="at least one"):
        psd_montage([])
