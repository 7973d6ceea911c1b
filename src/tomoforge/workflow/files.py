"""Workflow files: a pipeline written as TOML, checked against the registered steps before anything runs.

A workflow file names the values the user supplies (``[workflow.inputs]``, each with a description) and one table
per node, in the order they are meant to run::

    [workflow]
    name = "example"
    description = "Count, then sum."

    [workflow.inputs]
    table = "The CSV file to count."

    [nodes.count]
    step = "toy.count"
    params = { n = 3 }
    inputs = { table = "$table" }        # a value the user supplies

    [nodes.sum]
    step = "toy.sum"
    inputs = { counts = "count:counts" } # output 'counts' of node 'count'

An input is ``"$NAME"`` (a user-supplied value: a path), ``"NODE:OUTPUT"`` (an output of another node) or any other
string (a path, relative to the workflow file's folder when not absolute). Parameters are validated against each
step's params model, and connections against the outputs' kinds, by :func:`check_workflow`, so a bad file fails at
once with the file, node and field named. Running it is :func:`~tomoforge.workflow.run_pipeline` on
:func:`workflow_pipeline`, cached and resumable like any pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .errors import PipelineError, WorkflowError
from .graph import Node, Pipeline, Ref, check_pipeline
from .registry import StepRegistry, get_registry
from .runner import validate_params

__all__ = ["WorkflowFile", "WorkflowNode", "check_workflow", "read_workflow", "workflow_pipeline"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*):([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class WorkflowNode:
    """One node of a workflow file."""

    step: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class WorkflowFile:
    """A parsed workflow file."""

    name: str
    description: str
    inputs: dict[str, str]
    """User-supplied values: name → description."""
    nodes: dict[str, WorkflowNode]
    source: Path | None = None
    """The file read (relative paths of inputs are taken from its folder)."""


def _fail(source: str, message: str) -> WorkflowError:
    return WorkflowError(f"{source}: {message}")


def read_workflow(text_or_path: str | Path) -> WorkflowFile:
    """Parse a workflow file (a path, or TOML text); raises :class:`WorkflowError` naming the problem."""
    if isinstance(text_or_path, Path):
        source, where = text_or_path, str(text_or_path)
        try:
            text = text_or_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise _fail(where, f"cannot be read ({exc.strerror or exc})") from None
    else:
        source, where, text = None, "workflow", text_or_path
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(where, f"is not valid TOML ({exc})") from None
    header = data.get("workflow")
    if not isinstance(header, dict) or not isinstance(header.get("name"), str):
        raise _fail(where, 'needs a [workflow] table with a name, e.g. name = "demo"')
    inputs = header.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
        raise _fail(where, "[workflow.inputs] must map each input name to its description (a string)")
    for name in inputs:
        if not _NAME.match(name):
            raise _fail(where, f"workflow input name {name!r} must be a plain identifier")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise _fail(where, "needs at least one [nodes.NAME] table")
    nodes = {}
    for name, table in raw_nodes.items():
        if not _NAME.match(name) or not isinstance(table, dict):
            raise _fail(where, f"[nodes.{name}] must be a table with a plain identifier as its name")
        unknown = sorted(set(table) - {"step", "params", "inputs", "description"})
        if unknown:
            raise _fail(
                where, f"[nodes.{name}] has unknown key(s) {', '.join(unknown)} (step, params, inputs)"
            )
        if not isinstance(table.get("step"), str):
            raise _fail(where, f'[nodes.{name}] needs step = "STEP.NAME"')
        params, node_inputs = table.get("params", {}), table.get("inputs", {})
        if not isinstance(params, dict):
            raise _fail(where, f"[nodes.{name}] params must be a table")
        if not isinstance(node_inputs, dict) or not all(isinstance(v, str) for v in node_inputs.values()):
            raise _fail(
                where, f'[nodes.{name}] inputs must map input names to strings ("$NAME", "NODE:OUTPUT")'
            )
        nodes[name] = WorkflowNode(
            table["step"], dict(params), dict(node_inputs), str(table.get("description", ""))
        )
    return WorkflowFile(header["name"], str(header.get("description", "")), dict(inputs), nodes, source)


def _connection(workflow: WorkflowFile, node: str, name: str, value: str, values: Mapping[str, Any]) -> Any:
    where = str(workflow.source or workflow.name)
    if value.startswith("$"):
        key = value[1:]
        if key not in workflow.inputs:
            raise _fail(
                where, f"node '{node}' input '{name}' uses ${key}, which [workflow.inputs] does not declare"
            )
        if key not in values or values[key] is None:
            raise _fail(where, f"the workflow needs its input '{key}' ({workflow.inputs[key]})")
        return Path(values[key])
    match = _REF.match(value)
    if match and match.group(1) in workflow.nodes:
        return Ref(match.group(1), match.group(2))
    if match:
        raise _fail(
            where, f"node '{node}' input '{name}' refers to node '{match.group(1)}', which is not defined"
        )
    path = Path(value)
    if not path.is_absolute() and workflow.source is not None:
        path = workflow.source.parent / path
    return path


def workflow_pipeline(
    workflow: WorkflowFile,
    values: Mapping[str, Any],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Pipeline:
    """The pipeline of a workflow given its user-supplied ``values`` (paths by input name), with optional parameter
    overrides per node (``{"node": {"param": value}}``)."""
    overrides = params or {}
    unknown = sorted(set(overrides) - set(workflow.nodes))
    if unknown:
        raise _fail(
            str(workflow.source or workflow.name), f"no node named {', '.join(unknown)} to set parameters of"
        )
    return {
        name: Node(
            node.step,
            params={**node.params, **overrides.get(name, {})},
            inputs={k: _connection(workflow, name, k, v, values) for k, v in node.inputs.items()},
        )
        for name, node in workflow.nodes.items()
    }


def check_workflow(workflow: WorkflowFile, registry: StepRegistry | None = None) -> None:
    """Check that every node's step exists, its parameters validate, and its connections name declared inputs and
    outputs of matching kinds (placeholder paths stand in for the user's values)."""
    registry = registry or get_registry()
    where = str(workflow.source or workflow.name)
    for name, node in workflow.nodes.items():
        try:
            spec = registry.get(node.step)
        except WorkflowError as exc:
            raise _fail(where, f"node '{name}': {exc}") from None
        try:
            validate_params(spec, node.params, node=name)
        except WorkflowError as exc:
            raise _fail(where, str(exc)) from None
    placeholders = {key: Path(f"<{key}>") for key in workflow.inputs}
    try:
        check_pipeline(workflow_pipeline(workflow, placeholders), registry)
    except PipelineError as exc:
        raise _fail(where, str(exc)) from None
