"""Dynamo tables and tomogram indices: real files from teamtomo/dynamotable, conventions, broken files, fuzzing."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from tomoforge.io import FormatError, format_for
from tomoforge.io.dynamo import (
    DYNAMO_COLUMNS,
    DynamoTomogram,
    dynamo_table_to_particles,
    particles_to_dynamo_table,
    read_dynamo_particles,
    read_dynamo_table,
    read_dynamo_tomogram_index,
    write_dynamo_table,
    write_dynamo_tomogram_index,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "dynamo"
COMPLEX = DATA / "t_complex_subset.tbl"
DOUBLE = DATA / "t_double.tbl"
SHAPE = (200, 960, 928)  # (z, y, x), covers every coordinate of both tables
VOXEL = 15.0  # the tomograms of tmap_complex.doc are "…_15.00Apx.mrc"


def tomograms(indices) -> dict[int, DynamoTomogram]:
    return {int(i): DynamoTomogram(f"tomo{int(i)}", SHAPE, VOXEL) for i in indices}


def assert_one_sentence(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    return message


def test_real_tables_read_with_named_columns():
    double = read_dynamo_table(DOUBLE)
    assert double.shape == (300, 35) and list(double.columns) == list(DYNAMO_COLUMNS[:35])
    assert double.loc[0, ["tag", "dx", "tdrot", "tilt", "narot", "tomo", "class"]].tolist() == [
        1, 2.5178, 175.66, 90.681, -129.51, 1, 9
    ]  # fmt: skip
    complex_table = read_dynamo_table(COMPLEX)
    assert complex_table.shape == (729, 41) and complex_table.columns[-1] == "eig1"
    assert complex_table["daxis"].dtype == np.complex128
    assert np.count_nonzero(complex_table["daxis"].to_numpy().imag) == 78
    assert complex_table["daxis"].to_numpy().imag.max() == pytest.approx(1.2074e-06)
    assert all(complex_table[c].dtype == np.float64 for c in complex_table.columns if c != "daxis")
    assert format_for(DOUBLE).name == "dynamo-table"


@pytest.mark.parametrize("path", [DOUBLE, COMPLEX])
def test_read_write_read_is_exact(tmp_path: Path, path: Path):
    table = read_dynamo_table(path)
    out = write_dynamo_table(table, tmp_path / path.name)
    again = read_dynamo_table(out)
    assert again.equals(table)
    # and the numbers equal those of the original file, token by token
    original = [line.split() for line in path.read_text().splitlines()]
    written = [line.split() for line in out.read_text().splitlines()]
    assert len(original) == len(written)
    for a, b in zip(original, written, strict=True):
        assert [complex(t.replace("i", "j")) for t in a] == [complex(t.replace("i", "j")) for t in b]


def test_tomogram_index_round_trip(tmp_path: Path):
    index = read_dynamo_tomogram_index(DATA / "tmap_complex.doc")
    assert (
        len(index) == 48
        and index[1] == "tomo_ts01.mrc_15.00Apx.mrc"
        and index[48] == "tomo_ts99.mrc_15.00Apx.mrc"
    )
    assert read_dynamo_tomogram_index(write_dynamo_tomogram_index(index, tmp_path / "t.doc")) == index


def test_conversion_follows_the_dynamo_conventions():
    table = read_dynamo_table(DOUBLE)
    ps = dynamo_table_to_particles(table, tomograms(table.tomo.unique()))
    row = table.iloc[0]
    centre_xyz = np.array([SHAPE[2] // 2, SHAPE[1] // 2, SHAPE[0] // 2])
    expected = (
        row[["x", "y", "z"]].to_numpy(float) + row[["dx", "dy", "dz"]].to_numpy(float) - centre_xyz
    ) * VOXEL
    assert np.allclose(ps.particles[0].position_angstrom, expected)
    # R_dyn = Rz(narot)·Rx(tilt)·Rz(tdrot) = SciPy's extrinsic 'zxz'; tomoforge R is its transpose
    r_dyn = Rotation.from_euler("zxz", table[["tdrot", "tilt", "narot"]].to_numpy(), degrees=True).as_matrix()
    assert np.allclose(ps.rotation_matrices(), np.swapaxes(r_dyn, -1, -2), atol=1e-12)
    # R·ẑ is Dynamo's normal (sin tilt·sin tdrot, sin tilt·cos tdrot, cos tilt)
    tdrot, tilt = np.radians(table.tdrot.to_numpy()), np.radians(table.tilt.to_numpy())
    normal = np.stack([np.sin(tilt) * np.sin(tdrot), np.sin(tilt) * np.cos(tdrot), np.cos(tilt)], axis=1)
    assert np.allclose(ps.rotation_matrices()[:, :, 2], normal, atol=1e-12)
    assert ps.particles[0].score == pytest.approx(0.15858) and ps.particles[0].class_number == 9


def test_one_based_coordinates_move_by_one_voxel():
    table = read_dynamo_table(DOUBLE)
    zero = dynamo_table_to_particles(table, tomograms(table.tomo.unique())).positions_angstrom()
    one = dynamo_table_to_particles(
        table, tomograms(table.tomo.unique()), one_based=True
    ).positions_angstrom()
    assert np.allclose(zero - one, VOXEL)


def test_particles_to_table_and_back(tmp_path: Path):
    table = read_dynamo_table(COMPLEX)
    tomos = tomograms(table.tomo.unique())
    ps = dynamo_table_to_particles(table, tomos)
    out = write_dynamo_table(particles_to_dynamo_table(ps, tomos), tmp_path / "back.tbl")
    again = read_dynamo_particles(out, tomos)
    assert np.allclose(again.positions_angstrom(), ps.positions_angstrom(), atol=1e-9)
    assert np.allclose(again.rotation_matrices(), ps.rotation_matrices(), atol=1e-9)
    assert again.ts_ids() == ps.ts_ids()
    back = read_dynamo_table(out)
    assert back.shape == (len(table), 36) and back.apix.unique().tolist() == [VOXEL]


def test_unknown_tomogram_number_is_reported(tmp_path: Path):
    with pytest.raises(FormatError) as err:
        read_dynamo_particles(DOUBLE, {1: DynamoTomogram("tomo1", SHAPE, VOXEL)})
    assert "no entry in tomograms" in assert_one_sentence(err, DOUBLE)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1 1 1 0 0 0 10 20 30\n", "9 columns"),
        ("1 1 1 0 0 0 10 20 30 0.5 0 0 0 0 0 0 0 0 0 1 0 0 0 10 20 thirty\n", "'thirty', not a number"),
        ("1 " * 30 + "\n" + "1 " * 29 + "\n", "line 2 has 29 columns"),
        ("\n  \n", "empty table"),
        ("1 " * 29 + "nan\n", "not a finite number"),
    ],
)
def test_broken_tables_are_one_sentence_errors(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "broken.tbl"
    path.write_text(content)
    with pytest.raises(FormatError) as err:
        read_dynamo_table(path)
    assert expected in assert_one_sentence(err, path)


def test_binary_and_missing_files_are_format_errors(tmp_path: Path):
    path = tmp_path / "binary.tbl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    with pytest.raises(FormatError) as err:
        read_dynamo_table(path)
    assert_one_sentence(err, path)
    with pytest.raises(FormatError) as err:
        read_dynamo_table(tmp_path / "absent.tbl")
    assert "no such file" in assert_one_sentence(err, tmp_path / "absent.tbl")
    bad_doc = tmp_path / "bad.doc"
    bad_doc.write_text("1 a.mrc\none b.mrc\n")
    with pytest.raises(FormatError) as err:
        read_dynamo_tomogram_index(bad_doc)
    assert "line 2" in assert_one_sentence(err, bad_doc)


def test_writer_refuses_short_or_non_finite_tables(tmp_path: Path):
    table = read_dynamo_table(DOUBLE)
    with pytest.raises(ValueError, match="at least 26"):
        write_dynamo_table(table.iloc[:, :20], tmp_path / "short.tbl")
    table.loc[3, "cc"] = np.inf
    target = tmp_path / "kept.tbl"
    target.write_text("previous\n")
    with pytest.raises(ValueError, match="finite"):
        write_dynamo_table(table, target)
    assert target.read_text() == "previous\n"  # a failed write leaves the old file
    assert [p.name for p in tmp_path.iterdir()] == ["kept.tbl"]


_TOKENS = st.sampled_from(
    ["0", "1", "-2.5", "1e-3", "0+1.2e-06i", "3-4i", "i", "nan", "x", "1.2.3", "--1", "+.5"]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_TOKENS, min_size=0, max_size=45), max_size=6), noise=st.text(max_size=20))
def test_fuzzed_tables_parse_or_raise_format_error(tmp_path: Path, rows: list[list[str]], noise: str):
    path = tmp_path / "fuzz.tbl"
    path.write_text("\n".join(" ".join(r) for r in rows) + noise, encoding="utf-8", errors="surrogateescape")
    try:
        table = read_dynamo_table(path)
    except FormatError as exc:
        assert "\n" not in str(exc)
    else:
        assert table.shape[1] >= 26


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=4000), junk=st.text(max_size=6))
def test_mutated_real_table_parses_or_raises_format_error(tmp_path: Path, cut: int, junk: str):
    text = DOUBLE.read_text()[:4000]
    path = tmp_path / "mutated.tbl"
    path.write_text(text[:cut] + junk + text[cut + len(junk) :], encoding="utf-8", errors="surrogateescape")
    try:
        read_dynamo_table(path)
    except FormatError as exc:
        assert "\n" not in str(exc)
