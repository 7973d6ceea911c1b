"""Atomic models: PDB and mmCIF coordinate files (small, dependency-free readers).

Only what a potential simulation needs is read: positions (Å), elements, isotropic B-factors, occupancies, chain ids,
residue numbers, residue names and atom names, of the **first model** of the file. Alternative locations are all kept (their
occupancies weight them). Files may be gzip-compressed (``.gz``).

* **PDB**: ``ATOM``/``HETATM`` records in the fixed columns of the PDB format (v3.3): name 13–16, chain 22,
  residue name 18–20, residue number 23–26, x/y/z 31–54, occupancy 55–60, B 61–66, element 77–78. A missing element is taken from the
  atom name (columns 13–14, where the PDB right-justifies one-letter elements); reading stops at the first
  ``ENDMDL``.
* **mmCIF**: the ``_atom_site`` loop (``Cartn_x/y/z``, ``type_symbol``, ``B_iso_or_equiv``, ``occupancy``,
  ``auth_asym_id``/``label_asym_id``, ``auth_seq_id``/``label_seq_id``, ``label_atom_id``/``auth_atom_id``,
  ``pdbx_PDB_model_num``); quoted tokens and semicolon text fields are understood. Chain ids and residue numbers
  are the *author* ones when present (residue names are ``label_comp_id``), so a PDB file and its mmCIF twin give
  the same atoms.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomoforge.io._text import quote, read_bytes
from tomoforge.io.errors import FormatError

__all__ = ["Structure", "parse_mmcif_text", "parse_pdb_text", "read_structure"]

# Elements whose two-letter symbol may start a PDB atom name in column 13 (used only when columns 77–78 are empty).
_TWO_LETTER = {
    "HE", "LI", "BE", "NE", "NA", "MG", "AL", "SI", "CL", "AR", "CA", "SC", "TI", "CR", "MN", "FE", "CO", "NI", "CU",
    "ZN", "GA", "GE", "AS", "SE", "BR", "KR", "RB", "SR", "ZR", "MO", "RU", "RH", "PD", "AG", "CD", "IN", "SN", "SB",
    "TE", "XE", "CS", "BA", "LA", "CE", "GD", "YB", "LU", "HF", "TA", "RE", "OS", "IR", "PT", "AU", "HG", "TL", "PB",
    "BI", "TH", "PA", "NP", "PU",
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Structure:
    """The atoms of one model of an atomic structure.

    Attributes
    ----------
    positions_xyz_angstrom
        ``(N, 3)`` float64 Cartesian coordinates in Å, ordered ``(x, y, z)``.
    elements
        ``(N,)`` upper-case element symbols (``"C"``, ``"SE"``).
    b_factors_angstrom2
        ``(N,)`` float64 isotropic B-factors in Å² (0 where the file has none).
    occupancies
        ``(N,)`` float64 occupancies (1 where the file has none).
    chain_ids
        ``(N,)`` chain identifiers (author chain ids for mmCIF when present).
    residue_numbers
        ``(N,)`` int64 residue sequence numbers (author numbering for mmCIF when present).
    residue_names
        ``(N,)`` upper-case residue names (``"GLY"``, ``"HOH"``); empty where the file has none.
    atom_names
        ``(N,)`` atom names (``"CA"``, ``"OE1"``).
    """

    positions_xyz_angstrom: np.ndarray
    elements: np.ndarray
    b_factors_angstrom2: np.ndarray
    occupancies: np.ndarray
    chain_ids: np.ndarray
    residue_numbers: np.ndarray
    residue_names: np.ndarray
    atom_names: np.ndarray

    def __len__(self) -> int:
        return int(self.positions_xyz_angstrom.shape[0])

    def select(self, mask: np.ndarray) -> Structure:
        """The atoms where ``mask`` (``(N,)`` bool, or an index array) is true, in their order."""
        return Structure(
            positions_xyz_angstrom=self.positions_xyz_angstrom[mask],
            elements=self.elements[mask],
            b_factors_angstrom2=self.b_factors_angstrom2[mask],
            occupancies=self.occupancies[mask],
            chain_ids=self.chain_ids[mask],
            residue_numbers=self.residue_numbers[mask],
            residue_names=self.residue_names[mask],
            atom_names=self.atom_names[mask],
        )


def _structure(
    path: str | Path,
    xyz: list[tuple[float, float, float]],
    elements: list[str],
    b: list[float],
    occ: list[float],
    chains: list[str],
    residues: list[int],
    residue_names: list[str],
    names: list[str],
) -> Structure:
    if not xyz:
        raise FormatError(path, "holds no atoms (no ATOM/HETATM records or _atom_site rows)")
    positions = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    b_arr = np.asarray(b, dtype=np.float64)
    occ_arr = np.asarray(occ, dtype=np.float64)
    if not (np.isfinite(positions).all() and np.isfinite(b_arr).all() and np.isfinite(occ_arr).all()):
        raise FormatError(path, "has a coordinate, occupancy or B-factor that is not a finite number")
    return Structure(
        positions_xyz_angstrom=positions,
        elements=np.asarray(elements, dtype=str),
        b_factors_angstrom2=b_arr,
        occupancies=occ_arr,
        chain_ids=np.asarray(chains, dtype=str),
        residue_numbers=np.asarray(residues, dtype=np.int64),
        residue_names=np.asarray(residue_names, dtype=str),
        atom_names=np.asarray(names, dtype=str),
    )


def _number(token: str, path: str | Path, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise FormatError(path, f"{where}: {quote(token)} is not a number") from None
    if not np.isfinite(value):
        raise FormatError(path, f"{where}: {quote(token)} is not a finite number")
    return value


def _integer(token: str, path: str | Path, where: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise FormatError(path, f"{where}: {quote(token)} is not a whole number") from None


def _element_from_atom_name(field: str) -> str:
    """Element from the 4-character PDB atom-name field (columns 13–16) when columns 77–78 are blank.

    The PDB right-justifies one-letter elements in columns 13–14 (``" CA "`` is a carbon) and starts two-letter
    elements in column 13 (``"SE  "``, ``"FE  "``). Four-character names starting in column 13 with ``H`` are
    hydrogens (``"HG21"``), so ``H?`` is read as a two-letter element only for names of at most two characters.
    """
    field = field.ljust(4)
    letters = "".join(c for c in field if c.isalpha()).upper()
    if not field[0].isalpha():  # " CA ", "1HG2": one-letter element in column 14
        return letters[:1]
    two = "".join(c for c in field[:2] if c.isalpha()).upper()
    if two in _TWO_LETTER and (two[0] != "H" or len(field.strip()) <= 2):
        return two
    return two[:1]


def parse_pdb_text(text: str, path: str | Path = "<pdb>") -> Structure:
    """Parse the text of a PDB file (first model only).

    Parameters
    ----------
    text
        Whole file content.
    path
        Name used in error messages.

    Returns
    -------
    Structure
        Its atoms in file order.

    Raises
    ------
    FormatError
        No atom records, or a record whose coordinates or numbers cannot be read.
    """
    xyz: list[tuple[float, float, float]] = []
    elements: list[str] = []
    b: list[float] = []
    occ: list[float] = []
    chains: list[str] = []
    residues: list[int] = []
    residue_names: list[str] = []
    names: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        record = line[:6].rstrip()
        if record == "ENDMDL" and xyz:
            break
        if record not in ("ATOM", "HETATM"):
            continue
        where = f"line {lineno}"
        if len(line.rstrip()) < 54:
            raise FormatError(path, f"{where}: an {record} record ends before its x, y, z columns (31–54)")
        xyz.append(
            (
                _number(line[30:38], path, f"{where} x"),
                _number(line[38:46], path, f"{where} y"),
                _number(line[46:54], path, f"{where} z"),
            )
        )
        occ_field, b_field = line[54:60].strip(), line[60:66].strip()
        occ.append(_number(occ_field, path, f"{where} occupancy") if occ_field else 1.0)
        b.append(_number(b_field, path, f"{where} B-factor") if b_field else 0.0)
        seq = line[22:26].strip()
        residues.append(_integer(seq, path, f"{where} residue number") if seq else 0)
        chains.append(line[21:22].strip())
        residue_names.append(line[17:20].strip().upper())
        name_field = line[12:16]
        names.append(name_field.strip())
        element = "".join(c for c in line[76:78] if c.isalpha()).upper()
        elements.append(element or _element_from_atom_name(name_field))
        if not elements[-1]:
            raise FormatError(path, f"{where}: no element in columns 77–78 and none in the atom name")
    return _structure(path, xyz, elements, b, occ, chains, residues, residue_names, names)


def _cif_tokens(text: str, path: str | Path) -> list[str]:
    """Split CIF text into tokens: whitespace-separated words, quoted strings, ``;`` text fields; drop comments."""
    tokens: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(";"):
            field = [line[1:]]
            i += 1
            while i < len(lines) and not lines[i].startswith(";"):
                field.append(lines[i])
                i += 1
            if i == len(lines):
                raise FormatError(path, f"line {i}: a ';' text field is never closed")
            tokens.append("\n".join(field).strip())
            i += 1
            continue
        j, n = 0, len(line)
        while j < n:
            c = line[j]
            if c.isspace():
                j += 1
            elif c == "#":
                break
            elif c in "'\"":
                k = j + 1
                while k < n and not (line[k] == c and (k + 1 == n or line[k + 1].isspace())):
                    k += 1
                if k >= n:
                    raise FormatError(path, f"line {i + 1}: a quoted value is never closed")
                tokens.append(line[j + 1 : k])
                j = k + 1
            else:
                k = j
                while k < n and not line[k].isspace():
                    k += 1
                tokens.append(line[j:k])
                j = k
        i += 1
    return tokens


def _atom_site_table(tokens: list[str], path: str | Path) -> tuple[list[str], list[list[str]]]:
    """The column names and rows of the ``_atom_site`` loop."""
    for start in range(len(tokens) - 1):
        if tokens[start].lower() == "loop_" and tokens[start + 1].lower().startswith("_atom_site."):
            break
    else:
        raise FormatError(path, "has no _atom_site loop; is this an mmCIF coordinate file?")
    k = start + 1
    columns: list[str] = []
    while k < len(tokens) and tokens[k].startswith("_"):
        if not tokens[k].lower().startswith("_atom_site."):
            raise FormatError(path, f"the _atom_site loop mixes in the column {quote(tokens[k])}")
        columns.append(tokens[k][len("_atom_site.") :].lower())
        k += 1
    values: list[str] = []
    while k < len(tokens):
        low = tokens[k].lower()
        if tokens[k].startswith("_") or low == "loop_" or low.startswith("data_") or low.startswith("save_"):
            break
        values.append(tokens[k])
        k += 1
    if len(values) % len(columns):
        raise FormatError(
            path,
            f"the _atom_site loop has {len(values)} values, not a multiple of its {len(columns)} columns",
        )
    width = len(columns)
    rows = [values[r : r + width] for r in range(0, len(values), width)]
    return columns, rows


def parse_mmcif_text(text: str, path: str | Path = "<mmcif>") -> Structure:
    """Parse the text of an mmCIF file: the ``_atom_site`` loop of its first model.

    Parameters
    ----------
    text
        Whole file content.
    path
        Name used in error messages.

    Returns
    -------
    Structure
        Its atoms in file order.

    Raises
    ------
    FormatError
        No ``_atom_site`` loop, no coordinate columns, a broken loop or a value that is not a number.
    """
    columns, rows = _atom_site_table(_cif_tokens(text, path), path)
    col = {name: i for i, name in enumerate(columns)}
    missing = [c for c in ("cartn_x", "cartn_y", "cartn_z") if c not in col]
    if missing:
        wanted = ", ".join("_atom_site.Cartn_" + m[-1] for m in missing)
        raise FormatError(path, f"the _atom_site loop has no {wanted} coordinate column")

    def pick(*names: str) -> int | None:
        return next((col[n] for n in names if n in col), None)

    i_el, i_b, i_occ = pick("type_symbol"), pick("b_iso_or_equiv"), pick("occupancy")
    i_chain, i_name = pick("auth_asym_id", "label_asym_id"), pick("label_atom_id", "auth_atom_id")
    i_seq, i_model = pick("auth_seq_id", "label_seq_id"), pick("pdbx_pdb_model_num")
    i_comp = pick("label_comp_id", "auth_comp_id")
    unknown = (".", "?")
    first_model = rows[0][i_model] if rows and i_model is not None else None
    xyz: list[tuple[float, float, float]] = []
    elements: list[str] = []
    b: list[float] = []
    occ: list[float] = []
    chains: list[str] = []
    residues: list[int] = []
    residue_names: list[str] = []
    names: list[str] = []
    for r, row in enumerate(rows, start=1):
        if i_model is not None and row[i_model] != first_model:
            continue
        where = f"_atom_site row {r}"
        x, y, z = (_number(row[col[c]], path, f"{where} {c}") for c in ("cartn_x", "cartn_y", "cartn_z"))
        xyz.append((x, y, z))
        name = row[i_name] if i_name is not None and row[i_name] not in unknown else ""
        names.append(name)
        element = row[i_el] if i_el is not None and row[i_el] not in unknown else ""
        element = (
            "".join(c for c in element if c.isalpha()).upper()
            or "".join(c for c in name if c.isalpha())[:1].upper()
        )
        if not element:
            raise FormatError(path, f"{where}: no type_symbol and no atom name to take the element from")
        elements.append(element)
        b.append(
            _number(row[i_b], path, f"{where} B_iso_or_equiv")
            if i_b is not None and row[i_b] not in unknown
            else 0.0
        )
        occ.append(
            _number(row[i_occ], path, f"{where} occupancy")
            if i_occ is not None and row[i_occ] not in unknown
            else 1.0
        )
        chains.append(row[i_chain] if i_chain is not None and row[i_chain] not in unknown else "")
        residue_names.append(row[i_comp].upper() if i_comp is not None and row[i_comp] not in unknown else "")
        seq = row[i_seq] if i_seq is not None else "."
        residues.append(_integer(seq, path, f"{where} seq_id") if seq not in unknown else 0)
    return _structure(path, xyz, elements, b, occ, chains, residues, residue_names, names)


def read_structure(path: str | Path) -> Structure:
    """Read a PDB or mmCIF file (optionally gzip-compressed), first model only.

    The format is chosen by extension (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``, each optionally ``.gz``); other
    names are recognised by content (an mmCIF file starts with ``data_``).

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    Structure
        Positions in Å (``(x, y, z)``), upper-case elements, B-factors, occupancies, chain ids, residue numbers and
        atom names.

    Raises
    ------
    FormatError
        The file cannot be read, holds no atoms, or has broken coordinate records.
    """
    p = Path(path)
    data = read_bytes(p)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, ValueError):
            raise FormatError(p, "is not a valid gzip file") from None
        suffixes = suffixes[:-1]
    if b"\x00" in data:
        raise FormatError(p, "contains binary data where a PDB or mmCIF text file was expected")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    ext = suffixes[-1] if suffixes else ""
    if ext in (".cif", ".mmcif"):
        return parse_mmcif_text(text, p)
    if ext in (".pdb", ".ent"):
        return parse_pdb_text(text, p)
    head = text.lstrip()[:5].lower()
    return parse_mmcif_text(text, p) if head == "data_" else parse_pdb_text(text, p)
