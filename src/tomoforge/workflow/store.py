"""The project database: schema, migrations and queries (SQLite in WAL mode).

The schema version is kept in ``PRAGMA user_version``. :data:`MIGRATIONS` is an ordered list;
migration *N* brings a database from version *N-1* to *N* inside one transaction, and opening a
database applies the missing ones. A database newer than the code is refused with
:class:`SchemaError`. To change the schema, append a migration; never edit an old one.

Tables (all columns named, times are ISO 8601 UTC strings):

``project_info(key, value)``
    Free key/value facts about the project (creation time, creating version).
``runs(id, step, cache_key, status, created_at, started_at, finished_at, duration_s, pid, host,
error, code_version, folder, peak_memory_bytes)``
    One row per run; ``folder`` is relative to the project root. ``peak_memory_bytes`` (schema
    version 3) is the peak resident set size of the process that ran the step function, while it
    ran; NULL for runs made before, imports, failed runs and systems where it cannot be measured.
``params(run_id, name, value_json)``
    The validated parameters of each run, one row per field.
``artifacts(id, run_id, name, kind, path, token, meta_json)``
    Registered outputs; ``path`` is relative to the project root (absolute for external files).
``run_inputs(run_id, input_name, artifact_id)``
    Which artifact fed which input of a run.
``summaries(run_id, name, value_json)``
    Values returned by a step's ``summary`` hook.
``timings(run_id, phase, seconds)`` (schema version 2)
    Wall time of the phases of a run (prepare, execute, finalize).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .artifacts import Artifact
from .errors import ProjectError, SchemaError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "RunRecord",
    "RunStatus",
    "Store",
]

RunStatus = Literal["running", "succeeded", "failed", "interrupted"]


@dataclass(frozen=True)
class Migration:
    """One schema step: the SQL statements that bring the database to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            "CREATE TABLE project_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                step TEXT NOT NULL,
                cache_key TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
                created_at TEXT NOT NULL,
                started_at TEXT,
                finished_at TEXT,
                duration_s REAL,
                pid INTEGER,
                host TEXT,
                error TEXT,
                code_version TEXT NOT NULL,
                folder TEXT NOT NULL
            )""",
            "CREATE INDEX runs_by_cache_key ON runs (cache_key, status)",
            "CREATE INDEX runs_by_status ON runs (status)",
            """CREATE TABLE params (
                run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                value_json TEXT NOT NULL,
                PRIMARY KEY (run_id, name)
            )""",
            """CREATE TABLE artifacts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                path TEXT NOT NULL,
                token TEXT NOT NULL,
                meta_json TEXT NOT NULL DEFAULT '{}',
                UNIQUE (run_id, name)
            )""",
            """CREATE TABLE run_inputs (
                run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                input_name TEXT NOT NULL,
                artifact_id INTEGER NOT NULL REFERENCES artifacts (id),
                PRIMARY KEY (run_id, input_name)
            )""",
            """CREATE TABLE summaries (
                run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                value_json TEXT NOT NULL,
                PRIMARY KEY (run_id, name)
            )""",
        ),
    ),
    Migration(
        2,
        "record the wall time of run phases",
        (
            """CREATE TABLE timings (
                run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                phase TEXT NOT NULL,
                seconds REAL NOT NULL,
                PRIMARY KEY (run_id, phase)
            )""",
        ),
    ),
    Migration(
        3,
        "record the peak resident memory of runs",
        ("ALTER TABLE runs ADD COLUMN peak_memory_bytes INTEGER",),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table; ``folder`` is absolute."""

    id: int
    step: str
    cache_key: str
    status: RunStatus
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    pid: int | None
    host: str | None
    error: str | None
    code_version: str
    folder: Path
    peak_memory_bytes: int | None = None


def _corrupt(path: Path, exc: Exception) -> ProjectError:
    return ProjectError(
        f"The project database {path} is damaged or is not a SQLite database ({exc}); "
        "restore it from a backup or create a new project."
    )


class Store:
    """Access to one project database.

    Parameters
    ----------
    path : Path
        The ``project.sqlite`` file.
    root : Path
        The project folder (relative paths in the database are relative to it).
    readonly : bool, optional
        Refuse writes (``PRAGMA query_only``); schema migrations are still applied.
    """

    def __init__(self, path: Path, root: Path, readonly: bool = False) -> None:
        self.path = path
        self.root = root
        try:
            self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ProjectError(f"Cannot open the project database {path} ({exc}).") from exc
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = FULL")
            self.version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise _corrupt(path, exc) from exc
        self.readonly = readonly

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # ---------------------------------------------------------------- schema

    def migrate(self, target: int = SCHEMA_VERSION) -> list[int]:
        """Apply the missing migrations up to ``target``.

        Parameters
        ----------
        target : int, optional
            The schema version to reach (the latest by default; tests use lower ones).

        Returns
        -------
        list of int
            The versions applied (empty if the database was up to date).

        Raises
        ------
        SchemaError
            If the database is newer than ``SCHEMA_VERSION``.
        """
        if self.version > SCHEMA_VERSION:
            raise SchemaError(
                f"The project database {self.path} has schema version {self.version}, but this version "
                f"of the software reads versions up to {SCHEMA_VERSION}; upgrade the software."
            )
        applied: list[int] = []
        for migration in MIGRATIONS:
            if migration.version > target:
                break
            try:
                with self.transaction():
                    current = self.conn.execute("PRAGMA user_version").fetchone()[0]
                    if current >= migration.version:
                        continue
                    for statement in migration.statements:
                        self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            except sqlite3.DatabaseError as exc:
                raise SchemaError(
                    f"Could not upgrade the project database {self.path} to schema version "
                    f"{migration.version} ({migration.description}): {exc}."
                ) from exc
            applied.append(migration.version)
        self.version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        return applied

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---------------------------------------------------------------- info

    def get_info(self, key: str) -> str | None:
        """Return the ``project_info`` value of ``key`` (None if unset)."""
        row = self.conn.execute("SELECT value FROM project_info WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_info(self, values: Mapping[str, str]) -> None:
        """Insert or replace ``project_info`` values."""
        with self.transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO project_info (key, value) VALUES (?, ?)", list(values.items())
            )

    # ---------------------------------------------------------------- runs

    def _record(self, row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            step=row["step"],
            cache_key=row["cache_key"],
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            duration_s=row["duration_s"],
            pid=row["pid"],
            host=row["host"],
            error=row["error"],
            code_version=row["code_version"],
            folder=self.root / row["folder"],
            peak_memory_bytes=row["peak_memory_bytes"] if "peak_memory_bytes" in row.keys() else None,
        )

    def create_run(
        self,
        *,
        step: str,
        cache_key: str,
        code_version: str,
        status: RunStatus,
        created_at: str,
        pid: int,
        host: str,
        folder_name: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, int],
    ) -> RunRecord:
        """Insert a run with its parameters and inputs in one transaction.

        Parameters
        ----------
        folder_name : str
            Folder relative to the project root, formatted with ``{id}`` (e.g.
            ``"runs/{id:06d}_toy_count"``).
        params : mapping
            JSON-serializable parameter values by name.
        inputs : mapping of str to int
            Artifact id by input name.

        Returns
        -------
        RunRecord
            The new row.
        """
        with self.transaction():
            cursor = self.conn.execute(
                "INSERT INTO runs (step, cache_key, status, created_at, started_at, pid, host, code_version,"
                " folder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '')",
                (step, cache_key, status, created_at, created_at, pid, host, code_version),
            )
            run_id = int(cursor.lastrowid or 0)
            self.conn.execute(
                "UPDATE runs SET folder = ? WHERE id = ?", (folder_name.format(id=run_id), run_id)
            )
            self.conn.executemany(
                "INSERT INTO params (run_id, name, value_json) VALUES (?, ?, ?)",
                [(run_id, name, json.dumps(value, sort_keys=True)) for name, value in params.items()],
            )
            self.conn.executemany(
                "INSERT INTO run_inputs (run_id, input_name, artifact_id) VALUES (?, ?, ?)",
                [(run_id, name, artifact_id) for name, artifact_id in inputs.items()],
            )
        record = self.get_run(run_id)
        assert record is not None
        return record

    def finish_run(
        self,
        run_id: int,
        *,
        status: RunStatus,
        finished_at: str,
        duration_s: float | None,
        peak_memory_bytes: int | None = None,
        error: str | None = None,
        artifacts: Sequence[Artifact] = (),
        timings: Mapping[str, float] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> list[Artifact]:
        """Record the end of a run, its artifacts, timings and summary in one transaction.

        Returns
        -------
        list of Artifact
            The stored artifacts with their database ids.
        """
        stored: list[Artifact] = []
        with self.transaction():
            for artifact in artifacts:
                cursor = self.conn.execute(
                    "INSERT INTO artifacts (run_id, name, kind, path, token, meta_json) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        artifact.name,
                        artifact.kind,
                        self._relative(artifact.path),
                        artifact.token,
                        json.dumps(dict(artifact.meta), sort_keys=True, default=str),
                    ),
                )
                stored.append(
                    Artifact(
                        run_id,
                        artifact.name,
                        artifact.kind,
                        artifact.path,
                        artifact.token,
                        artifact.meta,
                        int(cursor.lastrowid or 0),
                    )
                )
            self.conn.executemany(
                "INSERT OR REPLACE INTO timings (run_id, phase, seconds) VALUES (?, ?, ?)",
                [(run_id, phase, float(seconds)) for phase, seconds in (timings or {}).items()],
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO summaries (run_id, name, value_json) VALUES (?, ?, ?)",
                [(run_id, k, json.dumps(v, sort_keys=True, default=str)) for k, v in (summary or {}).items()],
            )
            self.conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, duration_s = ?, peak_memory_bytes = ?, error = ?"
                " WHERE id = ?",
                (status, finished_at, duration_s, peak_memory_bytes, error, run_id),
            )
        return stored

    def mark_interrupted(self, run_ids: Sequence[int], error: str, finished_at: str) -> None:
        """Set the status of the given runs to ``interrupted``."""
        with self.transaction():
            self.conn.executemany(
                "UPDATE runs SET status = 'interrupted', error = ?, finished_at = ? WHERE id = ?",
                [(error, finished_at, run_id) for run_id in run_ids],
            )

    def get_run(self, run_id: int) -> RunRecord | None:
        """Return run ``run_id`` or None."""
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._record(row)

    def list_runs(self, status: RunStatus | None = None) -> list[RunRecord]:
        """Return all runs (optionally only those with ``status``) by increasing id."""
        if status is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM runs WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [self._record(row) for row in rows]

    def succeeded_runs(self, cache_key: str) -> list[RunRecord]:
        """Return the succeeded runs with ``cache_key``, newest first."""
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE cache_key = ? AND status = 'succeeded' ORDER BY id DESC", (cache_key,)
        ).fetchall()
        return [self._record(row) for row in rows]

    # ---------------------------------------------------------------- details

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _artifact(self, row: sqlite3.Row) -> Artifact:
        return Artifact(
            run_id=row["run_id"],
            name=row["name"],
            kind=row["kind"],
            path=self.root / row["path"],
            token=row["token"],
            meta=json.loads(row["meta_json"]),
            id=row["id"],
        )

    def outputs(self, run_id: int) -> dict[str, Artifact]:
        """Return the artifacts of run ``run_id`` by output name."""
        rows = self.conn.execute("SELECT * FROM artifacts WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return {row["name"]: self._artifact(row) for row in rows}

    def inputs(self, run_id: int) -> dict[str, Artifact]:
        """Return the artifacts that fed run ``run_id`` by input name."""
        rows = self.conn.execute(
            "SELECT a.*, i.input_name FROM run_inputs AS i JOIN artifacts AS a ON a.id = i.artifact_id"
            " WHERE i.run_id = ? ORDER BY i.input_name",
            (run_id,),
        ).fetchall()
        return {row["input_name"]: self._artifact(row) for row in rows}

    def params(self, run_id: int) -> dict[str, Any]:
        """Return the parameters of run ``run_id``."""
        rows = self.conn.execute(
            "SELECT name, value_json FROM params WHERE run_id = ? ORDER BY name", (run_id,)
        )
        return {row["name"]: json.loads(row["value_json"]) for row in rows}

    def timings(self, run_id: int) -> dict[str, float]:
        """Return the phase timings of run ``run_id`` in seconds."""
        rows = self.conn.execute(
            "SELECT phase, seconds FROM timings WHERE run_id = ? ORDER BY phase", (run_id,)
        )
        return {row["phase"]: row["seconds"] for row in rows}

    def summary(self, run_id: int) -> dict[str, Any]:
        """Return the summary values of run ``run_id``."""
        rows = self.conn.execute(
            "SELECT name, value_json FROM summaries WHERE run_id = ? ORDER BY name", (run_id,)
        )
        return {row["name"]: json.loads(row["value_json"]) for row in rows}
