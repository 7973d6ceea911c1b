"""Pipelines as plain data, and running them.

A pipeline maps node names to :class:`Node` objects; an input of a node is connected to an
output of another node (:class:`Ref`), to an output of an earlier run of the project
(:class:`RunOutput`) or to an external file or folder (a :class:`~pathlib.Path`)::

    pipeline = {
        "count": Node("toy.count", params={"n": 3}, inputs={"table": Path("data.csv")}),
        "sum": Node("toy.sum", inputs={"counts": Ref("count", "counts")}),
    }
    results = run_pipeline(project, pipeline, executor=LocalProcessExecutor(2))

Nodes run in dependency order; independent nodes run concurrently on the executor. A node whose
cache key matches a succeeded run with all outputs present is not run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .artifacts import Artifact
from .errors import PipelineError, StepFailedError, WorkflowError
from .executors import Executor, InlineExecutor
from .project import Project
from .registry import StepRegistry, get_registry
from .runner import (
    JobResult,
    RunResult,
    StartedRun,
    describe_exception,
    execute_job,
    fail_run,
    finish_run,
    prepare,
    start_run,
    validate_params,
)
from .step import StepSpec

__all__ = [
    "InputValue",
    "Node",
    "NodeEvent",
    "Pipeline",
    "Ref",
    "RunOutput",
    "check_pipeline",
    "run_pipeline",
    "run_step",
    "topological_order",
    "upstream_of",
]


@dataclass(frozen=True)
class Ref:
    """Output ``output`` of pipeline node ``node``."""

    node: str
    output: str


@dataclass(frozen=True)
class RunOutput:
    """Output ``output`` of the existing run ``run_id`` of the project."""

    run_id: int
    output: str


InputValue = Ref | RunOutput | Path | str
"""What an input can be connected to; a ``str`` is a path."""


@dataclass(frozen=True)
class Node:
    """One step invocation in a pipeline.

    Attributes
    ----------
    step : str
        The registered step name.
    params : mapping
        Raw parameter values (validated against the step's params model).
    inputs : mapping of str to InputValue
        Connections of the step's inputs.
    """

    step: str
    params: Mapping[str, Any] | BaseModel = field(default_factory=dict)
    inputs: Mapping[str, InputValue] = field(default_factory=dict)


Pipeline = Mapping[str, Node]


@dataclass(frozen=True)
class NodeEvent:
    """Reported to ``on_event`` while a pipeline runs.

    Attributes
    ----------
    node : str
        The node name.
    step : str
        Its step.
    event : {"cached", "started", "succeeded", "failed", "interrupted"}
        What happened.
    run_id : int
        The run concerned.
    message : str
        The error for ``failed``, empty otherwise.
    """

    node: str
    step: str
    event: Literal["cached", "started", "succeeded", "failed", "interrupted"]
    run_id: int
    message: str = ""


def _dependencies(node: Node) -> set[str]:
    return {value.node for value in node.inputs.values() if isinstance(value, Ref)}


def topological_order(pipeline: Pipeline) -> list[str]:
    """Return the node names so that every node comes after the nodes it reads from.

    Ties keep the pipeline's own order.

    Raises
    ------
    PipelineError
        If a node refers to an unknown node, or the nodes form a cycle (the cycle is named).
    """
    for name, node in pipeline.items():
        for dep in _dependencies(node):
            if dep not in pipeline:
                raise PipelineError(f"Node '{name}' reads from node '{dep}', which is not in the pipeline.")
    order: list[str] = []
    done: set[str] = set()
    remaining = list(pipeline)
    while remaining:
        ready = [n for n in remaining if _dependencies(pipeline[n]) <= done]
        if not ready:
            raise PipelineError(f"The pipeline has a cycle: {' -> '.join(_find_cycle(pipeline, remaining))}.")
        for name in ready:
            order.append(name)
            done.add(name)
            remaining.remove(name)
    return order


def upstream_of(pipeline: Pipeline, targets: list[str]) -> Pipeline:
    """The part of ``pipeline`` that ``targets`` need: those nodes and every node they read from, directly or not
    (in the pipeline's order).

    Raises
    ------
    PipelineError
        If a target is not a node of the pipeline (the known nodes are named).
    """
    unknown = [t for t in targets if t not in pipeline]
    if unknown:
        raise PipelineError(
            f"No node {', '.join(map(repr, unknown))} in the pipeline; its nodes: {', '.join(pipeline)}."
        )
    needed: set[str] = set()
    stack = list(targets)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(dep for dep in _dependencies(pipeline[name]) if dep in pipeline)
    return {name: node for name, node in pipeline.items() if name in needed}


def _find_cycle(pipeline: Pipeline, remaining: list[str]) -> list[str]:
    path: list[str] = []
    current = remaining[0]
    while current not in path:
        path.append(current)
        current = sorted(d for d in _dependencies(pipeline[current]) if d in remaining)[0]
    cycle = path[path.index(current) :] + [current]
    return list(reversed(cycle))


def check_pipeline(pipeline: Pipeline, registry: StepRegistry | None = None) -> dict[str, StepSpec]:
    """Check a pipeline without running it and return the step of each node.

    Checks that steps exist, parameters validate, every required input is connected, no
    undeclared input is, references name declared outputs of a matching kind, and there is no
    cycle.

    Raises
    ------
    UnknownStepError, ParamsError, PipelineError
        The first problem found.
    """
    registry = registry or get_registry()
    specs = {name: registry.get(node.step) for name, node in pipeline.items()}
    topological_order(pipeline)
    for name, node in pipeline.items():
        spec = specs[name]
        validate_params(spec, node.params, node=name)
        for input_name in node.inputs:
            if input_name not in spec.inputs:
                known = ", ".join(spec.inputs) or "none"
                raise PipelineError(
                    f"Node '{name}' ({spec.name}) has no input '{input_name}'; its inputs: {known}."
                )
        for input_name, input_spec in spec.inputs.items():
            value = node.inputs.get(input_name)
            if value is None:
                if not input_spec.optional:
                    raise PipelineError(
                        f"Input '{input_name}' of node '{name}' ({spec.name}) is not connected."
                    )
                continue
            if isinstance(value, Ref):
                upstream = specs[value.node]
                if value.output not in upstream.outputs:
                    raise PipelineError(
                        f"Node '{name}' reads output '{value.output}' of node '{value.node}', but step "
                        f"{upstream.name} has outputs: {', '.join(upstream.outputs)}."
                    )
                _check_kind(name, input_name, input_spec.kind, upstream.outputs[value.output], value.node)
            elif not isinstance(value, (RunOutput, str, os.PathLike)):
                raise PipelineError(
                    f"Input '{input_name}' of node '{name}' must be a Ref, a RunOutput or a path, "
                    f"not {type(value).__name__}."
                )
    return specs


def _check_kind(node: str, input_name: str, expected: str, actual: str, source: str) -> None:
    if expected != "any" and expected != actual:
        raise PipelineError(
            f"Input '{input_name}' of node '{node}' expects kind '{expected}' but {source} gives kind '{actual}'."
        )


def _resolve_inputs(
    project: Project, name: str, spec: StepSpec, node: Node, results: Mapping[str, RunResult]
) -> dict[str, Artifact]:
    resolved: dict[str, Artifact] = {}
    for input_name, value in node.inputs.items():
        kind = spec.inputs[input_name].kind
        if isinstance(value, Ref):
            artifact = results[value.node].outputs[value.output]
        elif isinstance(value, RunOutput):
            outputs = project.outputs(project.run(value.run_id).id)
            if value.output not in outputs:
                raise PipelineError(
                    f"Run {value.run_id} has no registered output '{value.output}' "
                    f"(its outputs: {', '.join(outputs) or 'none'})."
                )
            artifact = outputs[value.output]
            _check_kind(name, input_name, kind, artifact.kind, f"run {value.run_id}")
            if not artifact.exists():
                raise PipelineError(
                    f"Output '{value.output}' of run {value.run_id} ({artifact.path}) no longer exists."
                )
        else:
            artifact = project.import_path(Path(value), kind)
        resolved[input_name] = artifact
    return resolved


def run_pipeline(
    project: Project,
    pipeline: Pipeline,
    *,
    executor: Executor | None = None,
    registry: StepRegistry | None = None,
    on_event: Callable[[NodeEvent], None] | None = None,
) -> dict[str, RunResult]:
    """Run a pipeline, skipping nodes whose results are cached.

    Parameters
    ----------
    project : Project
        A project opened for writing.
    pipeline : mapping of str to Node
        The nodes.
    executor : Executor, optional
        Where step functions run (default :class:`InlineExecutor`). Not shut down here.
    registry : StepRegistry, optional
        Where step names are looked up (default: the process-wide registry).
    on_event : callable, optional
        Called with a :class:`NodeEvent` when a node is found cached, starts, succeeds or fails.

    Returns
    -------
    dict of str to RunResult
        The result of every node.

    Raises
    ------
    StepFailedError
        If a step failed; nodes already running are finished first, no new node starts.
    UnknownStepError, ParamsError, PipelineError
        If the pipeline is invalid (raised before anything runs, except ``validate`` hook problems
        and missing external files, found when the node is reached).
    """
    project.require_writable()
    specs = check_pipeline(pipeline, registry)
    executor = executor or InlineExecutor()
    emit = on_event or (lambda event: None)
    results: dict[str, RunResult] = {}
    pending = topological_order(pipeline)
    running: dict[Future[JobResult], tuple[str, StartedRun]] = {}
    failure: WorkflowError | None = None
    try:
        while pending or running:
            progressed = True
            while progressed and failure is None:
                progressed = False
                for name in [n for n in pending if _dependencies(pipeline[n]) <= set(results)]:
                    pending.remove(name)
                    progressed = True
                    try:
                        outcome = _launch(project, name, specs[name], pipeline[name], results, executor, emit)
                    except WorkflowError as exc:
                        failure = exc
                        break
                    if isinstance(outcome, RunResult):
                        results[name] = outcome
                    else:
                        running[outcome[0]] = (name, outcome[1])
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                name, started = running.pop(future)
                try:
                    results[name] = _collect(project, name, started, future, emit)
                except StepFailedError as exc:
                    failure = failure or exc
    except BaseException as exc:
        for future, (name, started) in running.items():
            future.cancel()
            fail_run(project, started, exc, status="interrupted")
            emit(NodeEvent(name, started.record.step, "interrupted", started.record.id))
        raise
    if failure is not None:
        raise failure
    return results


def _launch(
    project: Project,
    name: str,
    spec: StepSpec,
    node: Node,
    results: Mapping[str, RunResult],
    executor: Executor,
    emit: Callable[[NodeEvent], None],
) -> RunResult | tuple[Future[JobResult], StartedRun]:
    prepared = prepare(spec, node.params, _resolve_inputs(project, name, spec, node, results), node=name)
    cached = project.find_cached(prepared.cache_key, set(spec.outputs))
    if cached is not None:
        emit(NodeEvent(name, spec.name, "cached", cached.id))
        return RunResult(cached, project.outputs(cached.id), cached=True, node=name)
    started = start_run(project, prepared)
    emit(NodeEvent(name, spec.name, "started", started.record.id))
    try:
        if executor.in_process:
            future = executor.submit(execute_job, started.job, spec)
        else:
            future = executor.submit(execute_job, started.job)
    except Exception as exc:  # the executor could not take the job (e.g. a broken worker pool)
        fail_run(project, started, exc)
        emit(NodeEvent(name, spec.name, "failed", started.record.id, describe_exception(exc)))
        raise StepFailedError(spec.name, started.record.id, describe_exception(exc)) from exc
    except BaseException as exc:  # interrupted while an in-process executor ran the step
        fail_run(project, started, exc, status="interrupted")
        emit(NodeEvent(name, spec.name, "interrupted", started.record.id))
        raise
    return future, started


def _collect(
    project: Project,
    name: str,
    started: StartedRun,
    future: Future[JobResult],
    emit: Callable[[NodeEvent], None],
) -> RunResult:
    record = started.record
    try:
        result = finish_run(project, started, future.result())
    except Exception as exc:
        if project.run(record.id).status == "running":
            fail_run(project, started, exc)
        emit(NodeEvent(name, record.step, "failed", record.id, describe_exception(exc)))
        hint = f"The traceback is in {record.folder / 'run.log'}."
        raise StepFailedError(record.step, record.id, describe_exception(exc), hint) from exc
    emit(NodeEvent(name, record.step, "succeeded", record.id))
    return result


def run_step(
    project: Project,
    step: str,
    params: Mapping[str, Any] | BaseModel | None = None,
    inputs: Mapping[str, InputValue] | None = None,
    *,
    executor: Executor | None = None,
    registry: StepRegistry | None = None,
    on_event: Callable[[NodeEvent], None] | None = None,
) -> RunResult:
    """Run one step (a one-node pipeline named after the step) and return its result.

    See :func:`run_pipeline` for the parameters and errors.
    """
    pipeline = {step: Node(step, params if params is not None else {}, dict(inputs or {}))}
    return run_pipeline(project, pipeline, executor=executor, registry=registry, on_event=on_event)[step]
