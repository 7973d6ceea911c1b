"""Project folders and the database: creation, errors, schema versions and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tomoforge.workflow import SCHEMA_VERSION, Project, ProjectError, SchemaError, atomic_write, run_step
from tomoforge.workflow.store import MIGRATIONS, Store


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def _run_columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    finally:
        conn.close()


def test_init_creates_layout(tmp_path: Path) -> None:
    with Project.init(tmp_path / "p", app_version="9.9") as project:
        assert project.writable
        assert project.store.get_info("created_by_version") == "9.9"
    root = tmp_path / "p"
    assert (root / "project.sqlite").is_file() and (root / "runs").is_dir()
    assert (root / "logs" / "tomoforge.log").is_file()
    conn = sqlite3.connect(root / "project.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert {"runs", "params", "artifacts", "run_inputs", "timings", "project_info"} <= _tables(
        root / "project.sqlite"
    )
    with pytest.raises(ProjectError, match="already exists"):
        Project.init(root)


def test_open_missing_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as info:
        Project.open(tmp_path / "nothing")
    assert str(info.value) == (
        f"No tomoforge project at {tmp_path / 'nothing'} (no project.sqlite). "
        f"Create one with `tomoforge project init {tmp_path / 'nothing'}`."
    )


def test_open_corrupt_database(tmp_path: Path) -> None:
    Project.init(tmp_path / "p").close()
    db = tmp_path / "p" / "project.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database at all" * 200)
    for write in (False, True):
        with pytest.raises(ProjectError) as info:
            Project.open(tmp_path / "p", write=write)
        assert str(db) in str(info.value) and "not a SQLite database" in str(info.value)
    # the failed writer released its lock: a second writer gets the same error, not "in use"
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(tmp_path / "p", write=True)


def test_future_schema_is_refused(tmp_path: Path) -> None:
    Project.init(tmp_path / "p").close()
    conn = sqlite3.connect(tmp_path / "p" / "project.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError) as info:
        Project.open(tmp_path / "p")
    assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value)
    assert f"up to {SCHEMA_VERSION}" in str(info.value) and "upgrade" in str(info.value)


def test_migration_from_previous_version(tmp_path: Path, toy) -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    root = tmp_path / "p"
    root.mkdir()
    store = Store(root / "project.sqlite", root)
    assert store.migrate(target=SCHEMA_VERSION - 1) == list(range(1, SCHEMA_VERSION))
    store.conn.execute("INSERT INTO project_info (key, value) VALUES ('created_at', 'long ago')")
    store.close()
    assert "peak_memory_bytes" not in _run_columns(root / "project.sqlite")

    with Project.open(root, write=True) as project:
        assert project.store.version == SCHEMA_VERSION
        assert project.store.get_info("created_at") == "long ago"
        result = run_step(project, "toy.count", {"n": 1})
        assert "execute" in project.store.timings(result.run.id)
    assert "peak_memory_bytes" in _run_columns(root / "project.sqlite")


def test_reader_sees_runs_while_writer_holds_lock(toy_project: Project, toy) -> None:
    result = run_step(toy_project, "toy.count", {"n": 1})
    with Project.open(toy_project.root) as reader:
        assert [r.id for r in reader.runs()] == [result.run.id]
        assert reader.outputs(result.run.id)["counts"].path == result.outputs["counts"].path
        with pytest.raises(ProjectError, match="read-only"):
            reader.import_path(toy_project.root / "toy_project.sqlite", "table")
        with pytest.raises(ProjectError, match="has no run 99"):
            reader.run(99)


def test_atomic_write_keeps_old_content_on_error(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("new, half written")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
    with atomic_write(target, "wb") as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
