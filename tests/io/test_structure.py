"""PDB and mmCIF readers on real files (1A8O in both formats, the EMPIAR-10164 CA-SP1 hexamer) and on broken text."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError
from tomoforge.io.structure import Structure, parse_mmcif_text, parse_pdb_text, read_structure

DATA = Path(__file__).resolve().parents[1] / "data" / "structures"
PDB_TEXT = (DATA / "1A8O.pdb").read_text(encoding="utf-8")
CIF_TEXT = (DATA / "1A8O.cif").read_text(encoding="utf-8")
FIELDS = (
    "positions_xyz_angstrom", "elements", "b_factors_angstrom2", "occupancies", "chain_ids", "residue_numbers",
    "residue_names", "atom_names",
)  # fmt: skip


def _hexamer_path() -> resources.abc.Traversable:
    return resources.files("tomoforge.simulate").joinpath("data", "HIV1_CA-SP1_hexamer.cif")


def _same(a: Structure, b: Structure) -> None:
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_1a8o_pdb_and_cif_give_the_same_atoms() -> None:
    pdb, cif = read_structure(DATA / "1A8O.pdb"), read_structure(DATA / "1A8O.cif")
    assert len(pdb) == len(cif) == 644
    _same(pdb, cif)
    assert pdb.positions_xyz_angstrom.dtype == np.float64
    np.testing.assert_allclose(pdb.positions_xyz_angstrom[0], [19.594, 32.367, 28.012])
    elements, counts = np.unique(pdb.elements, return_counts=True)
    composition = dict(zip(elements.tolist(), counts.tolist(), strict=True))
    assert composition == {"C": 346, "N": 96, "O": 196, "S": 2, "SE": 4}
    # author numbering, waters last
    assert pdb.residue_numbers.min() == 151 and pdb.residue_numbers.max() == 1087
    assert set(pdb.chain_ids.tolist()) == {"A"}
    assert pdb.residue_names[0] == "MSE" and pdb.atom_names[6] == "SE"
    assert pdb.b_factors_angstrom2[0] == pytest.approx(18.03)


def test_the_hexamer_model() -> None:
    with resources.as_file(_hexamer_path()) as path:
        s = read_structure(path)
    assert len(s) == 12359
    assert set(s.elements.tolist()) == {"C", "N", "O", "S"}
    lengths = {
        c: np.unique(s.residue_numbers[s.chain_ids == c]).size for c in np.unique(s.chain_ids).tolist()
    }
    full = sorted(c for c, n in lengths.items() if n > 100)
    assert full == ["Af", "Ag", "Ah", "Ai", "Ak", "Al"]
    assert all(208 <= lengths[c] <= 212 for c in full)
    assert max(n for c, n in lengths.items() if c not in full) <= 45
    np.testing.assert_allclose(s.positions_xyz_angstrom[0], [108.817, 89.640, 142.580])
    assert s.atom_names[1] == "CA" and s.residue_names[0] == "GLU" and s.residue_numbers[0] == 160


def test_element_from_atom_name_when_columns_77_78_are_blank() -> None:
    blank = "\n".join(
        line[:76] if line.startswith(("ATOM", "HETATM")) else line for line in PDB_TEXT.splitlines()
    )
    _same(parse_pdb_text(blank), read_structure(DATA / "1A8O.pdb"))


def test_only_the_first_model_is_read() -> None:
    atoms = [line for line in PDB_TEXT.splitlines() if line.startswith("ATOM")][:5]
    moved = [line[:30] + f"{float(line[30:38]) + 50:8.3f}" + line[38:] for line in atoms]
    text = "\n".join(["MODEL        1", *atoms, "ENDMDL", "MODEL        2", *moved, "ENDMDL", "END"])
    s = parse_pdb_text(text)
    assert len(s) == 5
    np.testing.assert_allclose(s.positions_xyz_angstrom[:, 0], [float(line[30:38]) for line in atoms])
    rows = [line for line in CIF_TEXT.splitlines() if line.startswith("ATOM")][:4]
    head = CIF_TEXT[: CIF_TEXT.index(rows[0])]
    second = [row.rstrip()[:-1] + "2" for row in rows]  # pdbx_PDB_model_num is the last column
    assert len(parse_mmcif_text(head + "\n".join(rows + second) + "\n#\n")) == 4


def test_mmcif_quoted_tokens_text_fields_and_missing_columns() -> None:
    text = """data_test
_struct.title
;A multi-line
title with 'quotes' and loop_ inside
;
loop_
_atom_site.group_PDB
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_comp_id
_atom_site.auth_asym_id
_atom_site.auth_seq_id
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
HETATM P "P" A B 7 1.0 2.0 3.0   # a comment
HETATM O "O5'" A B 7 1.5 2.5 3.5
HETATM C 'C1 X' 'A' B 7 -1 -2 -3
"""
    s = parse_mmcif_text(text)
    assert s.atom_names.tolist() == ["P", "O5'", "C1 X"]
    assert s.elements.tolist() == ["P", "O", "C"]
    np.testing.assert_array_equal(s.occupancies, 1.0)  # no occupancy column
    np.testing.assert_array_equal(s.b_factors_angstrom2, 0.0)
    np.testing.assert_allclose(s.positions_xyz_angstrom[2], [-1, -2, -3])


def test_gzip_and_detection_by_content(tmp_path: Path) -> None:
    gz = tmp_path / "model.cif.gz"
    gz.write_bytes(gzip.compress(CIF_TEXT.encode()))
    other = tmp_path / "model.txt"
    other.write_text(PDB_TEXT)
    _same(read_structure(gz), read_structure(other))


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("empty.pdb", "HEADER    nothing\nEND\n", "no atoms"),
        ("short.pdb", "ATOM      1  CA  ALA A   1      11.104   6.134\n", "x, y, z"),
        (
            "letters.pdb",
            "ATOM      1  CA  ALA A   1      11.104   6.134   abcdefg  1.00  0.00           C\n",
            "not a",
        ),
        ("noloop.cif", "data_x\n_cell.length_a 10\n", "_atom_site"),
        ("nocoords.cif", "data_x\nloop_\n_atom_site.id\n_atom_site.type_symbol\n1 C\n", "Cartn_x"),
        (
            "ragged.cif",
            "data_x\nloop_\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n1 2 3 4\n",
            "multiple",
        ),
        (
            "quote.cif",
            "data_x\nloop_\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n'1 2 3\n",
            "quoted",
        ),
        (
            "nan.cif",
            "data_x\nloop_\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n1 nan 3\n",
            "finite",
        ),
    ],
)
def test_bad_files_raise_one_sentence(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FormatError, match=problem) as info:
        read_structure(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        read_structure(tmp_path / "absent.pdb")
    (tmp_path / "bin.cif").write_bytes(b"data_\x00\x01")
    with pytest.raises(FormatError, match="binary"):
        read_structure(tmp_path / "bin.cif")


# --- fuzzing: mutated real text parses or raises FormatError, nothing else -------------------------------------

_PDB_LINES = [line for line in PDB_TEXT.splitlines() if line.startswith(("ATOM", "HETATM"))][:12]
_CIF_LINES = CIF_TEXT.splitlines()
_START = next(
    i for i, line in enumerate(_CIF_LINES) if line.startswith("loop_") and "_atom_site." in _CIF_LINES[i + 1]
)
_CIF_HEAD = _CIF_LINES[_START : _START + 30]  # loop_, 26 column names, first atoms
_JUNK = st.sampled_from(["", " ", "'", '"', ";", "#", "loop_", "_atom_site.x", "data_", "1e999", "nan", "-", ".", "?",
                         "ENDMDL", "MODEL", "HETATM", "\x00", "é", "\t", "SE", "1.0"])  # fmt: skip


@st.composite
def _mutated(draw: st.DrawFn, lines: list[str]) -> str:
    out = list(lines)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(out) - 1))
        line = out[i]
        j = draw(st.integers(0, len(line)))
        k = draw(st.integers(j, min(len(line), j + 8)))
        action = draw(st.sampled_from(["replace", "delete", "duplicate", "insert"]))
        if action == "replace":
            out[i] = line[:j] + draw(st.one_of(_JUNK, st.text(max_size=4))) + line[k:]
        elif action == "delete":
            del out[i]
            if not out:
                out = [""]
        elif action == "duplicate":
            out.insert(i, line)
        else:
            out.insert(i, draw(_JUNK))
    return "\n".join(out) + "\n"


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_format_error(parse: object, text: str) -> None:
    try:
        s = parse(text, "fuzz")  # type: ignore[operator]
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    assert len(s) > 0 and s.positions_xyz_angstrom.shape == (len(s), 3)
    assert np.isfinite(s.positions_xyz_angstrom).all()
    assert all(len(getattr(s, f)) == len(s) for f in FIELDS)


@_FUZZ
@given(_mutated(_PDB_LINES))
def test_fuzz_pdb(text: str) -> None:
    _parse_or_format_error(parse_pdb_text, text)


@_FUZZ
@given(_mutated(["data_1A8O", *_CIF_HEAD]))
def test_fuzz_mmcif(text: str) -> None:
    _parse_or_format_error(parse_mmcif_text, text)


@pytest.mark.parametrize(
    ("name", "record", "element"),
    [(" CA ", "ATOM", "C"), ("CA  ", "HETATM", "CA"), ("SE  ", "HETATM", "SE"), ("SE  ", "ATOM", "SE"),
     ("HG21", "ATOM", "H"), ("HG  ", "HETATM", "HG"), ("1HG2", "ATOM", "H"), (" OE1", "ATOM", "O"), ("FE  ", "HETATM", "FE")],
)  # fmt: skip
def test_element_fallback_rules(name: str, record: str, element: str) -> None:
    line = f"{record:<6}    1 {name} RES A   1      11.104   6.134  -6.504  1.00  0.00"
    assert parse_pdb_text(line).elements.tolist() == [element]
