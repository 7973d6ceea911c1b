"""pyworkflow's flat-mapper sqlite layout (``tutorial-steps.md`` §17): reading and writing the three tables."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError

SQL_TYPES = {"Float": "REAL", "Integer": "INTEGER", "Boolean": "INTEGER"}
_PROPERTIES_SQL = """CREATE TABLE {p}Properties
                     (key       TEXT UNIQUE, -- property key
                      value     TEXT  DEFAULT NULL -- property value
                      )"""
_CLASSES_SQL = """CREATE TABLE {p}Classes
                     (id        INTEGER PRIMARY KEY AUTOINCREMENT,
                      label_property      TEXT UNIQUE, --object label
                      column_name TEXT UNIQUE,
                      class_name TEXT DEFAULT NULL  -- relation's class name
                      )"""
_OBJECTS_SQL = """CREATE TABLE {p}Objects
                     (id        INTEGER PRIMARY KEY,
                      enabled   INTEGER DEFAULT 1,   -- used to selected/deselect items from a set
                      label     TEXT DEFAULT NULL,   -- object label, text used for display
                      comment   TEXT DEFAULT NULL,   -- object comment, text used for annotations
                      creation  DATE                 -- creation date and time of the object
                      {columns})"""


def connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FormatError(path, "no such file")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:
        raise FormatError(path, f"not an SQLite database ({one_line(exc)})") from None
    return con


def tables(con: sqlite3.Connection) -> set[str]:
    return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def set_class(path: Path, con: sqlite3.Connection) -> tuple[str, dict[str, str | None]]:
    if not {"Properties", "Classes", "Objects"} <= tables(con):
        raise FormatError(path, "not a Scipion set file (no Properties, Classes and Objects tables)")
    properties = {
        str(k): (None if v is None else str(v)) for k, v in con.execute("SELECT key, value FROM Properties")
    }
    return properties.get("self") or "an unnamed set", properties


def column_map(
    path: Path, con: sqlite3.Connection, prefix: str = ""
) -> tuple[str, dict[str, tuple[str, str]]]:
    try:
        rows = con.execute(
            f'SELECT label_property, column_name, class_name FROM "{prefix}Classes" ORDER BY id'
        )
        mapping = {str(label): (str(column), str(cls)) for label, column, cls in rows}
    except sqlite3.Error as exc:
        raise FormatError(path, f"unreadable {prefix}Classes table ({one_line(exc)})") from None
    item = mapping.pop("self", ("c00", "unknown"))[1]
    return item, mapping


def checked_set(
    path: Path, con: sqlite3.Connection, kind: str, labels: tuple[str, ...]
) -> tuple[dict[str, str | None], dict[str, tuple[str, str]]]:
    """Properties and column map of a set that must be a ``kind`` whose Classes table maps every label."""
    found, properties = set_class(path, con)
    if found != kind:
        raise FormatError(path, f"a {found}, not a {kind}")
    _, mapping = column_map(path, con)
    missing = [label for label in labels if label not in mapping]
    if missing:
        raise FormatError(path, f"the Classes table maps no column for {', '.join(missing)}")
    return properties, mapping


def items(
    path: Path, con: sqlite3.Connection, mapping: dict[str, tuple[str, str]], prefix: str = ""
) -> list[dict[str, Any]]:
    labels = list(mapping)
    columns = ", ".join(["id", "enabled", *(f'"{mapping[label][0]}"' for label in labels)])
    try:
        rows = con.execute(f'SELECT {columns} FROM "{prefix}Objects" ORDER BY id').fetchall()
    except sqlite3.Error as exc:
        raise FormatError(
            path, f"the {prefix}Objects table does not match its Classes table ({one_line(exc)})"
        ) from None
    return [{"id": r[0], "enabled": r[1], **dict(zip(labels, r[2:], strict=True))} for r in rows]


def matrix(path: Path, text: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        m = np.array(json.loads(text), dtype=np.float64)
    except (TypeError, ValueError):
        raise FormatError(path, f"{what} is not a JSON matrix: {str(text)[:60]!r}") from None
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise FormatError(path, f"{what} is not a finite {shape[0]}×{shape[1]} matrix: {str(text)[:60]!r}")
    return m


def number(path: Path, value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FormatError(path, f"{what} is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise FormatError(path, f"{what} is not a finite number: {value!r}")
    return number


def sql_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_flat_set(
    con: sqlite3.Connection,
    item_class: str,
    labels: list[tuple[str, str]],
    values: dict[str, list[Any]],
    object_ids: list[int],
    enabled: list[bool],
    properties: dict[str, str | None],
) -> None:
    con.execute("PRAGMA user_version = 1")
    con.execute(_PROPERTIES_SQL.format(p=""))
    con.execute(_CLASSES_SQL.format(p=""))
    columns = [f"c{i + 1:02d}" for i in range(len(labels))]
    defs = "".join(
        f",{c}  {SQL_TYPES.get(cls, 'TEXT')} DEFAULT NULL"
        for c, (_, cls) in zip(columns, labels, strict=True)
    )
    con.execute(_OBJECTS_SQL.format(p="", columns=defs))
    con.executemany("INSERT INTO Properties (key, value) VALUES (?, ?)", list(properties.items()))
    con.execute(
        "INSERT INTO Classes (label_property, column_name, class_name) VALUES ('self', 'c00', ?)",
        (item_class,),
    )
    con.executemany(
        "INSERT INTO Classes (label_property, column_name, class_name) VALUES (?, ?, ?)",
        [(label, c, cls) for c, (label, cls) in zip(columns, labels, strict=True)],
    )
    placeholders = ", ".join("?" * (len(columns) + 5))
    rows = [
        (object_ids[i], int(enabled[i]), "", "", None, *(sql_value(values[label][i]) for label, _ in labels))
        for i in range(len(object_ids))
    ]
    con.executemany(f"INSERT INTO Objects (id, enabled, label, comment, creation, {', '.join(columns)}) "
                    f"VALUES ({placeholders})", rows)  # fmt: skip
