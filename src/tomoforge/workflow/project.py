"""A project: a folder with a database, one folder per run and a log.

Layout::

    DIR/
      project.sqlite          the database (see :mod:`.store`), WAL mode
      project.lock            flock-ed by the process that writes (see :mod:`.lock`)
      logs/tomoforge.log      project log (all processes that opened it for writing)
      runs/000001_import/     one folder per run: <id:06d>_<step name with dots as underscores>
        provenance.json       who ran what, with which parameters and inputs, when
        STATUS                running | succeeded | failed | interrupted
        run.log               the step's log
        <outputs>             files and folders the step produced
        .work-<uuid>/         temporary folder of a run in progress

Readers (status, logs) open a project without the lock and may do so while a writer runs.
Writers take the lock; on opening, runs left ``running`` by a process that died are marked
``interrupted`` and their temporary folders removed.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from .artifacts import IMPORT_STEP, Artifact, canonical_json, external_token, sha256_hex
from .errors import PipelineError, ProjectError
from .fsutil import atomic_write_json, atomic_write_text, remove_path
from .lock import ProjectLock, now_iso
from .store import RunRecord, RunStatus, Store

__all__ = ["DB_NAME", "LOCK_NAME", "LOG_FILE", "RUNS_DIR", "Project", "run_folder_name"]

DB_NAME = "project.sqlite"
LOCK_NAME = "project.lock"
LOG_FILE = Path("logs") / "tomoforge.log"
RUNS_DIR = "runs"
STATUS_FILE = "STATUS"
PROVENANCE_FILE = "provenance.json"
RUN_LOG_FILE = "run.log"
WORK_PREFIX = ".work-"
RESERVED_NAMES = frozenset({STATUS_FILE, PROVENANCE_FILE, RUN_LOG_FILE})

_root_logger_name = __name__.split(".")[0]
logger = logging.getLogger(__name__)


def run_folder_name(step: str) -> str:
    """Return the run folder template (relative to the project) for ``step``, with an ``{id}`` field."""
    return f"{RUNS_DIR}/{{id:06d}}_{step.replace('.', '_')}"


def _default_app_version() -> str:
    try:
        return metadata.version(_root_logger_name)
    except metadata.PackageNotFoundError:
        return "unknown"


class Project:
    """An open project. Create with :meth:`init` or :meth:`open`; use as a context manager.

    Attributes
    ----------
    root : Path
        The absolute project folder.
    store : Store
        The database.
    writable : bool
        Whether this process holds the write lock.
    app_version : str
        The application version written into provenance records.
    """

    def __init__(self, root: Path, store: Store, lock: ProjectLock | None, app_version: str) -> None:
        self.root = root
        self.store = store
        self._lock = lock
        self.app_version = app_version
        self._log_handler: logging.Handler | None = None
        self.recovered: list[int] = []

    # ---------------------------------------------------------------- opening

    @classmethod
    def init(cls, root: Path | str, *, app_version: str | None = None) -> Project:
        """Create a project in ``root`` (created if needed) and open it for writing.

        Raises
        ------
        ProjectError
            If ``root`` already holds a project or is a file.
        """
        root = Path(os.path.abspath(root))
        if root.exists() and not root.is_dir():
            raise ProjectError(f"Cannot create a project at {root}: it is a file, not a folder.")
        if (root / DB_NAME).exists():
            raise ProjectError(f"A project already exists at {root}; open it instead of creating it again.")
        try:
            (root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
            (root / LOG_FILE).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"Cannot create a project at {root}: {exc.strerror or exc}.") from exc
        project = cls._open(root, write=True, app_version=app_version, create=True)
        project.store.set_info({"created_at": now_iso(), "created_by_version": project.app_version})
        logger.info("created project %s", root)
        return project

    @classmethod
    def open(cls, root: Path | str, *, write: bool = False, app_version: str | None = None) -> Project:
        """Open an existing project.

        Parameters
        ----------
        root : Path or str
            The project folder.
        write : bool, optional
            Take the write lock, recover interrupted runs and start the project log.
        app_version : str, optional
            Version recorded in provenance (default: the installed distribution's version).

        Raises
        ------
        ProjectError
            If there is no project or its database is damaged.
        ProjectLockedError
            If ``write`` and another process holds the project.
        SchemaError
            If the database is newer than this code.
        """
        root = Path(os.path.abspath(root))
        if not (root / DB_NAME).is_file():
            raise ProjectError(
                f"No tomoforge project at {root} (no {DB_NAME}). Create one with `tomoforge project init {root}`."
            )
        return cls._open(root, write=write, app_version=app_version, create=False)

    @classmethod
    def _open(cls, root: Path, *, write: bool, app_version: str | None, create: bool) -> Project:
        lock = ProjectLock(root / LOCK_NAME, root) if write else None
        if lock is not None:
            lock.acquire()
        store: Store | None = None
        try:
            store = Store(root / DB_NAME, root, readonly=not write)
            if store.version == 0 and not create:
                raise ProjectError(
                    f"The project database {store.path} is empty (its creation did not finish); "
                    f"delete it and create the project again."
                )
            store.migrate()
            if not write:
                store.conn.execute("PRAGMA query_only = ON")
            project = cls(root, store, lock, app_version or _default_app_version())
            if write:
                project._start_log()
                project.recovered = project._recover()
        except BaseException:
            if store is not None:
                store.close()
            if lock is not None:
                lock.release()
            raise
        return project

    def close(self) -> None:
        """Close the database, stop the project log and release the lock."""
        if self._log_handler is not None:
            logging.getLogger(_root_logger_name).removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        self.store.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Project:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        """Whether this process holds the write lock."""
        return self._lock is not None and self._lock.held

    def require_writable(self) -> None:
        """Raise :class:`ProjectError` unless the project was opened for writing."""
        if not self.writable:
            raise ProjectError(
                f"Project {self.root} was opened read-only; open it with write=True to run steps."
            )

    def _start_log(self) -> None:
        path = self.root / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s {socket.gethostname()} pid=%(process)d %(levelname)s %(name)s: %(message)s"
            )
        )
        top = logging.getLogger(_root_logger_name)
        if top.level == logging.NOTSET or top.level > logging.INFO:
            top.setLevel(logging.INFO)
        top.addHandler(handler)
        self._log_handler = handler

    def _recover(self) -> list[int]:
        stale = self.store.list_runs(status="running")
        if not stale:
            return []
        for record in stale:
            if record.folder.is_dir():
                for entry in record.folder.iterdir():
                    if entry.name.startswith(WORK_PREFIX):
                        remove_path(entry)
                self.write_status(record, "interrupted")
            reason = (
                f"The process {record.pid} on host {record.host} that ran it stopped before the run finished."
            )
            self.store.mark_interrupted([record.id], reason, now_iso())
            logger.warning(
                "run %d (%s) was left running by a dead process; marked interrupted", record.id, record.step
            )
        return [record.id for record in stale]

    # ---------------------------------------------------------------- queries

    def runs(self) -> list[RunRecord]:
        """Return all runs by increasing id."""
        return self.store.list_runs()

    def run(self, run_id: int) -> RunRecord:
        """Return run ``run_id``.

        Raises
        ------
        ProjectError
            If there is no such run.
        """
        record = self.store.get_run(run_id)
        if record is None:
            raise ProjectError(f"Project {self.root} has no run {run_id}.")
        return record

    def outputs(self, run_id: int) -> dict[str, Artifact]:
        """Return the registered outputs of run ``run_id`` by name."""
        return self.store.outputs(run_id)

    def log_path(self, run_id: int) -> Path:
        """Return the path of the ``run.log`` of run ``run_id``."""
        return self.run(run_id).folder / RUN_LOG_FILE

    def find_cached(self, cache_key: str, output_names: set[str]) -> RunRecord | None:
        """Return the newest succeeded run with ``cache_key`` whose outputs all still exist."""
        for record in self.store.succeeded_runs(cache_key):
            outputs = self.store.outputs(record.id)
            if output_names <= set(outputs) and all(outputs[name].exists() for name in output_names):
                return record
        return None

    # ---------------------------------------------------------------- run folders

    def write_status(self, record: RunRecord, status: RunStatus) -> None:
        """Atomically write the ``STATUS`` marker of a run folder."""
        atomic_write_text(record.folder / STATUS_FILE, status + "\n")

    def provenance(self, record: RunRecord, **fields: Any) -> dict[str, Any]:
        """Return the standard provenance record of a run, updated with ``fields``."""
        data: dict[str, Any] = {
            "run_id": record.id,
            "step": record.step,
            "code_version": record.code_version,
            "cache_key": record.cache_key,
            "app_version": self.app_version,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "host": record.host,
            "pid": record.pid,
            "command_line": list(sys.argv),
            "started_at": record.started_at,
            "finished_at": None,
            "status": record.status,
        }
        data.update(fields)
        return data

    def write_provenance(self, record: RunRecord, data: dict[str, Any]) -> None:
        """Atomically write ``provenance.json`` of a run."""
        atomic_write_json(record.folder / PROVENANCE_FILE, data)

    # ---------------------------------------------------------------- imports

    def import_path(self, path: Path | str, kind: str) -> Artifact:
        """Register an external file or folder as an artifact of an ``import`` run.

        The file is not copied. Importing the same unchanged path again returns the existing
        artifact; a changed file (size or mtime) gets a new import run and a new token.

        Parameters
        ----------
        path : Path or str
            The file or folder.
        kind : str
            The artifact kind to give it.

        Returns
        -------
        Artifact
            The registered artifact (output ``data`` of the import run).

        Raises
        ------
        PipelineError
            If ``path`` does not exist.
        """
        self.require_writable()
        path = Path(os.path.abspath(path))
        if not path.exists():
            raise PipelineError(f"Input file {path} does not exist.")
        token = external_token(path)
        cache_key = sha256_hex(
            canonical_json({"step": IMPORT_STEP, "path": str(path), "kind": kind, "token": token})
        )
        for record in self.store.succeeded_runs(cache_key):
            outputs = self.store.outputs(record.id)
            if "data" in outputs:
                return outputs["data"]
        started = now_iso()
        record = self.store.create_run(
            step=IMPORT_STEP,
            cache_key=cache_key,
            code_version="1",
            status="running",
            created_at=started,
            pid=os.getpid(),
            host=socket.gethostname(),
            folder_name=run_folder_name(IMPORT_STEP),
            params={"path": str(path), "kind": kind},
            inputs={},
        )
        record.folder.mkdir(parents=True, exist_ok=True)
        artifact = Artifact(record.id, "data", kind, path, token, {"source": str(path)})
        finished = now_iso()
        self.write_provenance(
            record,
            self.provenance(
                record,
                params={"path": str(path), "kind": kind},
                inputs={},
                finished_at=finished,
                status="succeeded",
                outputs={"data": {"path": str(path), "token": token}},
            ),
        )
        self.write_status(record, "succeeded")
        (stored,) = self.store.finish_run(
            record.id, status="succeeded", finished_at=finished, duration_s=0.0, artifacts=[artifact]
        )
        logger.info("run %d: imported %s as %s", record.id, path, kind)
        return stored
