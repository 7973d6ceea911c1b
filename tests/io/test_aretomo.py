"""AreTomo .aln and _CTF.txt: round trips, the derived geometry checked against the IMOD .xf of the same data and
against the projection model, excluded views, broken files and fuzz."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.geometry import project_points, projection_matrices, projection_matrices_from_xf
from tomoforge.io import FormatError, format_for
from tomoforge.io.aretomo import (
    aretomo_ctf_to_ctf,
    aretomo_excluded_indices,
    aretomo_to_imod_xf,
    aretomo_to_transforms,
    aretomo_view_indices,
    read_aretomo_aln,
    read_aretomo_ctf,
    write_aretomo_aln,
    write_aretomo_ctf,
)
from tomoforge.io.imod import read_tlt, read_xf

DATA = Path(__file__).resolve().parents[1] / "data" / "aretomo"
ALNS = sorted(DATA.glob("*.aln"))
CTFS = sorted(DATA.glob("*_CTF.txt"))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _one_line_error(exc: FormatError, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc)


@pytest.mark.parametrize("path", ALNS, ids=lambda p: p.name)
def test_aln_files_round_trip(path: Path, tmp_path: Path):
    aln = read_aretomo_aln(path)
    out = write_aretomo_aln(aln, tmp_path / path.name)
    assert read_aretomo_aln(out) == aln
    # AreTomo's layout is reproduced; only a trailing blank on the first line of some files is not
    assert [line.rstrip() for line in out.read_text().splitlines()] == [
        line.rstrip() for line in path.read_text().splitlines()
    ]


def test_global_and_local_file():
    aln = read_aretomo_aln(DATA / "alnfile_global_and_local.aln")
    assert aln.global_table.shape == (37, 10) and aln.local_table.shape == (592, 7)
    assert aln.raw_size_xyz == (4096, 4096, 51) and aln.num_patches == 16 and aln.thickness_px == 1910
    assert aln.alpha_offset_deg == 12.3 and aln.beta_offset_deg == 0.0
    assert len(aln.dark_frames) == 14 and aln.dark_frames[0].tilt_deg == -68.0
    assert aretomo_excluded_indices(aln) == list(range(14))
    np.testing.assert_array_equal(
        aretomo_view_indices(aln), np.arange(14, 51)
    )  # 0-based SEC of the kept stack
    assert aln.tilt_axis_angles_deg[0] == 84.4445 and aln.tilt_angles_deg[0] == -27.71
    assert len(aln.local_table) == aln.num_patches * len(aln.global_table)


def test_one_based_and_legacy_files():
    new = read_aretomo_aln(DATA / "alnfile_global_no_local.aln")  # AreTomo3: SEC 1..61
    assert new.sections[0] == 1 and new.sections[-1] == 61
    np.testing.assert_array_equal(aretomo_view_indices(new), np.arange(61))
    old = read_aretomo_aln(DATA / "example_v1_2_0.aln")
    assert old.legacy_counts == (41, 0) and old.raw_size_xyz is None
    np.testing.assert_array_equal(aretomo_view_indices(old), np.arange(41))
    truncated = read_aretomo_aln(DATA / "cryoetalign_test.aln")  # 4 of 86 rows: cannot be placed
    with pytest.raises(ValueError, match="do not make up 90 images"):
        aretomo_view_indices(truncated)


def test_aln_agrees_with_the_xf_and_tlt_made_from_it():
    """alnfile wrote this .xf and .tlt from the .aln; the tilt angles and the tomogram-centre position agree.

    alnfile uses A = R(+ROT) where AreTomo's own xf writer (AreTomo2 ImodUtil/CSaveXF.cpp) uses A = R(−ROT): the
    rotation parts are transposes of each other, so that file's tilt axis is mirrored. tomoforge follows AreTomo.
    """
    aln = read_aretomo_aln(DATA / "alnfile_global_no_local.aln")
    xf = read_xf(DATA / "alnfile_global_no_local.xf")
    np.testing.assert_array_equal(read_tlt(DATA / "alnfile_global_no_local.tlt"), aln.tilt_angles_deg)
    # same data, row by row: alnfile's formula reproduces every number of the file
    rot = np.radians(aln.tilt_axis_angles_deg)
    a_alnfile = np.stack(
        [np.stack([np.cos(rot), -np.sin(rot)], -1), np.stack([np.sin(rot), np.cos(rot)], -1)], -2
    )
    np.testing.assert_allclose(xf[:, :, :2], a_alnfile, atol=1e-7)
    np.testing.assert_allclose(xf[:, :, 2], -(a_alnfile @ aln.shifts_xy_px[..., None])[..., 0], atol=1e-4)
    ours = aretomo_to_imod_xf(aln)
    np.testing.assert_allclose(ours[:, :, :2], np.transpose(xf[:, :, :2], (0, 2, 1)), atol=1e-7)
    # both put the tomogram centre at (TX, TY) of the raw image: s = −A⁻¹·d
    for m in (xf, ours):
        s = -np.einsum("nij,nj->ni", np.linalg.inv(m[:, :, :2]), m[:, :, 2])
        np.testing.assert_allclose(s, aln.shifts_xy_px, atol=1e-4)
    # and tomoforge's transforms give ROT back as the tilt-axis angle (CONVENTIONS.md §6)
    angles = [t.tilt_axis_angle_deg for t in aretomo_to_transforms(aln, 1.0)]
    np.testing.assert_allclose(angles, aln.tilt_axis_angles_deg, atol=1e-9)


def test_conversion_matches_aretomo2_csavexf_written_out():
    aln = read_aretomo_aln(DATA / "example_v1_3_0.aln")
    rot, tx, ty = aln.global_table[0, 1], aln.global_table[0, 3], aln.global_table[0, 4]
    t = math.radians(rot)
    a11, a12, a21, a22 = math.cos(-t), -math.sin(-t), math.sin(-t), math.cos(-t)
    expected = [[a11, a12, a11 * -tx + a12 * -ty], [a21, a22, a21 * -tx + a22 * -ty]]
    np.testing.assert_allclose(aretomo_to_imod_xf(aln)[0], expected, atol=1e-12)
    (transform, *_) = aretomo_to_transforms(aln, 2.0)
    assert transform.dx_angstrom == pytest.approx(2.0 * expected[0][2])


def test_rows_fit_the_projection_model():
    aln = read_aretomo_aln(DATA / "alnfile_global_and_local.aln")
    pixel = 1.0
    transforms = aretomo_to_transforms(aln, pixel)
    model = projection_matrices(
        torch.tensor(aln.tilt_angles_deg),
        torch.tensor(aln.tilt_axis_angles_deg),
        torch.tensor(aln.shifts_xy_px),
    )
    mats = np.stack([t.as_matrix(pixel) for t in transforms])
    from_xf = projection_matrices_from_xf(
        torch.tensor(mats[:, :2, :2]), torch.tensor(mats[:, :2, 2]), torch.tensor(aln.tilt_angles_deg)
    )
    torch.testing.assert_close(from_xf, model)
    # the tomogram centre lands on (TX, TY); the transform brings it to the aligned centre, the axis onto +Y
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 100.0, 0.0]], dtype=torch.float64)
    raw = project_points(points, model)[..., :2].numpy()
    for t, r in zip(transforms, raw, strict=True):
        aligned = t.apply(r, pixel)
        np.testing.assert_allclose(aligned, [[0.0, 0.0], [0.0, 100.0]], atol=1e-9)


@pytest.mark.parametrize("path", CTFS, ids=lambda p: p.name)
def test_ctf_files_round_trip_byte_for_byte(path: Path, tmp_path: Path):
    ctf = read_aretomo_ctf(path)
    out = write_aretomo_ctf(ctf, tmp_path / path.name)
    assert out.read_bytes() == path.read_bytes()
    assert read_aretomo_ctf(out) == ctf


def test_ctf_values_and_conversion():
    ctf = read_aretomo_ctf(DATA / "cryoetalign_test_8col_CTF.txt")
    assert ctf.table.shape == (31, 8) and set(ctf.table[:, 7]) == {-1.0}
    series = aretomo_ctf_to_ctf(ctf, "TS")
    first = series.parameters_for(0)
    assert first is not None
    assert (first.defocus_u_angstrom, first.defocus_v_angstrom, first.astigmatism_angle_deg) == (
        21717.31,
        20740.78,
        52.0,
    )
    assert first.score == 0.1125 and first.fit_resolution_angstrom == 9.6156
    table = ctf.table.copy()
    table[0, 4] = math.pi / 2  # phase shift column is in radians
    table[0, 6] = 0.0  # no fit spacing
    (converted, *_) = aretomo_ctf_to_ctf(type(ctf)(table=table), "TS").tilts
    assert converted.parameters is not None
    assert converted.parameters.phase_shift_deg == pytest.approx(90.0)
    assert converted.parameters.fit_resolution_angstrom is None


def test_registry():
    assert format_for("TS_01.aln").name == "aretomo-aln"
    assert format_for("TS_01_CTF.txt").name == "aretomo-ctf"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "# AreTomo Alignment / Priims bprmMn\n# RawSize = 10 10 2\n# NumPatches = 0\n",
            "no global alignment table",
        ),
        ("# SEC ROT\n1 0 1 0 0 1 1 1 0 0\n", "does not start with '# AreTomo Alignment'"),
        ("# AreTomo Alignment\n1 0 1 0 0 1 1 1 0 0\n", "before the '# SEC ROT"),
        (
            "# AreTomo Alignment\n# SEC\n1 0 1 0 0 1 1 1 0\n",
            "line 3 has 9 values; a global alignment row has 10",
        ),
        ("# AreTomo Alignment\n# SEC\n1.5 0 1 0 0 1 1 1 0 0\n", "'1.5' is not a whole number"),
        ("# AreTomo Alignment\n# RawSize = 10 10\n", "RawSize has 2 values, expected 3"),
        (
            "# AreTomo Alignment\n# SEC\n1 0 1 0 0 1 1 1 0 0\n# Local Alignment\n0 0 1 1 1 1\n",
            "a local alignment row has 7",
        ),
    ],
)
def test_broken_aln_files(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken.aln"
    path.write_text(text)
    with pytest.raises(FormatError, match=expected) as err:
        read_aretomo_aln(path)
    _one_line_error(err.value, path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Columns\n   1   25951.41  24469.37     88.08      0.00   -0.0105\n", "has 6 values"),
        ("1 1 1 1 0 0 1\n2 1 1 1 0 0 1 -1\n", "line 2 has 8 values; an AreTomo CTF row has 7"),
        ("# Columns: nothing\n", "has no CTF rows"),
        ("1 1 1 1 0 0 1 0.5\n", "'0.5' is not a whole number"),
    ],
)
def test_broken_ctf_files(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken_CTF.txt"
    path.write_text(text)
    with pytest.raises(FormatError, match=expected) as err:
        read_aretomo_ctf(path)
    _one_line_error(err.value, path)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-aretomo-fuzz")


_ALN_LINES = (DATA / "cryoetalign_test_thickness.aln").read_text().splitlines()
_CTF_LINES = (DATA / "cryoetalign_test_8col_CTF.txt").read_text().splitlines()[:4]
_words = st.sampled_from(
    [
        "#",
        "SEC",
        "Local Alignment",
        "RawSize =",
        "DarkFrame =",
        "1",
        "-2.5",
        "x",
        "=",
        "",
        " ",
        "0.123456789",
        "1e-7",
        "-0.0",
        "123456.7",
    ]
)
_line = st.lists(_words, max_size=11).map(" ".join)


@st.composite
def _mutated(draw: st.DrawFn, lines: list[str]) -> str:
    out = list(lines)
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, max(len(out) - 1, 0)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert" or not out:
            out.insert(index, draw(_line))
        elif action == "delete":
            del out[index]
        else:
            out[index] = draw(_line)
    return "\n".join(out)


@FUZZ
@given(text=st.one_of(_mutated(_ALN_LINES), st.text(max_size=60)))
def test_fuzz_aln_parser(fuzz_dir: Path, text: str):
    path = fuzz_dir / "fuzz.aln"
    path.write_text(text, encoding="utf-8")
    try:
        aln = read_aretomo_aln(path)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    assert read_aretomo_aln(write_aretomo_aln(aln, path)) == aln


@FUZZ
@given(text=st.one_of(_mutated(_CTF_LINES), st.text(max_size=60)))
def test_fuzz_ctf_parser(fuzz_dir: Path, text: str):
    path = fuzz_dir / "fuzz_CTF.txt"
    path.write_text(text, encoding="utf-8")
    try:
        ctf = read_aretomo_ctf(path)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    assert read_aretomo_ctf(write_aretomo_ctf(ctf, path)) == ctf
