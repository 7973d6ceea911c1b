"""The life of one run: prepare, start, execute, finish.

The parent process (the one holding the project lock) alone touches the database:

1. :func:`prepare` validates the parameters, runs the step's ``validate`` hook and computes the
   cache key from the step name, code version, parameters and input tokens;
2. :func:`start_run` inserts the run (status ``running``), creates its folder, ``STATUS`` and
   ``provenance.json`` and a temporary work folder, and returns a picklable :class:`RunJob`;
3. :func:`execute_job` runs the step function, in this process or in a worker: it only writes
   inside the work folder and to ``run.log``, and measures the peak resident memory of the process
   running it (:func:`.memory.peak_rss`);
4. :func:`finish_run` (or :func:`fail_run`) moves the outputs into the run folder with
   :func:`os.replace`, writes ``STATUS`` and then marks the run succeeded in one transaction.

A process killed at any point leaves the run ``running`` in the database; the next writer marks
it ``interrupted`` and removes its work folder, so a half-written output is never registered.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .artifacts import Artifact, Inputs, canonical_json, output_token, sha256_hex
from .context import RunContext
from .errors import ParamProblem, ParamsError, WorkflowError
from .fsutil import remove_path
from .lock import now_iso
from .memory import PeakRSS, format_bytes, peak_memory_text, peak_rss
from .project import RESERVED_NAMES, RUN_LOG_FILE, WORK_PREFIX, Project, run_folder_name
from .step import StepSpec
from .store import RunRecord

__all__ = [
    "JobResult",
    "PreparedRun",
    "RunJob",
    "RunResult",
    "StartedRun",
    "cache_key",
    "execute_job",
    "fail_run",
    "finish_run",
    "prepare",
    "start_run",
    "validate_params",
]

logger = logging.getLogger(__name__)


def validate_params(
    spec: StepSpec, params: Mapping[str, Any] | BaseModel | None, node: str | None = None
) -> BaseModel:
    """Validate raw parameter values against the step's params model.

    Parameters
    ----------
    spec : StepSpec
        The step.
    params : mapping, BaseModel or None
        Raw values by field name (missing fields take their defaults), or a model instance.
    node : str, optional
        Pipeline node name, for messages.

    Returns
    -------
    pydantic.BaseModel
        The validated parameters.

    Raises
    ------
    ParamsError
        One sentence per bad or unknown field.
    """
    if isinstance(params, BaseModel):
        if not isinstance(params, spec.params_model):
            raise ParamsError(
                spec.name,
                [
                    ParamProblem(
                        None,
                        f"parameters must be a {spec.params_model.__name__}, not {type(params).__name__}",
                    )
                ],
                node,
            )
        params = params.model_dump()
    raw = dict(params or {})
    known = spec.params_model.model_fields
    unknown = [name for name in raw if name not in known]
    if unknown:
        import difflib

        problems = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = (
                f"; did you mean '{close[0]}'"
                if close
                else f"; known parameters: {', '.join(known) or 'none'}"
            )
            problems.append(ParamProblem(None, f"step '{spec.name}' has no parameter '{name}'{hint}"))
        raise ParamsError(spec.name, problems, node)
    try:
        return spec.params_model.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError.from_validation_error(spec.name, exc, node) from None


def cache_key(spec: StepSpec, params: BaseModel, inputs: Mapping[str, Artifact]) -> str:
    """Return the cache key of running ``spec`` with ``params`` on ``inputs``.

    It is the sha256 of the canonical JSON of the step name, its code version, the parameters
    (``model_dump(mode="json")``) and the input tokens by input name.
    """
    payload = {
        "step": spec.name,
        "code_version": spec.code_version,
        "params": params.model_dump(mode="json"),
        "inputs": {name: artifact.token for name, artifact in sorted(inputs.items())},
    }
    return sha256_hex(canonical_json(payload))


@dataclass(frozen=True)
class PreparedRun:
    """A validated run request with its cache key."""

    spec: StepSpec
    params: BaseModel
    inputs: dict[str, Artifact]
    cache_key: str
    node: str | None = None
    prepare_s: float = 0.0


def prepare(
    spec: StepSpec,
    params: Mapping[str, Any] | BaseModel | None,
    inputs: Mapping[str, Artifact],
    node: str | None = None,
) -> PreparedRun:
    """Validate parameters and inputs and compute the cache key.

    Raises
    ------
    ParamsError
        If a parameter is invalid or the step's ``validate`` hook reports problems.
    """
    t0 = time.perf_counter()
    model = validate_params(spec, params, node)
    if spec.validate is not None:
        problems = spec.validate(model, Inputs(inputs))
        if problems:
            raise ParamsError(spec.name, [ParamProblem(None, p) for p in problems], node)
    key = cache_key(spec, model, inputs)
    return PreparedRun(spec, model, dict(inputs), key, node, time.perf_counter() - t0)


@dataclass(frozen=True)
class RunJob:
    """What a worker needs to execute a run (picklable: no step function, no callbacks)."""

    run_id: int
    step: str
    module: str
    code_version: str
    params: dict[str, Any]
    inputs: dict[str, Artifact]
    run_dir: Path
    work_dir: Path


@dataclass(frozen=True)
class JobResult:
    """Returned by :func:`execute_job`: output paths relative to the work folder.

    ``peak_memory_bytes`` is the peak resident set size of the process that ran the step function,
    while it ran (None where it cannot be measured; see :mod:`.memory`).
    """

    outputs: dict[str, str]
    execute_s: float
    pid: int = field(default_factory=os.getpid)
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class StartedRun:
    """A run inserted in the database and waiting for its job to finish."""

    prepared: PreparedRun
    record: RunRecord
    job: RunJob
    started: float


@dataclass(frozen=True)
class RunResult:
    """The outcome of running (or finding in the cache) one step.

    Attributes
    ----------
    run : RunRecord
        The run row.
    outputs : dict of str to Artifact
        Its outputs by name.
    cached : bool
        True if an earlier run was reused and nothing was executed.
    node : str or None
        The pipeline node name.
    """

    run: RunRecord
    outputs: dict[str, Artifact]
    cached: bool
    node: str | None = None


def start_run(project: Project, prepared: PreparedRun) -> StartedRun:
    """Insert the run, create its folder, provenance, status marker and work folder."""
    project.require_writable()
    spec = prepared.spec
    params_json = prepared.params.model_dump(mode="json")
    record = project.store.create_run(
        step=spec.name,
        cache_key=prepared.cache_key,
        code_version=spec.code_version,
        status="running",
        created_at=now_iso(),
        pid=os.getpid(),
        host=socket.gethostname(),
        folder_name=run_folder_name(spec.name),
        params=params_json,
        inputs={name: int(a.id) for name, a in prepared.inputs.items() if a.id is not None},
    )
    started = time.monotonic()
    record.folder.mkdir(parents=True, exist_ok=True)
    work_dir = record.folder / f"{WORK_PREFIX}{uuid.uuid4().hex[:12]}"
    work_dir.mkdir()
    project.write_status(record, "running")
    project.write_provenance(record, _provenance(project, record, prepared))
    logger.info(
        "run %d: started %s%s", record.id, spec.name, f" (node {prepared.node})" if prepared.node else ""
    )
    job = RunJob(
        run_id=record.id,
        step=spec.name,
        module=spec.module,
        code_version=spec.code_version,
        params=params_json,
        inputs=dict(prepared.inputs),
        run_dir=record.folder,
        work_dir=work_dir,
    )
    return StartedRun(prepared, record, job, started)


def _provenance(project: Project, record: RunRecord, prepared: PreparedRun, **extra: Any) -> dict[str, Any]:
    inputs = {
        name: {"run_id": a.run_id, "output": a.name, "kind": a.kind, "path": str(a.path), "token": a.token}
        for name, a in sorted(prepared.inputs.items())
    }
    return project.provenance(
        record, node=prepared.node, params=prepared.params.model_dump(mode="json"), inputs=inputs, **extra
    )


def load_step(module: str, name: str) -> StepSpec:
    """Import ``module`` and return step ``name`` from the process-wide registry."""
    from .registry import get_registry

    if module not in ("__main__", "__mp_main__"):
        importlib.import_module(module)
    return get_registry().get(name)


def _run_logger(job: RunJob) -> tuple[logging.Logger, logging.Handler]:
    run_logger = logging.getLogger(f"{__package__}.run.{job.run_id}")
    run_logger.setLevel(logging.INFO)
    handler = logging.FileHandler(job.run_dir / RUN_LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    run_logger.addHandler(handler)
    return run_logger, handler


def execute_job(job: RunJob, spec: StepSpec | None = None) -> JobResult:
    """Run the step function of ``job``; used in this process or in a worker process.

    Parameters
    ----------
    job : RunJob
        The run to execute.
    spec : StepSpec, optional
        The step, when running in the parent process; a worker imports ``job.module`` and looks
        the step up by name instead.

    Returns
    -------
    JobResult
        The output paths relative to the work folder.

    Raises
    ------
    Exception
        Whatever the step raised (its traceback is written to ``run.log`` first), or
        :class:`WorkflowError` if the step returned something other than its declared outputs.
    """
    t0 = time.perf_counter()
    if spec is None:
        spec = load_step(job.module, job.step)
        if spec.code_version != job.code_version:
            raise WorkflowError(
                f"The code of step '{job.step}' changed while the run was being started "
                f"(version {job.code_version} requested, {spec.code_version} found)."
            )
    run_logger, handler = _run_logger(job)
    try:
        run_logger.info(
            "step %s (code %s), run %d, pid %d", job.step, job.code_version, job.run_id, os.getpid()
        )
        params = spec.params_model.model_validate(job.params)
        ctx = RunContext(job.run_id, job.step, job.work_dir, job.run_dir, run_logger)
        peak: PeakRSS | None = None
        try:
            with peak_rss() as peak:
                returned = spec.fn(params, Inputs(job.inputs), ctx)
            outputs = _check_outputs(spec, job, returned)
        except BaseException:
            run_logger.error("step failed:\n%s", traceback.format_exc().rstrip())
            if peak is not None and peak.bytes is not None:
                run_logger.info("peak memory (RSS) while the step ran: %s", format_bytes(peak.bytes))
            raise
        assert peak is not None
        seconds = time.perf_counter() - t0
        run_logger.info(
            "step function returned after %.3f s, peak memory (RSS) %s",
            seconds,
            format_bytes(peak.bytes) or "not measured",
        )
        return JobResult(outputs, seconds, peak_memory_bytes=peak.bytes)
    finally:
        run_logger.removeHandler(handler)
        handler.close()


def _check_outputs(spec: StepSpec, job: RunJob, returned: object) -> dict[str, str]:
    if not isinstance(returned, Mapping):
        raise WorkflowError(
            f"Step '{spec.name}' returned {type(returned).__name__}; it must return a dict of output name to path."
        )
    declared, given = set(spec.outputs), set(returned)
    if declared != given:
        missing = ", ".join(sorted(declared - given)) or "none"
        extra = ", ".join(sorted(given - declared)) or "none"
        raise WorkflowError(
            f"Step '{spec.name}' returned outputs that differ from its declaration (missing: {missing}; undeclared: {extra})."
        )
    work = job.work_dir.resolve()
    result: dict[str, str] = {}
    for name, value in returned.items():
        path = Path(value)
        path = (path if path.is_absolute() else work / path).resolve()
        if not path.is_relative_to(work) or path == work:
            raise WorkflowError(f"Output '{name}' of step '{spec.name}' ({path}) is not inside ctx.work_dir.")
        if not path.exists():
            raise WorkflowError(f"Output '{name}' of step '{spec.name}' ({path}) does not exist.")
        relative = path.relative_to(work)
        if relative.parts[0] in RESERVED_NAMES or relative.parts[0].startswith(WORK_PREFIX):
            raise WorkflowError(
                f"Output '{name}' of step '{spec.name}' uses the reserved name '{relative.parts[0]}'."
            )
        result[name] = relative.as_posix()
    return result


def finish_run(project: Project, started: StartedRun, result: JobResult) -> RunResult:
    """Move the outputs into the run folder, then mark the run succeeded.

    If the step's ``summary`` hook fails, the run is marked failed and the error re-raised.
    """
    t0 = time.perf_counter()
    record, spec = started.record, started.prepared.spec
    work_dir = started.job.work_dir
    for top in sorted({Path(rel).parts[0] for rel in result.outputs.values()}):
        os.replace(work_dir / top, record.folder / top)
    remove_path(work_dir)
    artifacts = [
        Artifact(
            record.id, name, spec.outputs[name], record.folder / rel, output_token(record.cache_key, name)
        )
        for name, rel in sorted(result.outputs.items())
    ]
    summary: dict[str, object] = {}
    if spec.summary is not None:
        try:
            summary = dict(spec.summary({a.name: a for a in artifacts}))
        except Exception as exc:
            fail_run(project, started, exc)
            raise
    methods = spec.methods(started.prepared.params) if spec.methods is not None else None
    finished = now_iso()
    duration = time.monotonic() - started.started
    timings = {
        "prepare": started.prepared.prepare_s,
        "execute": result.execute_s,
        "finalize": time.perf_counter() - t0,
    }
    outputs_info = {
        a.name: {"path": a.path.relative_to(record.folder).as_posix(), "token": a.token} for a in artifacts
    }
    project.write_provenance(
        record,
        _provenance(
            project,
            record,
            started.prepared,
            status="succeeded",
            finished_at=finished,
            duration_s=duration,
            peak_memory_bytes=result.peak_memory_bytes,
            outputs=outputs_info,
            summary=summary,
            methods=methods,
            worker_pid=result.pid,
        ),
    )
    project.write_status(record, "succeeded")
    stored = project.store.finish_run(
        record.id,
        status="succeeded",
        finished_at=finished,
        duration_s=duration,
        peak_memory_bytes=result.peak_memory_bytes,
        artifacts=artifacts,
        timings=timings,
        summary=summary,
    )
    logger.info(
        "run %d: %s succeeded in %.3f s%s",
        record.id,
        spec.name,
        duration,
        peak_memory_text(result.peak_memory_bytes),
    )
    return RunResult(
        project.run(record.id), {a.name: a for a in stored}, cached=False, node=started.prepared.node
    )


def describe_exception(exc: BaseException) -> str:
    """Return a one-line description of an exception for the ``error`` column."""
    if isinstance(exc, WorkflowError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fail_run(
    project: Project,
    started: StartedRun,
    exc: BaseException,
    status: Literal["failed", "interrupted"] = "failed",
) -> None:
    """Mark a started run failed (or interrupted) and remove its work folder."""
    record = started.record
    remove_path(started.job.work_dir)
    finished = now_iso()
    duration = time.monotonic() - started.started
    reason = describe_exception(exc) if status == "failed" else "Interrupted before the step finished."
    final_status = status
    project.write_provenance(
        record,
        _provenance(
            project, record, started.prepared, status=final_status, finished_at=finished, error=reason
        ),
    )
    project.write_status(record, final_status)
    project.store.finish_run(
        record.id,
        status=final_status,
        finished_at=finished,
        duration_s=duration,
        error=reason,
        timings={"prepare": started.prepared.prepare_s},
    )
    log = logger.warning if final_status == "interrupted" else logger.error
    log("run %d: %s %s: %s", record.id, record.step, final_status, reason)
