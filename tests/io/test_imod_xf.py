"""IMOD .xf files: lossless round trips on real files, the IMOD centre conversion, composition and chaining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.geometry import imod_centre
from tomoforge.io import FormatError, format_for
from tomoforge.io.imod.xf import (
    chain_relative_xf,
    compose_xf,
    read_xf,
    transforms_to_xf,
    write_xf,
    xf_to_transforms,
)
from tomoforge.models import TiltTransform

DATA = Path(__file__).resolve().parents[1] / "data"
IMOD_WRITTEN = sorted((DATA / "imod").glob("*.xf"))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _one_line_error(exc: FormatError, path: Path) -> None:
    message = str(exc)
    assert message.startswith(str(path)) and "\n" not in message


@pytest.mark.parametrize("path", IMOD_WRITTEN, ids=lambda p: p.name)
def test_imod_written_files_round_trip_byte_for_byte(path: Path, tmp_path: Path):
    xf = read_xf(path)
    assert xf.shape[1:] == (2, 3) and len(xf) >= 40
    out = write_xf(xf, tmp_path / path.name)
    assert out.read_bytes() == path.read_bytes()
    np.testing.assert_array_equal(read_xf(out), xf)


def test_four_decimal_shifts_survive_a_round_trip(tmp_path: Path):
    path = DATA / "aretomo" / "alnfile_global_no_local.xf"  # written with %11.4f shifts, not IMOD's %12.3f
    xf = read_xf(path)
    np.testing.assert_array_equal(read_xf(write_xf(xf, tmp_path / "a.xf")), xf)
    assert xf[0, 0, 2] == -102.6027


def test_read_xf_layout_and_known_numbers():
    xf = read_xf(DATA / "imod" / "yaiw_TS_01.xf")
    assert xf.shape == (41, 2, 3)
    np.testing.assert_array_equal(xf[0], [[0.0858208, 0.9963112, 342.263], [-0.9963112, 0.0858208, 2006.328]])
    # EMPIAR-10164: tilt-axis angle atan2(A12, A11) between 85.08° and 85.64° (85.3° nominal, CONVENTIONS.md §6)
    angles = [t.tilt_axis_angle_deg for t in xf_to_transforms(xf, 1.0, (1000, 1000))]
    assert 85.0 < min(angles) and max(angles) < 85.7


@pytest.mark.parametrize("size_in", [(4, 6), (5, 7), (4, 7), (928, 958), (3708, 3831)])
@pytest.mark.parametrize("size_out", [None, (6, 4), (5, 9)])
def test_imod_centre_conversion_maps_every_pixel_to_the_same_place(size_in, size_out):
    rng = np.random.default_rng(1)
    xf = rng.normal(size=(3, 2, 3))
    xf[:, :, :2] += np.eye(2)
    pixel = 2.5
    transforms = xf_to_transforms(xf, pixel, size_in, size_out)
    out = size_out if size_out is not None else size_in
    c_in_imod = np.array([imod_centre(n) for n in size_in])
    c_out_imod = np.array([imod_centre(n) for n in out])
    c_in_tf, c_out_tf = np.array(size_in) // 2, np.array(out) // 2
    points = rng.uniform(0, 50, size=(10, 2))  # 0-based pixel indices (x, y) in the raw image
    for m, t in zip(xf, transforms, strict=True):
        imod = (points - c_in_imod) @ m[:, :2].T + m[:, 2] + c_out_imod
        ours = t.apply(points - c_in_tf, pixel) + c_out_tf
        np.testing.assert_allclose(ours, imod, atol=1e-9)
    np.testing.assert_allclose(transforms_to_xf(transforms, pixel, size_in, size_out), xf, atol=1e-12)


def test_even_size_shift_differs_by_half_a_pixel_through_the_matrix():
    xf = np.array([[[0.0, -1.0, 3.0], [1.0, 0.0, -2.0]]])  # 90° rotation
    (t,) = xf_to_transforms(xf, 1.0, (10, 10))
    # d' = d + A·δ − δ with δ = (0.5, 0.5): A·δ = (−0.5, 0.5)
    assert (t.dx_angstrom, t.dy_angstrom) == (3.0 - 0.5 - 0.5, -2.0 + 0.5 - 0.5)
    (odd,) = xf_to_transforms(xf, 1.0, (11, 11))
    assert (odd.dx_angstrom, odd.dy_angstrom) == (3.0, -2.0)


def test_shifts_are_stored_in_angstrom_so_binning_divides_pixels():
    xf = read_xf(DATA / "imod" / "cetsimod_TS_03.xf")
    bin1 = xf_to_transforms(xf, 1.35, (3709, 3839))  # odd sizes: no centre correction
    np.testing.assert_allclose([t.dx_angstrom for t in bin1], xf[:, 0, 2] * 1.35)
    bin4 = transforms_to_xf(bin1, 1.35 * 4, (3709, 3839))
    np.testing.assert_allclose(bin4[:, :, 2], xf[:, :, 2] / 4)


def test_compose_applies_earlier_first():
    rng = np.random.default_rng(2)
    earlier, later = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 3))
    total = compose_xf(earlier, later)
    p = rng.normal(size=2)
    for i in range(5):
        step = later[i, :, :2] @ (earlier[i, :, :2] @ p + earlier[i, :, 2]) + later[i, :, 2]
        np.testing.assert_allclose(total[i, :, :2] @ p + total[i, :, 2], step)
    # the same as TiltTransform.compose (M_total = M_later @ M_earlier)
    t_e, t_l = (TiltTransform.from_matrix(np.vstack([m[0], [0, 0, 1]]), 1.0) for m in (earlier, later))
    np.testing.assert_allclose(t_e.compose(t_l).as_matrix(1.0)[:2], total[0])
    with pytest.raises(ValueError, match="cannot compose"):
        compose_xf(earlier, later[:3])


def test_chaining_relative_transforms_aligns_every_view_to_the_reference():
    rng = np.random.default_rng(3)
    n, ref = 7, 3
    # ground truth: g_i maps view i onto the reference; f_i maps view i onto view i-1, so f_i = g_{i-1}^-1 g_i
    g = np.tile(np.eye(3), (n, 1, 1))
    g[:, :2, :] += 0.1 * rng.normal(size=(n, 2, 3))
    g[ref] = np.eye(3)
    f = np.tile(np.eye(3), (n, 1, 1))
    for i in range(1, n):
        f[i] = np.linalg.inv(g[i - 1]) @ g[i]
    chained = chain_relative_xf(f[:, :2, :], ref)
    np.testing.assert_allclose(chained, g[:, :2, :], atol=1e-12)
    np.testing.assert_array_equal(chained[ref], np.eye(3)[:2])
    with pytest.raises(ValueError, match="reference_index"):
        chain_relative_xf(f[:, :2, :], n)


def test_registry_knows_the_imod_transform_extensions():
    for name in ("a.xf", "a.prexf", "a.prexg"):
        assert format_for(name).name == "imod-xf"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 0 0 1 0\n", "line 1 has 5 values"),
        ("1 0 0 1 0 0\n1 0 0 1 x 0\n", "line 2: 'x' is not a number"),
        ("", "holds no transform lines"),
        ("1 0 0 1 0 nan\n", "'nan' is not a number"),
    ],
)
def test_broken_xf_files_raise_one_line_naming_the_file(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken.xf"
    path.write_text(text)
    with pytest.raises(FormatError, match=expected) as err:
        read_xf(path)
    _one_line_error(err.value, path)


def test_missing_file_and_binary_content(tmp_path: Path):
    with pytest.raises(FormatError, match="file not found") as err:
        read_xf(tmp_path / "none.xf")
    _one_line_error(err.value, tmp_path / "none.xf")
    path = tmp_path / "binary.xf"
    path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(FormatError, match="binary data"):
        read_xf(path)


def test_write_refuses_bad_arrays_and_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "keep.xf"
    path.write_text("old\n")
    for bad in (np.zeros((2, 3)), np.full((1, 2, 3), np.nan)):
        with pytest.raises(FormatError) as err:
            write_xf(bad, path)
        _one_line_error(err.value, path)
    assert path.read_text() == "old\n"


_tokens = st.sampled_from(
    [
        "1",
        "0",
        "-0.5",
        "1e3",
        "x",
        "nan",
        "\t",
        "  ",
        "1.",
        ".5",
        "-",
        "1e999",
        "é",
        "\x00",
        "1e-10",
        "-0.0",
        "0.12345678901",
        "123456789.123456789",
    ]
)
_lines = st.lists(st.lists(_tokens, max_size=8).map(" ".join), max_size=6).map("\n".join)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-xf-fuzz")


@FUZZ
@given(text=st.one_of(_lines, st.text(max_size=80)))
def test_fuzz_xf_parser(fuzz_dir: Path, text: str):
    path = fuzz_dir / "fuzz.xf"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        xf = read_xf(path)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    np.testing.assert_array_equal(read_xf(write_xf(xf, path)), xf)
